import ShadowMMU
import X86

/// Nested paging (EPT/NPT): no shadow pages. The guest edits its tables, loads CR3
/// and runs INVLPG without exits; a TLB miss costs a two-dimensional walk, and the
/// first touch of each guest frame costs an EPT violation.
public final class TDP: SyncPolicy {
    public let name = "tdp"
    public let summary = "nested paging baseline: no shadowing; 2-D walks on TLB misses, EPT violations on first touch"
    public let lockDomain = LockDomain.vmLock
    public let shadowsGuestTables = false

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision { .allow }
}

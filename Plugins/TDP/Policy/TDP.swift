import ShadowMMU

/// Nested paging (EPT/NPT): every level nested. Each vCPU's walk begins in the guest's
/// own tables at CR3, so no shadow page is built and the guest edits its tables, loads
/// CR3 and runs INVLPG without exits; a TLB miss costs a two-dimensional walk, and the
/// first touch of each guest frame an EPT violation.
public final class TDP: SyncPolicy {
    public let name = "tdp"
    public let summary = "nested paging baseline: no shadowing; 2-D walks on TLB misses, EPT violations on first touch"
    public let lockDomain = LockDomain.vmLock
    public let rootWalk = WalkDecision.nested

    public init() {}
    public func attach(to mmu: ShadowMMU) {}
}

import ShadowMMU
import X86

/// Never unsync (KVM with `oos_shadow=0`, Xen's Shadow-2): every guest page-table
/// store exits and is emulated; nothing is ever stale, so CR3 loads and INVLPG have
/// nothing to sync. Flooding (3 emulated writes to a table not used in between) zaps
/// tables at every level, since none can go unsync.
public final class WPEmulate: SyncPolicy {
    public let name = "wp-emulate"
    public let summary = "never unsync: every page-table store exits and is emulated"
    public let lockDomain = LockDomain.vmLock
    public var floodsLeafTables: Bool { true }

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// A frame with shadow pages is never mapped writable.
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        mmu.isWriteTracked(gfn) || mmu.isShadowed(gfn) ? .keepProtected : .allow
    }

    /// Root switching as KVM does it (the default `RootLoadDecision`, and
    /// `kvm_invalidate_pcid` for INVPCID); nothing is ever stale, so nothing to sync.
    public var rootSync: RootSync { .nothing }
    public var addressInvalidation: AddressInvalidation { .flushOnly }
    public var guestFlush: GuestFlush { .nothing }
}

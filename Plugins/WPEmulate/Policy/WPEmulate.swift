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
    public let shadowsGuestTables = true
    public var floodsLeafTables: Bool { true }

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// A frame with shadow pages is never mapped writable.
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        mmu.isWriteTracked(gfn) || mmu.isShadowed(gfn) ? .keepProtected : .allow
    }

    /// Root switching as KVM does it (the default `RootLoadDecision`); the flush has
    /// nothing to sync.

    public func syncRoots(_ vcpu: ShadowVCPU, becauseRootsWereBuilt: Bool) {}

    public func invalidateAddress(_ vcpu: ShadowVCPU, _ va: UInt64, roots: RootSelection) {
        vcpu.flushHardwareAddress(va)
    }

    public func invalidatePCID(_ vcpu: ShadowVCPU, _ pcid: UInt16) {
        vcpu.invalidatePCIDRoots(pcid)
    }

    public func guestTLBFlush(_ vcpu: ShadowVCPU) {}
}

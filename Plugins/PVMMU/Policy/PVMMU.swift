import ShadowMMU
import X86

/// A paravirtual MMU, in the spirit of the PVM project's PV MMU design: the guest kernel
/// knows it is shadowed and sends its page-table updates in batches through a
/// hypercall (and may flush TLBs through one), so the hypervisor applies each update to
/// every shadow of the table at once. Nothing is ever unsync: unsyncing a leaf marks no
/// upper-level page unsync-children, a CR3 load syncs nothing (cached roots stay
/// usable), and INVLPG only flushes. A direct store to a table (a guest that does not
/// use the hypercall) still exits and is emulated.
public final class PVMMU: SyncPolicy {
    public let name = "pv-mmu"
    public let summary = "paravirtual MMU: the guest batches page-table updates in hypercalls; nothing is ever unsync or synced"
    public let lockDomain = LockDomain.vmLock
    public var floodsLeafTables: Bool { true }
    public var pageTableHypercalls: PageTableHypercalls { .applyToEveryShadow }

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// Guest tables stay read-only: updates arrive by hypercall.
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        mmu.isWriteTracked(gfn) || mmu.isShadowed(gfn) ? .keepProtected : .allow
    }

    /// Shadows are never behind the guest: a flushing load only flushes.
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision {
        .switchWithoutSync
    }

    /// Nothing to sync, anywhere: INVLPG and INVPCID only flush.
    public var rootSync: RootSync { .nothing }
    public var addressInvalidation: AddressInvalidation { .flushOnly }
    public var pcidInvalidation: PCIDInvalidation { .flushCurrent }
    public var guestFlush: GuestFlush { .nothing }

    /// Nothing to resync before the fault is injected: every spte matches its entry.
    public func guestProtectionFaultInjected(_ vcpu: ShadowVCPU, _ va: UInt64) {
        vcpu.flushHardwareAddress(va)
    }
}

import ShadowMMU
import X86

/// Modern KVM (Linux 6.6–6.10 shadow paging): leaf tables go unsync on the first
/// write fault; upper-level tables stay write-tracked and their writes are emulated;
/// a flushing CR3 load syncs only the unsync pages the new root reaches; linking a
/// page syncs it first; INVLPG re-derives one entry in the current and cached roots.
/// Every answer is the engine's default, KVM's own: this page states them.
public final class KVMUnsync: SyncPolicy {
    public let name = "kvm-unsync"
    public let summary = "modern KVM: leaves go unsync; a flushing CR3 load syncs only what the new root reaches"
    public let lockDomain = LockDomain.vmLock

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// `mmu_try_to_unsync_pages`: a store to a leaf table unsyncs it.
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        .unsyncAndAllow
    }

    /// Sync before link (KVM since 2021).
    public func linkDecision(for page: ShadowPage, in mmu: ShadowMMU) -> LinkDecision { .syncFirst }

    /// `kvm_set_cr3`: switch to a cached root if there is one; a flushing load syncs
    /// what the root reaches (on entry) and drops cached roots of the flushed PCID.
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision {
        .switchToCachedRoot
    }

    /// `kvm_mmu_sync_roots`: only pages reachable from the current roots.
    public var rootSync: RootSync { .reachableFromRoots }

    /// `kvm_mmu_invalidate_addr`: one entry, in every selected root; pages stay unsync.
    public var addressInvalidation: AddressInvalidation { .resyncInSelectedRoots }

    /// `kvm_invalidate_pcid`.
    public var pcidInvalidation: PCIDInvalidation { .invalidatePCIDRoots }

    /// `kvm_vcpu_flush_tlb_guest`: sync the current roots, drop unsync cached roots.
    public var guestFlush: GuestFlush { .syncRootsAndFreeUnsyncCachedRoots }

    /// Unsync pages are found from the roots, through their parents' bits.
    public var unsyncIndex: UnsyncIndex { .unsyncChildBits }
}

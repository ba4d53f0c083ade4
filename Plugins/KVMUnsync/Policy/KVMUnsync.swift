import ShadowMMU
import X86

/// Modern KVM (Linux 6.6–6.10 shadow paging): leaf tables go unsync on the first
/// write fault; upper-level tables stay write-tracked and their writes are emulated;
/// a flushing CR3 load syncs only the unsync pages the new root reaches; linking a
/// page syncs it first; INVLPG re-derives one entry in the current and cached roots.
public final class KVMUnsync: SyncPolicy {
    public let name = "kvm-unsync"
    public let summary = "modern KVM: leaves go unsync; a flushing CR3 load syncs only what the new root reaches"
    public let lockDomain = LockDomain.vmLock
    public let shadowsGuestTables = true

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// `mmu_try_to_unsync_pages`.
    /// A store to a leaf table unsyncs it (the default `WriteDecision.unsyncAndAllow`).
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        .unsyncAndAllow
    }

    /// `kvm_set_cr3`: switch to a cached root if there is one; a flushing load syncs
    /// what the root reaches (on entry) and drops cached roots of the flushed PCID.
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision {
        .switchToCachedRoot
    }

    /// `kvm_mmu_sync_roots`: only pages reachable from the current roots.
    public func syncRoots(_ vcpu: ShadowVCPU, becauseRootsWereBuilt: Bool) {
        vcpu.syncCurrentRoots()
    }

    /// `kvm_mmu_invalidate_addr`: one entry, in every selected root; pages stay unsync.
    public func invalidateAddress(_ vcpu: ShadowVCPU, _ va: UInt64, roots: RootSelection) {
        vcpu.flushHardwareAddress(va)
        vcpu.resyncEntry(va, roots: roots)
    }

    /// `kvm_invalidate_pcid`.
    public func invalidatePCID(_ vcpu: ShadowVCPU, _ pcid: UInt16) {
        vcpu.invalidatePCIDRoots(pcid)
    }

    /// `kvm_vcpu_flush_tlb_guest`: sync the current roots, drop unsync cached roots.
    public func guestTLBFlush(_ vcpu: ShadowVCPU) {
        vcpu.syncCurrentRoots()
        vcpu.freeUnsyncCachedRoots()
    }
}

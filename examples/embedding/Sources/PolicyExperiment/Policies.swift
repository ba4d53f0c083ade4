import ShadowMMU
import X86

/// Two policies of the experiment's own, written against the engine's mechanisms.
/// `Eager` never lets a guest page table go unsync: every store to one is emulated.
/// `Lazy` lets leaf tables go unsync and syncs what the new root reaches at a CR3 load.
final class ExperimentPolicy: SyncPolicy {
    let name: String
    let summary: String
    let lockDomain = LockDomain.vmLock
    let lazy: Bool

    init(lazy: Bool) {
        self.lazy = lazy
        name = lazy ? "experiment-lazy" : "experiment-eager"
        summary = lazy ? "unsync leaves, sync the reachable ones at CR3 loads" : "write-protect and emulate every table store"
    }

    func attach(to mmu: ShadowMMU) {}

    func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        // A frame that holds no guest page table may always be writable.
        lazy ? .unsyncAndAllow : mmu.isWriteTracked(gfn) || !mmu.shadowPages(of: gfn).isEmpty ? .keepProtected : .allow
    }

    // CR3 loads, root syncs, INVLPG, INVPCID and guest flushes: KVM's decisions, the
    // engine's defaults (for the eager policy there is never anything to sync).
}

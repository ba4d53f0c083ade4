import ShadowMMU
import X86

/// The April 2010 patch as posted: every unsync page of every VM on one host-wide
/// list under one host-wide lock; every root load (a CR3 switch, which frees the
/// roots as 2010 KVM did, or a flushing reload) syncs every unsync page of the VM on
/// the list whether the new root reaches it or not, walking past other VMs' entries,
/// then does one remote and one local flush. INVLPG resyncs one entry of the current
/// root, as 2010 KVM did.
public final class GlobalList: SyncPolicy {
    public let name = "global-list"
    public let summary = "2010 patch: one host-wide unsync list and lock; every root load syncs all the VM's unsync pages"
    public let lockDomain = LockDomain.hostLock

    /// Every VM's unsync pages on the host's list (the engine adds and removes them,
    /// one lock acquisition each).
    public var unsyncIndex: UnsyncIndex { .hostWideList }

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// As KVM: leaf pages unsync unless some shadow of the frame is an upper level.
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        .unsyncAndAllow   // as KVM
    }

    /// A new CR3 frees the roots (rebuilt, and so synced, on entry); a flushing reload
    /// of the same CR3 syncs too.
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision {
        .freeAllRoots
    }

    /// Every unsync page of the VM, reachable or not, at every root sync and guest flush.
    public var rootSync: RootSync { .everyUnsyncPage }
    public var guestFlush: GuestFlush { .syncEveryUnsyncPage }
    /// INVLPG as 2010 KVM: one entry of the current root.
    public var addressInvalidation: AddressInvalidation { .resyncInCurrentRoot }
    public var pcidInvalidation: PCIDInvalidation { .requestRootSync }
}

import ShadowMMU
import X86

/// The reviewer's first correction to the 2010 patch: the same sync-everything rule,
/// but with one unsync list per VM under that VM's own MMU lock, so no VM walks or
/// waits for another. Every root load (a CR3 switch, which frees the roots as 2010 KVM
/// did, or a flushing reload) syncs every unsync page of the VM, reachable or not,
/// then does one remote and one local flush. INVLPG resyncs one entry of the current
/// root, as 2010 KVM did.
public final class VMList: SyncPolicy {
    public let name = "vm-list"
    public let summary = "per-VM unsync list under the VM lock; every root load syncs all the VM's unsync pages"
    public let lockDomain = LockDomain.vmLock

    /// The VM's unsync pages on its own list (the engine adds and removes them, one
    /// lock acquisition each).
    public var unsyncIndex: UnsyncIndex { .perVMList }

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

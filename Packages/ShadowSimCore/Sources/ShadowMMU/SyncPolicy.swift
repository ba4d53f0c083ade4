import X86

/// What a policy serialises on: the VM's own MMU lock, or one lock for the whole host.
public enum LockDomain: String, Sendable {
    case vmLock = "vm"
    case hostLock = "host"
}

/// Why the engine wants to give a leaf spte write access to a frame that may be a
/// shadowed guest page table (KVM's `mmu_try_to_unsync_pages` arguments).
public struct WritableMappingRequest {
    /// The spte is being rebuilt while syncing a shadow page (KVM never unsyncs then).
    public var synchronizing: Bool
    /// The spte is speculative (prefetch), not the one the guest faulted on.
    public var prefetch: Bool
    /// The index of the vCPU whose fault or sync asks (`ShadowMMU.vcpus`; nil for
    /// host-initiated work). An index, not a reference: a request holds nothing.
    public var vcpuIndex: Int?
    /// The fault is a store at CPL 3.
    public var userWrite: Bool

    public init(synchronizing: Bool, prefetch: Bool, vcpu: ShadowVCPU?, userWrite: Bool = false) {
        self.synchronizing = synchronizing
        self.prefetch = prefetch
        self.vcpuIndex = vcpu?.index
        self.userWrite = userWrite
    }
}

/// A sync policy: the decisions a shadow MMU takes at each event, over the engine's
/// mechanisms. The engine calls these hooks where KVM's own code makes the decision.
///
/// A policy is one object per VM. Built-in policies are linked into the host; any
/// policy can also be a `.so` (see `PluginABI`).
public protocol SyncPolicy: AnyObject {
    /// The name `--policy` and `shadowsim.vm{ policy = … }` use.
    var name: String { get }
    /// One line for `shadowsim policies`.
    var summary: String { get }
    /// The lock this policy's MMU work holds.
    var lockDomain: LockDomain { get }
    /// Where every vCPU's hardware walk begins (`.shadow` by default). `.nested` is
    /// nested paging: the walk starts in the guest's own tables at CR3, each
    /// guest-physical address translated by the EPT (the walk a nested link starts one
    /// level down), so no shadow page is ever built and none of what keeps shadow roots
    /// current is intercepted (see `ShadowVCPU.rootIsShadowed`).
    var rootWalk: WalkDecision { get }

    /// Called once, when the policy is attached to a VM's MMU.
    func attach(to mmu: ShadowMMU)

    /// Called once, as the MMU goes away (the policy may outlive it): drop whatever
    /// refers to it. `mmu` must not be kept.
    func detach(from mmu: ShadowMMU)

    /// A leaf spte with write access is about to map `gfn`: how (see `WriteDecision`;
    /// KVM's `.unsyncAndAllow` by default).
    func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision

    /// A shadow page that is unsync, or has unsync pages below it, is about to become
    /// reachable from the fault path (see `LinkDecision`; `.syncFirst` by default).
    func linkDecision(for page: ShadowPage, in mmu: ShadowMMU) -> LinkDecision

    /// MOV to CR3 executed on `vcpu` (the architectural checks passed): what becomes of
    /// its roots (see `RootLoadDecision`; KVM's `.switchToCachedRoot` by default).
    func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision

    /// For `RootLoadDecision.policyHandles` only: the policy switches roots itself.
    func cr3Loaded(_ vcpu: ShadowVCPU, previousCR3: UInt64, pdptesChanged: Bool, noFlush: Bool)

    /// What syncs roots just built, or whose sync was requested (`RootSync`;
    /// `.reachableFromRoots` by default).
    var rootSync: RootSync { get }
    /// What INVLPG or INVPCID of one address does (`AddressInvalidation`;
    /// `.resyncInSelectedRoots` by default).
    var addressInvalidation: AddressInvalidation { get }
    /// What INVPCID of one context does (`PCIDInvalidation`; `.invalidatePCIDRoots`).
    var pcidInvalidation: PCIDInvalidation { get }
    /// What a flush of everything the guest may have cached does (`GuestFlush`;
    /// `.syncRootsAndFreeUnsyncCachedRoots`).
    var guestFlush: GuestFlush { get }

    /// For `RootSync.policyHandles`: the vCPU is about to enter the guest with roots just
    /// built (KVM's `kvm_mmu_load`), or a sync of the current roots was requested.
    func syncRoots(_ vcpu: ShadowVCPU, becauseRootsWereBuilt: Bool)
    /// For `AddressInvalidation.policyHandles`: INVLPG of `va`, or INVPCID of one
    /// address (`roots` says which roots it covers).
    func invalidateAddress(_ vcpu: ShadowVCPU, _ va: UInt64, roots: RootSelection)
    /// For `PCIDInvalidation.policyHandles`: INVPCID single context for `pcid`.
    func invalidatePCID(_ vcpu: ShadowVCPU, _ pcid: UInt16)
    /// For `GuestFlush.policyHandles`: the guest flushed everything it may have cached.
    func guestTLBFlush(_ vcpu: ShadowVCPU)

    /// A change of CR0.WP, CR0.PG, CR4.PSE/PAE/LA57/SMEP/SMAP or EFER.NX/LME/LMA that
    /// alters how shadow pages are built: every root of `vcpu` was just dropped (KVM's
    /// `kvm_mmu_reset_context`). KVM needs nothing more (new roots are synced when
    /// built); Xen resyncs every out-of-sync page on a paging-mode change.
    func pagingModeChanged(_ vcpu: ShadowVCPU)

    /// A protection #PF at `va` is about to be injected into the guest. KVM first
    /// invalidates the address in the current root (`kvm_inject_emulated_page_fault`:
    /// an unsync page's stale spte resynced), the default here.
    func guestProtectionFaultInjected(_ vcpu: ShadowVCPU, _ va: UInt64)

    /// Whether write flooding also zaps leaf tables (KVM exempts them: they can unsync).
    var floodsLeafTables: Bool { get }

    /// Where the engine keeps the VM's unsync pages (`.unsyncChildBits` by default). On a
    /// list, the engine adds a page (one lock acquisition) as it goes unsync and removes
    /// it as it leaves that state.
    var unsyncIndex: UnsyncIndex { get }

    /// The paravirtual page-table interface the guest kernel may use (`.none` by
    /// default; pv-mmu's `.applyToEveryShadow`). A guest kernel that finds one batches
    /// its page-table stores into update hypercalls (`GuestKernel.batchingUpdates`).
    var pageTableHypercalls: PageTableHypercalls { get }

    /// The fault path is about to link guest table `gfn` (holding level-`level` entries,
    /// below the root) into a shadow page: shadow it, or leave it to a nested walk (see
    /// `WalkDecision`; `.shadow` by default).
    func walkDecision(forTable gfn: UInt64, level: Int, in mmu: ShadowMMU) -> WalkDecision

    /// A guest store to shadowed table `gfn` exited: a write fault that unsynced the
    /// table, or an emulated store to it. For policies that react to write traffic
    /// (agile paging); nothing by default.
    func didTrapTableWrite(_ gfn: UInt64, in mmu: ShadowMMU)

    /// Bookkeeping notifications, for policies that keep their own index.
    func didUnsync(_ page: ShadowPage, in mmu: ShadowMMU)
    func willLeaveUnsync(_ page: ShadowPage, in mmu: ShadowMMU)
    /// Spte `index` of indirect page `page` was just derived from its guest entry (by a
    /// fault, a prefetch or a sync).
    func didPropagate(_ page: ShadowPage, _ index: Int, in mmu: ShadowMMU)
}

extension SyncPolicy {
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        .unsyncAndAllow
    }
    public func linkDecision(for page: ShadowPage, in mmu: ShadowMMU) -> LinkDecision { .syncFirst }
    public var rootWalk: WalkDecision { .shadow }
    public func walkDecision(forTable gfn: UInt64, level: Int, in mmu: ShadowMMU) -> WalkDecision { .shadow }
    public func didTrapTableWrite(_ gfn: UInt64, in mmu: ShadowMMU) {}
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision {
        .switchToCachedRoot
    }
    public func cr3Loaded(_ vcpu: ShadowVCPU, previousCR3: UInt64, pdptesChanged: Bool, noFlush: Bool) {}
    public var rootSync: RootSync { .reachableFromRoots }
    public var addressInvalidation: AddressInvalidation { .resyncInSelectedRoots }
    public var pcidInvalidation: PCIDInvalidation { .invalidatePCIDRoots }
    public var guestFlush: GuestFlush { .syncRootsAndFreeUnsyncCachedRoots }
    public func syncRoots(_ vcpu: ShadowVCPU, becauseRootsWereBuilt: Bool) {}
    public func invalidateAddress(_ vcpu: ShadowVCPU, _ va: UInt64, roots: RootSelection) {}
    public func invalidatePCID(_ vcpu: ShadowVCPU, _ pcid: UInt16) {}
    public func guestTLBFlush(_ vcpu: ShadowVCPU) {}
    /// Whether write flooding also zaps leaf tables (KVM exempts them: they can unsync).
    public var floodsLeafTables: Bool { false }
    public var pageTableHypercalls: PageTableHypercalls { .none }
    public var unsyncIndex: UnsyncIndex { .unsyncChildBits }
    public func detach(from mmu: ShadowMMU) {}
    public func pagingModeChanged(_ vcpu: ShadowVCPU) {}
    public func guestProtectionFaultInjected(_ vcpu: ShadowVCPU, _ va: UInt64) {
        vcpu.resyncEntry(va, roots: .current, countAsInvlpg: false)
        vcpu.flushHardwareAddress(va)
    }
    public func didUnsync(_ page: ShadowPage, in mmu: ShadowMMU) {}
    public func willLeaveUnsync(_ page: ShadowPage, in mmu: ShadowMMU) {}
    public func didPropagate(_ page: ShadowPage, _ index: Int, in mmu: ShadowMMU) {}
}

/// Which roots of a vCPU an invalidation covers.
public struct RootSelection: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let current = RootSelection(rawValue: 1)
    public static let previous0 = RootSelection(rawValue: 2)
    public static let previous1 = RootSelection(rawValue: 4)
    public static let previous2 = RootSelection(rawValue: 8)
    /// The current root and every cached one (up to `ShadowMMUConfiguration.maxPreviousRoots`).
    public static let all = RootSelection(rawValue: (2 << ShadowMMUConfiguration.maxPreviousRoots) - 1)
    public static func previous(_ i: Int) -> RootSelection { RootSelection(rawValue: 2 << i) }
}

// MARK: Plugins

/// The C entry points of a policy plugin. One versioned surface: the host checks
/// `shadowsim_policy_abi` before calling `shadowsim_policy_create`.
public enum PluginABI {
    /// Bumped whenever a type a plugin shares with the host changes (2: the
    /// `pagingModeChanged` hook; 3: `writeDecision` replaces `allowWritableMapping`
    /// and `emulateThisStore`, and the `guestProtectionFaultInjected` hook; 4: the
    /// `linkDecision` hook; 5: `rootLoadDecision`, `pageTableHypercalls`, the
    /// hypercall counters, `detach`, `unsyncIndex`; `chargeLock` and `countPageSync` no
    /// longer public; 6: `rootSync`, `addressInvalidation`, `pcidInvalidation` and
    /// `guestFlush`, their imperative hooks optional; 7: `walkDecision` and
    /// `didTrapTableWrite`, nested links, `ShadowPageHandle`; 8: `rootWalk` replaces
    /// `shadowsGuestTables`, no `tdp_walk` cost).
    @inlinable public static var version: Int32 { 8 }
    public static let abiSymbol = "shadowsim_policy_abi"
    public static let createSymbol = "shadowsim_policy_create"
    /// `int32_t shadowsim_policy_abi(void)`: the version the plugin was built against.
    public typealias ABIFunction = @convention(c) () -> Int32
    /// `void *shadowsim_policy_create(void)`: a +1 retained `SyncPolicy` object, or NULL.
    public typealias CreateFunction = @convention(c) () -> UnsafeMutableRawPointer?

    /// What a plugin's `shadowsim_policy_create` returns for a new policy object.
    public static func export(_ policy: any SyncPolicy) -> UnsafeMutableRawPointer {
        Unmanaged.passRetained(policy as AnyObject).toOpaque()
    }
}

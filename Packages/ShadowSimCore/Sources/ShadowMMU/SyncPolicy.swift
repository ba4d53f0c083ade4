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

/// A policy's answer when a leaf spte with write access is about to map a frame (which
/// may hold a shadowed guest table). The engine carries it out.
public enum WriteDecision: Sendable, Equatable {
    /// KVM's `mmu_try_to_unsync_pages`: the engine marks the frame's leaf shadow pages
    /// unsync and maps it writable, or keeps the spte read-only where KVM does (a
    /// write-tracked upper-level table, a sync in progress, a prefetch of a synced
    /// table). The default.
    case unsyncAndAllow
    /// Map it writable as it is (the policy has done its own bookkeeping).
    case allow
    /// Keep the spte read-only: stores to the frame exit and are emulated.
    case keepProtected
    /// Map it writable, but emulate the store that asked (Xen re-executes only a
    /// supervisor store natively).
    case allowAndEmulateThisStore
}

/// A policy's answer when the fault path is about to make a shadow page reachable that
/// is unsync, or has unsync pages below it: an unsync page found by lookup, or a child
/// with unsync children linked into its parent.
public enum LinkDecision: Sendable, Equatable {
    /// Bring it up to date first (KVM since 2021's sync-before-link fix): the page
    /// found is synced in place, the child's unsync descendants are synced. The default.
    case syncFirst
    /// Link it as it is: what it maps stays stale until a sync reaches it (KVM before
    /// the fix; a policy choosing it must sync before the guest can use the entries).
    case linkUnsync
}

/// Where the engine keeps track of a VM's unsync pages, for a policy.
public enum UnsyncIndex: Sendable, Equatable {
    /// Nowhere but the unsync-child bits of their parents: a sync walks down from the
    /// roots (KVM). The default.
    case unsyncChildBits
    /// Also on a list of the VM's unsync pages, under the VM's lock (the 2010 review's
    /// correction): `ShadowVCPU.syncEveryUnsyncPage` walks it.
    case perVMList
    /// Also on one list shared by every VM of the host that asks for it, under a
    /// host-wide lock (the April 2010 patch): a sync walks past other VMs' entries.
    case hostWideList
}

/// A policy's answer to a MOV to CR3. The engine carries it out; a load with other
/// PDPTEs (PAE) always frees the current root first.
public enum RootLoadDecision: Sendable, Equatable {
    /// KVM's `kvm_set_cr3`: switch to a cached root for the new CR3 when one fits (else
    /// one is built on entry); a flushing load syncs what the root reaches (on entry),
    /// flushes, and frees cached roots of the flushed PCID. The default.
    case switchToCachedRoot
    /// The same switch, but a flushing load only flushes: for a policy whose shadow
    /// pages never fall behind the guest, so cached roots stay usable (pv-mmu).
    case switchWithoutSync
    /// 2010 KVM: a new CR3 frees every root (rebuilt, and so synced, on entry); a
    /// flushing reload of the same CR3 syncs the current roots.
    case freeAllRoots
    /// The policy's own `cr3Loaded` does the work (xen-oos, experiments).
    case policyHandles
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
    /// False for nested paging: the engine then builds no shadow pages at all.
    var shadowsGuestTables: Bool { get }

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

    /// The vCPU is about to enter the guest with roots just built (KVM's `kvm_mmu_load`),
    /// or a sync of the current roots was requested (`KVM_REQ_MMU_SYNC`).
    func syncRoots(_ vcpu: ShadowVCPU, becauseRootsWereBuilt: Bool)

    /// INVLPG of `va`, or INVPCID of one address (`roots` says which roots it covers).
    func invalidateAddress(_ vcpu: ShadowVCPU, _ va: UInt64, roots: RootSelection)

    /// INVPCID single context for `pcid`.
    func invalidatePCID(_ vcpu: ShadowVCPU, _ pcid: UInt16)

    /// A flush of everything the guest may have cached: toggling CR4.PGE, clearing
    /// CR4.PCIDE, INVPCID all-context (KVM_REQ_TLB_FLUSH_GUEST).
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
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision {
        .switchToCachedRoot
    }
    public func cr3Loaded(_ vcpu: ShadowVCPU, previousCR3: UInt64, pdptesChanged: Bool, noFlush: Bool) {}
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
    /// longer public).
    @inlinable public static var version: Int32 { 5 }
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

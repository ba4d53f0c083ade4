import X86

// The typed decisions of a sync policy: each hook of `SyncPolicy` that decides returns
// one of these, and the engine carries it out (defaults: KVM's answers).

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

/// What syncs the roots when they were just built, or a sync of them was requested
/// (KVM's `kvm_mmu_load`, `KVM_REQ_MMU_SYNC`).
public enum RootSync: Sendable, Equatable {
    /// KVM's `kvm_mmu_sync_roots`: the unsync pages the current roots reach. The default.
    case reachableFromRoots
    /// Every unsync page of the VM, through the policy's unsync list (the 2010 patch).
    case everyUnsyncPage
    /// Nothing: the policy's shadow pages are never behind the guest.
    case nothing
    /// The policy's own `syncRoots`.
    case policyHandles
}

/// What INVLPG of one address (or INVPCID of one address) does to the shadow pages.
public enum AddressInvalidation: Sendable, Equatable {
    /// KVM's `kvm_mmu_invalidate_addr`: the hardware entries flushed, and the one spte
    /// re-derived in every unsync page on the address's path, in each root the
    /// instruction covers (current and cached). The default.
    case resyncInSelectedRoots
    /// The same in the current root only (2010 KVM).
    case resyncInCurrentRoot
    /// The hardware entries flushed, nothing else (nothing is ever stale).
    case flushOnly
    /// The policy's own `invalidateAddress`.
    case policyHandles
}

/// What INVPCID of a single context does.
public enum PCIDInvalidation: Sendable, Equatable {
    /// KVM's `kvm_invalidate_pcid`: for the active PCID a sync and a flush of the
    /// current roots; cached roots of that PCID freed. The default.
    case invalidatePCIDRoots
    /// A sync of the roots requested (the 2010 policies).
    case requestRootSync
    /// A flush of the current context, nothing to sync.
    case flushCurrent
    /// The policy's own `invalidatePCID`.
    case policyHandles
}

/// What a flush of everything the guest may have cached does (toggling CR4.PGE, clearing
/// CR4.PCIDE, INVPCID all-context: KVM_REQ_TLB_FLUSH_GUEST).
public enum GuestFlush: Sendable, Equatable {
    /// KVM's `kvm_vcpu_flush_tlb_guest`: the current roots synced, cached roots with
    /// unsync pages below them freed. The default.
    case syncRootsAndFreeUnsyncCachedRoots
    /// Every unsync page of the VM synced, through the unsync list.
    case syncEveryUnsyncPage
    /// Nothing beyond the hardware flush.
    case nothing
    /// The policy's own `guestTLBFlush`.
    case policyHandles
}

/// How the hardware walk continues below a non-leaf entry that is about to be linked:
/// through a shadow of the guest table, or through the guest table itself with a
/// two-dimensional walk (agile paging's per-table switch).
public enum WalkDecision: Sendable, Equatable {
    /// A shadow page of the table: write-protected, synced, walked at native cost. The
    /// default.
    case shadow
    /// A nested link: the table is not shadowed (its stores never exit); the walk reads
    /// it and everything below it from guest memory, each guest-physical address
    /// translated by the EPT (a partial 2-D walk), and first touches take EPT violations.
    case nested
}

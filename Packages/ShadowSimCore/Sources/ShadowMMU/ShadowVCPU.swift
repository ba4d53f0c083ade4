import X86

/// A root slot: the shadow page(s) a CR3 value is shadowed by.
public struct RootSlot: Sendable {
    /// Root page of a 64-bit guest, or -1.
    public var page: Int32 = -1
    /// The four page-directory roots of a 32-bit (legacy or PAE) guest; -1 = none.
    public var paeRoots: [Int32]? = nil
    /// The CR3 value (PCID bits included) this root shadows.
    public var pgd: UInt64 = 0

    public var isValid: Bool { page >= 0 || paeRoots != nil }
    /// 32-bit guests' roots are never cached (KVM's "special" roots).
    var isSpecial: Bool { paeRoots != nil }
    static let invalid = RootSlot()
}

/// KVM's vCPU requests, serviced when the vCPU next enters the guest.
public struct Requests: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    public static let freeObsoleteRoots = Requests(rawValue: 1)
    public static let syncRoots = Requests(rawValue: 2)
    public static let loadPGD = Requests(rawValue: 4)
    public static let flushAll = Requests(rawValue: 8)
    public static let flushCurrent = Requests(rawValue: 16)
    public static let flushGuest = Requests(rawValue: 32)
}

/// One vCPU under the shadow MMU: its roots (current and three cached), pending
/// requests and statistics. It is the vCPU's backend: TLB misses walk the shadow
/// tables, and what would exit to a hypervisor lands here.
public final class ShadowVCPU: VCPUBackend {
    // Not retained, and not checked (a checked `unowned` costs a retain/release pair per
    // use on the TLB-miss path): the MMU owns its ShadowVCPUs and must outlive the
    // machine's use of them; the vCPU holds this object as its backend.
    private let mmuReference: UnownedReference<ShadowMMU>
    private let vcpuReference: UnownedReference<VCPU>
    public var mmu: ShadowMMU { @inline(__always) get { mmuReference.object } }
    public var vcpu: VCPU { @inline(__always) get { vcpuReference.object } }
    /// Whether this vCPU's hardware walk begins in shadow tables (the policy's
    /// `rootWalk`). When it begins nested, at CR3, there are no shadow roots to keep
    /// current, so nothing that would change them is intercepted (KVM clears the CR3,
    /// INVLPG and control-register exiting controls under EPT): MOV to CR3, CR0 and
    /// CR4, WRMSR EFER, INVLPG and INVPCID run as on bare metal; only EPT violations exit.
    public let rootIsShadowed: Bool
    /// The hardware permission table, rebuilt only when its inputs change.
    var cachedHardwarePermissions: (key: UInt8, table: PermissionTable)?
    public internal(set) var root = RootSlot()
    public internal(set) var previousRoots: [RootSlot]
    /// Whether this vCPU is in guest mode when another asks it to flush (an IPI), rather
    /// than halted (it flushes on its next entry). See also `otherVCPUsRunning`.
    public var running = true
    /// KVM's last_retry_addr: the address of the last string store unprotected and
    /// retried. A write-protect fault there again is emulated, not retried (KVM's guard
    /// against retrying forever); any other write-protect fault clears it. String stores
    /// share one instruction here (as Linux's clear_page does), so the address decides.
    var lastRetriedStore: UInt64?
    /// Whether the write-protect fault being handled hit `lastRetriedStore`.
    var faultHitLastRetry = false
    public internal(set) var pending: Requests = []
    public internal(set) var stats = VCPUMMUStats()
    /// State a policy keeps per vCPU.
    public var policyState: AnyObject?
    /// Whether the last `switchRoot` reused a root.
    var lastSwitchReusedRoot = false

    init(mmu: ShadowMMU, vcpu: VCPU) {
        mmuReference = UnownedReference(mmu)
        vcpuReference = UnownedReference(vcpu)
        rootIsShadowed = mmu.rootWalk == .shadow
        let cached = min(max(mmu.configuration.previousRoots, 0), ShadowMMUConfiguration.maxPreviousRoots)
        previousRoots = [RootSlot](repeating: RootSlot(), count: cached)
    }

    public var index: Int { vcpu.index }

    /// The role every shadow page built for this vCPU's current mode shares.
    public var rootRole: PageRole {
        var role = PageRole()
        let c = vcpu.controls
        role.level = max(vcpu.mode.levels, 2)
        role.has4ByteGPTE = vcpu.mode == .legacy32
        role.access = Access.all
        role.eferNX = true
        role.cr0WP = c.cr0WP
        role.smepAndNotWP = c.cr4SMEP && !c.cr0WP
        role.smapAndNotWP = c.cr4SMAP && !c.cr0WP
        return role
    }

    // MARK: Requests and VM entry

    /// Asks for `r` before this vCPU next runs. A TLB flush of another vCPU happens at
    /// once (the IPI makes it exit if it is running; if it is halted it would flush
    /// on entry, which is the same for what it can observe).
    public func request(_ r: Requests) {
        if r.contains(.flushAll) && mmu.actingVCPU !== self && mmu.actingVCPU != nil {
            vcpu.tlb.flushAll()
            if mmu.configuration.otherVCPUsRunning && running {
                stats.tlbFlush &+= 1
                pending.insert(r.subtracting(.flushAll))
                return
            }
        }
        pending.insert(r)
    }

    /// What KVM does between an exit and the next VM entry: service requests in
    /// `vcpu_enter_guest`'s order, then build roots if there are none. A request made
    /// while the roots were built (the flush after write-protecting the new root's
    /// table) cancels the entry and is serviced before the guest runs, as KVM's last
    /// check for pending requests does (measured on the host's KVM: both flushes count
    /// at the MOV CR3 that loaded the new root).
    func enterGuest() throws(MachineError) {
        try serviceRequests()
        if !root.isValid && rootIsShadowed {
            try loadRoots()
            if !pending.isEmpty { try serviceRequests() }
        }
    }

    private func serviceRequests() throws(MachineError) {
        if pending.contains(.freeObsoleteRoots) {
            pending.remove(.freeObsoleteRoots)
            freeObsoleteRoots()
        }
        if pending.contains(.syncRoots) {
            pending.remove(.syncRoots)
            if root.isValid { syncRoots(becauseRootsWereBuilt: false) }
        }
        pending.remove(.loadPGD)
        if pending.contains(.flushAll) {
            pending.subtract([.flushAll, .flushCurrent])
            stats.tlbFlush &+= 1
            vcpu.tlb.flushAll()
        }
        if pending.contains(.flushCurrent) {
            pending.remove(.flushCurrent)
            stats.tlbFlush &+= 1
            if !mmu.injected.omits(.localAfterSync) { vcpu.tlb.flushAll() }
        }
        if pending.contains(.flushGuest) {
            // Even when the current root has gone (a PAE PDPTE reload freed it): the
            // flush covers cached roots and, under Xen, this vCPU's out-of-sync pages
            // (KVM's kvm_vcpu_flush_tlb_guest syncs whatever roots exist).
            pending.remove(.flushGuest)
            stats.tlbFlush &+= 1
            serviceGuestFlush()
            vcpu.tlb.flushAll()
        }
    }

    /// The vCPU enters the guest again after running nothing (a KVM_RUN that finds
    /// requests pending): they are serviced now. For a halted vCPU the scenario runs
    /// again, and for the kvm backend's vCPUs, which take turns.
    public func reenter() throws(MachineError) {
        guard !pending.isEmpty else { return }
        try exit { }
    }

    /// Runs an exit handler as this vCPU, then re-enters the guest.
    func exit<T>(_ body: () throws(MachineError) -> T) throws(MachineError) -> T {
        let previous = mmu.actingReference
        mmu.actingReference = UnownedReference(self)
        defer { mmu.actingReference = previous }
        let result = try body()
        try enterGuest()
        return result
    }

    // MARK: Roots

    /// KVM's `mmu_alloc_shadow_roots` + `kvm_mmu_sync_roots`.
    func loadRoots() throws(MachineError) {
        guard mmu.makePagesAvailable() || mmu.usedShadowPages < mmu.maxShadowPages + 4 else {
            throw .unsupported("the shadow-page budget (\(mmu.maxShadowPages) pages) is exhausted and nothing can be recycled")
        }
        let cr3 = vcpu.cr3
        var role = rootRole
        switch vcpu.mode {
        case .long4, .long5:
            let gfn = (cr3 & vcpu.controls.physicalAddressMask & ~0xFFF) >> 12
            let sp = mmu.getShadowPage(gfn: gfn, role: role, vcpu: self)
            sp.rootCount += 1
            mmu.noteChange(sp.id)
            root = RootSlot(page: sp.id, paeRoots: nil, pgd: cr3)
        case .legacy32, .pae:
            var roots = [Int32](repeating: -1, count: 4)
            role.level = 2
            for i in 0..<4 {
                var gfn: UInt64
                if vcpu.mode == .pae {
                    let pdpte = vcpu.pdptes[i]
                    guard pdpte & PTE.present != 0 else { continue }
                    gfn = (pdpte & PTE.bits(51, 12)) >> 12
                    role.quadrant = 0
                } else {
                    gfn = (cr3 & 0xFFFF_F000) >> 12
                    role.quadrant = i
                }
                let sp = mmu.getShadowPage(gfn: gfn, role: role, vcpu: self)
                sp.rootCount += 1
                mmu.noteChange(sp.id)
                roots[i] = sp.id
            }
            root = RootSlot(page: -1, paeRoots: roots, pgd: cr3)
        }
        syncRoots(becauseRootsWereBuilt: true)
        vcpu.tlb.flushAll()
    }

    /// The root pages of a slot.
    func rootPages(_ slot: RootSlot) -> [ShadowPage] {
        if let pae = slot.paeRoots { return pae.compactMap { mmu.page($0) } }
        return mmu.page(slot.page).map { [$0] } ?? []
    }

    public var currentRootPages: [ShadowPage] { rootPages(root) }

    /// Drops the root references of the selected slots (freeing invalid pages).
    public func freeRoots(_ selection: RootSelection) {
        func release(_ slot: inout RootSlot) {
            for sp in rootPages(slot) {
                sp.rootCount -= 1
                mmu.noteChange(sp.id)
                if sp.rootCount == 0 && sp.role.invalid { mmu.prepareZap(sp) }
            }
            slot = .invalid
        }
        if selection.contains(.current) { release(&root) }
        for i in previousRoots.indices where selection.contains(.previous(i)) { release(&previousRoots[i]) }
        mmu.commitZaps()
    }

    private func freeObsoleteRoots() {
        var selection: RootSelection = []
        if rootPages(root).contains(where: { $0.role.invalid }) { selection.insert(.current) }
        for i in previousRoots.indices where rootPages(previousRoots[i]).contains(where: { $0.role.invalid }) {
            selection.insert(.previous(i))
        }
        if !selection.isEmpty { freeRoots(selection) }
    }

    private func isUsable(_ slot: RootSlot, pgd: UInt64) -> Bool {
        guard slot.isValid, !slot.isSpecial, slot.pgd == pgd, let sp = mmu.page(slot.page) else { return false }
        var expected = rootRole
        expected.level = vcpu.mode.levels
        return sp.role == expected
    }

    /// KVM's `kvm_mmu_new_pgd` / `fast_pgd_switch`: reuse the current or a cached root
    /// for `pgd` (rotating the cache), else free the least recently used one so a new
    /// root is built on entry. Returns whether a root was reused.
    @discardableResult
    public func switchRoot(to pgd: UInt64) -> Bool {
        if root.isValid && root.isSpecial { freeRoots(.current) }
        var found = false
        if root.isValid {
            if isUsable(root, pgd: pgd) {
                found = true
            } else {
                for i in previousRoots.indices {
                    swap(&root, &previousRoots[i])
                    if isUsable(root, pgd: pgd) { found = true; break }
                }
                if !found { freeRoots(.current) }
            }
        } else if let i = previousRoots.indices.first(where: { isUsable(previousRoots[$0], pgd: pgd) }) {
            swap(&root, &previousRoots[i])
            for j in i..<(previousRoots.count - 1) { previousRoots[j] = previousRoots[j + 1] }
            previousRoots[previousRoots.count - 1] = .invalid
            found = true
        }
        if found {
            request(.loadPGD)
            mmu.page(root.page)?.writeFloodingCount = 0
        }
        lastSwitchReusedRoot = found
        if mmu.tracing {
            mmu.trace("shadowsim_switch_root", vcpu: self, "pgd \(ShadowMMU.hexDigits(pgd)) "
                      + (found ? mmu.page(root.page).map { "cached gfn \(ShadowMMU.hexDigits($0.gfn))" } ?? "cached pae" : "new"))
        }
        return found
    }

    /// PCID of a CR3 value, when PCIDs are on.
    public func pcid(of cr3: UInt64) -> UInt16 {
        vcpu.cr4 & CR4.pcide != 0 ? UInt16(cr3 & CR3Bits.pcidMask) : 0
    }

    /// KVM's `kvm_invalidate_pcid`: flushing the active PCID syncs the current roots and
    /// flushes; cached roots of that PCID are freed (with PCIDs on).
    public func invalidatePCIDRoots(_ target: UInt16) {
        if vcpu.currentPCID == target {
            if !(mmu.injected.omits(.reusedCachedRoot) && lastSwitchReusedRoot) { request(.syncRoots) }
            request(.flushCurrent)
        }
        guard vcpu.cr4 & CR4.pcide != 0 else { return }
        var selection: RootSelection = []
        for i in previousRoots.indices where previousRoots[i].isValid && pcid(of: previousRoots[i].pgd) == target {
            selection.insert(.previous(i))
        }
        if !selection.isEmpty { freeRoots(selection) }
    }

    /// KVM's `kvm_mmu_sync_roots`: syncs the unsync pages reachable from the current roots.
    public func syncCurrentRoots() {
        // Modern KVM checks without the lock first: nothing to do, no lock taken.
        let roots = currentRootPages.filter { $0.unsync || $0.unsyncChildren > 0 }
        guard !roots.isEmpty else { return }
        mmu.underLock()
        for sp in roots { mmu.syncChildren(of: sp, vcpu: self) }
    }

    /// The 2010 proposal's sync: every unsync page of the VM, reachable or not, through
    /// its unsync list (`UnsyncIndex`; other VMs' entries on a host-wide list walked
    /// past), then one remote flush if anything was write-protected or dropped and one
    /// local flush. A policy without a list has its pages found through the roots'
    /// unsync-child bits instead.
    public func syncEveryUnsyncPage() {
        if let list = mmu.unsyncList { list.syncEveryPage(of: self) } else { syncCurrentRoots() }
    }

    /// Carries out the policy's `RootSync`.
    func syncRoots(becauseRootsWereBuilt built: Bool) {
        switch mmu.policy.rootSync {
        case .reachableFromRoots: syncCurrentRoots()
        case .everyUnsyncPage: syncEveryUnsyncPage()
        case .nothing: break
        case .policyHandles: mmu.policy.syncRoots(self, becauseRootsWereBuilt: built)
        }
    }

    /// Carries out the policy's `GuestFlush` (the hardware flush is the caller's).
    func serviceGuestFlush() {
        switch mmu.policy.guestFlush {
        case .syncRootsAndFreeUnsyncCachedRoots:
            syncCurrentRoots()
            freeUnsyncCachedRoots()
        case .syncEveryUnsyncPage: syncEveryUnsyncPage()
        case .nothing: break
        case .policyHandles: mmu.policy.guestTLBFlush(self)
        }
    }

    /// Carries out the policy's `AddressInvalidation` for `va` in `roots`.
    func invalidate(_ va: UInt64, roots: RootSelection) {
        switch mmu.policy.addressInvalidation {
        case .resyncInSelectedRoots:
            flushHardwareAddress(va)
            resyncEntry(va, roots: roots)
        case .resyncInCurrentRoot:
            flushHardwareAddress(va)
            resyncEntry(va, roots: .current)
        case .flushOnly: flushHardwareAddress(va)
        case .policyHandles: mmu.policy.invalidateAddress(self, va, roots: roots)
        }
    }

    /// Carries out the policy's `PCIDInvalidation` for `pcid`.
    func invalidate(pcid: UInt16) {
        switch mmu.policy.pcidInvalidation {
        case .invalidatePCIDRoots: invalidatePCIDRoots(pcid)
        case .requestRootSync: request(.syncRoots)
        case .flushCurrent: request(.flushCurrent)
        case .policyHandles: mmu.policy.invalidatePCID(self, pcid)
        }
    }

    /// KVM's `kvm_mmu_sync_prev_roots`: frees cached roots that have unsync pages below.
    public func freeUnsyncCachedRoots() {
        var selection: RootSelection = []
        for i in previousRoots.indices where rootPages(previousRoots[i]).contains(where: { $0.unsync || $0.unsyncChildren > 0 }) {
            selection.insert(.previous(i))
        }
        if !selection.isEmpty { freeRoots(selection) }
    }

    /// KVM's `__kvm_mmu_invalidate_addr` over the selected roots: in every unsync page
    /// on the path of `va`, re-derive that one spte (the page stays unsync).
    public func resyncEntry(_ va: UInt64, roots: RootSelection, countAsInvlpg: Bool = true) {
        let roots = mmu.injected.omits(.cachedRootsAtInvalidation) ? roots.intersection(.current) : roots
        var slots: [RootSlot] = []
        if roots.contains(.current) { slots.append(root) }
        for i in previousRoots.indices where roots.contains(.previous(i)) { slots.append(previousRoots[i]) }
        for slot in slots where slot.isValid {
            guard var sp = rootPage(slot, for: va) else { continue }
            mmu.underLock()
            while true {
                let index = ShadowVCPU.shadowIndex(va, level: sp.level)
                if sp.unsync {
                    if countAsInvlpg && SPTE.isPresent(sp.spt[index]) { mmu.stats.invlpgResyncs &+= 1 }
                    let r = mmu.syncSPTE(sp, index, vcpu: self)
                    if r < 0 { mmu.zapSPTE(sp, index) }
                    if r != 0 { mmu.flushRemoteTLBs() }
                }
                guard sp.unsyncChildren > 0, let c = mmu.child(of: sp.spt[index], level: sp.level) else { break }
                sp = c
            }
        }
    }

    /// Flushes this vCPU's hardware TLB entries for `va` (every PCID, globals too).
    public func flushHardwareAddress(_ va: UInt64) {
        for pcid in livePCIDs() { vcpu.tlb.flushAddress(va, pcid: pcid, includeGlobal: true) }
    }

    private func livePCIDs() -> [UInt16] {
        var set: [UInt16] = [vcpu.currentPCID]
        for slot in previousRoots where slot.isValid { set.append(pcid(of: slot.pgd)) }
        if !set.contains(0) { set.append(0) }
        return set
    }

    /// The level-1 shadow page covering `va` in the current root and the index of its
    /// spte, if the path down to it exists.
    public func leafTable(for va: UInt64) -> (ShadowPage, Int)? {
        guard var sp = rootPage(root, for: va) else { return nil }
        while sp.level > 1 {
            guard let c = mmu.child(of: sp.spt[ShadowVCPU.shadowIndex(va, level: sp.level)], level: sp.level) else {
                return nil
            }
            sp = c
        }
        return (sp, ShadowVCPU.shadowIndex(va, level: 1))
    }

    /// The shadow pages the hardware walk of `va` goes through, with the spte used at each.
    public func shadowPath(for va: UInt64) -> [(ShadowPage, Int, UInt64)] {
        var out: [(ShadowPage, Int, UInt64)] = []
        guard var sp = rootPage(root, for: va) else { return out }
        while true {
            let index = ShadowVCPU.shadowIndex(va, level: sp.level)
            let spte = sp.spt[index]
            out.append((sp, index, spte))
            guard let c = mmu.child(of: spte, level: sp.level) else { return out }
            sp = c
        }
    }

    static func shadowIndex(_ va: UInt64, level: Int) -> Int {
        Int((va >> UInt64(12 + 9 * (level - 1))) & 511)
    }

    func rootPage(_ slot: RootSlot, for va: UInt64) -> ShadowPage? {
        if let pae = slot.paeRoots { return mmu.page(pae[Int((va >> 30) & 3)]) }
        return mmu.page(slot.page)
    }
}

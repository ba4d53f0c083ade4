import X86

// Unsync marking: a leaf shadow page going unsync (KVM's `kvm_unsync_page` and the rule
// of `mmu_try_to_unsync_pages`), its parents' unsync-child bits, and bringing a page
// back in sync.
extension ShadowMMU {
    /// KVM's `kvm_unsync_page`: the page may now go stale; its parents learn of it.
    public func markUnsync(_ sp: ShadowPage) {
        // Only indirect leaves may go unsync; verify() reports a policy that breaks it.
        guard !sp.unsync else { return }
        if tracing { trace("kvm_mmu_unsync_page", Self.traceDescription(of: sp)) }
        sp.unsync = true
        noteChange(sp.id)
        stats.unsyncEvents &+= 1
        stats.mmuUnsync &+= injected.corrupts(.unsyncCount) ? 2 : 1
        if !injected.corrupts(.parentUnsyncBits) { markParentsUnsync(sp) }
        if let unsyncList {
            chargeLock(work: 1)
            unsyncList.append(sp, of: self)
        }
        policy.didUnsync(sp, in: self)
    }

    /// KVM's unsync rule (`mmu_try_to_unsync_pages`): a frame shadowed at an upper level
    /// stays read-only; a sync or a prefetch never unsyncs; otherwise every leaf shadow
    /// of the frame is marked unsync and the mapping may be writable.
    public func unsyncLeafShadows(of gfn: UInt64, _ request: WritableMappingRequest) -> Bool {
        // Most frames are not guest tables: one lookup settles it (a write-tracked frame
        // is hashed too).
        guard let newest = hash[gfn] else { return true }
        if isWriteTracked(gfn) && !injected.omits(.upperLevelTable) { return false }
        var unsynced = false
        for id in HashChain(id: newest, links: hashNext) {
            guard let page = page(id), !page.role.invalid, page.hasGPTEs else { continue }
            if request.synchronizing { return false }
            if page.unsync { continue }
            if request.prefetch { return false }
            markUnsync(page)
            unsynced = true
        }
        if unsynced { policy.didTrapTableWrite(gfn, in: self) }
        return true
    }

    /// Clears `unsync` on a page that has just been brought up to date, and its bit in
    /// every parent.
    public func markSynced(_ sp: ShadowPage) {
        unlinkUnsync(sp)
        clearParents(of: sp)
    }

    /// Re-derives one spte from its guest entry (`sync_spte`); a page that cannot be
    /// synced any more loses the spte. True when a TLB flush is needed.
    public func resyncSPTE(_ sp: ShadowPage, _ index: Int, vcpu: ShadowVCPU) -> Bool {
        let r = syncSPTE(sp, index, vcpu: vcpu)
        if r < 0 { zapSPTE(sp, index) }
        return r != 0
    }


    /// Brings `sp` back in line with its guest table by re-deriving only `entries` (a
    /// policy that knows which changed, from a snapshot of the table): one sync of the
    /// page under one lock acquisition. True when a TLB flush is needed.
    public func resyncEntries(_ sp: ShadowPage, _ entries: [Int], vcpu: ShadowVCPU) -> Bool {
        var flush = false
        for i in entries { flush = resyncSPTE(sp, i, vcpu: vcpu) || flush }
        chargeLock(work: 1)
        countPageSync(entriesCompared: 512)
        return flush
    }

    /// Counts a page brought back in sync (its entries compared: `entries`).
    func countPageSync(entriesCompared entries: Int) {
        stats.pagesSynced &+= 1
        stats.lockWork &+= UInt64(entries > 0 ? 1 : 0)
    }

    /// Reads the guest entry spte `index` of `sp` shadows (nil outside guest memory).
    public func guestEntry(_ sp: ShadowPage, _ index: Int) -> UInt64? { readGPTE(sp, index) }

    /// Clears one spte (KVM's `mmu_page_zap_pte`).
    public func clearSPTE(_ sp: ShadowPage, _ index: Int) { zapSPTE(sp, index) }

    /// Sets the page's bit in each parent's bitmap, walking up while a parent's
    /// `unsyncChildren` goes from 0 to 1.
    func markParentsUnsync(_ sp: ShadowPage) {
        for ref in sp.parents { markUnsync(ref) }
    }

    func markUnsync(_ parentRef: SPTERef) {
        guard let parent = page(parentRef.page) else { return }
        if parent.testAndSetUnsyncBit(Int(parentRef.index)) { return }
        noteChange(parent.id)
        parent.unsyncChildren += 1
        if parent.unsyncChildren > 1 { return }
        markParentsUnsync(parent)
    }

    /// Clears `unsync` (the page is about to be synced or zapped).
    func unlinkUnsync(_ sp: ShadowPage) {
        guard sp.unsync else { return }
        // KVM traces kvm_mmu_sync_page here, as the page stops being unsync.
        if tracing { trace("kvm_mmu_sync_page", Self.traceDescription(of: sp)) }
        unsyncList?.remove(sp)
        policy.willLeaveUnsync(sp, in: self)
        sp.unsync = false
        noteChange(sp.id)
        stats.mmuUnsync &-= 1
    }
}

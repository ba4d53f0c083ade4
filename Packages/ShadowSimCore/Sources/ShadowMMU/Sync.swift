import X86

/// Syncing shadow pages against the guest (KVM's `__kvm_sync_page`, `sync_spte`,
/// `mmu_unsync_walk`, `mmu_sync_children`).
extension ShadowMMU {
    /// Guest-physical address of the guest entry that spte `index` of `sp` shadows.
    func gpteAddress(_ sp: ShadowPage, _ index: Int) -> UInt64 {
        let entrySize: UInt64 = sp.role.has4ByteGPTE ? 4 : 8
        let first = sp.gfn << 12 + (sp.role.has4ByteGPTE && sp.level == 1 ? UInt64(sp.role.quadrant) * 512 * 4 : 0)
        return first + UInt64(index) * entrySize
    }

    func readGPTE(_ sp: ShadowPage, _ index: Int) -> UInt64? {
        let address = gpteAddress(sp, index)
        let size = sp.role.has4ByteGPTE ? 4 : 8
        guard machine.memory.contains(address, size: size) else { return nil }
        return machine.memory.load(address, size: size)
    }

    /// Reserved bits of a guest PTE in the page's mode (what `prefetch_invalid_gpte` checks).
    func gpteHasReservedBits(_ gpte: UInt64, vcpu: ShadowVCPU) -> Bool {
        gpte & vcpu.vcpu.controls.reservedBits(level: 1, isLeaf: true) != 0
    }

    /// KVM's `sync_spte`: re-derives spte `index` of leaf page `sp` from its guest entry.
    /// Returns 1 when a TLB flush is needed, 0 when not, -1 when the page must be zapped.
    func syncSPTE(_ sp: ShadowPage, _ index: Int, vcpu: ShadowVCPU) -> Int {
        let spte = sp.spt[index]
        guard SPTE.isPresent(spte) else { return 0 }
        stats.sptesResynced &+= 1
        guard let gpte = readGPTE(sp, index) else { return -1 }
        // Not present, reserved bits, or never accessed: drop it.
        if gpte & PTE.present == 0 || gpteHasReservedBits(gpte, vcpu: vcpu) || gpte & PTE.accessed == 0 {
            dropSPTE(SPTERef(page: sp.id, index: index))
            return 1
        }
        let gfn = guestFrame(of: gpte, sp: sp)
        var access = sp.role.access & Access.of(gpte: gpte, executeDisableEnabled: vcpu.vcpu.controls.executeDisableEnabled)
        if gpte & PTE.dirty == 0 { access &= ~Access.write }
        // Sync never changes the frame in place: a new frame means drop and refault.
        if gfn != SPTE.target(spte) {
            dropSPTE(SPTERef(page: sp.id, index: index))
            return 1
        }
        if SPTE.access(spte) == access { return 0 }
        let new = makeSPTE(sp: sp, access: access, gfn: gfn, old: spte, prefetch: false, synchronizing: true,
                           vcpu: vcpu).spte
        sp.spt[index] = new
        // A flush is needed when rights were taken away.
        let lost = (spte & SPTE.writable != 0 && new & SPTE.writable == 0)
            || (spte & SPTE.user != 0 && new & SPTE.user == 0)
            || (spte & SPTE.executeDisable == 0 && new & SPTE.executeDisable != 0)
        return lost ? 1 : 0
    }

    /// The gfn a guest leaf entry at level 1 maps.
    func guestFrame(of gpte: UInt64, sp: ShadowPage) -> UInt64 {
        sp.role.has4ByteGPTE ? (gpte & 0xFFFF_F000) >> 12 : (gpte & PTE.bits(51, 12)) >> 12
    }

    /// KVM's `kvm_sync_page`: brings every present spte of an unsync (or about to be
    /// synced) leaf page up to date. Returns >0 if a flush is needed, 0, or -1 when the
    /// page was zapped (it was built for another paging mode, or its table vanished).
    public func syncPage(_ sp: ShadowPage, vcpu: ShadowVCPU) -> Int {
        stats.pagesSynced &+= 1
        let ignored = PageRole.syncIgnored
        guard !sp.role.direct, (sp.role.word ^ vcpu.rootRole.word) & ~ignored == 0 else {
            prepareZap(sp)
            return -1
        }
        var flush = 0
        for i in 0..<512 {
            let r = syncSPTE(sp, i, vcpu: vcpu)
            if r < 0 {
                prepareZap(sp)
                return -1
            }
            flush |= r
        }
        stats.lockWork &+= 1
        return flush
    }

    /// KVM's `mmu_unsync_walk`: up to 16 unsync leaf pages below `parent`, found through
    /// the unsync bitmaps; stale bits are cleared on the way.
    func collectUnsync(below parent: ShadowPage, limit: Int = 16) -> [ShadowPage] {
        var found: [ShadowPage] = []
        _ = walkUnsync(parent, into: &found, limit: limit)
        return found
    }

    /// Returns false when nothing below `sp` is unsync any more.
    private func walkUnsync(_ sp: ShadowPage, into found: inout [ShadowPage], limit: Int) -> Bool {
        guard sp.unsyncChildren > 0 else { return false }
        for word in 0..<8 {
            var bits = sp.unsyncChildBitmap[word]
            while bits != 0 {
                let index = word * 64 + bits.trailingZeroBitCount
                bits &= bits - 1
                if found.count >= limit { return true }
                guard let c = child(of: sp.spt[index], level: sp.level) else {
                    clearUnsyncChild(sp, index)
                    continue
                }
                if c.unsyncChildren > 0 {
                    if !walkUnsync(c, into: &found, limit: limit) { clearUnsyncChild(sp, index) }
                } else if c.unsync {
                    found.append(c)
                } else {
                    clearUnsyncChild(sp, index)
                }
            }
        }
        return true
    }

    /// Clears bit `index` of `sp`; when its last bit goes, clears `sp` in its parents.
    func clearUnsyncChild(_ sp: ShadowPage, _ index: Int) {
        guard sp.unsyncBit(index) else { return }
        sp.clearUnsyncBit(index)
        sp.unsyncChildren -= 1
        if sp.unsyncChildren == 0 {
            for ref in sp.parents { if let p = page(ref.page) { clearUnsyncChild(p, Int(ref.index)) } }
        }
    }

    /// After syncing `sp`, clears its bit in every parent (and upward as bitmaps empty).
    func clearParents(of sp: ShadowPage) {
        for ref in sp.parents { if let p = page(ref.page) { clearUnsyncChild(p, Int(ref.index)) } }
    }

    /// KVM's `mmu_sync_children`: syncs every unsync page reachable below `parent`, in
    /// batches of 16: write-protect the batch (one remote flush if anything was
    /// writable), then sync each page and clear it in its parents.
    public func syncChildren(of parent: ShadowPage, vcpu: ShadowVCPU) {
        var flush = false
        while true {
            let batch = collectUnsync(below: parent)
            if batch.isEmpty { break }
            var protected = false
            for sp in batch { protected = writeProtect(gfn: sp.gfn) || protected }
            if protected {
                if invalidList.isEmpty { flushRemoteTLBs() } else { commitZaps() }
                flush = false
            }
            for sp in batch where pages[Int(sp.id)] === sp {
                unlinkUnsync(sp)
                if syncPage(sp, vcpu: vcpu) > 0 { flush = true }
                clearParents(of: sp)
            }
        }
        if !invalidList.isEmpty {
            commitZaps()
        } else if flush {
            flushRemoteTLBs()
        }
    }

    /// Fully syncs one unsync page, wherever it is (what a list-based policy does):
    /// write-protect, clear unsync, sync, clear it in its parents. Returns whether a
    /// TLB flush is needed; zaps are left for `commitZaps`.
    public func syncUnsyncPage(_ sp: ShadowPage, vcpu: ShadowVCPU) -> Bool {
        guard sp.unsync, pages[Int(sp.id)] === sp else { return false }
        let protected = writeProtect(gfn: sp.gfn)
        unlinkUnsync(sp)
        let r = syncPage(sp, vcpu: vcpu)
        if pages[Int(sp.id)] === sp && !sp.role.invalid { clearParents(of: sp) }
        return protected || r > 0
    }
}

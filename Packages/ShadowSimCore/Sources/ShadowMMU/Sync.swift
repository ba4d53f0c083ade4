import X86

/// Syncing shadow pages against the guest (KVM's `__kvm_sync_page`, `sync_spte`,
/// `mmu_unsync_walk`, `mmu_sync_children`).
extension ShadowMMU {
    /// Guest-physical address of the guest entry that spte `index` of `sp` shadows.
    func gpteAddress(_ sp: ShadowPage, _ index: Int) -> UInt64 {
        guard sp.role.has4ByteGPTE else { return sp.gfn << 12 + UInt64(index) * 8 }
        // A 32-bit table: a level-1 page shadows half of it (512 of 1024 PTEs); a
        // level-2 page a quarter of the directory, two sptes (2 MiB each) per 4 MiB PDE.
        if sp.level == 1 { return sp.gfn << 12 + UInt64(sp.role.quadrant * 512 + index) * 4 }
        return sp.gfn << 12 + UInt64(sp.role.quadrant * 256 + index / 2) * 4
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

    /// What syncing the entries of one page needs, worked out once per page: where its
    /// guest table is (read straight from the frame), and the checks' constants.
    struct SyncContext {
        /// The guest's entries (entry 0 first; a 32-bit table's quadrant already applied).
        var guest: GuestTableView
        var reserved: UInt64
        var executeDisable: Bool
        var cleanLeafWritable: Bool
        var has4ByteGPTE: Bool
        var roleAccess: UInt8

        /// Guest entry `index`: 0 for a table never written, nil beyond guest memory.
        @inline(__always) func gpte(_ index: Int) -> UInt64? { guest.entry(index) }
    }

    func syncContext(_ sp: ShadowPage, vcpu: ShadowVCPU) -> SyncContext {
        let guest = GuestTableView(memory: machine.memory, first: gpteAddress(sp, 0),
                                   entrySize: sp.role.has4ByteGPTE ? 4 : 8)
        return SyncContext(guest: guest,
                           reserved: vcpu.vcpu.controls.reservedBits(level: 1, isLeaf: true),
                           executeDisable: vcpu.vcpu.controls.executeDisableEnabled,
                           cleanLeafWritable: injected.omits(.dirtyCleanLeaf), has4ByteGPTE: sp.role.has4ByteGPTE,
                           roleAccess: sp.role.access)
    }

    /// KVM's `sync_spte`: re-derives spte `index` of leaf page `sp` from its guest entry.
    /// Returns 1 when a TLB flush is needed, 0 when not, -1 when the page must be zapped.
    func syncSPTE(_ sp: ShadowPage, _ index: Int, vcpu: ShadowVCPU) -> Int {
        guard SPTE.isPresent(sp.spt[index]) else { return 0 }
        defer { policy.didPropagate(sp, index, in: self) }
        stats.sptesResynced &+= 1
        return syncSPTE(sp, index, vcpu: vcpu, syncContext(sp, vcpu: vcpu))
    }

    /// `syncSPTE` for a present spte, without telling the policy or counting it (the
    /// caller does both).
    @inline(__always)
    func syncSPTE(_ sp: ShadowPage, _ index: Int, vcpu: ShadowVCPU, _ c: SyncContext) -> Int {
        let spte = sp.spt[index]
        guard let gpte = c.gpte(index) else { return -1 }
        // Not present, reserved bits, or never accessed: drop it.
        if gpte & PTE.present == 0 || gpte & c.reserved != 0 || gpte & PTE.accessed == 0 {
            dropSPTE(SPTERef(page: sp.id, index: index))
            stats.syncSPTEsDropped &+= 1
            return 1
        }
        let gfn = c.has4ByteGPTE ? (gpte & 0xFFFF_F000) >> 12 : (gpte & PTE.bits(51, 12)) >> 12
        var access = c.roleAccess & Access.of(gpte: gpte, executeDisableEnabled: c.executeDisable)
        if gpte & PTE.dirty == 0 && !c.cleanLeafWritable { access &= ~Access.write }
        // Sync never changes the frame in place: a new frame means drop and refault.
        if gfn != SPTE.target(spte) {
            dropSPTE(SPTERef(page: sp.id, index: index))
            stats.syncSPTEsDropped &+= 1
            return 1
        }
        if SPTE.access(spte) == access { return 0 }
        let new = makeSPTE(sp: sp, access: access, gfn: gfn, old: spte, prefetch: false, synchronizing: true,
                           vcpu: vcpu).spte
        sp.spt[index] = new
        noteChange(sp.id)
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
        let context = syncContext(sp, vcpu: vcpu)
        let policy = self.policy, spt = sp.spt
        var resynced: UInt64 = 0
        defer { stats.sptesResynced &+= resynced }
        for i in 0..<512 where SPTE.isPresent(spt[i]) {
            resynced &+= 1
            let r = syncSPTE(sp, i, vcpu: vcpu, context)
            policy.didPropagate(sp, i, in: self)
            if r < 0 {
                prepareZap(sp)
                return -1
            }
            flush |= r
        }
        stats.lockWork &+= 1
        return flush
    }

    /// A shadow page and the index of an entry (in it, or of it in its parent).
    /// A struct, not a tuple: arrays of tuples holding a class reference look their
    /// metadata up by mangled name on every growth.
    struct PageEntry {
        let page: ShadowPage
        let index: Int
    }

    /// An unsync leaf and the path of (parent, index) that reached it, nearest first.
    struct LeafWithPath {
        let page: ShadowPage
        let path: [PageEntry]
    }

    /// One batch of KVM's `mmu_unsync_walk` (its `kvm_mmu_pages`): the parent, then path
    /// nodes and unsync leaves in depth-first order, each with its index in its parent;
    /// at most 16 entries, path nodes included. Stale bitmap bits met on the way are
    /// cleared (one bit each, as KVM does).
    struct UnsyncBatch {
        var entries: [PageEntry]
        static let capacity = 16

        init() {
            entries = []
            entries.reserveCapacity(UnsyncBatch.capacity)
        }

        /// Adds an entry; true when the batch is now full. A leaf already in the batch
        /// (reached through a second parent entry) is not added again.
        mutating func add(_ page: ShadowPage, _ index: Int) -> Bool {
            if page.unsync && entries.contains(where: { $0.page == page }) { return false }
            entries.append(PageEntry(page: page, index: index))
            return entries.count == UnsyncBatch.capacity
        }

        /// The unsync leaves, each with the path of (parent, index) that reached it,
        /// nearest parent first (KVM's for_each_sp with mmu_pages_first/next).
        var leavesWithPaths: [LeafWithPath] {
            var result: [LeafWithPath] = []
            guard let first = entries.first else { return result }
            // Per level: the position in `entries` of the latest page at that level, and
            // the index of that page's entry in its parent (+1; 0 = none). Inline words:
            // no allocation per batch.
            var parentAt = LevelWords(), indexAt = LevelWords()
            parentAt[first.page.level] = 1
            for position in 1..<entries.count {
                let entry = entries[position]
                indexAt[entry.page.level] = UInt64(entry.index + 1)
                if entry.page.level == 1 {
                    var path: [PageEntry] = []
                    var level = 2
                    while level <= 5, parentAt[level] != 0, indexAt[level - 1] != 0 {
                        path.append(PageEntry(page: entries[Int(parentAt[level]) - 1].page, index: Int(indexAt[level - 1]) - 1))
                        level += 1
                        if level > first.page.level { break }
                    }
                    result.append(LeafWithPath(page: entry.page, path: path))
                } else {
                    parentAt[entry.page.level] = UInt64(position + 1)
                }
            }
            return result
        }
    }

    /// KVM's `mmu_unsync_walk`. Returns nil when nothing below `parent` is unsync.
    func collectUnsync(below parent: ShadowPage) -> UnsyncBatch? {
        guard parent.unsyncChildren > 0 else { return nil }
        var batch = UnsyncBatch()
        _ = batch.add(parent, -1)
        let found = walkUnsync(parent, &batch)
        return found == 0 ? nil : batch
    }

    /// KVM's `__mmu_unsync_walk`: unsync leaves found (or -1 when the batch filled).
    private func walkUnsync(_ sp: ShadowPage, _ batch: inout UnsyncBatch) -> Int {
        var leaves = 0
        // Set bits word by word (the walk only clears bits, so a bit is re-tested just
        // before use, and nothing is allocated per level).
        for w in 0..<8 {
            var bits = sp.unsyncWord(w)
            while bits != 0 {
                let index = w << 6 | bits.trailingZeroBitCount
                bits &= bits - 1
                guard sp.unsyncBit(index) else { continue }
                let r = walkUnsyncEntry(sp, index, &batch, leaves: &leaves)
                if r < 0 { return r }
            }
        }
        return leaves
    }

    /// One set bit of `walkUnsync`: -1 when the batch filled, else 0.
    private func walkUnsyncEntry(_ sp: ShadowPage, _ index: Int, _ batch: inout UnsyncBatch, leaves: inout Int) -> Int {
        guard let c = child(of: sp.spt[index], level: sp.level) else {
            clearUnsyncBit(sp, index)
            return 0
        }
        if c.unsyncChildren > 0 {
            if batch.add(c, index) { return -1 }
            let r = walkUnsync(c, &batch)
            if r == 0 {
                clearUnsyncBit(sp, index)
            } else if r > 0 {
                leaves += r
            } else {
                return r
            }
        } else if c.unsync {
            leaves += 1
            if batch.add(c, index) { return -1 }
        } else {
            clearUnsyncBit(sp, index)
        }
        return 0
    }

    /// Clears one stale bit (KVM's `clear_unsync_child_bit`).
    func clearUnsyncBit(_ sp: ShadowPage, _ index: Int) {
        guard sp.unsyncBit(index) else { return }
        sp.clearUnsyncBit(index)
        sp.unsyncChildren -= 1
        noteChange(sp.id)
    }

    /// KVM's `mmu_pages_clear_parents`: after a leaf is synced or zapped, clear its bit
    /// along the path it was found by, going up while a parent has no unsync child left.
    func clearPath(_ path: [PageEntry]) {
        for step in path {
            clearUnsyncBit(step.page, step.index)
            if step.page.unsyncChildren > 0 { return }
        }
    }

    /// Clears `index` of `sp` and, as bitmaps empty, the bit of `sp` in every parent
    /// (used when a page is synced outside a walk, by list-based policies).
    func clearUnsyncChild(_ sp: ShadowPage, _ index: Int) {
        guard sp.unsyncBit(index) else { return }
        clearUnsyncBit(sp, index)
        if sp.unsyncChildren == 0 {
            for ref in sp.parents { if let p = page(ref.page) { clearUnsyncChild(p, Int(ref.index)) } }
        }
    }

    /// After syncing `sp` outside a walk, clears its bit in every parent (and upward as
    /// bitmaps empty).
    func clearParents(of sp: ShadowPage) {
        for ref in sp.parents { if let p = page(ref.page) { clearUnsyncChild(p, Int(ref.index)) } }
    }

    /// KVM's `mmu_sync_children`: syncs every unsync page reachable below `parent`, in
    /// batches of 16: write-protect the batch (one remote flush if anything was
    /// writable), then sync each page and clear it in its parents.
    public func syncChildren(of parent: ShadowPage, vcpu: ShadowVCPU) {
        var flush = false
        while let batch = collectUnsync(below: parent) {
            let leaves = batch.leavesWithPaths
            var protected = false
            for leaf in leaves { protected = writeProtect(gfn: leaf.page.gfn) || protected }
            if protected {
                if invalidList.isEmpty { flushRemoteTLBs() } else { commitZaps() }
                flush = false
            }
            for leaf in leaves {
                let sp = leaf.page
                unlinkUnsync(sp)
                if isLive(sp) && syncPage(sp, vcpu: vcpu) > 0 { flush = true }
                clearPath(leaf.path)
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
        guard sp.unsync, isLive(sp) else { return false }
        let protected = writeProtect(gfn: sp.gfn)
        unlinkUnsync(sp)
        let r = syncPage(sp, vcpu: vcpu)
        if isLive(sp) && !sp.role.invalid { clearParents(of: sp) }
        return protected || r > 0
    }
}

extension ShadowMMU {
    /// Samples the unsync pages lying around as `cr3` is loaded, and how many of them
    /// the shadow root for it (when one exists) reaches through its unsync-child bits.
    func sampleRootLoad(cr3: UInt64, role: PageRole) {
        var reached: UInt64 = 0
        for id in hashChain((cr3 & PTE.bits(51, 12)) >> 12) {
            guard let sp = page(id), !sp.role.invalid, sp.role == role else { continue }
            reached = countReachableUnsync(sp)
            break
        }
        rootLoads.add(lyingAround: stats.mmuUnsync, reached: reached)
    }

    /// Unsync leaves below `sp` along set unsync-child bits (read only).
    func countReachableUnsync(_ sp: ShadowPage) -> UInt64 {
        guard sp.unsyncChildren > 0 else { return 0 }
        var n: UInt64 = 0
        for w in 0..<8 {
            var bits = sp.unsyncWord(w)
            while bits != 0 {
                let index = w << 6 | bits.trailingZeroBitCount
                bits &= bits - 1
                guard let c = child(of: sp.spt[index], level: sp.level) else { continue }
                n &+= c.unsync ? 1 : countReachableUnsync(c)
            }
        }
        return n
    }
}

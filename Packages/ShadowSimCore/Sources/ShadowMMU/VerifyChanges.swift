import X86

/// The invariants of `verify`, re-examined only where something changed.
extension ShadowMMU {
    /// Every violated invariant, as `verify` reports them, looking only at the pages and
    /// frames that changed since the previous call (the first call looks at everything).
    ///
    /// Global properties are kept as running tallies (leaf sptes, links, parent entries,
    /// unsync and live pages, reverse-map entries), so a change that breaks one where no
    /// page was marked still shows as a tally mismatch. The cost of a call is the work done
    /// since the last one, not the size of the MMU: the checker calls it at every sync
    /// point. `verify` stays the reference; the fuzz corpus replays compare the two.
    public func verifyChanges() -> [String] {
        let log: ChangeLog
        if let existing = changeLog {
            log = existing
        } else {
            log = ChangeLog()
            log.tlbChecksOwed = Array(repeating: [], count: vcpus.count)
            changeLog = log
            for id in 0..<arena.count { log.mark(Int32(id)) }
            for gfn in rmap.mappedFrames { log.mark(frame: gfn) }
        }
        let (ids, frames) = log.take()
        var problems: [String] = []
        var newlySynced: [UInt64] = []
        for id in ids {
            guard let sp = page(id) else {
                log.record(ChangeLog.Contribution(), for: id)
                continue
            }
            log.record(checkChangedPage(sp, into: &problems), for: id)
            if isSyncedGuestTable(sp) { newlySynced.append(sp.gfn) }
        }
        for gfn in frames { checkReverseMap(of: gfn, log: log, into: &problems) }
        checkTallies(log, into: &problems)
        checkRootCounts(log, changed: ids, into: &problems)
        checkTLBWriteProtection(log, newlySynced: newlySynced, into: &problems)
        return problems
    }

    func isSyncedGuestTable(_ sp: ShadowPage) -> Bool {
        !sp.role.invalid && sp.hasGPTEs && !sp.unsync
    }

    /// Whether `gfn` has a valid, synced shadow page: the frame must be read-only in
    /// every spte and TLB entry (invariants 1 and 6; agile's nested walks too).
    func isSyncedGuestTable(gfn: UInt64) -> Bool {
        hashChain(gfn).contains { page($0).map(isSyncedGuestTable) ?? false }
    }

    /// The local invariants of one changed page; what it adds to the tallies.
    private func checkChangedPage(_ sp: ShadowPage, into problems: inout [String]) -> ChangeLog.Contribution {
        var c = ChangeLog.Contribution()
        c.live = 1
        var name: String { "shadow page \(sp.id) (gfn \(hex(sp.gfn)), \(sp.role))" }
        if !sp.role.invalid {
            let list = Array(hashChain(sp.gfn))
            if !list.contains(sp.id) { problems.append("\(name): not in the hash under its gfn") }
            for id in list where id != sp.id {
                if let other = page(id), !other.role.invalid, other.gfn == sp.gfn, other.role == sp.role {
                    problems.append("\(name): another valid page has the same gfn and role")
                }
            }
        }
        if sp.unsync { c.unsync = 1 }
        checkUnsyncState(sp, name: name, into: &problems)
        var mapping: [String] = []
        problems += checkSPTEs(sp, name: name, leaf: { i, spte, ref in
            switch sp.level {
            case 1: c.leaves4K += 1
            case 2: c.leaves2M += 1
            default: c.leaves1G += 1
            }
            let gfn = SPTE.target(spte)
            if !rmap.contains(ref, of: gfn) {
                mapping.append("rmap of gfn \(hex(gfn)) does not list spte \(i) of page \(sp.id), which maps it")
            }
            if spte & SPTE.writable != 0, isShadowed(gfn), let table = shadowPages(of: gfn).first(where: isSyncedGuestTable) {
                mapping.append("guest table gfn \(hex(gfn)) is shadowed and synced (page \(table.id)) but spte \(i) of page \(sp.id) maps it writable")
            }
        }, link: { ref, child in
            c.links += 1
            if !child.parents.contains(ref) {
                mapping.append("shadow page \(child.id): parent list lacks spte \(ref.index) of page \(sp.id), which points to it")
            }
        })
        problems += mapping
        c.parentEntries = sp.parents.count
        for ref in sp.parents {
            guard let holder = page(ref.page) else {
                problems.append("\(name): parent list names spte \(ref.index) of freed page \(ref.page)")
                continue
            }
            let spte = holder.spt[Int(ref.index)]
            if child(of: spte, level: holder.level) != sp {
                problems.append("\(name): parent list names spte \(ref.index) of page \(holder.id), which does not point to it")
            } else if (sp.unsync || sp.unsyncChildren > 0) && !holder.unsyncBit(Int(ref.index)) {
                problems.append("shadow page \(holder.id) (gfn \(hex(holder.gfn)), \(holder.role)): entry \(ref.index) leads to unsync page \(sp.id) but its unsync bit is clear")
            }
        }
        // A synced guest table is never writable through any spte.
        if isSyncedGuestTable(sp) {
            problems += writableMappings(ofSyncedTable: sp)
        } else if sp.hasGPTEs && !sp.role.invalid {
            // Unsync: 4 KiB mappings may be writable, a large spte over it never is (the
            // per-spte check of its holder only runs when the holder changes).
            forEachLeafSPTE(mapping: sp.gfn) { holder, index in
                let spte = holder.spt[index]
                guard holder.level > 1, spte & SPTE.large != 0, spte & SPTE.writable != 0 else { return }
                problems.append("shadow page \(holder.id) (gfn \(hex(holder.gfn)), \(holder.role)): entry \(index) is a writable large spte over a region that holds a shadowed guest table")
            }
        }
        return c
    }

    /// Every reverse-map entry of a changed frame names a present leaf spte mapping it.
    private func checkReverseMap(of gfn: UInt64, log: ChangeLog, into problems: inout [String]) {
        let list = rmap.refs(of: gfn)
        log.recordRmap(gfn, length: list.count)
        for ref in list {
            let spte = page(ref.page)?.spt[Int(ref.index)] ?? 0
            let level = page(ref.page)?.level ?? 0
            if !SPTE.isPresent(spte) || (level != 1 && spte & SPTE.large == 0) || SPTE.target(spte) != gfn {
                problems.append("rmap of gfn \(hex(gfn)) lists spte \(ref.index) of page \(ref.page), which does not map it")
            }
        }
    }

    /// Gauges against the tallies, and the tallies against each other: as many reverse-map
    /// entries as leaf sptes, as many parent entries as links (duplicates and entries left
    /// behind by a freed page show here).
    private func checkTallies(_ log: ChangeLog, into problems: inout [String]) {
        let t = log.total
        if t.unsync != Int(stats.mmuUnsync) { problems.append("mmu_unsync is \(stats.mmuUnsync) but \(t.unsync) pages are unsync") }
        if t.live != Int(stats.shadowPages) { problems.append("shadow_pages is \(stats.shadowPages) but \(t.live) pages exist") }
        if rootWalk == .shadow
            && (t.leaves4K != Int(stats.pages4K) || t.leaves2M != Int(stats.pages2M) || t.leaves1G != Int(stats.pages1G)) {
            problems.append("pages_4k/2m/1g are \(stats.pages4K)/\(stats.pages2M)/\(stats.pages1G) but \(t.leaves4K)/\(t.leaves2M)/\(t.leaves1G) leaf sptes are present")
        }
        let leaves = t.leaves4K + t.leaves2M + t.leaves1G
        if log.rmapEntries != leaves { problems.append("the reverse maps list \(log.rmapEntries) sptes but \(leaves) leaf sptes are present") }
        if t.parentEntries != t.links {
            problems.append("parent lists hold \(t.parentEntries) entries but \(t.links) sptes link to child pages")
        }
    }

    /// Root counts of the pages that hold or held roots, or changed.
    private func checkRootCounts(_ log: ChangeLog, changed ids: [Int32], into problems: inout [String]) {
        var rootRefs: [Int32: Int] = [:]
        for v in vcpus {
            for slot in [v.root] + v.previousRoots where slot.isValid {
                for sp in v.rootPages(slot) { rootRefs[sp.id, default: 0] += 1 }
            }
        }
        var holders = Set<Int32>()
        for id in log.rootHolders.union(rootRefs.keys).union(ids) {
            guard let sp = page(id) else { continue }
            if sp.rootCount != (rootRefs[id] ?? 0) {
                problems.append("shadow page \(sp.id): root count \(sp.rootCount) but \(rootRefs[id] ?? 0) root slots use it")
            }
            if sp.rootCount > 0 { holders.insert(id) }
        }
        log.rootHolders = holders
    }

    /// A guest table that became synced is write-protected in every vCPU's TLB once that
    /// vCPU has no flush pending (until then, the check is owed).
    private func checkTLBWriteProtection(_ log: ChangeLog, newlySynced: [UInt64], into problems: inout [String]) {
        if log.tlbChecksOwed.count < vcpus.count {
            log.tlbChecksOwed.append(contentsOf: repeatElement([], count: vcpus.count - log.tlbChecksOwed.count))
        }
        for (i, v) in vcpus.enumerated() {
            let owed = log.tlbChecksOwed[i].union(newlySynced)
            guard !owed.isEmpty else { continue }
            if v.pending.contains(.flushAll) || v.pending.contains(.flushCurrent) {
                log.tlbChecksOwed[i] = owed
                continue
            }
            log.tlbChecksOwed[i] = []
            let ranges = v.vcpu.tlb.writableFrameRanges()
            guard !ranges.isEmpty else { continue }
            for gfn in owed.sorted() where isSyncedGuestTable(gfn: gfn) && ranges.contains(where: { $0.contains(gfn) }) {
                problems.append("vcpu[\(v.index + 1)]'s TLB still maps gfn \(hex(gfn)) writable, but it is a shadowed, synced guest table")
            }
        }
    }
}

import X86

/// The engine's invariants (see `ShadowMMU`), checked on demand.
extension ShadowMMU {
    /// Every violated invariant, as a sentence; empty when the MMU is consistent.
    public func verify() -> [String] {
        var problems: [String] = []
        var unsyncCount: UInt64 = 0
        var leafCounts: [Int: UInt64] = [1: 0, 2: 0, 3: 0]
        struct PageKey: Hashable { let gfn: UInt64; let role: UInt32 }
        var seenKeys = Set<PageKey>()
        var expectedRmap: [UInt64: [SPTERef]] = [:]
        var expectedParents: [Int32: [SPTERef]] = [:]
        var live = 0

        for sp in livePages {
            live += 1
            var name: String { "shadow page \(sp.id) (gfn \(hex(sp.gfn)), \(sp.role))" }
            if !sp.role.invalid {
                let key = PageKey(gfn: sp.gfn, role: sp.role.word)
                if !seenKeys.insert(key).inserted { problems.append("\(name): another valid page has the same gfn and role") }
                if !hashChain(sp.gfn).contains(sp.id) { problems.append("\(name): not in the hash under its gfn") }
            }
            if sp.unsync { unsyncCount += 1 }
            checkUnsyncState(sp, name: name, into: &problems)
            problems += checkSPTEs(sp, name: name, leaf: { _, spte, ref in
                expectedRmap[SPTE.target(spte), default: []].append(ref)
                leafCounts[sp.level, default: 0] += 1
            }, link: { ref, child in
                expectedParents[child.id, default: []].append(ref)
            })
        }
        // Nested links: the index names exactly the nested-link sptes.
        var indexed: UInt64 = 0
        for (gfn, refs) in nested.links {
            for ref in refs {
                indexed += 1
                let spte = page(ref.page)?.spt[Int(ref.index)] ?? 0
                if !SPTE.isNestedLink(spte) || SPTE.target(spte) != gfn {
                    problems.append("the nested-link index lists spte \(ref.index) of page \(ref.page) under gfn \(hex(gfn)), which is no nested link to it")
                }
            }
        }
        if indexed != stats.nestedLinks { problems.append("nested_links is \(stats.nestedLinks) but the index lists \(indexed)") }
        // 4. Gauges.
        if unsyncCount != stats.mmuUnsync { problems.append("mmu_unsync is \(stats.mmuUnsync) but \(unsyncCount) pages are unsync") }
        if UInt64(live) != stats.shadowPages { problems.append("shadow_pages is \(stats.shadowPages) but \(live) pages exist") }
        if rootWalk == .shadow
            && (leafCounts[1] != stats.pages4K || leafCounts[2] != stats.pages2M || leafCounts[3] != stats.pages1G) {
            problems.append("pages_4k/2m/1g are \(stats.pages4K)/\(stats.pages2M)/\(stats.pages1G) but \(leafCounts[1]!)/\(leafCounts[2]!)/\(leafCounts[3]!) leaf sptes are present")
        }
        // 5. Reverse maps and parent lists are exact.
        // (Compared as sorted keys: equal lists with no duplicates, without building sets.)
        func sortedKeys(_ refs: [SPTERef]) -> [UInt64] {
            refs.map { UInt64(UInt32(bitPattern: $0.page)) << 16 | UInt64(UInt16(bitPattern: $0.index)) }.sorted()
        }
        for (gfn, refs) in expectedRmap where refs.count != rmap.count(of: gfn) || sortedKeys(refs) != sortedKeys(rmap.refs(of: gfn)) {
            problems.append("rmap of gfn \(hex(gfn)) lists \(rmap.count(of: gfn)) sptes, \(refs.count) map it")
        }
        for gfn in rmap.mappedFrames where expectedRmap[gfn] == nil {
            problems.append("rmap of gfn \(hex(gfn)) lists \(rmap.count(of: gfn)) sptes but none map it")
        }
        for sp in livePages where sp.parents.count != (expectedParents[sp.id]?.count ?? 0)
            || sortedKeys(sp.parents) != sortedKeys(expectedParents[sp.id] ?? []) {
            problems.append("shadow page \(sp.id): parent list has \(sp.parents.count) entries, \(expectedParents[sp.id]?.count ?? 0) sptes point to it")
        }
        // 1. A synced guest table is never writable through any spte.
        for sp in livePages where !sp.role.invalid && sp.hasGPTEs && !sp.unsync {
            problems += writableMappings(ofSyncedTable: sp)
        }
        // 6. A host-initiated write protection has reached every vCPU's TLB.
        let synced = Set(livePages.filter { !$0.role.invalid && $0.hasGPTEs && !$0.unsync }.map(\.gfn))
        for v in vcpus where !synced.isEmpty && !v.pending.contains(.flushAll) && !v.pending.contains(.flushCurrent) {
            let ranges = v.vcpu.tlb.writableFrameRanges()
            func writable(_ gfn: UInt64) -> Bool {
                var (lo, hi) = (0, ranges.count)
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if ranges[mid].upperBound <= gfn { lo = mid + 1 } else { hi = mid }
                }
                return lo < ranges.count && ranges[lo].contains(gfn)
            }
            for gfn in synced.filter(writable).sorted().prefix(3) {
                problems.append("vcpu[\(v.index + 1)]'s TLB still maps gfn \(hex(gfn)) writable, but it is a shadowed, synced guest table")
            }
        }
        // Roots.
        var rootRefs: [Int32: Int] = [:]
        for v in vcpus {
            for slot in [v.root] + v.previousRoots where slot.isValid {
                for sp in v.rootPages(slot) { rootRefs[sp.id, default: 0] += 1 }
            }
        }
        for sp in livePages where sp.rootCount != (rootRefs[sp.id] ?? 0) {
            problems.append("shadow page \(sp.id): root count \(sp.rootCount) but \(rootRefs[sp.id] ?? 0) root slots use it")
        }
        return problems
    }

    /// Calls `leaf` or `link` for each present spte of `sp`, and returns what is wrong
    /// with its links: one to a freed page, or (3. no hidden unsync page) one to an
    /// unsync page whose bit is clear.
    func checkSPTEs(_ sp: ShadowPage, name: @autoclosure () -> String,
                    leaf: (_ index: Int, _ spte: UInt64, _ ref: SPTERef) -> Void,
                    link: (_ ref: SPTERef, _ child: ShadowPage) -> Void) -> [String] {
        var problems: [String] = []
        for i in 0..<512 {
            let spte = sp.spt[i]
            guard SPTE.isPresent(spte) else { continue }
            let ref = SPTERef(page: sp.id, index: i)
            if sp.level == 1 || spte & SPTE.large != 0 {
                if sp.level > 1 && spte & SPTE.writable != 0 && !largeMappingAllowed(gfn: SPTE.target(spte), level: sp.level) {
                    problems.append("\(name()): entry \(i) is a writable large spte over a region that holds a shadowed guest table")
                }
                leaf(i, spte, ref)
            } else if SPTE.isNestedLink(spte) {
                problems += checkNestedLink(sp, i, name: name())
            } else if let child = page(Int32(SPTE.target(spte))) {
                link(ref, child)
                if (child.unsync || child.unsyncChildren > 0) && !sp.unsyncBit(i) {
                    problems.append("\(name()): entry \(i) leads to unsync page \(child.id) but its unsync bit is clear")
                }
            } else {
                problems.append("\(name()): entry \(i) points to a freed shadow page")
            }
        }
        return problems
    }

    /// A nested link: listed under its table, no unsync bit, and the guest entry it
    /// shadows still points at that table.
    func checkNestedLink(_ sp: ShadowPage, _ index: Int, name: @autoclosure () -> String) -> [String] {
        var problems: [String] = []
        let gfn = SPTE.target(sp.spt[index])
        if !(nested.links[gfn] ?? []).contains(SPTERef(page: sp.id, index: index)) {
            problems.append("\(name()): entry \(index) is a nested link to gfn \(hex(gfn)) missing from the nested-link index")
        }
        if sp.unsyncBit(index) { problems.append("\(name()): entry \(index) is a nested link with its unsync bit set") }
        if !sp.role.invalid, let gpte = guestEntry(sp, index), gpte & PTE.present != 0,
           guestFrame(of: gpte, sp: sp) != gfn {
            problems.append("\(name()): entry \(index) is a nested link to gfn \(hex(gfn)) but the guest entry now points elsewhere")
        }
        return problems
    }

    /// 1. The sptes that map synced guest table `sp` writable (large ones covering it
    /// included): each is a problem.
    func writableMappings(ofSyncedTable sp: ShadowPage) -> [String] {
        var problems: [String] = []
        forEachLeafSPTE(mapping: sp.gfn) { holder, index in
            guard holder.spt[index] & SPTE.writable != 0 else { return }
            problems.append("guest table gfn \(hex(sp.gfn)) is shadowed and synced (page \(sp.id)) but spte \(index) of page \(holder.id) maps it writable")
        }
        return problems
    }

    /// 2. Only indirect leaves go unsync; `unsyncChildren` counts the bitmap's bits.
    func checkUnsyncState(_ sp: ShadowPage, name: @autoclosure () -> String, into problems: inout [String]) {
        if sp.unsync && (sp.level != 1 || sp.role.direct) { problems.append("\(name()): unsync but not an indirect leaf") }
        if sp.unsyncChildren != sp.unsyncBitCount {
            problems.append("\(name()): unsyncChildren \(sp.unsyncChildren) but \(sp.unsyncBitCount) bits set")
        }
        // 4. A policy's unsync list holds exactly the unsync pages.
        if unsyncList != nil && (sp.listIndex >= 0) != sp.unsync {
            problems.append("\(name()): \(sp.unsync ? "unsync but not" : "synced but still") on the unsync list")
        }
    }
}

import X86

// Nested links: agile paging's switch (Gandhi, Hill and Swift, ISCA 2016). A non-leaf
// spte may point at a guest table's own frame instead of a shadow of it; the hardware
// walk then finishes in the guest's tables, each guest-physical address translated by
// the EPT. The table is not shadowed, so its stores run natively.
//
// Invariants (checked by `verify`):
// - `nested.links[gfn]` lists exactly the sptes that are nested links to `gfn`, and
//   `stats.nestedLinks` counts them; no nested link has an unsync bit.
// - The guest entry a nested link shadows points at the link's table (upper-level
//   tables are write-tracked: a store to that entry zaps the link).
// - A frame a nested walk cached writable in some TLB is in `nested.writable` until a
//   write protection of it flushes every vCPU (nested TLB entries are in no reverse map).

/// The nested-mode state of one MMU.
struct NestedState {
    /// Guest table frame → the sptes that link to it.
    var links: [UInt64: [SPTERef]] = [:]
    /// Frames (and 2 MiB regions, keyed as in `disallowLarge`) some TLB may hold writable
    /// from a nested walk.
    var writable = Set<UInt64>()
    /// The contents of each table switched to nested when last checked: the EPT dirty
    /// bit of its frame, read and cleared by `nestedTableWasWritten`.
    var snapshots: [UInt64: [UInt64]] = [:]
}

extension ShadowMMU {
    /// Points non-leaf spte `ref` at guest table `gfn` itself.
    func linkNested(_ ref: SPTERef, toTable gfn: UInt64, vcpu: ShadowVCPU) {
        guard let holder = page(ref.page) else { return }
        if SPTE.isPresent(holder.spt[Int(ref.index)]) { zapSPTE(holder, Int(ref.index)) }
        // A zapped child may have left its bit behind (cleared lazily by the unsync walk,
        // as KVM does); no walk of unsync pages ever goes through a nested link.
        clearUnsyncBit(holder, Int(ref.index))
        holder.spt[Int(ref.index)] = gfn << 12 | SPTE.present | SPTE.writable | SPTE.user | SPTE.accessed | SPTE.nestedLink
        nested.links[gfn, default: []].append(ref)
        stats.nestedLinks &+= 1
        noteChange(ref.page)
        if tracing { trace("shadowsim_nested_link", vcpu: vcpu, "gfn \(Self.hexDigits(gfn)) " + Self.traceDescription(of: holder) + " index \(ref.index)") }
    }

    /// Clears nested link `index` of `sp`.
    func clearNestedLink(_ sp: ShadowPage, _ index: Int) {
        let gfn = SPTE.target(sp.spt[index])
        sp.spt[index] = 0
        noteChange(sp.id)
        let ref = SPTERef(page: sp.id, index: index)
        guard var refs = nested.links[gfn], let i = refs.firstIndex(of: ref) else { return }
        refs.remove(at: i)
        nested.links[gfn] = refs.isEmpty ? nil : refs
        stats.nestedLinks &-= 1
    }

    /// Agile paging's switch of guest table `gfn`, asked by a policy whose
    /// `walkDecision` now answers `mode` for it. To `.nested`: its shadow pages are
    /// zapped (the next fault through it asks `walkDecision` and links it nested);
    /// refused (false) while a root uses it, there being no spte above a root. To
    /// `.shadow`: its nested links are cleared and every vCPU flushed (the hardware may
    /// cache the partial walks), so the next walk faults and shadows it. Either way
    /// under the lock; counted in `tables_to_nested` / `tables_to_shadow`.
    @discardableResult
    public func switchTable(_ gfn: UInt64, to mode: WalkDecision) -> Bool {
        let pages = shadowPages(of: gfn)
        switch mode {
        case .nested:
            guard !pages.contains(where: { $0.rootCount > 0 }) else { return false }
            underLock(work: UInt64(pages.count))
            for sp in pages { prepareZap(sp) }
            commitZaps()
            nested.snapshots[gfn] = tableContents(gfn)
            stats.tablesToNested &+= 1
        case .shadow:
            underLock()
            for ref in nested.links[gfn] ?? [] {
                if let holder = page(ref.page) { clearNestedLink(holder, Int(ref.index)) }
            }
            nested.snapshots[gfn] = nil
            flushRemoteTLBs()
            stats.tablesToShadow &+= 1
        }
        if tracing { trace("shadowsim_switch_table", "gfn \(Self.hexDigits(gfn)) to \(mode)") }
        return true
    }

    /// The EPT dirty bit of nested table `gfn`, read and cleared: whether the guest
    /// changed the table since the switch or the last call. (Modelled by comparing the
    /// table with a copy; a store that writes back the same value goes unseen.)
    public func nestedTableWasWritten(_ gfn: UInt64) -> Bool {
        let now = tableContents(gfn)
        defer { nested.snapshots[gfn] = now }
        return nested.snapshots[gfn] != now
    }

    /// The number of nested links to guest table `gfn`.
    public func nestedLinkCount(toTable gfn: UInt64) -> Int { nested.links[gfn]?.count ?? 0 }

    private func tableContents(_ gfn: UInt64) -> [UInt64] {
        let base = gfn << 12
        guard machine.memory.contains(base, size: 4096) else { return [] }
        return (0..<512).map { machine.memory.load(base + UInt64($0) * 8, size: 8) }
    }

    /// A nested walk's store to protected table `gfn`: the policy's `WriteDecision`,
    /// carried out as for a writable spte. True when the frame may now be mapped
    /// writable and the store run natively; false to emulate it.
    func nestedStoreAllowed(to gfn: UInt64, vcpu: ShadowVCPU, userWrite: Bool) -> Bool {
        let request = WritableMappingRequest(synchronizing: false, prefetch: false, vcpu: vcpu, userWrite: userWrite)
        switch policy.writeDecision(for: gfn, request, in: self) {
        case .unsyncAndAllow: return unsyncLeafShadows(of: gfn, request) && !isSyncedGuestTable(gfn: gfn)
        case .allow: return true
        case .keepProtected, .allowAndEmulateThisStore: return false
        }
    }

    /// Write protection of `gfn` must also reach TLB entries filled by nested walks: true
    /// (the caller flushes every vCPU) when one may hold it writable.
    func dropNestedWritable(_ gfn: UInt64) -> Bool {
        guard !nested.writable.isEmpty, !injected.omits(.nestedTLBEntries) else { return false }
        var found = nested.writable.remove(gfn) != nil
        found = nested.writable.remove(gfn >> 9 | 1 << 62) != nil || found
        found = nested.writable.remove(gfn >> 18 | 1 << 63) != nil || found
        return found
    }
}

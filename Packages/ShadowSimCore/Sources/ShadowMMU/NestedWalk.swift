import X86

// The two-dimensional walk: the hardware reads the guest's own tables, every
// guest-physical address (each table's and the final one) translated by the EPT.
// Nested paging walks this way from CR3 (`rootWalk == .nested`), agile paging from a
// nested link down; both are this one walk with one set of costs: `nested_walks`,
// `nested_walk_host_refs` (a 4-level EPT walk per guest level read nested and one for
// the final address; the guest levels themselves are the hardware walk's levels), and
// an EPT violation for each frame first touched.
//
// Invariants:
// - `eptMapped` holds each frame (or 2 MiB region, when host pages are large) a nested
//   walk mapped and no host invalidation has dropped since.
// - While dirty logging is on, a TLB entry a nested walk filled is writable only for a
//   frame in `eptWritable` (the EPT entries of the rest are read-only), and is 4 KiB;
//   each frame put there was logged.
// - While tables are shadowed, a frame a nested walk cached writable is in
//   `nested.writable` (NestedLinks.swift).

extension ShadowVCPU {
    /// A TLB miss whose walk reads the guest's `nestedLevels` lowest table levels
    /// through the EPT: all of them from CR3 under nested paging, those below a nested
    /// link under agile paging (the entries above are in sync, so a walk from CR3 reads
    /// the same). A guest fault found there is the guest's: delivered without an exit.
    func translateNested(_ va: UInt64, _ kind: AccessKind, isUser: Bool, nestedLevels: Int) throws(MachineError) -> AccessResult {
        stats.nestedWalks &+= 1
        stats.nestedWalkHostRefs &+= UInt64((nestedLevels + 1) * 4)
        return try walkThroughEPT(va, kind, isUser: isUser, tableLevels: nestedLevels) { t, gfn, justMapped in
            // The TLB caches the smaller of the guest's page and the EPT's (host) page,
            // and only 4 KiB where a large writable entry would cover a shadowed table
            // or a frame dirty logging must see written.
            let host = mmu.configuration.hostPageSize
            var size = t.pageSize.bytes > host.bytes ? host : t.pageSize
            let mayWrite = t.rights.contains(.writable) || kind == .write
            if mayWrite && size != .size4K && !mmu.largeMappingAllowed(gfn: gfn, level: size == .size2M ? 2 : 3) { size = .size4K }
            var exited = justMapped
            if rootIsShadowed && t.rights.contains(.writable) && size == .size4K && mmu.isSyncedGuestTable(gfn: gfn) {
                // Write protection across modes: the EPT entry of a shadowed, synced
                // table is read-only.
                guard kind == .write else {
                    t.rights.remove(.writable)
                    t.isDirty = false
                    return .fill(pageSize: size)
                }
                // A store exits and gets the policy's answer.
                stats.pfTaken &+= 1
                stats.exitsPageFault &+= 1
                mmu.underLock()
                guard mmu.nestedStoreAllowed(to: gfn, vcpu: self, userWrite: isUser) else {
                    stats.pfEmulate &+= 1
                    stats.insnEmulation &+= 1
                    return .emulate
                }
                stats.pfFixed &+= 1
                exited = true
            }
            if mmu.dirtyLogging && !mmu.eptWritable.contains(gfn) {
                if kind == .write {
                    // A store through a read-only EPT entry: an EPT violation (unless an
                    // exit for this access already handled it) that makes it writable
                    // and logs the frame.
                    mmu.eptWritable.insert(gfn)
                    mmu.noteWritableMapping(gfn)
                    if !exited {
                        stats.eptViolations &+= 1
                        stats.pfTaken &+= 1
                        stats.pfFixed &+= 1
                        stats.exitsPageFault &+= 1
                    }
                } else {
                    // The TLB may cache only what the EPT entry allows.
                    t.rights.remove(.writable)
                    t.isDirty = false
                }
            }
            if rootIsShadowed && t.rights.contains(.writable) {
                mmu.nested.writable.insert(size == .size4K ? gfn : size == .size2M ? gfn >> 9 | 1 << 62 : gfn >> 18 | 1 << 63)
            }
            return .fill(pageSize: size)
        }
    }

    /// What a walk through the EPT does with the translation it found.
    enum EPTWalkEnd {
        /// Cache it, as pieces of `pageSize` when that is smaller than the guest's page.
        case fill(pageSize: PageSize)
        /// The store exits and is emulated (nothing is cached).
        case emulate
    }

    /// The hardware's walk of the guest's own tables with each guest-physical address
    /// translated by the EPT. The tables at levels `1...tableLevels` and the final frame
    /// take an EPT violation when first touched; `translated` says what becomes of a
    /// translation (given its frame and whether that frame was just mapped); a guest
    /// fault goes to the guest.
    private func walkThroughEPT(_ va: UInt64, _ kind: AccessKind, isUser: Bool, tableLevels: Int,
                                translated: (inout Translation, _ gfn: UInt64, _ justMapped: Bool) -> EPTWalkEnd) throws(MachineError) -> AccessResult {
        let (outcome, walk) = try guestWalk(va, kind, isUser: isUser, software: false)
        for level in 1...tableLevels where walk.seen[level] { mapInEPT(gfn: walk.addresses[level] >> 12) }
        switch outcome {
        case .translated(var t):
            let gfn = t.physicalAddress >> 12
            let violated = mapInEPT(gfn: gfn)
            switch translated(&t, gfn, violated) {
            case .fill(let size):
                fillTLB(va, t, pageSize: size)
                return .ok(t.physicalAddress)
            case .emulate:
                var r = AccessResult.ok(t.physicalAddress)
                r.needsEmulation = true
                return r
            }
        case .pageFault(let code, _):
            vcpu.tally.countPageFault(code)
            vcpu.tlb.flushAddress(va, pcid: vcpu.currentPCID, includeGlobal: true)
            return .pageFault(code, at: va)
        case .generalProtection:
            return .generalProtection
        }
    }

    /// Caches a translation from the guest's own tables, as a piece of `pageSize` when
    /// that is smaller than the guest's page.
    private func fillTLB(_ va: UInt64, _ translation: Translation, pageSize: PageSize) {
        var t = translation
        let global = t.isGlobal && vcpu.cr4 & CR4.pge != 0
        if pageSize.bytes < t.pageSize.bytes {
            let guestPage = t.pageSize
            t.pageSize = pageSize
            t.pageBase = t.physicalAddress & ~pageSize.offsetMask
            vcpu.tlb.insertPiece(va, translation: t, of: guestPage, pcid: vcpu.currentPCID, global: global)
        } else {
            vcpu.tlb.insert(va, translation: t, pcid: vcpu.currentPCID, global: global)
        }
    }

    /// Maps `gfn` in the EPT if it is not; true when that took an EPT violation.
    @discardableResult
    private func mapInEPT(gfn: UInt64) -> Bool {
        let huge = mmu.configuration.hostPageSize != .size4K
        let key = huge ? gfn >> 9 | 1 << 62 : gfn
        guard mmu.eptMapped.insert(key).inserted else { return false }
        stats.eptViolations &+= 1
        stats.pfTaken &+= 1
        stats.pfFixed &+= 1
        stats.exitsPageFault &+= 1
        // Under nested paging the EPT's leaves are the MMU's pages; with shadow pages
        // too (nested links) those gauges count sptes, and the EPT is not counted.
        if mmu.rootWalk == .nested {
            if huge { mmu.stats.pages2M &+= 1 } else { mmu.stats.pages4K &+= 1 }
        }
        // An EPT violation maps the frame: KVM's TDP MMU traces the request.
        if mmu.tracing {
            mmu.trace("kvm_mmu_spte_requested", vcpu: self,
                      "gfn \(ShadowMMU.hexDigits(gfn)) pfn \(ShadowMMU.hexDigits(gfn)) level \(huge ? 2 : 1)")
        }
        return true
    }
}

import X86

/// What a guest walk found, in the form the shadow fault path needs (KVM's
/// `struct guest_walker`).
struct GuestWalk {
    var levels: Int
    /// Per level (index = level): the entry's value before the walk and its address.
    var entries = LevelWords()
    var addresses = LevelWords()
    var seen = LevelFlags()
    var leafLevel = 1
    var gfn: UInt64 = 0
    var gpa: UInt64 = 0
    /// Access of the whole translation (KVM's pte_access), in `Access` bits.
    var pteAccess: UInt8 = 0
    var executeDisable = false

    /// The gfn of the guest table at `level` (the one holding level-`level` entries).
    func tableGFN(level: Int) -> UInt64 { addresses[level] >> 12 }

    /// Access granted by the entries above the table at `level` (KVM's pt_access).
    func accessAbove(level: Int) -> UInt8 {
        var access = Access.all
        for l in stride(from: levels, to: level, by: -1) where seen[l] {
            access &= Access.of(gpte: entries[l], executeDisableEnabled: executeDisable)
        }
        return access
    }
}

/// Six words indexed by paging level (0 unused), stored inline: a walk allocates nothing.
struct LevelWords {
    private var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0, w3: UInt64 = 0, w4: UInt64 = 0, w5: UInt64 = 0

    subscript(level: Int) -> UInt64 {
        get {
            switch level {
            case 0: w0
            case 1: w1
            case 2: w2
            case 3: w3
            case 4: w4
            default: w5
            }
        }
        set {
            switch level {
            case 0: w0 = newValue
            case 1: w1 = newValue
            case 2: w2 = newValue
            case 3: w3 = newValue
            case 4: w4 = newValue
            default: w5 = newValue
            }
        }
    }
}

/// A flag per paging level, as bits.
struct LevelFlags {
    private var bits: UInt8 = 0

    subscript(level: Int) -> Bool {
        get { bits & (1 << UInt8(level)) != 0 }
        set { if newValue { bits |= 1 << UInt8(level) } else { bits &= ~(1 << UInt8(level)) } }
    }

    var count: Int { bits.nonzeroBitCount }
}

/// Records what a walk reads while applying its A/D updates to guest memory.
struct RecordingStore: PagingStructureStore {
    let memory: GuestMemory
    let entrySize: Int
    var walk: GuestWalk
    var unbacked: UInt64?
    var flagUpdates = 0

    mutating func loadEntry(at address: UInt64, level: Int) -> UInt64 {
        guard memory.contains(address, size: entrySize) else {
            if unbacked == nil { unbacked = address }
            return 0
        }
        let value = memory.load(address, size: entrySize)
        walk.entries[level] = value
        walk.addresses[level] = address
        walk.seen[level] = true
        return value
    }

    mutating func setEntryBits(_ bits: UInt64, at address: UInt64, level: Int) {
        guard memory.contains(address, size: entrySize) else { return }
        memory.store(address, memory.load(address, size: entrySize) | bits, size: entrySize)
        flagUpdates += 1
    }
}

/// How a shadow page fault ended (KVM's RET_PF_*, plus the guest's own faults).
enum FaultOutcome {
    case fixed, spurious, retry
    case emulate(gpa: UInt64)
    case inject(AccessResult)
}

extension ShadowVCPU {
    // MARK: VCPUBackend: TLB misses

    public var handlesProtectionFaults: Bool { true }

    public func translateMiss(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool) throws(MachineError) -> AccessResult {
        guard rootIsShadowed else {
            // Nested paging: the whole walk is two-dimensional, from CR3.
            stats.tdpWalks &+= 1
            vcpu.tally.walks &+= 1
            return try translateNested(va, kind, isUser: isUser, nestedLevels: vcpu.mode.levels)
        }
        let previous = mmu.actingReference
        mmu.actingReference = UnownedReference(self)
        defer { mmu.actingReference = previous }
        if !pending.isEmpty || !root.isValid { try enterGuest() }
        for _ in 0..<8 {
            stats.shadowWalks &+= 1
            vcpu.tally.walks &+= 1
            var present = false
            if let (spt, index, level) = shadowLeafSlot(for: va) {
                let spte = spt[index]
                if SPTE.isNestedLink(spte) { return try translateNested(va, kind, isUser: isUser, nestedLevels: level - 1) }
                var rights = PageRights(rawValue: 0)
                if spte & SPTE.writable != 0 { rights.insert(.writable) }
                if spte & SPTE.user != 0 { rights.insert(.user) }
                if spte & SPTE.executeDisable != 0 { rights.insert(.executeDisable) }
                if hardwarePermissions.permits(kind, isUser: isUser, rights: rights) {
                    spt[index] = spte | SPTE.accessed
                    let size: PageSize = level == 1 ? .size4K : level == 2 ? .size2M : .size1G
                    let base = (SPTE.target(spte) << 12) & ~size.offsetMask
                    vcpu.tlb.insert(va, translation: Translation(
                        physicalAddress: base | (va & size.offsetMask), pageBase: base, pageSize: size,
                        rights: rights, isGlobal: false, isDirty: rights.contains(.writable),
                        leafLevel: level, leafEntryAddress: 0), pcid: vcpu.currentPCID, global: false)
                    return .ok(base | (va & size.offsetMask))
                }
                present = true
            }
            let errorCode = PageFaultCode.accessBits(kind: kind, isUser: isUser, controls: vcpu.controls)
                | (present ? PageFaultCode.present : 0)
            switch try pageFault(va, kind, isUser: isUser, errorCode: errorCode) {
            case .fixed, .spurious, .retry:
                try enterGuest()
            case .inject(let fault):
                if fault.outcome == .pageFault {
                    vcpu.tally.countPageFault(fault.errorCode)
                    if fault.errorCode & PageFaultCode.present != 0 && fault.errorCode & PageFaultCode.reservedBit == 0 {
                        mmu.policy.guestProtectionFaultInjected(self, va)
                    }
                }
                try enterGuest()
                return fault
            case .emulate(let gpa):
                guard kind == .write else {
                    throw .unsupported("the shadow MMU asked to emulate a \(kind) at \(hex(va)); only stores are emulated")
                }
                stats.insnEmulation &+= 1
                faultHitLastRetry = lastRetriedStore == va
                lastRetriedStore = nil
                var r = AccessResult.ok(gpa)
                r.needsEmulation = true
                return r
            }
        }
        throw .unsupported("the shadow MMU made no progress on \(kind) at \(hex(va)) after 8 faults (policy \(mmu.policy.name))")
    }

    /// The hardware's permission check on sptes: CR0.WP is always 1 under shadow paging
    /// (KVM emulates WP = 0 in the sptes), NX always on; SMEP/SMAP/AC are the guest's.
    var hardwarePermissions: PermissionTable {
        let key = (vcpu.controls.cr4SMEP ? 1 : 0) | (vcpu.controls.cr4SMAP ? 2 : 0) | (vcpu.rflagsAC ? 4 : 0) as UInt8
        if let cached = cachedHardwarePermissions, cached.key == key { return cached.table }
        let table = buildHardwarePermissions()
        cachedHardwarePermissions = (key, table)
        return table
    }

    private func buildHardwarePermissions() -> PermissionTable {
        var c = PagingControls(mode: .long4)
        c.cr0WP = true
        c.eferNXE = true
        c.cr4SMEP = vcpu.controls.cr4SMEP
        c.cr4SMAP = vcpu.controls.cr4SMAP
        return PermissionTable(controls: c, rflagsAC: vcpu.rflagsAC)
    }

    /// The hardware walk of the shadow tables, as id chasing through the MMU's
    /// `PageSlots`: the slot of the present leaf spte for `va` (or of the nested link the
    /// walk meets), or nil.
    @inline(__always)
    func shadowLeafSlot(for va: UInt64) -> (spt: SPTEntries, index: Int, level: Int)? {
        let rootID: Int32
        if let pae = root.paeRoots { rootID = pae[Int((va >> 30) & 3)] } else { rootID = root.page }
        return mmu.slots.leafSlot(root: rootID, va: va)
    }

    /// The hardware walk of the shadow tables: the present leaf spte for `va`, or nil.
    func shadowLeaf(for va: UInt64) -> (ShadowPage, Int)? {
        guard var sp = rootPage(root, for: va) else { return nil }
        while true {
            let index = ShadowVCPU.shadowIndex(va, level: sp.level)
            let spte = sp.spt[index]
            guard SPTE.isPresent(spte) else { return nil }
            if sp.level == 1 || spte & SPTE.large != 0 { return (sp, index) }
            guard let c = mmu.child(of: spte, level: sp.level) else { return nil }
            sp = c
        }
    }

    // MARK: The shadow page fault (KVM's FNAME(page_fault))

    func pageFault(_ va: UInt64, _ kind: AccessKind, isUser: Bool, errorCode: UInt32) throws(MachineError) -> FaultOutcome {
        stats.pfTaken &+= 1
        stats.exitsPageFault &+= 1
        if mmu.tracing { mmu.trace("kvm_mmu_pagetable_walk", vcpu: self, "addr \(ShadowMMU.hexDigits(va)) " + ShadowMMU.traceErrorCode(errorCode)) }
        let (walkOutcome, walk) = try guestWalk(va, kind, isUser: isUser)
        switch walkOutcome {
        case .pageFault(let code, _):
            if mmu.tracing { mmu.trace("kvm_mmu_walker_error", vcpu: self, ShadowMMU.traceErrorCode(code)) }
            stats.pfGuest &+= 1
            return .inject(.pageFault(code, at: va))
        case .generalProtection:
            return .inject(.generalProtection)
        case .translated:
            break
        }
        let isWrite = kind == .write
        if isWrite && mmu.isWriteTracked(walk.gfn) && !mmu.injected.omits(.upperLevelTable) {
            // A store to an upper-level table: always emulated.
            clearFloodingOnPath(va)
            stats.pfEmulate &+= 1
            return .emulate(gpa: walk.gpa)
        }
        var access = walk.pteAccess
        if isWrite && access & Access.write == 0 && !vcpu.controls.cr0WP && !isUser
            && access & Access.user != 0 && vcpu.controls.cr4SMAP {
            // CR0.WP = 0 with SMAP: turning this user page into a supervisor one would
            // let later supervisor accesses bypass SMAP once RFLAGS.AC is clear (AC
            // changes do not exit), so the store the guest allowed is emulated instead.
            stats.pfEmulate &+= 1
            return .emulate(gpa: walk.gpa)
        }
        if isWrite && access & Access.write == 0 && !vcpu.controls.cr0WP && !isUser {
            // CR0.WP = 0: a supervisor write to a read-only page gets a writable,
            // supervisor-only spte (not executable under SMEP).
            access |= Access.write
            access &= ~Access.user
            if vcpu.controls.cr4SMEP { access &= ~Access.exec }
        }
        mmu.underLock()
        guard mmu.makePagesAvailable() else {
            throw .unsupported("the shadow-page budget (\(mmu.maxShadowPages) pages) is exhausted and nothing can be recycled")
        }
        switch fetch(va, walk: walk, access: access, write: isWrite, user: isUser) {
        case .fixed:
            stats.pfFixed &+= 1
            return .fixed
        case .spurious:
            stats.pfSpurious &+= 1
            return .spurious
        case .emulate:
            stats.pfEmulate &+= 1
            return .emulate(gpa: walk.gpa)
        case let other:
            return other
        }
    }

    /// The guest's own walk, with A/D set as hardware would, recording the path. A
    /// software walk (the shadow fault path's) counts in `guest_walk_levels`; the
    /// hardware's two-dimensional walk under nested paging does not (it is `tdp_walks`).
    func guestWalk(_ va: UInt64, _ kind: AccessKind, isUser: Bool, software: Bool = true) throws(MachineError) -> (WalkOutcome, GuestWalk) {
        var store = RecordingStore(memory: vcpu.memory, entrySize: vcpu.mode.entrySize,
                                   walk: GuestWalk(levels: vcpu.mode.levels))
        store.walk.executeDisable = vcpu.controls.executeDisableEnabled
        let root: PagingRoot = vcpu.mode == .pae ? .pdptes(vcpu.pdptes) : .table(guestRootTable)
        let outcome = PageWalker.walk(va, kind: kind, context: AccessContext(cpl: isUser ? 3 : 0, rflagsAC: vcpu.rflagsAC),
                                      controls: vcpu.controls,
                                      permissions: vcpu.permissionTable,
                                      root: root, store: &store)
        vcpu.tally.adUpdates &+= UInt64(store.flagUpdates)
        if software { stats.guestWalkLevels &+= UInt64(store.walk.seen.count) }
        if let bad = store.unbacked {
            throw .unbackedMemory(address: bad, capacity: vcpu.memory.capacity,
                                  what: "guest paging-structure entry read while translating \(hex(va))")
        }
        var walk = store.walk
        if case .translated(let t) = outcome {
            walk.leafLevel = t.leafLevel
            walk.gpa = t.physicalAddress
            walk.gfn = t.physicalAddress >> 12
            var access: UInt8 = 0
            if t.rights.contains(.writable) { access |= Access.write }
            if t.rights.contains(.user) { access |= Access.user }
            if !t.rights.contains(.executeDisable) { access |= Access.exec }
            // A clean leaf gets a read-only spte unless this is the write that dirties it.
            if kind != .write && walk.entries[t.leafLevel] & PTE.dirty == 0 && !mmu.injected.omits(.dirtyCleanLeaf) {
                access &= ~Access.write
            }
            walk.pteAccess = access
        }
        return (outcome, walk)
    }

    var guestRootTable: UInt64 {
        switch vcpu.mode {
        case .legacy32: vcpu.cr3 & 0xFFFF_F000
        case .pae: vcpu.cr3 & 0xFFFF_FFE0
        case .long4, .long5: vcpu.cr3 & vcpu.controls.physicalAddressMask & ~0xFFF
        }
    }

    private func clearFloodingOnPath(_ va: UInt64) {
        guard var sp = rootPage(root, for: va) else { return }
        while true {
            sp.writeFloodingCount = 0
            guard let c = mmu.child(of: sp.spt[ShadowVCPU.shadowIndex(va, level: sp.level)], level: sp.level) else { return }
            sp = c
        }
    }

    // MARK: Building the shadow path (KVM's FNAME(fetch))

    private func childRole(of parent: ShadowPage, index: Int, direct: Bool, access: UInt8) -> PageRole {
        var role = parent.role
        role.level -= 1
        role.access = access
        role.direct = direct
        if role.has4ByteGPTE { role.quadrant = index & 1 }
        return role
    }

    func fetch(_ va: UInt64, walk: GuestWalk, access: UInt8, write: Bool, user: Bool) -> FaultOutcome {
        // One strong reference for the whole descent (each use of the unowned property
        // would otherwise retain and release it).
        let mmu = self.mmu
        guard var sp = rootPage(root, for: va) else { return .retry }
        // Guest levels with tables of their own: indirect shadow pages.
        while sp.level > walk.leafLevel {
            sp.writeFloodingCount = 0
            let index = ShadowVCPU.shadowIndex(va, level: sp.level)
            if let existing = mmu.child(of: sp.spt[index], level: sp.level) {
                sp = existing
                continue
            }
            let tableLevel = sp.level - 1
            let tableGFN = walk.tableGFN(level: tableLevel)
            if mmu.policy.walkDecision(forTable: tableGFN, level: tableLevel, in: mmu) == .nested {
                // The walk finishes in the guest's tables from here (the retry takes it).
                if !SPTE.isNestedLink(sp.spt[index]) || SPTE.target(sp.spt[index]) != tableGFN {
                    mmu.linkNested(SPTERef(page: sp.id, index: index), toTable: tableGFN, vcpu: self)
                }
                return .fixed
            }
            let role = childRole(of: sp, index: index, direct: false, access: walk.accessAbove(level: tableLevel))
            let child = mmu.getShadowPage(gfn: tableGFN, role: role, vcpu: self)
            // Sync before link: a non-present → present guest entry needs no flush.
            if child.unsyncChildren > 0 && mmu.linkDecision(for: child) == .syncFirst { mmu.syncChildren(of: child, vcpu: self) }
            mmu.link(SPTERef(page: sp.id, index: index), to: child)
            sp = child
        }
        sp.writeFloodingCount = 0
        // A guest large page: a large spte if the host allows it, else direct pages.
        var goal = 1
        if walk.leafLevel > 1 {
            let hostLevel = mmu.configuration.hostPageSize == .size1G ? 3 : mmu.configuration.hostPageSize == .size4K ? 1 : 2
            goal = min(sp.level, hostLevel)
            while goal > 1 && !mmu.largeMappingAllowed(gfn: walk.gfn, level: goal) { goal -= 1 }
        }
        // KVM traces the request once the guest's levels are shadowed, before the
        // direct levels of a split large page.
        if mmu.tracing {
            mmu.trace("kvm_mmu_spte_requested", vcpu: self,
                      "gfn \(ShadowMMU.hexDigits(walk.gfn)) pfn \(ShadowMMU.hexDigits(walk.gfn)) level \(goal)")
        }
        while sp.level > goal {
            let index = ShadowVCPU.shadowIndex(va, level: sp.level)
            if let existing = mmu.child(of: sp.spt[index], level: sp.level) {
                if existing.role.access == access {
                    sp = existing
                    continue
                }
                // KVM's validate_direct_spte: a direct page built with other access (the
                // guest entry went from clean to dirty) must not gain writable sptes; link
                // one with the right access instead.
                mmu.unlinkParent(existing, SPTERef(page: sp.id, index: index))
                mmu.flushRemoteTLBs()
            }
            let span = UInt64(1) << UInt64(9 * (sp.level - 1))
            let role = childRole(of: sp, index: index, direct: true, access: access)
            let child = mmu.getShadowPage(gfn: walk.gfn & ~(span - 1), role: role, vcpu: self)
            mmu.link(SPTERef(page: sp.id, index: index), to: child)
            sp = child
        }
        let index = ShadowVCPU.shadowIndex(va, level: sp.level)
        let span = UInt64(1) << UInt64(9 * (sp.level - 1))
        let outcome = mmu.setSPTE(sp, index, access: access, gfn: walk.gfn & ~(span - 1), faultingWrite: write,
                                  userWrite: write && user, vcpu: self)
        if !sp.role.direct { mmu.policy.didPropagate(sp, index, in: mmu) }
        if case .spurious = outcome { return outcome }
        prefetch(around: sp, index)
        return outcome
    }

    /// KVM's pte_prefetch: up to 8 neighbours of the faulting spte, from guest entries
    /// that are present and accessed (or, for a direct page, the next frames). While
    /// dirty logging is on it stops at the first spte that would be writable: KVM finds
    /// no memslot for a speculative writable mapping of a logged slot
    /// (`gfn_to_memslot_dirty_bitmap`), so only frames the guest writes are logged.
    private func prefetch(around sp: ShadowPage, _ index: Int) {
        let mmu = self.mmu
        guard mmu.configuration.prefetch, sp.level == 1 else { return }
        let first = index & ~7
        // A first touch usually finds the next guest entry not yet accessed, where the
        // prefetch would stop at once: look at it before working out the table's context.
        if !sp.role.direct, let i = (first..<(first + 8)).first(where: { $0 != index && !SPTE.isPresent(sp.spt[$0]) }) {
            guard let gpte = mmu.readGPTE(sp, i), gpte & PTE.present != 0, gpte & PTE.accessed != 0 else { return }
        }
        // The guest table's frame, reserved bits and XD setting, looked up once for the 8.
        let guest = sp.role.direct ? nil : mmu.syncContext(sp, vcpu: self)
        let policy = mmu.policy
        for i in first..<(first + 8) where i != index && !SPTE.isPresent(sp.spt[i]) {
            guard let guest else {
                if mmu.dirtyLogging && sp.role.access & Access.write != 0 { break }
                _ = mmu.setSPTE(sp, i, access: sp.role.access, gfn: sp.gfn + UInt64(i), faultingWrite: nil, vcpu: self)
                mmu.stats.sptesPrefetched &+= 1
                continue
            }
            guard let gpte = guest.gpte(i),
                  gpte & PTE.present != 0, gpte & guest.reserved == 0, gpte & PTE.accessed != 0
            else { break }
            var access = sp.role.access & Access.of(gpte: gpte, executeDisableEnabled: guest.executeDisable)
            if gpte & PTE.dirty == 0 { access &= ~Access.write }
            if mmu.dirtyLogging && access & Access.write != 0 { break }
            _ = mmu.setSPTE(sp, i, access: access, gfn: mmu.guestFrame(of: gpte, sp: sp), faultingWrite: nil, vcpu: self)
            policy.didPropagate(sp, i, in: mmu)
            mmu.stats.sptesPrefetched &+= 1
        }
    }
}

extension ShadowMMU {
    /// KVM's `make_spte`: the spte for `access` to `gfn`. Write access to a frame with
    /// shadow pages is the policy's decision; when refused the spte is read-only and
    /// `writeProtected` is set.
    func makeSPTE(sp: ShadowPage, access: UInt8, gfn: UInt64, old: UInt64, prefetch: Bool, synchronizing: Bool,
                  userWrite: Bool = false, vcpu: ShadowVCPU?) -> (spte: UInt64, writeProtected: Bool) {
        var spte = SPTE.present | gfn << 12 | UInt64(access) << SPTE.accessShift
        if !prefetch || synchronizing { spte |= SPTE.accessed }
        if access & Access.exec == 0 { spte |= SPTE.executeDisable }
        if access & Access.user != 0 { spte |= SPTE.user }
        if sp.level > 1 { spte |= SPTE.large }
        var writeProtected = false
        if access & Access.write != 0 {
            spte |= SPTE.writable
            let oldIsWritableLeaf = SPTE.isPresent(old) && (sp.level == 1 || old & SPTE.large != 0) && old & SPTE.writable != 0
            if !oldIsWritableLeaf {
                let request = WritableMappingRequest(synchronizing: synchronizing, prefetch: prefetch, vcpu: vcpu,
                                                     userWrite: userWrite)
                let allowed: Bool
                switch policy.writeDecision(for: gfn, request, in: self) {
                case .unsyncAndAllow: allowed = unsyncLeafShadows(of: gfn, request)
                case .allow: allowed = true
                case .keepProtected: allowed = false
                case .allowAndEmulateThisStore:
                    allowed = true
                    emulateCurrentStore = true
                }
                if !allowed {
                    writeProtected = true
                    spte &= ~SPTE.writable
                }
            }
            if spte & SPTE.writable != 0 { noteWritableMapping(gfn) }
        }
        return (spte, writeProtected)
    }

    /// KVM's `mmu_set_spte`: installs a leaf spte. `faultingWrite` is nil for prefetch.
    func setSPTE(_ sp: ShadowPage, _ index: Int, access: UInt8, gfn: UInt64, faultingWrite: Bool?,
                 userWrite: Bool = false, vcpu: ShadowVCPU) -> FaultOutcome {
        let ref = SPTERef(page: sp.id, index: index)
        var flush = false
        var wasMapped = false
        let old = sp.spt[index]
        if SPTE.isPresent(old) {
            if sp.level > 1 && old & SPTE.large == 0 {
                // A large leaf replaces a pointer to a page table (or a nested link).
                zapSPTE(sp, index)
                flush = true
            } else if SPTE.target(old) != gfn {
                dropSPTE(ref)
                flush = true
            } else {
                wasMapped = true
            }
        }
        let current = sp.spt[index]
        let (spte, writeProtected) = makeSPTE(sp: sp, access: access, gfn: gfn, old: current,
                                              prefetch: faultingWrite == nil, synchronizing: false,
                                              userWrite: userWrite, vcpu: vcpu)
        var outcome = FaultOutcome.fixed
        let emulateAnyway = emulateCurrentStore
        emulateCurrentStore = false
        if current == spte {
            outcome = .spurious
        } else {
            if SPTE.isPresent(current) && current & SPTE.writable != 0 && spte & SPTE.writable == 0 { flush = true }
            sp.spt[index] = spte
            noteChange(sp.id)
            if tracing { trace("kvm_mmu_set_spte", vcpu: vcpu, Self.traceSPTE(sp, index)) }
        }
        if (writeProtected || emulateAnyway) && faultingWrite == true { outcome = .emulate(gpa: gfn << 12) }
        if flush { flushRemoteTLBs() }
        if !wasMapped { rmapAdd(ref, gfn: gfn, level: sp.level) }
        return outcome
    }

    /// KVM's `kvm_mmu_track_write`: a guest store to `gpa` was emulated; every shadow
    /// page of that frame forgets the entries it covered (or is zapped when the write is
    /// misaligned or the page is being flooded with writes).
    func trackWrite(gpa: UInt64, bytes: Int, vcpu: ShadowVCPU) {
        guard indirectShadowPages > 0 else { return }
        underLock()
        var gpa = gpa, bytes = bytes
        if vcpu.vcpu.mode != .legacy32 && bytes == 4 {
            gpa &= ~7
            bytes = 8
        }
        var newEntry: UInt64 = 0
        if (bytes == 4 || bytes == 8) && machine.memory.contains(gpa, size: bytes) {
            newEntry = machine.memory.load(gpa, size: bytes)
        }
        stats.mmuPTEWrite &+= 1
        if tracing { trace("shadowsim_track_write", vcpu: vcpu, "gpa \(Self.hexDigits(gpa)) bytes \(bytes)") }
        var flush = false
        var shadowed = false
        forEachShadowPage(of: gpa >> 12) { sp in
            shadowed = true
            if isMisaligned(sp, gpa: gpa, bytes: bytes) || isFlooded(sp) {
                prepareZap(sp)
                stats.mmuFlooded &+= 1
                return
            }
            guard let (first, count) = writtenSPTEs(sp, gpa: gpa) else { return }
            for i in first..<(first + count) where !injected.omits(.emulatedWrite) {
                let spte = sp.spt[i]
                zapSPTE(sp, i)
                if newEntry != 0 && sp.level != 1 { stats.mmuPDEZapped &+= 1 }
                if SPTE.isPresent(spte) { flush = true }
            }
        }
        if !invalidList.isEmpty { commitZaps() } else if flush { flushRemoteTLBs() }
        if shadowed { policy.didTrapTableWrite(gpa >> 12, in: self) }
    }

    private func isMisaligned(_ sp: ShadowPage, gpa: UInt64, bytes: Int) -> Bool {
        let offset = Int(gpa & 0xFFF)
        let pteSize = sp.role.has4ByteGPTE ? 4 : 8
        // A one-byte write at an entry's start (clear_bit on the low byte) is fine.
        if offset & (pteSize - 1) == 0 && bytes == 1 { return false }
        return (offset ^ (offset + bytes - 1)) & ~(pteSize - 1) != 0 || bytes < 4
    }

    /// Flooding: three emulated writes to a non-leaf page since it was last used.
    private func isFlooded(_ sp: ShadowPage) -> Bool {
        guard sp.level > 1 || policy.floodsLeafTables else { return false }
        sp.writeFloodingCount += 1
        return sp.writeFloodingCount >= 3
    }

    /// The sptes of `sp` that shadow the guest entry at `gpa` (two for a 32-bit PDE).
    func writtenSPTEs(_ sp: ShadowPage, gpa: UInt64) -> (Int, Int)? {
        var offset = Int(gpa & 0xFFF)
        var count = 1
        if sp.role.has4ByteGPTE {
            offset <<= 1
            if sp.level == 2 {
                offset &= ~7
                offset <<= 1
                count = 2
            }
            let quadrant = offset >> 12
            offset &= 0xFFF
            if quadrant != sp.role.quadrant { return nil }
        }
        return (offset / 8, count)
    }
}

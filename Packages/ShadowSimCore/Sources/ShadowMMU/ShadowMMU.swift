import X86

/// What the VMs of one simulation share: the host. Host-wide state (the unsync list
/// under a global lock) lives here, so separate simulations in one process never see
/// each other.
public final class SimulationHost {
    /// The unsync pages of every VM whose policy asks for `UnsyncIndex.hostWideList`.
    public let unsyncList = UnsyncList()
    /// The MMUs of the host's VMs (each removes itself when it goes).
    public var mmus: [ShadowMMU] { registered.map(\.mmu) }
    /// Not `weak`: a weak reference gives the MMU a side-table refcount, which makes
    /// every retain and release of it slow on the TLB-miss path.
    var registered: [Registration] = []

    public init() {}

    /// The MMU deregisters itself as it goes.
    struct Registration {
        private let reference: UnownedReference<ShadowMMU>
        init(mmu: ShadowMMU) { reference = UnownedReference(mmu) }
        var mmu: ShadowMMU { reference.object }
    }
}

/// Settings of one VM's shadow MMU.
public struct ShadowMMUConfiguration: Sendable {
    /// Shadow pages the VM may hold; nil means KVM's default (20 per mille of guest
    /// pages, at least 64).
    public var maxShadowPages: Int?
    /// Fill up to 8 neighbouring sptes on a fault, as KVM does.
    public var prefetch = true
    /// The largest page the host backs guest memory with (4 KiB: guest large pages get
    /// direct shadow pages of 4 KiB sptes).
    public var hostPageSize: PageSize = .size4K
    /// Whether vCPUs other than the one acting count as running (so a remote flush must
    /// interrupt them) rather than halted. `ShadowVCPU.running` halts one vCPU alone.
    public var otherVCPUsRunning = true
    /// Roots each vCPU keeps cached besides the current one (KVM_MMU_NUM_PREV_ROOTS, 3).
    public var previousRoots = 3
    public static let maxPreviousRoots = 8
    /// Zapping a shadow page zaps the unsync pages below it too (upstream KVM's
    /// `mmu_zap_unsync_children`). Off, they stay unsync and unlinked until a lookup
    /// syncs them, a write protection zaps them or they are recycled, as on a KVM with
    /// `eager_zap_unsync_children=N` (the module parameter of the host's KVM here).
    public var zapUnsyncChildren = true
    /// Bugs to plant (fault injection for testing the checker). Empty normally.
    public var plantedBugs: Set<PlantedBug> = []
    public var costs = CostModel()

    public init() {}
}

/// One VM's shadow MMU: the shadow pages and every mechanism that keeps them in sync
/// with the guest's tables. The attached `SyncPolicy` decides when each is used.
///
/// Invariants (checked by `verify`): a valid indirect page is in `hash` under its gfn
/// and `(gfn, role)` is unique among valid pages; every present leaf spte is in `rmap`
/// under the gfn it maps and nothing else is; `stats.mmuUnsync` counts unsync pages;
/// a page with `rootCount > 0` is never freed.
public final class ShadowMMU {
    public let machine: Machine
    public let policy: any SyncPolicy
    public let configuration: ShadowMMUConfiguration
    /// The simulation this VM runs in (shared by its VMs).
    public let host: SimulationHost
    public internal(set) var stats = MMUStats()
    /// Unsync pages lying around, and reached by the new root, at every root load.
    public internal(set) var rootLoads = RootLoadSamples()
    /// Per-vCPU state, in vCPU order.
    public internal(set) var vcpus: [ShadowVCPU] = []

    /// The pages' records by id (Storage.swift).
    private(set) var arena = PageArena()
    /// By page id: the page's sptes and level, so the hardware walk of the shadow tables
    /// is id chasing with no reference counting (Storage.swift).
    private(set) var slots = PageSlots()
    var freeIDs: [Int32] = []
    var serial: UInt64 = 0
    /// The newest page hashed under each gfn; `hashNext` chains to the older ones (-1 ends).
    var hash = FrameMap<Int32>()
    var hashNext: [Int32] = []
    let rmap: ReverseMap
    /// Gfns of upper-level shadow pages (KVM's write tracking): never writable.
    var writeTracked = FrameMap<Int>()
    /// Shadowed gfns per 2 MiB and 1 GiB region: no large spte may cover them.
    var disallowLarge = FrameMap<Int>()
    var indirectShadowPages = 0
    /// Creation order of pages (oldest first: KVM's active list), with holes for pages
    /// zapped since. By handle: ids are reused, and a hole must never stand for the later
    /// page that got its id.
    var activeOrder: [ShadowPageHandle] = []
    var activeHoles = 0

    /// The page a slot of `activeOrder` stands for, if it is still on the active list.
    func activePage(_ slot: ShadowPageHandle) -> ShadowPage? {
        guard let sp = page(slot), sp.onActiveList else { return nil }
        return sp
    }
    /// Zapped pages awaiting one flush and their release (KVM's invalid_list).
    var invalidList: [Int32] = []
    public let maxShadowPages: Int
    /// The vCPU whose exit is being handled (nil for host-initiated work). Not retained
    /// (set and restored around every exit: a retain/release pair per TLB miss
    /// otherwise); the MMU owns its vCPUs.
    var actingVCPU: ShadowVCPU? { actingReference?.object }
    /// Saved and restored as it is (converting it to a strong reference and back would
    /// retain and release the vCPU on every TLB miss).
    var actingReference: UnownedReference<ShadowVCPU>?
    /// `policy.rootWalk`, read once.
    public let rootWalk: WalkDecision
    /// The planted bugs, as the steps they break (FaultInjection.swift).
    let injected: FaultInjection
    /// The list the VM's unsync pages are also on (`policy.unsyncIndex`): the VM's own,
    /// the host's, or none. Invariant: a page is on it exactly while it is unsync.
    let unsyncList: UnsyncList?
    /// Set while carrying out `WriteDecision.allowAndEmulateThisStore`: emulate the faulting store anyway.
    var emulateCurrentStore = false
    /// Guest frames (or 2 MiB regions) the EPT maps: those nested walks touched
    /// (NestedWalk.swift).
    var eptMapped = Set<UInt64>()
    /// Nested links to guest tables (NestedLinks.swift).
    var nested = NestedState()
    /// What changed since `verifyChanges` last ran (nil until it first runs).
    var changeLog: ChangeLog?
    /// Dirty logging (DirtyLog.swift): on or off, the frames logged since the last
    /// collection, and the frames whose EPT entry is writable while it is on.
    public internal(set) var dirtyLogging = false
    var dirtyFrames = Set<UInt64>()
    var eptWritable = Set<UInt64>()
    /// Where events go when traced (`traceEvents(to:vm:)`), and this VM's number there.
    var traceSink: MMUTraceSink?
    var traceVM = 0
    /// Whether events are traced (a plain Bool: testing the optional sink retains it).
    /// Every call site tests it before building an event's text, so an untraced run pays
    /// one load and branch per site.
    var tracing = false

    /// Notes that page `id`'s sptes, links, unsync state, role or root count changed.
    @inline(__always) func noteChange(_ id: Int32) { changeLog?.mark(id) }
    /// Notes that the reverse map of `gfn` changed.
    @inline(__always) func noteChange(frame gfn: UInt64) { changeLog?.mark(frame: gfn) }

    public init(machine: Machine, policy: any SyncPolicy, configuration: ShadowMMUConfiguration = .init(),
                host: SimulationHost = SimulationHost()) {
        self.machine = machine
        self.policy = policy
        self.configuration = configuration
        self.host = host
        rootWalk = policy.rootWalk
        injected = FaultInjection(configuration.plantedBugs)
        switch policy.unsyncIndex {
        case .unsyncChildBits: unsyncList = nil
        case .perVMList: unsyncList = UnsyncList()
        case .hostWideList: unsyncList = host.unsyncList
        }
        let guestPages = Int(machine.memory.capacity >> 12)
        maxShadowPages = configuration.maxShadowPages ?? max(guestPages * 20 / 1000, 64)
        rmap = ReverseMap(frames: UInt64(guestPages))
        vcpus = machine.vcpus.map { ShadowVCPU(mmu: self, vcpu: $0) }
        host.registered.append(SimulationHost.Registration(mmu: self))
        policy.attach(to: self)
        for v in vcpus { v.vcpu.backend = v }
    }

    deinit {
        policy.detach(from: self)
        if policy.unsyncIndex == .hostWideList { unsyncList?.removeAll(of: self) }
        // The machine may outlive its MMU: its vCPUs go back to bare metal.
        for v in vcpus where v.vcpu.backend === v { v.vcpu.backend = BareMetal.shared }
        host.registered.removeAll { $0.mmu === self }
        slots.release()
        arena.release()
    }

    public var mode: PagingMode { machine.mode }
    public var usedShadowPages: Int { Int(stats.shadowPages) }


    public func page(_ id: Int32) -> ShadowPage? {
        arena.liveRef(id).map { ShadowPage($0, id: id) }
    }

    /// Every live page, in id order.
    var livePages: [ShadowPage] { (0..<Int32(arena.count)).compactMap { page($0) } }

    /// The page `handle` names, or nil when that page is gone (freed; its id may name
    /// another page now).
    public func page(_ handle: ShadowPageHandle) -> ShadowPage? {
        guard let sp = page(handle.id), sp.serial == handle.serial else { return nil }
        return sp
    }

    /// Whether `sp` is still one of this MMU's pages (not freed).
    public func isLive(_ sp: ShadowPage) -> Bool { page(sp.handle) != nil }

    /// Valid pages that shadow guest table `gfn` (KVM's for_each_gfn_valid_sp_with_gptes).
    public func shadowPages(of gfn: UInt64) -> [ShadowPage] {
        var pages: [ShadowPage] = []
        forEachShadowPage(of: gfn) { pages.append($0) }
        return pages
    }

    /// Whether some valid page shadows guest table `gfn` (`shadowPages(of:)` is not
    /// empty), without building the list.
    public func isShadowed(_ gfn: UInt64) -> Bool {
        guard let newest = hash[gfn] else { return false }
        return HashChain(id: newest, links: hashNext).contains { page($0).map { !$0.role.invalid && $0.hasGPTEs } ?? false }
    }

    /// Calls `body` with each page of `shadowPages(of:)`, allocating nothing. `body` may
    /// zap pages (they stay hashed until `commitZaps`).
    @inline(__always) func forEachShadowPage(of gfn: UInt64, _ body: (ShadowPage) -> Void) {
        guard let newest = hash[gfn] else { return }
        for id in HashChain(id: newest, links: hashNext) {
            guard let sp = page(id), !sp.role.invalid, sp.hasGPTEs else { continue }
            body(sp)
        }
    }

    /// Host bytes the reverse map holds (8 per mapped frame's head, in 4 KiB chunks, plus
    /// lists for frames mapped more than once).
    public var reverseMapBytes: Int { rmap.residentBytes }

    /// Ids of the pages hashed under `gfn`, newest first.
    func hashChain(_ gfn: UInt64) -> HashChain { HashChain(id: hash[gfn] ?? -1, links: hashNext) }

    struct HashChain: Sequence, IteratorProtocol {
        var id: Int32
        let links: [Int32]
        mutating func next() -> Int32? {
            guard id >= 0 else { return nil }
            defer { id = links[Int(id)] }
            return id
        }
    }

    private func unhash(_ sp: ShadowPage) {
        let key = sp.gfn
        guard let head = hash[key] else { return }
        let after = hashNext[Int(sp.id)]
        if head == sp.id {
            hash[key] = after >= 0 ? after : nil
        } else {
            var id = head
            while id >= 0 && hashNext[Int(id)] != sp.id { id = hashNext[Int(id)] }
            if id >= 0 { hashNext[Int(id)] = after }
        }
        hashNext[Int(sp.id)] = -1
    }

    /// Whether `gfn` is shadowed at an upper level (and so must stay read-only).
    public func isWriteTracked(_ gfn: UInt64) -> Bool { (writeTracked[gfn] ?? 0) > 0 }

    /// Every shadow page not yet freed (zapped roots awaiting release included), oldest
    /// first.
    public var allPages: [ShadowPage] { livePages.sorted { $0.serial < $1.serial } }

    // MARK: Locks

    /// Records one acquisition of the policy's lock and the work done under it.
    func underLock(work: UInt64 = 0, othersWork: UInt64 = 0) {
        chargeLock(work: work, othersWork: othersWork)
    }

    /// Records a lock acquisition and the work done under it (`listEntries`: unsync-list
    /// entries walked, for the cost model). The engine's own bookkeeping: policies
    /// never charge.
    func chargeLock(work: UInt64, othersWork: UInt64 = 0, listEntries: UInt64 = 0) {
        stats.lockAcquisitions &+= 1
        stats.lockWork &+= work
        stats.lockWorkForOtherVMs &+= othersWork
        stats.listEntriesWalked &+= listEntries
    }

    /// The policy's link decision, unless a planted bug overrides it (the seam through
    /// which `link-unsync-without-sync` is injected).
    func linkDecision(for sp: ShadowPage) -> LinkDecision {
        injected.omits(.beforeLink) ? .linkUnsync : policy.linkDecision(for: sp, in: self)
    }

    // MARK: Lookup and allocation (kvm_mmu_get_shadow_page)

    /// The shadow page for `(gfn, role)`, creating it on a miss. Finding an unsync page
    /// syncs it in place (it stays unsync); an upper-level request zaps unsync pages of
    /// the gfn under other roles, as KVM does.
    func getShadowPage(gfn: UInt64, role: PageRole, vcpu: ShadowVCPU?) -> ShadowPage {
        var found: ShadowPage?
        for id in hashChain(gfn) {
            guard let sp = page(id), !sp.role.invalid else { continue }
            if sp.role != role {
                if role.level > 1 && sp.unsync { prepareZap(sp) }
                continue
            }
            if !sp.role.direct && sp.unsync && linkDecision(for: sp) == .syncFirst, let vcpu {
                let result = syncPage(sp, vcpu: vcpu)
                if result < 0 { break }       // zapped: build it again
                if result > 0 { flushRemoteTLBs() }
            }
            sp.writeFloodingCount = 0
            found = sp
            break
        }
        commitZaps()
        if let found {
            if tracing { trace("kvm_mmu_get_page", vcpu: vcpu, Self.traceDescription(of: found) + " existing") }
            return found
        }
        stats.mmuCacheMiss &+= 1
        let created = allocate(gfn: gfn, role: role)
        if tracing { trace("kvm_mmu_get_page", vcpu: vcpu, Self.traceDescription(of: created) + " new") }
        return created
    }

    private func allocate(gfn: UInt64, role: PageRole) -> ShadowPage {
        let id = freeIDs.popLast() ?? Int32(arena.count)
        serial &+= 1
        let sp = ShadowPage(arena.makeRecord(id, gfn: gfn, role: role, serial: serial), id: id)
        noteChange(id)
        slots.set(id, sp.spt, level: role.level)
        if hashNext.count <= Int(id) { hashNext.append(contentsOf: repeatElement(-1, count: Int(id) + 1 - hashNext.count)) }
        hashNext[Int(id)] = hash[gfn] ?? -1
        hash[gfn] = id
        activeOrder.append(sp.handle)
        stats.shadowPages &+= 1
        if sp.hasGPTEs { accountShadowed(sp) }
        return sp
    }

    /// A guest table is now shadowed: upper levels become write-tracked; every level
    /// forbids large sptes over it and write-protects its existing mappings.
    private func accountShadowed(_ sp: ShadowPage) {
        indirectShadowPages += 1
        if sp.level > 1 { writeTracked[sp.gfn, default: 0] += 1 }
        disallowLarge[sp.gfn >> 9 | 1 << 62, default: 0] += 1
        disallowLarge[sp.gfn >> 18 | 1 << 63, default: 0] += 1
        if injected.omits(.newTable) { return }
        if writeProtect(gfn: sp.gfn) && !injected.omits(.remoteAfterWriteProtect) { flushRemoteTLBs() }
    }

    private func unaccountShadowed(_ sp: ShadowPage) {
        indirectShadowPages -= 1
        if sp.level > 1 { decrement(&writeTracked, sp.gfn) }
        decrement(&disallowLarge, sp.gfn >> 9 | 1 << 62)
        decrement(&disallowLarge, sp.gfn >> 18 | 1 << 63)
    }

    private func decrement(_ table: inout FrameMap<Int>, _ gfn: UInt64) {
        let key = gfn
        guard let n = table[key] else { return }
        if n <= 1 { table[key] = nil } else { table[key] = n - 1 }
    }

    /// Whether a large spte at `level` may map the range containing `gfn`.
    func largeMappingAllowed(gfn: UInt64, level: Int) -> Bool {
        if dirtyLogging { return false }
        switch level {
        case 2: return disallowLarge[gfn >> 9 | 1 << 62] == nil
        case 3: return disallowLarge[gfn >> 18 | 1 << 63] == nil
        default: return true
        }
    }

    // MARK: Reverse maps

    func rmapAdd(_ ref: SPTERef, gfn: UInt64, level: Int) {
        let count = rmap.add(ref, gfn: gfn)
        noteChange(frame: gfn)
        noteChange(ref.page)
        adjustPageCount(level: level, by: 1)
        if count > 1000 {
            // KVM's RMAP_RECYCLE_THRESHOLD: too many mappings of one frame; drop them all.
            for r in rmap.refs(of: gfn) { dropSPTE(r) }
            flushRemoteTLBs()
        }
    }

    private func rmapRemove(_ ref: SPTERef, gfn: UInt64, level: Int) {
        guard rmap.remove(ref, gfn: gfn) else { return }
        noteChange(frame: gfn)
        noteChange(ref.page)
        adjustPageCount(level: level, by: -1)
    }

    private func adjustPageCount(level: Int, by delta: Int64) {
        switch level {
        case 1: stats.pages4K = UInt64(Int64(stats.pages4K) + delta)
        case 2: stats.pages2M = UInt64(Int64(stats.pages2M) + delta)
        default: stats.pages1G = UInt64(Int64(stats.pages1G) + delta)
        }
    }

    /// Clears a present leaf spte and its rmap entry.
    func dropSPTE(_ ref: SPTERef) {
        guard let sp = page(ref.page) else { return }
        let spte = sp.spt[Int(ref.index)]
        guard SPTE.isPresent(spte) else { return }
        sp.spt[Int(ref.index)] = 0
        noteChange(sp.id)
        rmapRemove(ref, gfn: SPTE.target(spte), level: sp.level)
    }

    /// Calls `body` with every present leaf spte that maps `gfn`: the ones the reverse map
    /// lists under it, and large sptes whose range covers it (the reverse map lists a large
    /// spte under its first frame only; KVM keeps one rmap per level for this).
    func forEachLeafSPTE(mapping gfn: UInt64, _ body: (ShadowPage, Int) -> Void) {
        forEachLeafSPTE(mapping: gfn, includingLarge: true, body)
    }

    private func forEachLeafSPTE(mapping gfn: UInt64, includingLarge: Bool, _ body: (ShadowPage, Int) -> Void) {
        rmap.forEach(of: gfn) { ref in if let sp = page(ref.page) { body(sp, Int(ref.index)) } }
        guard includingLarge else { return }
        for level in 2...3 {
            let base = gfn & ~((UInt64(1) << UInt64(9 * (level - 1))) - 1)
            guard base != gfn else { continue }
            rmap.forEach(of: base) { ref in
                guard let sp = page(ref.page), sp.level == level, sp.spt[Int(ref.index)] & SPTE.large != 0 else { return }
                body(sp, Int(ref.index))
            }
        }
    }

    /// Makes every writable leaf spte that maps `gfn` read-only, large ones that cover it
    /// included (KVM's `kvm_mmu_slot_gfn_write_protect` at every level). True if any was
    /// writable.
    @discardableResult
    public func writeProtect(gfn: UInt64) -> Bool {
        var changed = false
        forEachLeafSPTE(mapping: gfn, includingLarge: !injected.omits(.largeSPTEsOverNewTable)) { sp, index in
            let spte = sp.spt[index]
            if spte & SPTE.writable != 0 {
                sp.spt[index] = spte & ~SPTE.writable
                noteChange(sp.id)
                stats.writeProtections &+= 1
                changed = true
            }
        }
        // A TLB entry a nested walk filled is in no reverse map: flushing is the only way.
        if dropNestedWritable(gfn) { changed = true }
        return changed
    }

    // MARK: Linking

    /// Points non-leaf spte `ref` at `child`; propagates the child's unsync state.
    func link(_ ref: SPTERef, to child: ShadowPage) {
        guard let parent = page(ref.page) else { return }
        let old = parent.spt[Int(ref.index)]
        if SPTE.isPresent(old) {
            // Only a large leaf or a nested link can be here: drop it first.
            if SPTE.isNestedLink(old) { clearNestedLink(parent, Int(ref.index)) } else { dropSPTE(ref) }
            flushRemoteTLBs()
        }
        parent.spt[Int(ref.index)] = UInt64(child.id) << 12 | SPTE.present | SPTE.writable | SPTE.user | SPTE.accessed
        child.appendParent(ref)
        noteChange(ref.page)
        noteChange(child.id)
        if child.unsyncChildren > 0 || child.unsync { markUnsync(ref) }
    }

    /// The child page a present non-leaf spte points to.
    func child(of spte: UInt64, level: Int) -> ShadowPage? {
        guard SPTE.isPresent(spte), level > 1, spte & (SPTE.large | SPTE.nestedLink) == 0 else { return nil }
        return page(Int32(SPTE.target(spte)))
    }

    func unlinkParent(_ child: ShadowPage, _ ref: SPTERef) {
        if let i = child.parents.firstIndex(of: ref) { child.removeParent(at: i) }
        page(ref.page)?.spt[Int(ref.index)] = 0
        noteChange(child.id)
        noteChange(ref.page)
    }

    /// KVM's `mmu_page_zap_pte`: clears one spte, unlinking a child page.
    func zapSPTE(_ sp: ShadowPage, _ index: Int) {
        let spte = sp.spt[index]
        guard SPTE.isPresent(spte) else { return }
        if sp.level == 1 || spte & SPTE.large != 0 {
            dropSPTE(SPTERef(page: sp.id, index: index))
        } else if SPTE.isNestedLink(spte) {
            clearNestedLink(sp, index)
        } else if let c = child(of: spte, level: sp.level) {
            unlinkParent(c, SPTERef(page: sp.id, index: index))
        }
    }

    // MARK: Zapping (kvm_mmu_prepare_zap_page / kvm_mmu_commit_zap_page)

    /// Unlinks `sp` from parents and children and marks it invalid; it is freed (and
    /// every vCPU flushed, once) by `commitZaps`, or when its last root reference goes.
    @discardableResult
    public func prepareZap(_ sp: ShadowPage) -> Int {
        guard isLive(sp) else { return 0 }
        if tracing { trace("kvm_mmu_prepare_zap_page", Self.traceDescription(of: sp)) }
        stats.mmuShadowZapped &+= 1
        var zapped = 0
        if sp.level > 1 && configuration.zapUnsyncChildren { zapped += zapUnsyncChildren(sp) }
        for i in 0..<512 where SPTE.isPresent(sp.spt[i]) {
            zapSPTE(sp, i)
            stats.sptesZapped &+= 1
        }
        for ref in sp.parents {
            page(ref.page)?.spt[Int(ref.index)] = 0
            noteChange(ref.page)
        }
        sp.removeAllParents()
        noteChange(sp.id)
        if !sp.role.invalid && sp.hasGPTEs { unaccountShadowed(sp) }
        if sp.unsync && !injected.corrupts(.unsyncOnZap) { unlinkUnsync(sp) }
        if sp.onActiveList { removeFromActive(sp) }
        if sp.rootCount == 0 {
            zapped += 1
            if !sp.role.invalid || !invalidList.contains(sp.id) { invalidList.append(sp.id) }
        }
        let wasRoot = sp.rootCount > 0 && !sp.role.invalid
        sp.role.invalid = true
        if wasRoot { for v in vcpus { v.request(.freeObsoleteRoots) } }
        return zapped
    }

    /// KVM's `mmu_zap_unsync_children`: zaps the unsync pages below `parent`.
    private func zapUnsyncChildren(_ parent: ShadowPage) -> Int {
        var zapped = 0
        while let batch = collectUnsync(below: parent) {
            for leaf in batch.leavesWithPaths {
                prepareZap(leaf.page)
                clearPath(leaf.path)
                zapped += 1
            }
        }
        return zapped
    }

    /// Frees every page zapped since the last commit, after one remote flush.
    public func commitZaps() {
        guard !invalidList.isEmpty else { return }
        flushRemoteTLBs()
        for id in invalidList {
            guard let sp = page(id), sp.rootCount == 0 else { continue }
            free(sp)
        }
        invalidList.removeAll()
    }

    func free(_ sp: ShadowPage) {
        unhash(sp)
        arena.freeRecord(sp.id)
        noteChange(sp.id)
        slots.clear(sp.id)
        freeIDs.append(sp.id)
        stats.shadowPages &-= 1
    }

    private func removeFromActive(_ sp: ShadowPage) {
        sp.onActiveList = false
        activeHoles += 1
        if activeHoles > 64 && activeHoles * 2 > activeOrder.count {
            activeOrder.removeAll { activePage($0) == nil }
            activeHoles = 0
        }
    }

    /// KVM's `make_mmu_pages_available`: below 5 free pages, recycle the oldest down to
    /// 25 free. False when nothing could be freed.
    func makePagesAvailable() -> Bool {
        let available = maxShadowPages - usedShadowPages
        guard available < 5 else { return true }
        let target = 25 - available
        var zapped = 0
        for slot in activeOrder {
            guard let sp = activePage(slot), sp.rootCount == 0 else { continue }
            zapped += prepareZap(sp)
            if zapped >= target { break }
        }
        commitZaps()
        stats.mmuRecycled &+= UInt64(zapped)
        if tracing, zapped > 0 { trace("shadowsim_recycle", "zapped \(zapped) used \(usedShadowPages) max \(maxShadowPages)") }
        return maxShadowPages > usedShadowPages
    }

    /// Zaps every shadow page of `gfn` so guest stores to it run natively
    /// (KVM's `kvm_mmu_unprotect_page`).
    /// Zaps every shadow page of `gfn`. True when one could go at once: a page in use as
    /// a root (current or cached) only becomes invalid, and KVM's unprotect-and-retry
    /// does not retry for that (`!list_empty(&invalid_list)`).
    @discardableResult
    public func unprotect(gfn: UInt64) -> Bool {
        var freed = 0
        for sp in shadowPages(of: gfn) { freed += prepareZap(sp) }
        commitZaps()
        return freed > 0
    }

    // MARK: Flushes

    /// Asks every vCPU to flush its TLB before it runs again (KVM's
    /// `kvm_flush_remote_tlbs`). Other running vCPUs cost an IPI each.
    public func flushRemoteTLBs(from initiator: ShadowVCPU? = nil) {
        stats.remoteTLBFlushRequests &+= 1
        var targets: UInt64 = 0
        for v in vcpus {
            v.request(.flushAll)
            if configuration.otherVCPUsRunning && v.running && v !== (initiator ?? actingVCPU) { targets += 1 }
        }
        if targets > 0 {
            stats.remoteTLBFlush &+= 1
            stats.remoteFlushTargets &+= targets
        }
        if tracing { trace("shadowsim_remote_flush", vcpu: initiator, "targets \(targets)") }
    }
}

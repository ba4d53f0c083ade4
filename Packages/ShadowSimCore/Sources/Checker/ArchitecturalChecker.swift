import X86
import ShadowMMU

/// How the checker verifies the shadow MMU's invariants at a sync point.
public enum MMUVerification: Sendable {
    /// Only what changed since the previous sync point (`ShadowMMU.verifyChanges`).
    case changes
    /// Everything (`ShadowMMU.verify`): cost grows with the MMU's size.
    case full
    /// Both, failing if they disagree (for testing the incremental verification).
    case crossChecked
    /// `changes` at every sync point, and both (failing if they disagree) at every
    /// `n`-th: what the fuzzer runs, at a fraction of `crossChecked`'s cost.
    case crossCheckedEvery(Int)
}

/// Judges every access result a vCPU gets against what x86 allows, and the shadow
/// MMU's invariants at every sync point.
///
/// The rule (per vCPU and linear address): the vCPU may use the translation the
/// guest's tables give now, or any translation they gave at some time since the vCPU
/// last invalidated that address (INVLPG of it, a flushing MOV to CR3 of its PCID for
/// non-global entries, a PGE toggle, INVPCID that covers it). Non-present entries are
/// never cached, so a change from not present to present needs no invalidation.
///
/// How: before any store lands in a frame that holds paging structures reachable from a
/// root some vCPU runs on, the translations the store may take away are recorded for the
/// vCPUs using that root, tagged with the PCID (or as global). A root left under a PCID
/// that stays cached has all its translations recorded as it is left: nothing new can be
/// cached under a PCID that is not current, so later stores to its tables take nothing
/// away (and its frames may be reused for anything, as a kernel frees a dead process's
/// tables). Invalidations remove what the SDM says they remove, and nothing more, so the
/// checker never demands more than the architecture.
///
/// One deliberate exception: a host store (`writePhysical`: a device, or QEMU writing
/// guest RAM) is not a guest store, and no shadow MMU traps it — KVM's shadow pages
/// stay stale until the guest itself rewrites the entry or the page is zapped, however
/// the guest invalidates. An access whose guest walk reads a frame the host ever stored
/// to is therefore not judged (`hostStoreExemptions` counts them).
public final class ArchitecturalChecker: MachineObserver {
    /// Neither is retained: the machine's vCPUs hold the checker (as their observer),
    /// and the MMU holds the machine, so strong references back would keep all three
    /// alive forever. Whoever owns the machine and its MMU keeps them alive as long as
    /// the checker is used.
    public unowned(unsafe) let machine: Machine
    public unowned(unsafe) let mmu: ShadowMMU?
    /// Verify the shadow MMU's invariants after every event, not only at sync points.
    public var paranoid: Bool
    /// How the MMU's invariants are verified at sync points.
    public var verification = MMUVerification.changes
    /// Sync points at which the MMU was verified.
    var syncPoints: UInt64 = 0
    /// Events seen (accesses and control instructions), numbered from 1.
    public internal(set) var events: UInt64 = 0
    public internal(set) var accessesChecked: UInt64 = 0
    public internal(set) var recordsAdded: UInt64 = 0
    /// Accesses left unjudged because their walk read a frame written by a host store.
    public internal(set) var hostStoreExemptions: UInt64 = 0
    /// Per vCPU: accesses whose result only a stale translation explains (one x86 allows:
    /// the guest changed the entry and had not invalidated it on that vCPU yet). On bare
    /// metal a non-zero count means the guest used an address before its own
    /// invalidation; under a policy that flushes more than the guest asked, the count
    /// drops because the hypervisor hid the missing invalidation.
    public internal(set) var staleAllowed: [UInt64]
    /// Frames the host stored to (see the type's comment).
    var hostWrittenFrames: Set<UInt64> = []

    /// A translation a vCPU may still use although the tables no longer give it.
    struct Stale {
        var pageBase: UInt64          // linear base of the page
        var size: PageSize
        var frame: UInt64             // physical base
        var rights: PageRights        // W, U, XD (raw) combined over the levels
        var dirty: Bool
        var tag: Int32                // PCID, or -1 for a global translation
        var since: UInt64             // event after which the tables stopped giving it
        var entryAddress: UInt64      // where its leaf entry lives
    }

    /// A CR3 load records the global translations of the root it leaves. Doing it again
    /// for the same root adds nothing while (1) the tables read then are unchanged, (2) the
    /// controls are the same, and (3) none of the vCPU's global records was removed since:
    /// every record would be a duplicate. This remembers when that holds.
    struct GlobalSnapshot {
        var root: PagingRoot
        var controls: PagingControls
        var globalRemovals: UInt64
        /// The frames of the tables the snapshot read.
        var tables: Set<UInt64>
        static let kept = 16
    }

    /// The root a vCPU runs on, under its PCID.
    struct Context {
        var pcid: UInt16
        var root: PagingRoot
    }

    var stale: [[UInt64: [Stale]]]
    /// Per vCPU: global records removed from its stale list so far (see `GlobalSnapshot`).
    var globalRemovals: [UInt64]
    /// Per vCPU: the last snapshots of the global translations of roots it left (the
    /// most recent `GlobalSnapshot.kept` roots).
    var globalSnapshots: [[GlobalSnapshot]]
    /// The tables those snapshots read (all of them: a store to one voids the snapshots
    /// that read it).
    var globalSnapshotTables = Set<UInt64>()
    var contexts: [Context]
    var index = StructureIndex()
    var indexValid = false
    var recent = RecentEvents()

    public init(machine: Machine, mmu: ShadowMMU?, paranoid: Bool = false) {
        self.machine = machine
        self.mmu = mmu
        self.paranoid = paranoid
        stale = Array(repeating: [:], count: machine.vcpus.count)
        globalRemovals = Array(repeating: 0, count: machine.vcpus.count)
        globalSnapshots = Array(repeating: [], count: machine.vcpus.count)
        staleAllowed = Array(repeating: 0, count: machine.vcpus.count)
        contexts = machine.vcpus.map { Context(pcid: $0.currentPCID, root: $0.pagingRoot) }
        for v in machine.vcpus { v.observer = self }
    }

    // MARK: Stores

    public func willStore(_ vcpu: VCPU?, physicalAddress pa: UInt64, size: Int) throws(MachineError) {
        recent.add(events &+ 1, .store(vcpu: vcpu?.index ?? -1, size: size, physicalAddress: pa))
        if vcpu == nil { hostWrittenFrames.insert(pa >> 12) }
        if !globalSnapshotTables.isEmpty && globalSnapshotTables.contains(pa >> 12) {
            for v in globalSnapshots.indices { globalSnapshots[v].removeAll { $0.tables.contains(pa >> 12) } }
            globalSnapshotTables = globalSnapshots.reduce(into: Set<UInt64>()) { all, list in
                for snapshot in list { all.formUnion(snapshot.tables) }
            }
        }
        ensureIndex()
        guard let uses = index.tables[pa >> 12] else { return }
        for use in uses {
            let esize = UInt64(use.entrySize)
            let first = (pa & 0xFFF) / esize
            let last = min(((pa & 0xFFF) + UInt64(size) - 1) / esize, UInt64(use.entries - 1))
            guard first <= last else { continue }
            for i in first...last {
                let address = (pa & ~0xFFF) + i * esize
                let entry = machine.memory.load(address, size: use.entrySize)
                if use.level > 1 { indexValid = false }
                guard entry & PTE.present != 0 else { continue }
                let va = use.vaBase &+ i * use.span
                var found: [Leaf] = []
                index.collectLeaves(entry: entry, address: address, level: use.level, va: va, rights: use.rights,
                                    controls: use.controls, memory: machine.memory, into: &found)
                for (vcpuIndex, pcid) in index.users[use.root] ?? [] {
                    let pge = machine.vcpus[vcpuIndex].cr4 & CR4.pge != 0
                    for leaf in found { addStale(leaf, vcpu: vcpuIndex, pcid: pcid, pge: pge) }
                }
            }
        }
    }

    func addStale(_ leaf: Leaf, vcpu: Int, pcid: UInt16, pge: Bool) {
        let record = Stale(pageBase: leaf.va, size: leaf.size, frame: leaf.frame, rights: leaf.rights, dirty: leaf.dirty,
                           tag: leaf.global && pge ? -1 : Int32(pcid), since: events, entryAddress: leaf.entryAddress)
        let key = StructureIndex.key(leaf.va, leaf.size)
        var list = stale[vcpu][key] ?? []
        guard !list.contains(where: { $0.frame == record.frame && $0.rights == record.rights && $0.tag == record.tag
                                      && $0.dirty == record.dirty }) else { return }
        list.append(record)
        stale[vcpu][key] = list
        recordsAdded &+= 1
    }

    /// Records every translation of `root` for a vCPU (the entries it may have cached
    /// before leaving that context).
    func snapshot(_ root: PagingRoot, vcpu: Int, pcid: UInt16, onlyGlobal: Bool) {
        let v = machine.vcpus[vcpu]
        let pge = v.cr4 & CR4.pge != 0
        if onlyGlobal && !pge { return }
        if onlyGlobal, globalSnapshots[vcpu].contains(where: {
            $0.root == root && $0.controls == v.controls && $0.globalRemovals == globalRemovals[vcpu]
        }) { return }
        var leaves: [Leaf] = []
        var tables = Set<UInt64>()
        index.enumerateLeaves(root: root, controls: v.controls, memory: machine.memory, onlyGlobal: onlyGlobal,
                              tables: onlyGlobal ? { tables.insert($0) } : nil) {
            leaves.append($0)
        }
        for leaf in leaves {
            addStale(leaf, vcpu: vcpu, pcid: pcid, pge: pge)
        }
        if onlyGlobal {
            globalSnapshotTables.formUnion(tables)
            globalSnapshots[vcpu].removeAll { $0.root == root || $0.globalRemovals != globalRemovals[vcpu] }
            if globalSnapshots[vcpu].count == GlobalSnapshot.kept { globalSnapshots[vcpu].removeFirst() }
            globalSnapshots[vcpu].append(GlobalSnapshot(root: root, controls: v.controls, globalRemovals: globalRemovals[vcpu],
                                                        tables: tables))
        }
    }

    func ensureIndex() {
        guard !indexValid else { return }
        let users = contexts.enumerated().map { i, c in (c.root, machine.vcpus[i].controls, i, c.pcid) }
        index.rebuild(users, memory: machine.memory)
        indexValid = true
    }

    // MARK: Control instructions

    public func didControl(_ vcpu: VCPU, _ event: ControlEvent) throws(MachineError) {
        events &+= 1
        let v = vcpu.index
        recent.add(events, .control(vcpu: v, event))
        switch event {
        case .cr3Load(_, let previousPCID, let noFlush):
            let old = contexts[v]
            let pcide = vcpu.cr4 & CR4.pcide != 0
            let newPCID = vcpu.currentPCID
            // Global translations of the root being left survive the load.
            snapshot(old.root, vcpu: v, pcid: previousPCID, onlyGlobal: true)
            if pcide {
                // The old context may still be used later (under its PCID): all it gives
                // now may stay cached.
                if newPCID != previousPCID || noFlush {
                    snapshot(old.root, vcpu: v, pcid: previousPCID, onlyGlobal: false)
                }
                if !noFlush { removeStale(v) { $0.tag == Int32(newPCID) } }
                contexts[v] = Context(pcid: newPCID, root: vcpu.pagingRoot)
            } else {
                removeStale(v) { $0.tag == 0 }
                contexts[v] = Context(pcid: 0, root: vcpu.pagingRoot)
            }
            indexValid = false
        case .invlpg(let va):
            let pcid = Int32(vcpu.currentPCID)
            removeStale(v, covering: va) { $0.tag == pcid || $0.tag == -1 }
        case .invpcid(let type, let pcid, let va):
            switch type {
            case .individualAddress: removeStale(v, covering: va) { $0.tag == Int32(pcid) }
            case .singleContext:
                removeStale(v) { $0.tag == Int32(pcid) }
            case .allContextsIncludingGlobals:
                removeStale(v) { _ in true }
            case .allContexts:
                removeStale(v) { $0.tag != -1 }
            }
        case .cr4Write(let previous):
            let changed = previous ^ vcpu.cr4
            if contexts[v].root != vcpu.pagingRoot {
                // PAE: the write reloaded the PDPTEs with other values. What the old ones
                // gave may stay cached (unless the flushes below remove it).
                snapshot(contexts[v].root, vcpu: v, pcid: vcpu.currentPCID, onlyGlobal: false)
            }
            if changed & CR4.pge != 0 || (changed & CR4.pcide != 0 && vcpu.cr4 & CR4.pcide == 0) {
                removeStale(v) { _ in true }
                contexts[v].pcid = vcpu.currentPCID
            } else if changed & CR4.smep != 0 && vcpu.cr4 & CR4.smep != 0 {
                let pcid = Int32(vcpu.currentPCID)
                removeStale(v) { $0.tag == pcid }
            }
            contexts[v].root = vcpu.pagingRoot
            indexValid = false
        case .flushHypercall(.addresses(let vas), _):
            let pcid = Int32(vcpu.currentPCID)
            for va in vas { removeStale(v, covering: va) { $0.tag == pcid || $0.tag == -1 } }
        case .flushHypercall(.everything, _):
            removeStale(v) { _ in true }
        case .cr0Write, .eferWrite:
            break
        }
        try verifyMMU(after: "vcpu[\(v + 1)] \(describe(event))")
    }

    func removeStale(_ v: Int, where shouldRemove: (Stale) -> Bool) {
        for (key, list) in stale[v] {
            let kept = list.filter { !shouldRemove($0) }
            noteRemovals(v, from: list, kept: kept)
            stale[v][key] = kept.isEmpty ? nil : kept
        }
    }

    /// Counts a removal of global records (what voids a remembered `GlobalSnapshot`).
    private func noteRemovals(_ v: Int, from list: [Stale], kept: [Stale]) {
        guard kept.count < list.count else { return }
        func globals(_ records: [Stale]) -> Int { records.reduce(0) { $0 + ($1.tag == -1 ? 1 : 0) } }
        if globals(kept) < globals(list) { globalRemovals[v] &+= 1 }
    }

    func removeStale(_ v: Int, covering va: UInt64, where shouldRemove: (Stale) -> Bool) {
        for size in [PageSize.size4K, .size2M, .size4M, .size1G] {
            let key = StructureIndex.key(va & ~size.offsetMask, size)
            guard let list = stale[v][key] else { continue }
            let kept = list.filter { !shouldRemove($0) }
            noteRemovals(v, from: list, kept: kept)
            stale[v][key] = kept.isEmpty ? nil : kept
        }
    }

    func verifyMMU(after what: String) throws(MachineError) {
        guard let mmu else { return }
        let problems: [String]
        syncPoints &+= 1
        var verification = paranoid ? .full : self.verification
        if case .crossCheckedEvery(let n) = verification { verification = syncPoints % UInt64(max(n, 1)) == 0 ? .crossChecked : .changes }
        switch verification {
        case .changes, .crossCheckedEvery:
            problems = mmu.verifyChanges()
        case .full:
            problems = mmu.verify()
        case .crossChecked:
            let incremental = mmu.verifyChanges(), full = mmu.verify()
            if incremental.isEmpty != full.isEmpty {
                throw .violation("the MMU's incremental verification disagrees with the full one at event \(events) (after \(what)) under policy \(mmu.policy.name): incremental says \(incremental.first ?? "nothing"), full says \(full.first ?? "nothing")")
            }
            problems = full
        }
        guard problems.isEmpty else {
            throw .violation("shadow MMU invariant broken at event \(events) (after \(what)) under policy \(mmu.policy.name):\n  "
                             + problems.prefix(5).joined(separator: "\n  ") + recent.report(frames: nil, describe: describe))
        }
    }

    func describe(_ event: ControlEvent) -> String {
        switch event {
        case .cr3Load(let previous, _, let noFlush):
            return "MOV to CR3 (from \(hex(previous)))\(noFlush ? " without flush" : "")"
        case .cr4Write(let previous): return "MOV to CR4 (from \(hex(previous)))"
        case .cr0Write(let previous): return "MOV to CR0 (from \(hex(previous)))"
        case .eferWrite(let previous): return "WRMSR EFER (from \(hex(previous)))"
        case .flushHypercall(.everything, let by): return "flush hypercall by vcpu[\(by + 1)] (everything)"
        case .flushHypercall(.addresses(let vas), let by):
            return "flush hypercall by vcpu[\(by + 1)] (\(vas.prefix(4).map(hex).joined(separator: ", "))\(vas.count > 4 ? ", …" : ""))"
        case .invlpg(let va): return "INVLPG \(hex(va))"
        case .invpcid(let type, let pcid, let va): return "INVPCID \(type) PCID \(pcid) \(hex(va))"
        }
    }
}

import X86

/// One translation found in a set of paging structures.
struct Leaf {
    var va: UInt64
    var size: PageSize
    var frame: UInt64
    var rights: PageRights
    var dirty: Bool
    var global: Bool
    var entryAddress: UInt64
}

/// Which frames hold paging structures of the roots vCPUs use, at what level and for
/// which linear addresses: what a store must be checked against.
struct StructureIndex {
    struct TableUse {
        var root: Int
        var level: Int
        var vaBase: UInt64
        var span: UInt64
        var entries: Int
        var entrySize: Int
        /// Rights combined over the entries above this table.
        var rights: PageRights
        var controls: PagingControls
    }

    var tables: [UInt64: [TableUse]] = [:]
    /// Root id → the (vCPU, PCID) contexts that use it.
    var users: [Int: [(Int, UInt16)]] = [:]
    private var roots: [(PagingRoot, PagingMode)] = []

    static let allRights = PageRights(rawValue: PageRights.writable.rawValue | PageRights.user.rawValue)

    /// A key for a linear page of a given size.
    static func key(_ pageBase: UInt64, _ size: PageSize) -> UInt64 {
        (pageBase >> 12) << 2 | UInt64(size.rawValue)
    }

    mutating func rebuild(_ contexts: [(PagingRoot, PagingControls, Int, UInt16)], memory: GuestMemory) {
        tables.removeAll(keepingCapacity: true)
        users.removeAll(keepingCapacity: true)
        roots.removeAll()
        for (root, controls, vcpu, pcid) in contexts {
            if let id = roots.firstIndex(where: { $0.0 == root && $0.1 == controls.mode }) {
                users[id, default: []].append((vcpu, pcid))
                continue
            }
            let id = roots.count
            roots.append((root, controls.mode))
            users[id] = [(vcpu, pcid)]
            forEachTopTable(root, controls) { table, level, vaBase in
                indexTable(table, level: level, vaBase: vaBase, rights: StructureIndex.allRights, root: id,
                           controls: controls, memory: memory)
            }
        }
    }

    private func forEachTopTable(_ root: PagingRoot, _ controls: PagingControls, _ body: (UInt64, Int, UInt64) -> Void) {
        switch root {
        case .table(let base):
            body(base, controls.mode.levels, 0)
        case .pdptes(let registers):
            for i in 0..<4 {
                let pdpte = registers[i]
                guard pdpte & PTE.present != 0, !PageWalker.pdpteFaults(pdpte, controls: controls) else { continue }
                body(controls.frameAddress(of: pdpte, level: 3, isLeaf: false), 2, UInt64(i) << 30)
            }
        }
    }

    private static func geometry(_ mode: PagingMode, level: Int) -> (entries: Int, span: UInt64) {
        if mode == .legacy32 { return (1024, UInt64(1) << UInt64(12 + 10 * (level - 1))) }
        return (512, UInt64(1) << UInt64(12 + 9 * (level - 1)))
    }

    private mutating func indexTable(_ table: UInt64, level: Int, vaBase: UInt64, rights: PageRights, root: Int,
                                     controls: PagingControls, memory: GuestMemory) {
        let mode = controls.mode
        let (entries, span) = StructureIndex.geometry(mode, level: level)
        let size = mode.entrySize
        guard memory.contains(table, size: entries * size) else { return }
        tables[table >> 12, default: []].append(TableUse(root: root, level: level, vaBase: vaBase, span: span,
                                                         entries: entries, entrySize: size, rights: rights,
                                                         controls: controls))
        guard level > 1, let frame = StructureIndex.frame(of: table, memory: memory) else { return }
        for i in 0..<entries {
            let entry = GuestMemory.load(frame, offset: i * size, size: size)
            guard entry & PTE.present != 0, !isLeaf(entry, level, controls),
                  entry & controls.reservedBits(level: level, isLeaf: false) == 0 else { continue }
            indexTable(controls.frameAddress(of: entry, level: level, isLeaf: false), level: level - 1,
                       vaBase: vaBase &+ UInt64(i) &* span, rights: combine(rights, entry, controls), root: root,
                       controls: controls, memory: memory)
        }
    }

    /// The frame holding a page-aligned table, or nil when it was never written (every
    /// entry reads as not present, so there is nothing to visit).
    @inline(__always)
    static func frame(of table: UInt64, memory: GuestMemory) -> GuestMemory.Frame? {
        assert(table & 0xFFF == 0, "paging structures below the top are page-aligned")
        return memory.frame(table >> 12)
    }

    private func isLeaf(_ entry: UInt64, _ level: Int, _ controls: PagingControls) -> Bool {
        level == 1 || (entry & PTE.pageSize != 0 && controls.mode.honoursPageSize(level: level, pse: controls.cr4PSE))
    }

    private func combine(_ rights: PageRights, _ entry: UInt64, _ controls: PagingControls) -> PageRights {
        var r = rights
        if entry & PTE.writable == 0 { r.remove(.writable) }
        if entry & PTE.user == 0 { r.remove(.user) }
        if controls.mode.hasWideEntries && entry & PTE.executeDisable != 0 { r.insert(.executeDisable) }
        return r
    }

    /// Every translation reachable through `entry` (at `level`, mapping from `va`); only
    /// the global ones if `onlyGlobal`. `tables`, if given, hears of every table read.
    func collectLeaves(entry: UInt64, address: UInt64, level: Int, va: UInt64, rights: PageRights,
                       controls: PagingControls, memory: GuestMemory, onlyGlobal: Bool = false,
                       tables: ((UInt64) -> Void)? = nil, into out: inout [Leaf]) {
        guard entry & PTE.present != 0 else { return }
        let leaf = isLeaf(entry, level, controls)
        guard entry & controls.reservedBits(level: level, isLeaf: leaf) == 0 else { return }
        let combined = combine(rights, entry, controls)
        if leaf {
            if onlyGlobal && entry & PTE.global == 0 { return }
            let size = controls.mode.pageSize(leafLevel: level)
            out.append(Leaf(va: canonical(va, controls.mode), size: size,
                            frame: controls.frameAddress(of: entry, level: level, isLeaf: true), rights: combined,
                            dirty: entry & PTE.dirty != 0, global: entry & PTE.global != 0, entryAddress: address))
            return
        }
        let (entries, span) = StructureIndex.geometry(controls.mode, level: level - 1)
        let table = controls.frameAddress(of: entry, level: level, isLeaf: false)
        let size = controls.mode.entrySize
        tables?(table >> 12)
        guard memory.contains(table, size: entries * size), let frame = StructureIndex.frame(of: table, memory: memory) else {
            return
        }
        for i in 0..<entries {
            let child = GuestMemory.load(frame, offset: i * size, size: size)
            guard child & PTE.present != 0 else { continue }
            collectLeaves(entry: child, address: table + UInt64(i * size), level: level - 1, va: va &+ UInt64(i) &* span,
                          rights: combined, controls: controls, memory: memory, onlyGlobal: onlyGlobal, tables: tables,
                          into: &out)
        }
    }

    /// Every translation of `root` (only the global ones if `onlyGlobal`); `tables`, if
    /// given, hears of every table read (by frame).
    func enumerateLeaves(root: PagingRoot, controls: PagingControls, memory: GuestMemory, onlyGlobal: Bool = false,
                         tables: ((UInt64) -> Void)? = nil, _ body: (Leaf) -> Void) {
        var leaves: [Leaf] = []
        forEachTopTable(root, controls) { table, level, vaBase in
            tables?(table >> 12)
            let (entries, span) = StructureIndex.geometry(controls.mode, level: level)
            let size = controls.mode.entrySize
            guard memory.contains(table, size: entries * size) else { return }
            for i in 0..<entries {
                let entry = memory.load(table + UInt64(i * size), size: size)
                guard entry & PTE.present != 0 else { continue }
                collectLeaves(entry: entry, address: table + UInt64(i * size), level: level, va: vaBase &+ UInt64(i) &* span,
                              rights: StructureIndex.allRights, controls: controls, memory: memory, onlyGlobal: onlyGlobal,
                              tables: tables, into: &leaves)
            }
        }
        leaves.forEach(body)
    }

    /// Sign-extends a linear address the way IA-32e modes require.
    private func canonical(_ va: UInt64, _ mode: PagingMode) -> UInt64 {
        guard mode.isLongMode else { return va & 0xFFFF_FFFF }
        let shift = UInt64(64 - mode.linearAddressBits)
        return UInt64(bitPattern: Int64(bitPattern: va << shift) >> Int64(shift))
    }
}

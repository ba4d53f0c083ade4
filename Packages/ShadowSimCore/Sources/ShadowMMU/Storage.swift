import X86

// Every unsafe memory access of the shadow MMU engine is in this file. Each type owns
// (or, for a guest table, borrows) its memory, states when it is valid, and offers the
// rest of the engine plain subscripts and methods: outside this file the engine holds
// no pointer.

/// A reference that neither retains nor checks its object: the engine's back references
/// on hot paths (a vCPU's to its MMU and to the machine's vCPU, the vCPU whose exit is
/// being handled, the host's registrations, the unsync lists' entries), where a strong
/// one would make a cycle and a checked `unowned` or a `weak` one costs reference
/// counting on every use.
///
/// Invariant: the object outlives every use of the reference (each holder says why).
struct UnownedReference<Object: AnyObject> {
    unowned(unsafe) let object: Object

    @inline(__always) init(_ object: Object) { self.object = object }
}

/// The sptes of one shadow page: 512 entries, then (upper levels only) the 8 words of
/// the unsync-child bitmap, in one allocation.
///
/// Invariant: the allocation belongs to one arena slot (`PageArena`): made for the first
/// page with that id, kept and zeroed for the next one of the same size, replaced only
/// for a page of the other size, freed with the arena; `PageSlots` keeps a copy only
/// while the page is live in its MMU.
struct SPTEntries {
    fileprivate let words: UnsafeMutablePointer<UInt64>

    fileprivate init(words: UnsafeMutablePointer<UInt64>) { self.words = words }

    static func allocate(withBitmap: Bool) -> SPTEntries {
        let count = count(withBitmap: withBitmap)
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
        return SPTEntries(words: words)
    }

    func deallocate() { words.deallocate() }

    /// Whether this allocation has the unsync-child bitmap.
    fileprivate static func count(withBitmap: Bool) -> Int { withBitmap ? 512 + 8 : 512 }

    /// Clears every word (the sptes, and the bitmap when there is one).
    fileprivate func zero(withBitmap: Bool) { words.update(repeating: 0, count: Self.count(withBitmap: withBitmap)) }

    @inline(__always) subscript(index: Int) -> UInt64 {
        get {
            assert(index >= 0 && index < 512, "spte index \(index)")
            return words[index]
        }
        nonmutating set {
            assert(index >= 0 && index < 512, "spte index \(index)")
            words[index] = newValue
        }
    }

    /// Word `w` (0..<8) of the unsync-child bitmap; only for an allocation made with it.
    @inline(__always) func bitmapWord(_ w: Int) -> UInt64 {
        assert(w >= 0 && w < 8)
        return words[512 + w]
    }

    @inline(__always) func setBitmapWord(_ w: Int, _ value: UInt64) {
        assert(w >= 0 && w < 8)
        words[512 + w] = value
    }
}

/// One shadow page's fields, in its MMU's arena (`ShadowPage` is the view the engine and
/// policies read and write them through). Ordered to pack into 56 bytes.
struct PageRecord {
    var gfn: UInt64 = 0
    var spt: SPTEntries?
    var parents: [SPTERef] = []
    /// Creation order, never reused; 0 while the slot is free.
    var serial: UInt64 = 0
    var role = PageRole()
    var listIndex: Int32 = -1
    var unsyncChildren: Int32 = 0
    var rootCount: Int32 = 0
    var writeFloodingCount: Int32 = 0
    var unsync = false
    var onActiveList = false
    /// Whether `spt` was allocated with the unsync-child bitmap (kept while free).
    var sptHasBitmap = false
}

/// Where one page's record lives: a plain pointer (a `ShadowPage` copies it without any
/// reference counting), valid while the arena that made it is.
struct PageRecordRef {
    fileprivate let pointer: UnsafeMutablePointer<PageRecord>

    @inline(__always) var gfn: UInt64 { pointer.pointee.gfn }
    @inline(__always) var spt: SPTEntries { pointer.pointee.spt! }
    @inline(__always) var serial: UInt64 { pointer.pointee.serial }
    @inline(__always) var role: PageRole {
        get { pointer.pointee.role }
        nonmutating set { pointer.pointee.role = newValue }
    }
    @inline(__always) var parents: [SPTERef] { pointer.pointee.parents }
    @inline(__always) func appendParent(_ ref: SPTERef) { pointer.pointee.parents.append(ref) }
    @inline(__always) func removeParent(at index: Int) { pointer.pointee.parents.remove(at: index) }
    @inline(__always) func removeAllParents() { pointer.pointee.parents.removeAll() }
    @inline(__always) var listIndex: Int32 {
        get { pointer.pointee.listIndex }
        nonmutating set { pointer.pointee.listIndex = newValue }
    }
    @inline(__always) var unsyncChildren: Int32 {
        get { pointer.pointee.unsyncChildren }
        nonmutating set { pointer.pointee.unsyncChildren = newValue }
    }
    @inline(__always) var rootCount: Int32 {
        get { pointer.pointee.rootCount }
        nonmutating set { pointer.pointee.rootCount = newValue }
    }
    @inline(__always) var writeFloodingCount: Int32 {
        get { pointer.pointee.writeFloodingCount }
        nonmutating set { pointer.pointee.writeFloodingCount = newValue }
    }
    @inline(__always) var unsync: Bool {
        get { pointer.pointee.unsync }
        nonmutating set { pointer.pointee.unsync = newValue }
    }
    @inline(__always) var onActiveList: Bool {
        get { pointer.pointee.onActiveList }
        nonmutating set { pointer.pointee.onActiveList = newValue }
    }
}

/// The records of one MMU's shadow pages by id, in chunks of 256 that never move. A
/// plain value owned by one `ShadowMMU`, which calls `release()` once, as it goes.
///
/// Invariants: every record of an allocated chunk is initialised; record `id` has a
/// non-zero serial exactly while page `id` is live; a free record has no parents, and
/// keeps its sptes' allocation for the next page of that id (see `SPTEntries`), so a
/// view of a freed page reads a free record or its successor, never freed memory,
/// unless the successor needed the other size of allocation.
struct PageArena {
    private static let chunkShift = 8
    private static let chunkSize = 1 << chunkShift
    private var chunks: UnsafeMutablePointer<UnsafeMutablePointer<PageRecord>> = .allocate(capacity: 0)
    private var chunkCount = 0
    /// Ids below this have a record (`makeRecord` extends it by one at a time).
    private(set) var count = 0

    func release() {
        for c in 0..<chunkCount {
            let chunk = chunks[c]
            for i in 0..<Self.chunkSize { chunk[i].spt?.deallocate() }
            chunk.deinitialize(count: Self.chunkSize)
            chunk.deallocate()
        }
        chunks.deallocate()
    }

    @inline(__always) func ref(_ id: Int32) -> PageRecordRef {
        let i = Int(id)
        return PageRecordRef(pointer: chunks[i >> Self.chunkShift] + (i & (Self.chunkSize - 1)))
    }

    /// The record of live page `id`, or nil (out of range or free).
    @inline(__always) func liveRef(_ id: Int32) -> PageRecordRef? {
        guard id >= 0 && Int(id) < count else { return nil }
        let r = ref(id)
        return r.serial != 0 ? r : nil
    }

    /// Makes record `id` (at most `count`: a freed id, or the next new one) page `serial`
    /// of `gfn` and `role`, with zeroed sptes.
    mutating func makeRecord(_ id: Int32, gfn: UInt64, role: PageRole, serial: UInt64) -> PageRecordRef {
        precondition(id >= 0 && Int(id) <= count && serial != 0)
        if Int(id) == count {
            if count == chunkCount << Self.chunkShift { addChunk() }
            count += 1
        }
        let r = ref(id)
        let withBitmap = role.level > 1
        var spt = r.pointer.pointee.spt
        if let old = spt, r.pointer.pointee.sptHasBitmap != withBitmap {
            old.deallocate()
            spt = nil
        }
        spt?.zero(withBitmap: withBitmap)
        r.pointer.pointee = PageRecord(gfn: gfn, spt: spt ?? .allocate(withBitmap: withBitmap), serial: serial, role: role,
                                       onActiveList: true, sptHasBitmap: withBitmap)
        return r
    }

    /// Frees record `id` (its sptes' allocation stays for the next page of that id).
    func freeRecord(_ id: Int32) {
        let r = ref(id)
        r.pointer.pointee = PageRecord(spt: r.pointer.pointee.spt, sptHasBitmap: r.pointer.pointee.sptHasBitmap)
    }

    private mutating func addChunk() {
        let newChunks = UnsafeMutablePointer<UnsafeMutablePointer<PageRecord>>.allocate(capacity: chunkCount + 1)
        newChunks.moveInitialize(from: chunks, count: chunkCount)
        chunks.deallocate()
        let chunk = UnsafeMutablePointer<PageRecord>.allocate(capacity: Self.chunkSize)
        chunk.initialize(repeating: PageRecord(), count: Self.chunkSize)
        newChunks[chunkCount] = chunk
        chunks = newChunks
        chunkCount += 1
    }
}

/// By page id, the sptes and level of each live shadow page: the hardware walk of the
/// shadow tables chases ids through these two tables without touching, or retaining, a
/// `ShadowPage`. A plain value of three words (copying it costs no reference counting
/// on the walk), owned by one `ShadowMMU`, which calls `release()` once, as it goes.
///
/// Invariant: slot `id` holds page `id`'s entries and level exactly while that page is
/// live in the MMU (set when it is allocated, cleared when it is freed, before its
/// `ShadowPage` can go); a free slot has no entries and level 0.
struct PageSlots {
    private var entries: UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?> = .allocate(capacity: 0)
    private var levels: UnsafeMutablePointer<UInt8> = .allocate(capacity: 0)
    private var capacity = 0

    func release() {
        entries.deallocate()
        levels.deallocate()
    }

    mutating func set(_ id: Int32, _ spt: SPTEntries, level: Int) {
        if Int(id) >= capacity { grow(to: Int(id) + 1) }
        entries[Int(id)] = spt.words
        levels[Int(id)] = UInt8(level)
    }

    mutating func clear(_ id: Int32) {
        guard Int(id) < capacity else { return }
        entries[Int(id)] = nil
        levels[Int(id)] = 0
    }

    private mutating func grow(to minimum: Int) {
        let newCapacity = max(minimum, capacity * 2, 64)
        let newEntries = UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>.allocate(capacity: newCapacity)
        newEntries.initialize(repeating: nil, count: newCapacity)
        newEntries.update(from: entries, count: capacity)
        let newLevels = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        newLevels.initialize(repeating: 0, count: newCapacity)
        newLevels.update(from: levels, count: capacity)
        entries.deallocate()
        levels.deallocate()
        (entries, levels, capacity) = (newEntries, newLevels, newCapacity)
    }

    /// The hardware walk of `va` from the page `rootID`: the present leaf spte's page
    /// entries, index and level, or the first nested link met (the caller checks which);
    /// nil at a not-present spte or a free slot.
    @inline(__always)
    func leafSlot(root rootID: Int32, va: UInt64) -> (spt: SPTEntries, index: Int, level: Int)? {
        var id = Int(rootID)
        while id >= 0 && id < capacity, let words = entries[id] {
            let level = Int(levels[id])
            let index = Int((va >> UInt64(12 + 9 * (level - 1))) & 511)
            let spte = words[index]
            guard SPTE.isPresent(spte) else { return nil }
            if level == 1 || spte & (SPTE.large | SPTE.nestedLink) != 0 { return (SPTEntries(words: words), index, level) }
            id = Int(SPTE.target(spte))
        }
        return nil
    }
}

/// A guest table's 512 entries read straight from its frame (4- or 8-byte words, a
/// 32-bit table's quadrant applied), for a sync.
///
/// Valid while the frame is: guest memory never moves or frees a frame once it exists,
/// and a table never written has no frame (it reads as zeros).
struct GuestTableView {
    private let entries64: UnsafePointer<UInt64>?
    private let entries32: UnsafePointer<UInt32>?
    /// The table lies beyond guest memory: every entry is unreadable.
    let unbacked: Bool

    /// The 512 entries of `entrySize` bytes from `first` (naturally aligned in their
    /// frame, so they never cross it).
    init(memory: GuestMemory, first: UInt64, entrySize: Int) {
        unbacked = !memory.contains(first, size: 512 * entrySize)
        let base = unbacked ? nil : memory.frame(first >> 12).map { UnsafeRawPointer($0 + Int(first & 0xFFF)) }
        entries64 = entrySize == 8 ? base?.assumingMemoryBound(to: UInt64.self) : nil
        entries32 = entrySize == 4 ? base?.assumingMemoryBound(to: UInt32.self) : nil
    }

    /// Entry `index`: 0 for a table never written, nil beyond guest memory.
    @inline(__always) func entry(_ index: Int) -> UInt64? {
        assert(index >= 0 && index < 512)
        if let entries64 { return UInt64(littleEndian: entries64[index]) }
        if let entries32 { return UInt64(UInt32(littleEndian: entries32[index])) }
        return unbacked ? nil : 0
    }
}

/// The reverse map's heads for the frames of guest memory, one 8-byte word per frame,
/// in a radix like guest memory's (1 GiB directories of 512-frame chunks, allocated on
/// first use), so a large guest that touched little costs little.
///
/// Invariant: a chunk, once allocated, lives until the radix goes; `chunkPages` counts
/// them.
final class HeadRadix {
    private let directories: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<UInt64>?>?>
    private let directoryCount: Int
    private(set) var chunkPages = 0

    init(frames: UInt64) {
        directoryCount = Int((frames + (1 << 18) - 1) >> 18)
        directories = .allocate(capacity: max(directoryCount, 1))
        directories.initialize(repeating: nil, count: max(directoryCount, 1))
    }

    deinit {
        for d in 0..<directoryCount {
            guard let dir = directories[d] else { continue }
            for c in 0..<512 { dir[c]?.deallocate() }
            dir.deallocate()
        }
        directories.deallocate()
    }

    /// Whether `gfn` has a head here (frames beyond guest memory do not).
    @inline(__always) func covers(_ gfn: UInt64) -> Bool { Int(truncatingIfNeeded: gfn >> 18) < directoryCount }

    var residentBytes: Int { chunkPages * 4096 + directoryCount * 8 }

    /// `gfn`'s head (0 when its chunk was never allocated); `gfn` must be covered.
    @inline(__always) func head(_ gfn: UInt64) -> UInt64 {
        slot(gfn, create: false)?.pointee ?? 0
    }

    /// Sets `gfn`'s head, allocating its chunk for a non-zero value; `gfn` must be covered.
    @inline(__always) func setHead(_ gfn: UInt64, _ value: UInt64) {
        slot(gfn, create: value != 0)?.pointee = value
    }

    /// Every covered frame with a non-zero head, ascending.
    func forEachNonZero(_ body: (UInt64) -> Void) {
        for d in 0..<directoryCount {
            guard let dir = directories[d] else { continue }
            for c in 0..<512 {
                guard let chunk = dir[c] else { continue }
                for i in 0..<512 where chunk[i] != 0 { body(UInt64(d) << 18 | UInt64(c) << 9 | UInt64(i)) }
            }
        }
    }

    @inline(__always) private func slot(_ gfn: UInt64, create: Bool) -> UnsafeMutablePointer<UInt64>? {
        let d = Int(truncatingIfNeeded: gfn >> 18)
        guard d < directoryCount else { return nil }
        var dir = directories[d]
        if dir == nil {
            guard create else { return nil }
            dir = .allocate(capacity: 512)
            dir!.initialize(repeating: nil, count: 512)
            directories[d] = dir
        }
        let c = Int(truncatingIfNeeded: (gfn >> 9) & 511)
        var chunk = dir![c]
        if chunk == nil {
            guard create else { return nil }
            chunk = .allocate(capacity: 512)
            chunk!.initialize(repeating: 0, count: 512)
            dir![c] = chunk
            chunkPages += 1
        }
        return chunk! + Int(truncatingIfNeeded: gfn & 511)
    }
}

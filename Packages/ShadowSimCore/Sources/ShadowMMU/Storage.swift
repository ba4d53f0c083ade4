import X86

// Every unsafe memory access of the shadow MMU engine is in this file. Each type owns
// (or, for a guest table, borrows) its memory, states when it is valid, and offers the
// rest of the engine plain subscripts and methods: outside this file the engine holds
// no pointer.

/// The sptes of one shadow page: 512 entries, then (upper levels only) the 8 words of
/// the unsync-child bitmap, in one allocation.
///
/// Invariant: the allocation lives exactly as long as the `ShadowPage` that made it
/// (allocated in its initialiser, freed in its deinitialiser); `PageSlots` keeps a copy
/// only while the page is live in its MMU.
struct SPTEntries {
    fileprivate let words: UnsafeMutablePointer<UInt64>

    fileprivate init(words: UnsafeMutablePointer<UInt64>) { self.words = words }

    static func allocate(withBitmap: Bool) -> SPTEntries {
        let count = withBitmap ? 512 + 8 : 512
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        words.initialize(repeating: 0, count: count)
        return SPTEntries(words: words)
    }

    func deallocate() { words.deallocate() }

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

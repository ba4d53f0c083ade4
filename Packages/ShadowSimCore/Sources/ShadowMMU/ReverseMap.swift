/// For each guest frame, the leaf sptes that map it (KVM's rmap): one 8-byte head per
/// frame, so the common case — a frame mapped once — costs 8 bytes and no allocation.
///
/// Heads hang off a radix like guest memory's (`HeadRadix`, Storage.swift), so a large
/// guest that touched little costs little. A head is
/// 0 (no mapping), one packed reference with bit 0 set, or one more than the index of a
/// list, shifted left by one, for a frame mapped more than once. Frames beyond guest memory (a guest
/// entry may name one) keep their heads in a dictionary.
///
/// Invariants: a list is never empty and never holds one reference (the head holds it
/// instead); `entries` is the number of references held; a reference appears at most
/// once per frame.
final class ReverseMap {
    /// Heads of the frames of guest memory (Storage.swift).
    private let radix: HeadRadix
    private var outside: [UInt64: UInt64] = [:]
    /// Frames mapped more than once; freed slots are reused.
    private var lists: [[SPTERef]] = []
    private var freeLists: [Int] = []
    /// References held, over all frames.
    private(set) var entries = 0

    init(frames: UInt64) {
        radix = HeadRadix(frames: frames)
    }

    /// Host bytes held: radix pages, list storage and out-of-range heads.
    var residentBytes: Int {
        radix.residentBytes + lists.reduce(0) { $0 + 32 + $1.capacity * 8 } + outside.count * 24
    }

    // MARK: Heads

    @inline(__always) private static func pack(_ ref: SPTERef) -> UInt64 {
        (UInt64(UInt32(bitPattern: ref.page)) << 16 | UInt64(UInt16(bitPattern: ref.index))) << 1 | 1
    }

    @inline(__always) private static func unpack(_ head: UInt64) -> SPTERef {
        let bits = head >> 1
        return SPTERef(page: Int32(bitPattern: UInt32(truncatingIfNeeded: bits >> 16)),
                       index: Int(Int16(bitPattern: UInt16(truncatingIfNeeded: bits))))
    }

    @inline(__always) private static func listHead(_ index: Int) -> UInt64 { UInt64(index + 1) << 1 }
    @inline(__always) private static func listIndex(_ head: UInt64) -> Int { Int(truncatingIfNeeded: head >> 1) - 1 }

    private func head(_ gfn: UInt64) -> UInt64 {
        radix.covers(gfn) ? radix.head(gfn) : outside[gfn] ?? 0
    }

    private func setHead(_ gfn: UInt64, _ value: UInt64) {
        if radix.covers(gfn) {
            radix.setHead(gfn, value)
        } else {
            outside[gfn] = value == 0 ? nil : value
        }
    }

    // MARK: Queries

    /// How many sptes map `gfn`.
    func count(of gfn: UInt64) -> Int {
        let h = head(gfn)
        if h == 0 { return 0 }
        return h & 1 != 0 ? 1 : lists[ReverseMap.listIndex(h)].count
    }

    /// The sptes that map `gfn`, in the order they were added.
    func refs(of gfn: UInt64) -> [SPTERef] {
        let h = head(gfn)
        if h == 0 { return [] }
        return h & 1 != 0 ? [ReverseMap.unpack(h)] : lists[ReverseMap.listIndex(h)]
    }

    /// Calls `body` with each spte that maps `gfn` (which `body` must not change).
    @inline(__always) func forEach(of gfn: UInt64, _ body: (SPTERef) -> Void) {
        let h = head(gfn)
        if h == 0 { return }
        if h & 1 != 0 { body(ReverseMap.unpack(h)); return }
        for ref in lists[ReverseMap.listIndex(h)] { body(ref) }
    }

    func contains(_ ref: SPTERef, of gfn: UInt64) -> Bool {
        let h = head(gfn)
        if h == 0 { return false }
        return h & 1 != 0 ? h == ReverseMap.pack(ref) : lists[ReverseMap.listIndex(h)].contains(ref)
    }

    /// Every frame with at least one mapping (for whole-map checks; not a hot path).
    var mappedFrames: [UInt64] {
        var out: [UInt64] = []
        radix.forEachNonZero { out.append($0) }
        return out + outside.keys.sorted()
    }

    // MARK: Changes

    /// Adds `ref` under `gfn`; returns how many sptes map `gfn` now.
    @discardableResult
    func add(_ ref: SPTERef, gfn: UInt64) -> Int {
        entries += 1
        let h = head(gfn)
        if h == 0 {
            setHead(gfn, ReverseMap.pack(ref))
            return 1
        }
        if h & 1 != 0 {
            let list = [ReverseMap.unpack(h), ref]
            let index: Int
            if let reused = freeLists.popLast() { index = reused; lists[index] = list } else { index = lists.count; lists.append(list) }
            setHead(gfn, ReverseMap.listHead(index))
            return 2
        }
        let index = ReverseMap.listIndex(h)
        lists[index].append(ref)
        return lists[index].count
    }

    /// Removes `ref` from under `gfn`; false if it was not there.
    @discardableResult
    func remove(_ ref: SPTERef, gfn: UInt64) -> Bool {
        let h = head(gfn)
        if h == 0 { return false }
        if h & 1 != 0 {
            guard h == ReverseMap.pack(ref) else { return false }
            setHead(gfn, 0)
            entries -= 1
            return true
        }
        let index = ReverseMap.listIndex(h)
        guard let i = lists[index].firstIndex(of: ref) else { return false }
        lists[index].remove(at: i)
        entries -= 1
        if lists[index].count == 1 {
            setHead(gfn, ReverseMap.pack(lists[index][0]))
            lists[index] = []
            freeLists.append(index)
        }
        return true
    }
}

/// A vCPU's translation lookaside buffer (SDM 4.10.2–4.10.4).
///
/// Four set-associative arrays, one per page size (4 KiB, 2 MiB, 4 MiB, 1 GiB), so
/// that INVLPG of any address inside a large page finds its entry. A translation cached
/// in pieces smaller than the page it comes from (a guest large page backed by smaller
/// host pages) is remembered as fractured, and INVLPG inside it drops every piece.
/// Entries are tagged with the PCID; a global entry (G = 1 with CR4.PGE) matches any
/// PCID. Each tag also carries the PCID's flush epoch, so flushing a PCID's non-global
/// entries bumps a counter instead of scanning the arrays.
///
/// Invariants:
/// - a tag is `(vpn << 12) & bits 56:12 | pcid | epoch << 57`, or `invalidTag`; only
///   canonical addresses are looked up, so the VPN bits dropped are sign copies;
/// - a non-global entry is live only while its epoch equals its PCID's current epoch;
/// - epochs wrap after `epochLimit` flushes, and a wrap first scrubs that PCID's entries.
public final class TLB {
    /// Data word layout: page base in bits 63:12, flags below.
    public enum Flag {
        public static let writable: UInt64 = 1 << 0   // == PageRights.writable
        public static let user: UInt64 = 1 << 1       // == PageRights.user
        public static let executeDisable: UInt64 = 1 << 2
        public static let dirty: UInt64 = 1 << 3
        public static let global: UInt64 = 1 << 4
        public static let valid: UInt64 = 1 << 5
        public static let sizeShift: UInt64 = 6       // two bits: index into `PageSizeClass`
    }

    @usableFromInline static let invalidTag: UInt64 = ~0
    @usableFromInline static let epochShift: UInt64 = 57
    @usableFromInline static let epochLimit: UInt8 = 127
    @usableFromInline static let vpnMask: UInt64 = PTE.bits(56, 12)
    /// Linear-address bits a tag keeps (56:0).
    static let vpnMaskVA: UInt64 = PTE.bits(56, 0)

    @usableFromInline let small: TLBArray
    @usableFromInline let large: TLBArray
    @usableFromInline let large4M: TLBArray
    @usableFromInline let huge: TLBArray
    /// Linear ranges (base, offset mask) cached as fractured pieces since the last full flush.
    private var fractured: [(base: UInt64, mask: UInt64)] = []
    /// Per-PCID flush epochs (4096 PCIDs).
    @usableFromInline let epochs: UnsafeMutablePointer<UInt8>

    /// The vCPU's page → host-frame cache in front of this TLB (see its invariants).
    @usableFromInline var fast = FastTranslations()

    /// Whether `insert` ran since the last `flushAll`.
    private var filledSinceFlushAll = false
    /// Which of the large-page arrays (bit 0: 2 MiB, 1: 4 MiB, 2: 1 GiB) were filled since
    /// the last `flushAll`: a lookup skips the others (most guests never use some sizes).
    @usableFromInline var largeSizesFilled: UInt8 = 0
    /// Slots of the 4 KiB array filled since the last `flushAll`, while there are at most
    /// `recentFillLimit` (a hypervisor flushes often between a few fills: clearing those
    /// slots beats clearing the array); `recentFillCount` past the limit means "many".
    private let recentFills: UnsafeMutablePointer<Int32>
    private var recentFillCount = 0
    private static let recentFillLimit = 32

    /// Entries filled, for statistics.
    public private(set) var fills: UInt64 = 0

    /// - Parameters:
    ///   - smallEntries: 4 KiB translations (a power of two, at least 4).
    ///   - largeEntries: 2 MiB and 4 MiB translations (each).
    ///   - hugeEntries: 1 GiB translations.
    public init(smallEntries: Int = 1024, largeEntries: Int = 64, hugeEntries: Int = 16) {
        small = TLBArray(entries: smallEntries, pageShift: 12)
        large = TLBArray(entries: largeEntries, pageShift: 21)
        large4M = TLBArray(entries: largeEntries, pageShift: 22)
        huge = TLBArray(entries: hugeEntries, pageShift: 30)
        epochs = .allocate(capacity: 4096)
        epochs.initialize(repeating: 0, count: 4096)
        recentFills = .allocate(capacity: TLB.recentFillLimit)
    }

    deinit {
        small.deallocate()
        large.deallocate()
        large4M.deallocate()
        huge.deallocate()
        epochs.deallocate()
        recentFills.deallocate()
        fast.deallocate()
    }

    /// Total capacity in entries.
    public var capacity: Int { small.count + large.count + large4M.count + huge.count }

    /// Number of entries live for `pcid` (globals included), for tests and reports.
    public func liveEntries(pcid: UInt16) -> Int {
        var n = 0
        for array in [small, large, large4M, huge] {
            for i in 0..<array.count where isLive(array, i, pcid: pcid) { n += 1 }
        }
        return n
    }

    /// Physical frames (4 KiB numbers) that some live entry maps with write access, any
    /// PCID; a large entry contributes every frame it covers.
    /// The frames live writable entries map, as sorted, merged ranges of gfns
    /// (`first ..< end`): cheap to search, with no per-frame work for large pages.
    public func writableFrameRanges() -> [Range<UInt64>] {
        var ranges: [Range<UInt64>] = []
        for array in [small, large, large4M, huge] {
            for i in 0..<array.count where !array.isDead(i, epochs: epochs) && array.data[i] & Flag.writable != 0 {
                let data = array.data[i]
                let mask = TLB.offsetMask(of: data)
                let base = (data & ~mask & ~0xFF) >> 12
                ranges.append(base ..< base + (mask + 1) >> 12)
            }
        }
        ranges.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for r in ranges {
            if let last = merged.last, r.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound ..< max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        return merged
    }

    public func writableFrames() -> Set<UInt64> {
        var frames = Set<UInt64>()
        for array in [small, large, large4M, huge] {
            for i in 0..<array.count where !array.isDead(i, epochs: epochs) && array.data[i] & Flag.writable != 0 {
                let data = array.data[i]
                let mask = TLB.offsetMask(of: data)
                let base = (data & ~mask) >> 12
                for f in base..<(base + (mask + 1) >> 12) { frames.insert(f) }
            }
        }
        return frames
    }

    @usableFromInline func isLive(_ array: TLBArray, _ i: Int, pcid: UInt16) -> Bool {
        let tag = array.tags[i]
        guard tag != TLB.invalidTag else { return false }
        if array.data[i] & Flag.global != 0 { return true }
        return tag & 0xFFF == UInt64(pcid) && tag >> TLB.epochShift == UInt64(epochs[Int(pcid)])
    }

    /// The tag bits that identify `pcid` at its current epoch.
    @inlinable func tagSuffix(pcid: UInt16) -> UInt64 {
        UInt64(pcid) | UInt64(epochs[Int(pcid)]) << TLB.epochShift
    }

    /// Looks `va` up for `pcid`: the data word of the entry (with `Flag.valid`), or 0.
    @inlinable public func lookup(_ va: UInt64, pcid: UInt16) -> UInt64 {
        let suffix = tagSuffix(pcid: pcid)
        let d = small.find(va, suffix: suffix)
        if d != 0 || largeSizesFilled == 0 { return d }
        if largeSizesFilled & 1 != 0 {
            let l = large.find(va, suffix: suffix)
            if l != 0 { return l }
        }
        if largeSizesFilled & 2 != 0 {
            let l4 = large4M.find(va, suffix: suffix)
            if l4 != 0 { return l4 }
        }
        return largeSizesFilled & 4 != 0 ? huge.find(va, suffix: suffix) : 0
    }

    /// Caches a piece of a larger page (`t` already cut to the piece), remembering that
    /// the whole `pageSize` page around `va` was cached in pieces.
    public func insertPiece(_ va: UInt64, translation t: Translation, of pageSize: PageSize, pcid: UInt16, global: Bool) {
        let base = va & ~pageSize.offsetMask
        if !fractured.contains(where: { $0.base == base && $0.mask == pageSize.offsetMask }) {
            fractured.append((base, pageSize.offsetMask))
        }
        insert(va, translation: t, pcid: pcid, global: global)
    }

    /// Caches a translation for `pcid`. `global` must already account for CR4.PGE.
    public func insert(_ va: UInt64, translation t: Translation, pcid: UInt16, global: Bool) {
        var data = t.pageBase | UInt64(t.rights.rawValue) | Flag.valid
        if t.isDirty { data |= Flag.dirty }
        if global { data |= Flag.global }
        let array: TLBArray
        switch t.pageSize {
        case .size4K: array = small; data |= 0 << Flag.sizeShift
        case .size2M: array = large; data |= 1 << Flag.sizeShift; largeSizesFilled |= 1
        case .size4M: array = large4M; data |= 2 << Flag.sizeShift; largeSizesFilled |= 2
        case .size1G: array = huge; data |= 3 << Flag.sizeShift; largeSizesFilled |= 4
        }
        let slot = array.insert(va, suffix: tagSuffix(pcid: pcid), data: data, epochs: epochs)
        if t.pageSize == .size4K && recentFillCount <= TLB.recentFillLimit {
            if recentFillCount < TLB.recentFillLimit { recentFills[recentFillCount] = Int32(slot) }
            recentFillCount += 1
        }
        fills &+= 1
        filledSinceFlushAll = true
    }

    /// Byte-offset mask of the page a data word maps.
    @inlinable public static func offsetMask(of data: UInt64) -> UInt64 {
        switch (data >> Flag.sizeShift) & 3 {
        case 0: PageSize.size4K.offsetMask
        case 1: PageSize.size2M.offsetMask
        case 2: PageSize.size4M.offsetMask
        default: PageSize.size1G.offsetMask
        }
    }

    // MARK: Invalidation (SDM 4.10.4.1)

    /// Everything, globals included, for every PCID.
    public func flushAll() {
        fast.clear()
        // Nothing was cached since the last full flush: the arrays are already empty
        // (a hypervisor often flushes several times between two accesses).
        guard filledSinceFlushAll else { return }
        filledSinceFlushAll = false
        if recentFillCount <= TLB.recentFillLimit {
            for i in 0..<recentFillCount { small.tags[Int(recentFills[i])] = TLB.invalidTag }
        } else {
            small.clear()
        }
        recentFillCount = 0
        if largeSizesFilled & 1 != 0 { large.clear() }
        if largeSizesFilled & 2 != 0 { large4M.clear() }
        if largeSizesFilled & 4 != 0 { huge.clear() }
        largeSizesFilled = 0
        if !fractured.isEmpty { fractured.removeAll() }
        // PCID epochs need no reset: every entry is gone, whatever its epoch.
    }

    /// Non-global entries of one PCID (MOV to CR3, INVPCID single-context).
    public func flushNonGlobal(pcid: UInt16) {
        fast.clear()
        let p = Int(pcid)
        if epochs[p] == TLB.epochLimit {
            // Wrap: scrub the PCID's non-global entries so old epochs cannot come back.
            for array in [small, large, large4M, huge] { array.removeAll { tag, data in
                data & Flag.global == 0 && tag & 0xFFF == UInt64(pcid)
            } }
            epochs[p] = 0
        } else {
            epochs[p] += 1
        }
    }

    /// Non-global entries of every PCID (INVPCID all-context except globals).
    public func flushAllNonGlobal() {
        fast.clear()
        for array in [small, large, large4M, huge] { array.removeAll { _, data in data & Flag.global == 0 } }
    }

    /// Entries for the page containing `va`: the non-global ones of `pcid`, plus the
    /// global ones when `includeGlobal` (INVLPG) — whatever their page size.
    public func flushAddress(_ va: UInt64, pcid: UInt16, includeGlobal: Bool) {
        fast.clear()
        if !fractured.isEmpty { flushFracturedPages(containing: va, pcid: pcid, includeGlobal: includeGlobal) }
        func matches(_ tag: UInt64, _ data: UInt64) -> Bool {
            if data & Flag.global != 0 { return includeGlobal }
            return tag & 0xFFF == UInt64(pcid)
        }
        small.remove(va, where: matches)
        if largeSizesFilled & 1 != 0 { large.remove(va, where: matches) }
        if largeSizesFilled & 2 != 0 { large4M.remove(va, where: matches) }
        if largeSizesFilled & 4 != 0 { huge.remove(va, where: matches) }
    }
}

extension TLB {
    /// Drops every piece of each fractured page that contains `va` (with whatever else
    /// shares the range: flushing more than needed is allowed). A range stays remembered
    /// while pieces of it survive — globals when `includeGlobal` is false, or pieces of
    /// other PCIDs — so that a later INVLPG still finds them all.
    func flushFracturedPages(containing va: UInt64, pcid: UInt16, includeGlobal: Bool) {
        var i = fractured.startIndex
        while i < fractured.endIndex {
            let range = fractured[i]
            guard va & ~range.mask == range.base else { i += 1; continue }
            var survivors = false
            for array in [small, large, large4M, huge] {
                array.removeAll { tag, data in
                    let pageVA = ((tag & TLB.vpnMask) >> 12) << array.pageShift
                    guard pageVA & ~range.mask == range.base & ~range.mask & TLB.vpnMaskVA else { return false }
                    let drop = data & Flag.global != 0 ? includeGlobal : tag & 0xFFF == UInt64(pcid)
                    if !drop { survivors = true }
                    return drop
                }
            }
            if survivors { i += 1 } else { fractured.remove(at: i) }
        }
    }
}

/// One set-associative array of the TLB (4 ways). Unsafe storage lives only here.
@usableFromInline struct TLBArray {
    @usableFromInline static let ways = 4
    @usableFromInline let tags: UnsafeMutablePointer<UInt64>
    @usableFromInline let data: UnsafeMutablePointer<UInt64>
    /// Round-robin replacement pointer per set.
    @usableFromInline let victims: UnsafeMutablePointer<UInt8>
    @usableFromInline let setMask: UInt64
    @usableFromInline let pageShift: UInt64
    @usableFromInline let count: Int

    init(entries: Int, pageShift: UInt64) {
        let sets = max(1, entries / TLBArray.ways)
        precondition(sets & (sets - 1) == 0, "TLB entries must be a power of two")
        count = sets * TLBArray.ways
        setMask = UInt64(sets - 1)
        self.pageShift = pageShift
        tags = .allocate(capacity: count)
        tags.initialize(repeating: TLB.invalidTag, count: count)
        data = .allocate(capacity: count)
        data.initialize(repeating: 0, count: count)
        victims = .allocate(capacity: sets)
        victims.initialize(repeating: 0, count: sets)
    }

    func deallocate() {
        tags.deallocate(); data.deallocate(); victims.deallocate()
    }

    /// The tag of `va`'s page: VPN bits that fit below the epoch (canonical addresses
    /// only differ in bits 56:0, so nothing is lost), then PCID and epoch.
    @inlinable func key(_ va: UInt64, suffix: UInt64) -> UInt64 {
        ((va >> pageShift) << 12) & TLB.vpnMask | suffix
    }

    @inlinable func find(_ va: UInt64, suffix: UInt64) -> UInt64 {
        let vpn = va >> pageShift
        let key = key(va, suffix: suffix)
        let base = Int(truncatingIfNeeded: vpn & setMask) &* TLBArray.ways
        for way in 0..<TLBArray.ways {
            let diff = tags[base &+ way] ^ key
            if diff == 0 { return data[base &+ way] }
            // A global entry matches whatever the PCID and epoch.
            if diff & TLB.vpnMask == 0 && data[base &+ way] & TLB.Flag.global != 0 { return data[base &+ way] }
        }
        return 0
    }

    /// Whether slot `i` holds nothing usable: invalid, or a non-global entry whose PCID
    /// was flushed since (its epoch is not current).
    func isDead(_ i: Int, epochs: UnsafeMutablePointer<UInt8>) -> Bool {
        let tag = tags[i]
        if tag == TLB.invalidTag { return true }
        if data[i] & TLB.Flag.global != 0 { return false }
        return tag >> TLB.epochShift != UInt64(epochs[Int(tag & 0xFFF)])
    }

    /// Fills the entry for `va`; returns the slot used.
    @discardableResult
    func insert(_ va: UInt64, suffix: UInt64, data word: UInt64, epochs: UnsafeMutablePointer<UInt8>) -> Int {
        let vpn = va >> pageShift
        let key = key(va, suffix: suffix)
        let set = Int(truncatingIfNeeded: vpn & setMask)
        let base = set * TLBArray.ways
        var slot = -1
        for way in 0..<TLBArray.ways {
            let tag = tags[base + way]
            // Replace an entry for the same page and PCID, or a global one for the page.
            if tag == key || (tag != TLB.invalidTag && (tag ^ key) & TLB.vpnMask == 0
                              && (data[base + way] & TLB.Flag.global != 0 || word & TLB.Flag.global != 0)) {
                slot = base + way
                break
            }
            if slot < 0 && isDead(base + way, epochs: epochs) { slot = base + way }
        }
        if slot < 0 {
            slot = base + Int(victims[set])
            victims[set] = UInt8((Int(victims[set]) + 1) % TLBArray.ways)
        }
        tags[slot] = key
        data[slot] = word
        return slot
    }

    func clear() {
        tags.update(repeating: TLB.invalidTag, count: count)
    }

    func removeAll(where shouldRemove: (UInt64, UInt64) -> Bool) {
        for i in 0..<count where tags[i] != TLB.invalidTag && shouldRemove(tags[i], data[i]) {
            tags[i] = TLB.invalidTag
        }
    }

    func remove(_ va: UInt64, where shouldRemove: (UInt64, UInt64) -> Bool) {
        let vpn = va >> pageShift
        let pageTag = key(va, suffix: 0)
        let base = Int(truncatingIfNeeded: vpn & setMask) * TLBArray.ways
        for way in 0..<TLBArray.ways {
            let i = base + way
            if tags[i] != TLB.invalidTag && tags[i] & TLB.vpnMask == pageTag
                && shouldRemove(tags[i], data[i]) {
                tags[i] = TLB.invalidTag
            }
        }
    }
}

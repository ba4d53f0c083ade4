import X86

/// Access bits a shadow page or spte carries (KVM's ACC_*).
public enum Access {
    public static let exec: UInt8 = 1
    public static let write: UInt8 = 2
    public static let user: UInt8 = 4
    public static let all: UInt8 = 7

    /// The access one guest entry grants: R/W, U/S, and execute unless XD applies.
    @inlinable public static func of(gpte: UInt64, executeDisableEnabled: Bool) -> UInt8 {
        var a = exec
        if gpte & PTE.writable != 0 { a |= write }
        if gpte & PTE.user != 0 { a |= user }
        if executeDisableEnabled && gpte & PTE.executeDisable != 0 { a &= ~exec }
        return a
    }
}

/// The key of a shadow page besides its gfn (KVM's `kvm_mmu_page_role`): pages for the
/// same guest table differ when they are used at another level, reached with other
/// inherited access, cover another quadrant of a 32-bit table, or were built under
/// other paging-mode bits.
public struct PageRole: Hashable, Sendable, CustomStringConvertible {
    public var word: UInt32

    public init(word: UInt32 = 0) { self.word = word }

    @inline(__always) private func field(_ shift: UInt32, _ width: UInt32) -> UInt32 { (word >> shift) & ((1 << width) - 1) }
    private mutating func set(_ shift: UInt32, _ width: UInt32, _ value: UInt32) {
        let mask: UInt32 = ((1 << width) - 1) << shift
        word = (word & ~mask) | ((value << shift) & mask)
    }

    /// 1 = page table … 5 = PML5.
    public var level: Int { get { Int(field(0, 4)) } set { set(0, 4, UInt32(newValue)) } }
    /// The guest uses 32-bit paging: 1024-entry tables shadowed by 512-entry pages.
    public var has4ByteGPTE: Bool { get { field(4, 1) != 0 } set { set(4, 1, newValue ? 1 : 0) } }
    /// Which half (page tables) or quarter (page directories) of a 32-bit table.
    public var quadrant: Int { get { Int(field(5, 2)) } set { set(5, 2, UInt32(newValue)) } }
    /// Maps a linear gfn range (a guest large page) rather than shadowing a guest table.
    public var direct: Bool { get { field(7, 1) != 0 } set { set(7, 1, newValue ? 1 : 0) } }
    /// Access inherited from the guest entries above.
    public var access: UInt8 { get { UInt8(field(8, 3)) } set { set(8, 3, UInt32(newValue)) } }
    /// Zapped while still a root.
    public var invalid: Bool { get { field(11, 1) != 0 } set { set(11, 1, newValue ? 1 : 0) } }
    public var eferNX: Bool { get { field(12, 1) != 0 } set { set(12, 1, newValue ? 1 : 0) } }
    public var cr0WP: Bool { get { field(13, 1) != 0 } set { set(13, 1, newValue ? 1 : 0) } }
    public var smepAndNotWP: Bool { get { field(14, 1) != 0 } set { set(14, 1, newValue ? 1 : 0) } }
    public var smapAndNotWP: Bool { get { field(15, 1) != 0 } set { set(15, 1, newValue ? 1 : 0) } }

    /// Bits that must match for a page to be synced in the current context (everything
    /// but level, access, quadrant).
    public static let syncIgnored: UInt32 = 0xF | (0x3 << 5) | (0x7 << 8)

    public var description: String {
        var parts = ["L\(level)"]
        if direct { parts.append("direct") }
        if has4ByteGPTE { parts.append("q\(quadrant)") }
        parts.append("acc\(access)")
        if !cr0WP { parts.append("!wp") }
        if invalid { parts.append("invalid") }
        return parts.joined(separator: " ")
    }
}

/// Shadow page-table entries (our own encoding, in the x86 layout where it matters):
/// a leaf maps a guest frame (host frame = guest frame here); a non-leaf points to a
/// child shadow page by id. Non-leaf entries grant everything: the leaf decides. A
/// nested link (`WalkDecision.nested`) is a non-leaf entry whose target is the guest
/// table's own frame: the hardware walk finishes in the guest's tables from there.
public enum SPTE {
    public static let present: UInt64 = 1 << 0
    public static let writable: UInt64 = 1 << 1
    public static let user: UInt64 = 1 << 2
    public static let accessed: UInt64 = 1 << 5
    public static let large: UInt64 = 1 << 7
    /// Software bit (ignored by hardware walks of x86 tables): a non-leaf entry that
    /// points at a guest table's frame, not at a shadow page (agile paging's switch).
    public static let nestedLink: UInt64 = 1 << 9
    public static let executeDisable: UInt64 = 1 << 63
    /// Bits 54:52 hold the access the entry was built with (KVM's shadowed_translation).
    static let accessShift: UInt64 = 52
    static let targetMask: UInt64 = PTE.bits(51, 12)

    @inlinable public static func target(_ spte: UInt64) -> UInt64 { (spte & PTE.bits(51, 12)) >> 12 }
    @inlinable public static func isPresent(_ spte: UInt64) -> Bool { spte & present != 0 }
    @inlinable public static func isNestedLink(_ spte: UInt64) -> Bool { spte & nestedLink != 0 }
    static func access(_ spte: UInt64) -> UInt8 { UInt8((spte >> accessShift) & 7) }
}

/// A reference to one spte: shadow page id and index.
public struct SPTERef: Hashable, Sendable {
    public var page: Int32
    public var index: Int16
    public init(page: Int32, index: Int) {
        self.page = page
        self.index = Int16(index)
    }
}

/// A name for a shadow page that cannot outlive it unnoticed: the page's id (ids are
/// reused once a page is freed) and its serial (never reused). `ShadowMMU.page(_:)`
/// gives nil for a handle whose page is gone, so a stale handle is detectably stale;
/// holding one keeps nothing alive.
public struct ShadowPageHandle: Hashable, Sendable {
    public let id: Int32
    public let serial: UInt64
}

/// One shadow page: 512 sptes and the bookkeeping that keeps them in sync — a view of
/// its record in the MMU's arena (`PageArena`), so passing one around costs no
/// reference counting. A view is for the moment: once the page is freed its id names
/// the next page made, so whatever keeps a page across hooks or exits keeps its
/// `handle` (`ShadowMMU.page(_:)` then says whether it is still there).
///
/// Invariants (checked by `ShadowMMU.verify`): `unsyncChildren` is the number of set bits
/// of the unsync-child bitmap; only indirect level-1 pages are ever `unsync`; `parents`
/// lists exactly the non-leaf sptes that point here.
public struct ShadowPage: Hashable {
    let record: PageRecordRef
    public let id: Int32
    /// Creation order, for recycling the oldest first (never reused, unlike `id`).
    public let serial: UInt64

    init(_ record: PageRecordRef, id: Int32) {
        self.record = record
        self.id = id
        serial = record.serial
    }

    public static func == (a: ShadowPage, b: ShadowPage) -> Bool { a.id == b.id && a.serial == b.serial }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(serial)
    }

    public var gfn: UInt64 { record.gfn }
    public internal(set) var role: PageRole {
        get { record.role }
        nonmutating set { record.role = newValue }
    }
    /// The 512 sptes, then (upper levels only) the 8 words of the unsync-child bitmap, in
    /// one allocation of the page's arena slot (the shadow walk reads it through
    /// `PageSlots`).
    var spt: SPTEntries { record.spt }
    /// The non-leaf sptes that link to this page.
    public var parents: [SPTERef] { record.parents }
    func appendParent(_ ref: SPTERef) { record.appendParent(ref) }
    func removeParent(at index: Int) { record.removeParent(at: index) }
    func removeAllParents() { record.removeAllParents() }
    /// Its place on the VM's unsync list (`UnsyncIndex`), -1 when on none.
    var listIndex: Int {
        get { Int(record.listIndex) }
        nonmutating set { record.listIndex = Int32(truncatingIfNeeded: newValue) }
    }
    public internal(set) var unsync: Bool {
        get { record.unsync }
        nonmutating set { record.unsync = newValue }
    }
    var onActiveList: Bool {
        get { record.onActiveList }
        nonmutating set { record.onActiveList = newValue }
    }
    public internal(set) var unsyncChildren: Int {
        get { Int(record.unsyncChildren) }
        nonmutating set { record.unsyncChildren = Int32(truncatingIfNeeded: newValue) }
    }
    public internal(set) var rootCount: Int {
        get { Int(record.rootCount) }
        nonmutating set { record.rootCount = Int32(truncatingIfNeeded: newValue) }
    }
    var writeFloodingCount: Int {
        get { Int(record.writeFloodingCount) }
        nonmutating set { record.writeFloodingCount = Int32(truncatingIfNeeded: newValue) }
    }

    /// Whether the page has an unsync-child bitmap (a page table has no children).
    @inline(__always) private var hasBitmap: Bool { role.level > 1 }

    /// The page's generation-checked name (see `ShadowPageHandle`).
    public var handle: ShadowPageHandle { ShadowPageHandle(id: id, serial: serial) }

    /// Shadows a guest table (not a direct page).
    public var hasGPTEs: Bool { !role.direct }
    public var level: Int { role.level }

    public func spte(_ index: Int) -> UInt64 { spt[index] }

    func testAndSetUnsyncBit(_ index: Int) -> Bool {
        // A page table has no children; nothing can lead through it (verify would say so).
        guard hasBitmap else { return true }
        let word = index >> 6, bit = UInt64(1) << UInt64(index & 63)
        let was = spt.bitmapWord(word)
        spt.setBitmapWord(word, was | bit)
        return was & bit != 0
    }

    func clearUnsyncBit(_ index: Int) {
        guard hasBitmap else { return }
        spt.setBitmapWord(index >> 6, spt.bitmapWord(index >> 6) & ~(UInt64(1) << UInt64(index & 63)))
    }

    /// Word `w` (0..<8) of the unsync-child bitmap: bits for entries `64 * w ..< 64 * w + 64`.
    func unsyncWord(_ w: Int) -> UInt64 { hasBitmap ? spt.bitmapWord(w) : 0 }

    func unsyncBit(_ index: Int) -> Bool {
        hasBitmap && spt.bitmapWord(index >> 6) & (UInt64(1) << UInt64(index & 63)) != 0
    }

    var unsyncBitCount: Int {
        hasBitmap ? (0..<8).reduce(0) { $0 + spt.bitmapWord($1).nonzeroBitCount } : 0
    }
}

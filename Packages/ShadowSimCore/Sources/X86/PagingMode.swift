/// The four paging modes of Intel SDM vol. 3A ch. 4 (section 4.1.1).
public enum PagingMode: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// 32-bit paging (CR4.PAE = 0): two levels of 1024 four-byte entries.
    case legacy32
    /// PAE paging: four PDPTE registers, then two levels of 512 eight-byte entries.
    case pae
    /// 4-level paging (IA-32e mode, CR4.LA57 = 0): 48-bit linear addresses.
    case long4
    /// 5-level paging (IA-32e mode, CR4.LA57 = 1): 57-bit linear addresses.
    case long5

    /// The names used by scenarios and reports.
    public var description: String {
        switch self {
        case .legacy32: "legacy32"
        case .pae: "pae"
        case .long4: "long4"
        case .long5: "long5"
        }
    }

    public init?(name: String) {
        guard let mode = PagingMode.allCases.first(where: { $0.description == name }) else { return nil }
        self = mode
    }

    /// Number of paging-structure levels a walk can visit (the PAE PDPTE counts as one).
    @inlinable public var levels: Int {
        switch self {
        case .legacy32: 2
        case .pae: 3
        case .long4: 4
        case .long5: 5
        }
    }

    /// Size in bytes of one paging-structure entry.
    @inlinable public var entrySize: Int { self == .legacy32 ? 4 : 8 }

    /// Linear-address width: 32 bits outside IA-32e mode.
    @inlinable public var linearAddressBits: Int {
        switch self {
        case .legacy32, .pae: 32
        case .long4: 48
        case .long5: 57
        }
    }

    /// True in the modes where CR4.PAE = 1 (64-bit entries, execute-disable exists).
    @inlinable public var hasWideEntries: Bool { self != .legacy32 }

    /// True in IA-32e modes, where linear addresses must be canonical.
    @inlinable public var isLongMode: Bool { self == .long4 || self == .long5 }

    /// Index into the paging structure at `level` (1 = page table) for `va`.
    @inlinable public func index(of va: UInt64, level: Int) -> Int {
        switch self {
        case .legacy32:
            return Int(truncatingIfNeeded: (va >> UInt64(12 + 10 * (level - 1))) & 0x3FF)
        case .pae where level == 3:
            return Int(truncatingIfNeeded: (va >> 30) & 0x3)
        default:
            return Int(truncatingIfNeeded: (va >> UInt64(12 + 9 * (level - 1))) & 0x1FF)
        }
    }

    /// Number of entries in a paging structure at `level`.
    @inlinable public func entriesPerTable(level: Int) -> Int {
        switch self {
        case .legacy32: 1024
        case .pae where level == 3: 4
        default: 512
        }
    }

    /// Whether an entry at `level` with PS = 1 maps a page in this mode (SDM 4.3–4.5).
    /// `pse` is CR4.PSE, which only matters for 32-bit paging.
    @inlinable public func honoursPageSize(level: Int, pse: Bool) -> Bool {
        switch self {
        case .legacy32: level == 2 && pse
        case .pae: level == 2
        case .long4, .long5: level == 2 || level == 3
        }
    }

    /// The page size mapped by a leaf at `level`.
    @inlinable public func pageSize(leafLevel level: Int) -> PageSize {
        switch (self, level) {
        case (_, 1): .size4K
        case (.legacy32, _): .size4M
        case (_, 2): .size2M
        default: .size1G
        }
    }

    /// Human names of the levels, top first, as the SDM calls them.
    public var levelNames: [String] {
        switch self {
        case .legacy32: ["PDE", "PTE"]
        case .pae: ["PDPTE", "PDE", "PTE"]
        case .long4: ["PML4E", "PDPTE", "PDE", "PTE"]
        case .long5: ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"]
        }
    }

    /// Name of the entry at `level` (1 = PTE).
    public func entryName(level: Int) -> String { levelNames[levels - level] }
}

/// Page sizes a translation can have.
public enum PageSize: UInt8, Sendable, CustomStringConvertible {
    case size4K, size2M, size4M, size1G

    @inlinable public var bytes: UInt64 {
        switch self {
        case .size4K: 1 << 12
        case .size2M: 1 << 21
        case .size4M: 1 << 22
        case .size1G: 1 << 30
        }
    }

    @inlinable public var offsetMask: UInt64 { bytes - 1 }

    public var description: String {
        switch self {
        case .size4K: "4k"
        case .size2M: "2m"
        case .size4M: "4m"
        case .size1G: "1g"
        }
    }

    public init?(name: String) {
        switch name.lowercased() {
        case "4k": self = .size4K
        case "2m": self = .size2M
        case "4m": self = .size4M
        case "1g": self = .size1G
        default: return nil
        }
    }
}

/// Bits of a paging-structure entry (SDM tables 4-4 to 4-20).
public enum PTE {
    public static let present: UInt64 = 1 << 0
    public static let writable: UInt64 = 1 << 1
    public static let user: UInt64 = 1 << 2
    public static let writeThrough: UInt64 = 1 << 3
    public static let cacheDisable: UInt64 = 1 << 4
    public static let accessed: UInt64 = 1 << 5
    public static let dirty: UInt64 = 1 << 6
    /// PS in a directory entry; PAT in a PTE.
    public static let pageSize: UInt64 = 1 << 7
    public static let global: UInt64 = 1 << 8
    public static let executeDisable: UInt64 = 1 << 63

    /// Mask of bits `high` down to `low` inclusive (empty when high < low).
    @inlinable @inline(__always) public static func bits(_ high: Int, _ low: Int) -> UInt64 {
        guard high >= low else { return 0 }
        let width = high - low + 1
        let ones: UInt64 = width >= 64 ? ~0 : (1 << UInt64(width)) - 1
        return ones << UInt64(low)
    }
}

/// Kinds of memory access a linear address can be translated for.
public enum AccessKind: UInt8, Sendable, CustomStringConvertible {
    case read = 0, write = 1, fetch = 2

    public var description: String {
        switch self {
        case .read: "read"
        case .write: "write"
        case .fetch: "fetch"
        }
    }

    public init?(name: String) {
        switch name {
        case "read": self = .read
        case "write": self = .write
        case "fetch": self = .fetch
        default: return nil
        }
    }
}

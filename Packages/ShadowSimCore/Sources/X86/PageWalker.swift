/// Where a walk reads paging-structure entries and sets their A/D flags: guest
/// memory for a running vCPU, or a list of entries for a one-shot walk.
public protocol PagingStructureStore {
    /// The entry for `level` at physical `address` (zero-extended for 4-byte entries).
    mutating func loadEntry(at address: UInt64, level: Int) -> UInt64
    /// Sets `bits` (accessed and/or dirty) in the entry at `address`.
    mutating func setEntryBits(_ bits: UInt64, at address: UInt64, level: Int)
}

/// The four PDPTE registers PAE paging loads from CR3 (SDM 4.4.1).
public struct PDPTERegisters: Equatable, Sendable {
    public var entries: (UInt64, UInt64, UInt64, UInt64)

    @inlinable public init(_ e0: UInt64, _ e1: UInt64, _ e2: UInt64, _ e3: UInt64) {
        entries = (e0, e1, e2, e3)
    }

    @inlinable public subscript(index: Int) -> UInt64 {
        switch index & 3 {
        case 0: entries.0
        case 1: entries.1
        case 2: entries.2
        default: entries.3
        }
    }

    public static func == (a: PDPTERegisters, b: PDPTERegisters) -> Bool {
        a.entries == b.entries
    }
}

/// Where a walk starts: the table CR3 points at, or (PAE) the PDPTE registers.
public enum PagingRoot: Equatable, Sendable {
    case table(UInt64)
    case pdptes(PDPTERegisters)
}

/// A successful translation of one linear address.
public struct Translation: Equatable, Sendable {
    /// Physical address of the accessed byte.
    public var physicalAddress: UInt64
    /// Physical base of the page.
    public var pageBase: UInt64
    public var pageSize: PageSize
    /// Effective rights combined over every level.
    public var rights: PageRights
    /// G = 1 in the entry that maps the page (it only matters with CR4.PGE).
    public var isGlobal: Bool
    /// D = 1 in that entry after the access.
    public var isDirty: Bool
    /// Level of that entry (1 = PTE) and where it lives.
    public var leafLevel: Int
    public var leafEntryAddress: UInt64

    @inlinable public init(physicalAddress: UInt64, pageBase: UInt64, pageSize: PageSize, rights: PageRights,
                           isGlobal: Bool, isDirty: Bool, leafLevel: Int, leafEntryAddress: UInt64) {
        self.physicalAddress = physicalAddress
        self.pageBase = pageBase
        self.pageSize = pageSize
        self.rights = rights
        self.isGlobal = isGlobal
        self.isDirty = isDirty
        self.leafLevel = leafLevel
        self.leafEntryAddress = leafEntryAddress
    }
}

/// What the processor does with one access.
public enum WalkOutcome: Equatable, Sendable {
    case translated(Translation)
    /// #PF with its error code; `level` is where the walk stopped (for reports).
    case pageFault(errorCode: UInt32, level: Int)
    /// #GP: a non-canonical address, or (PAE) a PDPTE with reserved bits set.
    case generalProtection
}

/// Linear-address translation as SDM vol. 3A ch. 4 describes it.
public enum PageWalker {
    /// SDM 3.3.7.1: in IA-32e mode bits 63 down to the top implemented bit must match.
    @inlinable public static func isCanonical(_ va: UInt64, mode: PagingMode) -> Bool {
        guard mode.isLongMode else { return true }
        let shift = UInt64(64 - mode.linearAddressBits)
        return UInt64(bitPattern: (Int64(bitPattern: va << shift)) >> Int64(shift)) == va
    }

    /// Whether a PAE PDPTE would make MOV to CR3 raise #GP (present with reserved bits).
    @inlinable public static func pdpteFaults(_ pdpte: UInt64, controls: PagingControls) -> Bool {
        pdpte & PTE.present != 0 && pdpte & controls.reservedBits(level: 3, isLeaf: false) != 0
    }

    /// Translates `va` for one access, setting A/D flags through `store` as hardware does:
    /// A on every entry the walk moves past and on the leaf of a permitted access, D on
    /// that leaf for a write. A faulting walk leaves the faulting entry, the entries
    /// below it and the leaf untouched.
    @inlinable
    public static func walk<Store: PagingStructureStore>(
        _ va: UInt64, kind: AccessKind, context: AccessContext,
        controls: PagingControls, permissions: PermissionTable,
        root: PagingRoot, store: inout Store
    ) -> WalkOutcome {
        let mode = controls.mode
        // 3.3.7.1 / 4.5: a non-canonical address is #GP before any paging structure is read.
        guard isCanonical(va, mode: mode) else { return .generalProtection }

        let accessBits = PageFaultCode.accessBits(kind: kind, isUser: context.isUser, controls: controls)
        let executeDisable = controls.executeDisableEnabled
        var rights = PageRights(rawValue: PageRights.writable.rawValue | PageRights.user.rawValue)
        var level = mode.levels
        var table: UInt64

        switch root {
        case .table(let base):
            table = base
        case .pdptes(let registers):
            // 4.4.2: the PDPTE comes from a register; it has no R/W, U/S, XD or A bits.
            let pdpte = registers[mode.index(of: va, level: 3)]
            guard pdpte & PTE.present != 0 else {
                return .pageFault(errorCode: accessBits, level: 3)
            }
            // Reserved bits are checked when the register is loaded (MOV CR3 → #GP).
            guard !pdpteFaults(pdpte, controls: controls) else { return .generalProtection }
            table = controls.frameAddress(of: pdpte, level: 3, isLeaf: false)
            level = 2
        }

        let entrySize = UInt64(mode.entrySize)
        while true {
            let entryAddress = table &+ UInt64(mode.index(of: va, level: level)) &* entrySize
            let entry = store.loadEntry(at: entryAddress, level: level)

            // 4.7: the first entry with P = 0 ends the walk with a not-present fault.
            guard entry & PTE.present != 0 else {
                return .pageFault(errorCode: accessBits, level: level)
            }
            let mapsPage = level == 1
                || (entry & PTE.pageSize != 0 && mode.honoursPageSize(level: level, pse: controls.cr4PSE))
            // 4.7: a present entry with a reserved bit set: P = 1, RSVD = 1.
            guard entry & controls.reservedBits(level: level, isLeaf: mapsPage) == 0 else {
                return .pageFault(errorCode: accessBits | PageFaultCode.present | PageFaultCode.reservedBit,
                                  level: level)
            }
            // 4.6: rights combine over every level that controls the translation.
            if entry & PTE.writable == 0 { rights.remove(.writable) }
            if entry & PTE.user == 0 { rights.remove(.user) }
            if executeDisable && entry & PTE.executeDisable != 0 { rights.insert(.executeDisable) }

            if mapsPage {
                // 4.6: rights are checked once the translation is complete.
                guard permissions.permits(kind, isUser: context.isUser, rights: rights) else {
                    return .pageFault(errorCode: accessBits | PageFaultCode.present, level: level)
                }
                // 4.8: A on the leaf; D on the leaf for a write.
                var flags: UInt64 = entry & PTE.accessed == 0 ? PTE.accessed : 0
                if kind == .write && entry & PTE.dirty == 0 { flags |= PTE.dirty }
                if flags != 0 { store.setEntryBits(flags, at: entryAddress, level: level) }
                let size = mode.pageSize(leafLevel: level)
                let base = controls.frameAddress(of: entry, level: level, isLeaf: true)
                return .translated(Translation(
                    physicalAddress: base | (va & size.offsetMask), pageBase: base, pageSize: size,
                    rights: rights, isGlobal: entry & PTE.global != 0,
                    isDirty: entry & PTE.dirty != 0 || kind == .write,
                    leafLevel: level, leafEntryAddress: entryAddress))
            }
            // 4.8: an entry the walk moves past has been used: set its A flag.
            if entry & PTE.accessed == 0 { store.setEntryBits(PTE.accessed, at: entryAddress, level: level) }
            table = controls.frameAddress(of: entry, level: level, isLeaf: false)
            level -= 1
        }
    }
}

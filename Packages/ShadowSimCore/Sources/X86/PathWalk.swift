/// "What does x86 do for this one access?": a walk over a list of entries, one per
/// level top first, in the style of kvm-unit-tests' access test. Each listed value is
/// the entry the walk finds at that level; the address bits of non-leaf entries only
/// matter for the physical address of the result.
public enum PathWalk {
    public struct Result: Equatable, Sendable {
        public var outcome: WalkOutcome
        /// The entries after the access, with A/D flags as hardware leaves them.
        public var entries: [UInt64]
    }

    /// Walks `entries` for one access. Throws when the walk needs more entries than given,
    /// more are given than the mode has levels, or a value does not fit the mode.
    public static func walk(_ va: UInt64, kind: AccessKind, cpl: Int, rflagsAC: Bool,
                            controls: PagingControls, entries: [UInt64]) throws(MachineError) -> Result {
        let mode = controls.mode
        guard PagingControls.maxPhysAddrRange.contains(controls.maxPhysAddr) else {
            throw .invalidArgument("maxphyaddr must be 32…52, got \(controls.maxPhysAddr)")
        }
        guard cpl == 0 || cpl == 3 else { throw .invalidArgument("cpl must be 0 or 3, got \(cpl)") }
        guard !entries.isEmpty, entries.count <= mode.levels else {
            throw .invalidArgument("\(mode) paging takes 1…\(mode.levels) entries (\(mode.levelNames.joined(separator: ", "))), got \(entries.count)")
        }
        if !mode.isLongMode && va > 0xFFFF_FFFF {
            throw .invalidArgument("va \(hex(va)) does not fit the 32 bits of \(mode) paging")
        }
        if mode == .legacy32, let wide = entries.firstIndex(where: { $0 > 0xFFFF_FFFF }) {
            throw .invalidArgument("entry \(wide + 1) (\(hex(entries[wide]))) does not fit a 32-bit \(mode.levelNames[wide])")
        }
        var store = ListStore(entries: entries, levels: mode.levels)
        let root: PagingRoot = mode == .pae
            ? .pdptes(PDPTERegisters(entries[0], entries[0], entries[0], entries[0]))
            : .table(0)
        let outcome = PageWalker.walk(va, kind: kind, context: AccessContext(cpl: cpl, rflagsAC: rflagsAC),
                                      controls: controls,
                                      permissions: PermissionTable(controls: controls, rflagsAC: rflagsAC),
                                      root: root, store: &store)
        if let missing = store.missingLevel {
            throw .invalidArgument("the walk reaches the \(mode.entryName(level: missing)) but only \(entries.count) entries were given")
        }
        return Result(outcome: outcome, entries: store.entries)
    }

    /// Serves level L from `entries[levels - L]`.
    struct ListStore: PagingStructureStore {
        var entries: [UInt64]
        let levels: Int
        var missingLevel: Int?

        mutating func loadEntry(at address: UInt64, level: Int) -> UInt64 {
            let i = levels - level
            guard i < entries.count else {
                if missingLevel == nil { missingLevel = level }
                return 0
            }
            return entries[i]
        }

        mutating func setEntryBits(_ bits: UInt64, at address: UInt64, level: Int) {
            let i = levels - level
            if i < entries.count { entries[i] |= bits }
        }
    }
}

/// The fault-injection seam: the steps of the engine a planted bug can break, by kind.
/// The engine asks one question per kind at the step it is about to take; with nothing
/// planted every answer is the correct engine's, for the cost of one test. Which bug
/// breaks which step is decided here and nowhere else.
struct FaultInjection {
    /// A TLB flush the engine owes.
    enum Flush { case localAfterSync, remoteAfterWriteProtect }
    /// A sync the engine owes before the guest may use what a page maps.
    enum Sync { case beforeLink, reusedCachedRoot, cachedRootsAtInvalidation }
    /// Write protection of a guest table the engine shadows.
    enum Protection { case newTable, largeSPTEsOverNewTable, upperLevelTable, dirtyCleanLeaf, nestedTLBEntries }
    /// Unsync bookkeeping the engine keeps.
    enum Bookkeeping { case parentUnsyncBits, unsyncCount, unsyncOnZap, otherVMsPagesOnListSync }
    /// Shadow entries a write to a guest table must update.
    enum ShadowUpdate { case emulatedWrite, paravirtualOtherShadows }

    private let planted: Set<PlantedBug>
    private let any: Bool

    init(_ bugs: Set<PlantedBug>) {
        planted = bugs
        any = !bugs.isEmpty
    }

    @inline(__always) private func planted(_ bug: PlantedBug) -> Bool { any && planted.contains(bug) }

    /// Whether the owed flush is left out.
    @inline(__always) func omits(_ flush: Flush) -> Bool {
        guard any else { return false }
        switch flush {
        case .localAfterSync: return planted(.dropLocalFlushAfterSync)
        case .remoteAfterWriteProtect: return planted(.skipRemoteFlushAfterWriteProtect)
        }
    }

    /// Whether the owed sync is left out (or, for cached roots, left to the current one).
    @inline(__always) func omits(_ sync: Sync) -> Bool {
        guard any else { return false }
        switch sync {
        case .beforeLink: return planted(.linkUnsyncWithoutSync)
        case .reusedCachedRoot: return planted(.reuseCachedRootWithoutSync)
        case .cachedRootsAtInvalidation: return planted(.invlpgCurrentRootOnly)
        }
    }

    /// Whether the protection is left out.
    @inline(__always) func omits(_ protection: Protection) -> Bool {
        guard any else { return false }
        switch protection {
        case .newTable: return planted(.writableSPTEToNewTable)
        case .largeSPTEsOverNewTable: return planted(.writeProtectSkipsLargeSPTEs)
        case .upperLevelTable: return planted(.upperLevelUnsync)
        case .dirtyCleanLeaf: return planted(.dirtyCleanLeafWritable)
        case .nestedTLBEntries: return planted(.nestedTLBNotWriteProtected)
        }
    }

    /// Whether the bookkeeping step goes wrong (left out, counted twice, or done to
    /// pages it must not touch).
    @inline(__always) func corrupts(_ bookkeeping: Bookkeeping) -> Bool {
        guard any else { return false }
        switch bookkeeping {
        case .parentUnsyncBits: return planted(.forgetMarkParentsUnsync)
        case .unsyncCount: return planted(.miscountUnsync)
        case .unsyncOnZap: return planted(.zapKeepsUnsync)
        case .otherVMsPagesOnListSync: return planted(.syncOtherVMsPages)
        }
    }

    /// Whether the shadow update is left out.
    @inline(__always) func omits(_ update: ShadowUpdate) -> Bool {
        guard any else { return false }
        switch update {
        case .emulatedWrite: return planted(.emulatedWriteKeepsSPTE)
        case .paravirtualOtherShadows: return planted(.pvUpdateFirstShadowOnly)
        }
    }
}

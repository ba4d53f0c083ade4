/// Bugs the engine can be told to have, each modelled on a real one (reference §11),
/// to prove that the checker catches them. Never on unless asked for.
public enum PlantedBug: String, CaseIterable, Sendable {
    /// Write-protecting a newly shadowed table skips the remote TLB flush.
    case skipRemoteFlushAfterWriteProtect = "skip-remote-flush-after-write-protect"
    /// Unsyncing a page does not set its bit in the parents' bitmaps.
    case forgetMarkParentsUnsync = "forget-mark-parents-unsync"
    /// INVLPG re-derives the entry in the current root only, not in cached roots.
    case invlpgCurrentRootOnly = "invlpg-current-root-only"
    /// A page with unsync descendants (or unsync itself) is linked without syncing (B1).
    case linkUnsyncWithoutSync = "link-unsync-without-sync"
    /// Upper-level tables may go unsync too (B8).
    case upperLevelUnsync = "upper-level-unsync"
    /// Shadowing a table leaves the existing writable mappings of its frame writable (B3).
    case writableSPTEToNewTable = "writable-spte-to-new-table"
    /// After a CR3 load the hardware TLB is not flushed (the local flush is dropped).
    case dropLocalFlushAfterSync = "drop-local-flush-after-sync"
    /// The global list marks other VMs' unsync pages synced without syncing them.
    case syncOtherVMsPages = "sync-other-vms-pages"
    /// Zapping an unsync page leaves it counted (and listed) as unsync.
    case zapKeepsUnsync = "zap-keeps-unsync"
    /// A leaf spte is writable while its guest entry's D is clear.
    case dirtyCleanLeafWritable = "dirty-clean-leaf-writable"
    /// A cached root reused by a flushing CR3 load is not synced (B7).
    case reuseCachedRootWithoutSync = "reuse-cached-root-without-sync"
    /// mmu_unsync counts each unsync page twice.
    case miscountUnsync = "miscount-unsync"
    /// An emulated page-table write leaves the old spte in place.
    case emulatedWriteKeepsSPTE = "emulated-write-keeps-spte"

    /// The policy whose code path the bug lives on (for the catch table).
    public var policy: String {
        switch self {
        case .syncOtherVMsPages: "global-list"
        default: "kvm-unsync"
        }
    }

    /// One line on what the bug is.
    public var summary: String {
        switch self {
        case .skipRemoteFlushAfterWriteProtect: "no remote flush after write-protecting a new shadowed table"
        case .forgetMarkParentsUnsync: "unsync page hidden from its parents' bitmaps"
        case .invlpgCurrentRootOnly: "INVLPG resyncs the current root only (cached roots stale)"
        case .linkUnsyncWithoutSync: "unsync page linked without sync (B1)"
        case .upperLevelUnsync: "upper-level table allowed to go unsync (B8)"
        case .writableSPTEToNewTable: "writable spte left to a newly shadowed table (B3)"
        case .dropLocalFlushAfterSync: "local TLB flush dropped after a CR3 load"
        case .syncOtherVMsPages: "global list marks other VMs' pages synced"
        case .zapKeepsUnsync: "zap forgets to clear unsync"
        case .dirtyCleanLeafWritable: "D-clean leaf spte left writable"
        case .reuseCachedRootWithoutSync: "cached root reused after a flushing CR3 load without sync (B7)"
        case .miscountUnsync: "mmu_unsync counted wrongly"
        case .emulatedWriteKeepsSPTE: "emulated page-table write does not drop the old spte"
        }
    }
}

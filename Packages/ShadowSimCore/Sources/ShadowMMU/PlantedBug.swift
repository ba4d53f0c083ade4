/// Bugs the engine can be told to have, most modelled on real KVM bugs, to prove that
/// the checker, the scenario suite and the fuzzer catch them. Never on unless asked for.
/// Each breaks one step of the engine, through the fault-injection seam
/// (`FaultInjection`), not by a branch of its own in the engine's code.
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
    /// Write protection finds sptes through the exact frame only, missing large sptes
    /// that cover it (a bug the fuzzer found in this engine).
    case writeProtectSkipsLargeSPTEs = "write-protect-skips-large-sptes"
    /// A paravirtual update reaches only the first shadow of its table (a table shadowed
    /// under two roles keeps a stale spte in the other).
    case pvUpdateFirstShadowOnly = "pv-update-first-shadow-only"
    /// Write protection of a frame misses the TLB entries nested walks cached writable
    /// (they are in no reverse map; agile paging).
    case nestedTLBNotWriteProtected = "nested-tlb-not-write-protected"

    /// The built-in policies whose code reaches the bug, the one it was modelled on
    /// first. Planting it under any other policy would test nothing, so it is refused.
    public var policies: [String] {
        let shadowing = ["kvm-unsync", "wp-emulate", "global-list", "vm-list", "xen-oos", "pv-mmu", "agile"]
        let unsyncing = ["kvm-unsync", "global-list", "vm-list", "xen-oos", "agile"]
        switch self {
        case .syncOtherVMsPages: return ["global-list"]
        case .pvUpdateFirstShadowOnly: return ["pv-mmu"]
        case .nestedTLBNotWriteProtected: return ["agile"]
        // Only kvm-unsync's answers (agile's too) re-derive INVLPG'd entries in cached
        // roots, and sync a reused cached root on a flushing CR3 load.
        case .invlpgCurrentRootOnly, .reuseCachedRootWithoutSync: return ["kvm-unsync", "agile"]
        // Upper-level unsync goes through KVM's unsync rule, which the list policies share.
        case .upperLevelUnsync: return ["kvm-unsync", "global-list", "vm-list", "agile"]
        case .forgetMarkParentsUnsync, .linkUnsyncWithoutSync, .zapKeepsUnsync, .miscountUnsync: return unsyncing
        case .skipRemoteFlushAfterWriteProtect, .writableSPTEToNewTable, .dropLocalFlushAfterSync,
             .dirtyCleanLeafWritable, .emulatedWriteKeepsSPTE, .writeProtectSkipsLargeSPTEs: return shadowing
        }
    }

    /// The policy the bug was modelled on (the first of `policies`).
    public var policy: String { policies[0] }

    /// Whether the bug lives in the engine's shared mechanisms (so any policy plugin that
    /// shadows guest tables can reach it) rather than in one built-in policy's code.
    public var isInEngine: Bool { self != .syncOtherVMsPages }

    /// One line on what the bug is, and the real bug it is modelled on where there is one.
    public var summary: String {
        switch self {
        case .skipRemoteFlushAfterWriteProtect: "no remote flush after write-protecting a newly shadowed table"
        case .forgetMarkParentsUnsync: "unsync page hidden from its parents' bitmaps"
        case .invlpgCurrentRootOnly: "INVLPG resyncs the current root only, cached roots stay stale"
        case .linkUnsyncWithoutSync: "unsync page linked without a sync (KVM before 2021's sync-before-link fix)"
        case .upperLevelUnsync: "upper-level table allowed to go unsync (KVM's write tracking checked in one address space)"
        case .writableSPTEToNewTable: "writable spte left to a newly shadowed table (KVM's 'fix writable sync sp mapping')"
        case .dropLocalFlushAfterSync: "local TLB flush dropped after a CR3 load"
        case .syncOtherVMsPages: "the global list marks other VMs' pages synced without syncing them"
        case .zapKeepsUnsync: "a zap forgets to clear unsync"
        case .dirtyCleanLeafWritable: "D-clean leaf spte left writable"
        case .reuseCachedRootWithoutSync: "cached root reused by a flushing CR3 load without a sync (KVM's 2021 PCID fixes)"
        case .miscountUnsync: "mmu_unsync counted wrongly"
        case .emulatedWriteKeepsSPTE: "emulated page-table write does not drop the old spte"
        case .writeProtectSkipsLargeSPTEs: "write protection misses large sptes covering a new table (found by the fuzzer)"
        case .pvUpdateFirstShadowOnly: "a paravirtual update reaches only the first shadow of its table"
        case .nestedTLBNotWriteProtected: "write protection misses TLB entries nested walks cached writable"
        }
    }
}

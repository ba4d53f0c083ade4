/// VM-wide MMU statistics, with KVM's names where KVM has them.
public struct MMUStats: Equatable, Sendable {
    public var mmuCacheMiss: UInt64 = 0
    /// Gauge: shadow pages currently unsync.
    public var mmuUnsync: UInt64 = 0
    /// Pages made unsync (each time).
    public var unsyncEvents: UInt64 = 0
    public var mmuPTEWrite: UInt64 = 0
    public var mmuPDEZapped: UInt64 = 0
    public var mmuFlooded: UInt64 = 0
    public var mmuShadowZapped: UInt64 = 0
    public var mmuRecycled: UInt64 = 0
    public var remoteTLBFlushRequests: UInt64 = 0
    public var remoteTLBFlush: UInt64 = 0
    /// Other vCPUs a remote flush had to interrupt (IPIs).
    public var remoteFlushTargets: UInt64 = 0
    /// Gauges: present leaf sptes by size.
    public var pages4K: UInt64 = 0
    public var pages2M: UInt64 = 0
    public var pages1G: UInt64 = 0
    /// Gauge: shadow pages in use.
    public var shadowPages: UInt64 = 0
    public var pagesSynced: UInt64 = 0
    /// Present sptes compared with their guest entries during syncs.
    public var sptesResynced: UInt64 = 0
    /// Sptes made read-only to protect shadowed guest tables.
    public var writeProtections: UInt64 = 0
    /// Present sptes cleared when their pages were zapped.
    public var sptesZapped: UInt64 = 0
    /// Sptes installed by prefetch.
    public var sptesPrefetched: UInt64 = 0
    public var lockAcquisitions: UInt64 = 0
    /// Work units (entries synced, list entries walked, sptes zapped) under the lock.
    public var lockWork: UInt64 = 0
    /// Work done under a host-wide lock on entries that belong to other VMs.
    public var lockWorkForOtherVMs: UInt64 = 0
    /// Unsync-list entries walked (list-based policies).
    public var listEntriesWalked: UInt64 = 0

    public init() {}

    public var fields: [(name: String, value: UInt64)] {
        [("mmu_cache_miss", mmuCacheMiss), ("mmu_unsync", mmuUnsync), ("mmu_unsync_events", unsyncEvents), ("mmu_pte_write", mmuPTEWrite),
         ("mmu_pde_zapped", mmuPDEZapped), ("mmu_flooded", mmuFlooded), ("mmu_shadow_zapped", mmuShadowZapped),
         ("mmu_recycled", mmuRecycled), ("remote_tlb_flush_requests", remoteTLBFlushRequests),
         ("remote_tlb_flush", remoteTLBFlush), ("remote_flush_targets", remoteFlushTargets),
         ("pages_4k", pages4K), ("pages_2m", pages2M), ("pages_1g", pages1G), ("shadow_pages", shadowPages),
         ("pages_synced", pagesSynced), ("sptes_resynced", sptesResynced), ("write_protections", writeProtections), ("sptes_zapped", sptesZapped),
         ("sptes_prefetched", sptesPrefetched), ("lock_acquisitions", lockAcquisitions), ("lock_work", lockWork),
         ("lock_work_other_vms", lockWorkForOtherVMs), ("list_entries_walked", listEntriesWalked)]
    }
}

/// Per-vCPU MMU statistics.
public struct VCPUMMUStats: Equatable, Sendable {
    public var pfTaken: UInt64 = 0
    public var pfFixed: UInt64 = 0
    public var pfGuest: UInt64 = 0
    public var pfEmulate: UInt64 = 0
    public var pfSpurious: UInt64 = 0
    public var invlpg: UInt64 = 0
    public var tlbFlush: UInt64 = 0
    /// Exits by reason.
    public var exitsPageFault: UInt64 = 0
    public var exitsCR3: UInt64 = 0
    public var exitsInvlpg: UInt64 = 0
    public var exitsInvpcid: UInt64 = 0
    public var exitsCRWrite: UInt64 = 0
    public var insnEmulation: UInt64 = 0
    /// Levels read by software walks of guest tables.
    public var guestWalkLevels: UInt64 = 0
    /// Hardware walks of shadow tables (TLB misses) and of two-dimensional tables.
    public var shadowWalks: UInt64 = 0
    public var tdpWalks: UInt64 = 0
    public var eptViolations: UInt64 = 0

    public init() {}

    public var exits: UInt64 { exitsPageFault + exitsCR3 + exitsInvlpg + exitsInvpcid + exitsCRWrite }

    public var fields: [(name: String, value: UInt64)] {
        [("pf_taken", pfTaken), ("pf_fixed", pfFixed), ("pf_guest", pfGuest), ("pf_emulate", pfEmulate),
         ("pf_spurious", pfSpurious), ("invlpg_exits", invlpg), ("tlb_flush", tlbFlush), ("exits", exits),
         ("exits_page_fault", exitsPageFault), ("exits_cr3", exitsCR3), ("exits_invlpg", exitsInvlpg),
         ("exits_invpcid", exitsInvpcid), ("exits_cr_write", exitsCRWrite), ("insn_emulation", insnEmulation),
         ("guest_walk_levels", guestWalkLevels), ("shadow_walks", shadowWalks), ("tdp_walks", tdpWalks),
         ("ept_violations", eptViolations)]
    }

    public static func + (a: VCPUMMUStats, b: VCPUMMUStats) -> VCPUMMUStats {
        var r = VCPUMMUStats()
        r.pfTaken = a.pfTaken + b.pfTaken; r.pfFixed = a.pfFixed + b.pfFixed; r.pfGuest = a.pfGuest + b.pfGuest
        r.pfEmulate = a.pfEmulate + b.pfEmulate; r.pfSpurious = a.pfSpurious + b.pfSpurious
        r.invlpg = a.invlpg + b.invlpg; r.tlbFlush = a.tlbFlush + b.tlbFlush
        r.exitsPageFault = a.exitsPageFault + b.exitsPageFault; r.exitsCR3 = a.exitsCR3 + b.exitsCR3
        r.exitsInvlpg = a.exitsInvlpg + b.exitsInvlpg; r.exitsInvpcid = a.exitsInvpcid + b.exitsInvpcid
        r.exitsCRWrite = a.exitsCRWrite + b.exitsCRWrite; r.insnEmulation = a.insnEmulation + b.insnEmulation
        r.guestWalkLevels = a.guestWalkLevels + b.guestWalkLevels; r.shadowWalks = a.shadowWalks + b.shadowWalks
        r.tdpWalks = a.tdpWalks + b.tdpWalks; r.eptViolations = a.eptViolations + b.eptViolations
        return r
    }
}

/// Cycle costs of MMU events, for estimates. Defaults and their sources follow §8 of
/// docs/reference (shadow-mmu.md): a world switch of ~2 000 cycles (Nehalem, KVM
/// 2.6.34), a two-dimensional walk of up to 24 references, TLB shootdowns of a few µs.
public struct CostModel: Equatable, Sendable {
    /// VM exit + entry (world switch).
    public var exit = 2_000.0
    /// One level of a software walk of guest tables.
    public var guestWalkLevel = 40.0
    /// Decoding and emulating one instruction.
    public var emulation = 1_500.0
    /// Comparing or rebuilding one spte during a sync.
    public var syncEntry = 30.0
    /// Allocating and initialising a shadow page.
    public var allocShadowPage = 600.0
    /// Clearing one present spte when a page is zapped.
    public var zapEntry = 10.0
    /// Making one spte read-only.
    public var writeProtectEntry = 20.0
    /// A local TLB flush.
    public var localFlush = 300.0
    /// Sending one IPI and the target's exit, flush and re-entry.
    public var remoteFlushTarget = 4_000.0
    /// A hardware walk of shadow (or native) tables on a TLB miss, per level.
    public var hardwareWalkLevel = 25.0
    /// A two-dimensional (nested paging) TLB miss: up to 24 references.
    public var tdpWalk = 24 * 25.0
    /// An EPT/NPT violation on first touch of a guest frame (exit included).
    public var eptViolation = 3_000.0
    /// Walking one entry of a host-wide or per-VM unsync list.
    public var listEntry = 15.0

    public init() {}

    public var fields: [(name: String, value: Double)] {
        [("exit", exit), ("guest_walk_level", guestWalkLevel), ("emulation", emulation), ("sync_entry", syncEntry),
         ("alloc_shadow_page", allocShadowPage), ("zap_entry", zapEntry), ("write_protect_entry", writeProtectEntry),
         ("local_flush", localFlush), ("remote_flush_target", remoteFlushTarget),
         ("hardware_walk_level", hardwareWalkLevel), ("tdp_walk", tdpWalk), ("ept_violation", eptViolation),
         ("list_entry", listEntry)]
    }

    /// Sets a cost by its report name; false when there is no such cost.
    public mutating func set(_ name: String, _ value: Double) -> Bool {
        switch name {
        case "exit": exit = value
        case "guest_walk_level": guestWalkLevel = value
        case "emulation": emulation = value
        case "sync_entry": syncEntry = value
        case "alloc_shadow_page": allocShadowPage = value
        case "zap_entry": zapEntry = value
        case "write_protect_entry": writeProtectEntry = value
        case "local_flush": localFlush = value
        case "remote_flush_target": remoteFlushTarget = value
        case "hardware_walk_level": hardwareWalkLevel = value
        case "tdp_walk": tdpWalk = value
        case "ept_violation": eptViolation = value
        case "list_entry": listEntry = value
        default: return false
        }
        return true
    }
}

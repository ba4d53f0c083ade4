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
    /// Present sptes a sync dropped (guest entry not present, invalid, or for another frame).
    public var syncSPTEsDropped: UInt64 = 0
    /// Present sptes re-derived one at a time by INVLPG or INVPCID of an address.
    public var invlpgResyncs: UInt64 = 0
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
    /// Guest entries written by paravirtual update hypercalls (pv-mmu).
    public var pvUpdates: UInt64 = 0
    /// Gauge: nested links (sptes that hand the walk to a guest table; agile paging).
    public var nestedLinks: UInt64 = 0
    /// Guest tables switched from shadow to nested mode, and back.
    public var tablesToNested: UInt64 = 0
    public var tablesToShadow: UInt64 = 0

    public init() {}

    public var fields: [(name: String, value: UInt64)] {
        [("mmu_cache_miss", mmuCacheMiss), ("mmu_unsync", mmuUnsync), ("mmu_unsync_events", unsyncEvents), ("mmu_pte_write", mmuPTEWrite),
         ("mmu_pde_zapped", mmuPDEZapped), ("mmu_flooded", mmuFlooded), ("mmu_shadow_zapped", mmuShadowZapped),
         ("mmu_recycled", mmuRecycled), ("remote_tlb_flush_requests", remoteTLBFlushRequests),
         ("remote_tlb_flush", remoteTLBFlush), ("remote_flush_targets", remoteFlushTargets),
         ("pages_4k", pages4K), ("pages_2m", pages2M), ("pages_1g", pages1G), ("shadow_pages", shadowPages),
         ("pages_synced", pagesSynced), ("sptes_resynced", sptesResynced), ("sync_sptes_dropped", syncSPTEsDropped),
         ("invlpg_resyncs", invlpgResyncs), ("write_protections", writeProtections), ("sptes_zapped", sptesZapped),
         ("sptes_prefetched", sptesPrefetched), ("lock_acquisitions", lockAcquisitions), ("lock_work", lockWork),
         ("lock_work_other_vms", lockWorkForOtherVMs), ("list_entries_walked", listEntriesWalked),
         ("pv_updates", pvUpdates), ("nested_links", nestedLinks), ("tables_to_nested", tablesToNested),
         ("tables_to_shadow", tablesToShadow)]
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
    /// Paravirtual MMU hypercalls (update batches and flushes).
    public var exitsHypercall: UInt64 = 0
    public var insnEmulation: UInt64 = 0
    /// Levels read by software walks of guest tables.
    public var guestWalkLevels: UInt64 = 0
    /// Hardware walks (TLB misses) that began in shadow tables, and that began in the
    /// guest's own tables at CR3 (nested paging).
    public var shadowWalks: UInt64 = 0
    public var tdpWalks: UInt64 = 0
    public var eptViolations: UInt64 = 0
    /// Walks that read guest tables through the EPT (from CR3, or from a nested link
    /// below shadow levels), and the EPT references they added.
    public var nestedWalks: UInt64 = 0
    public var nestedWalkHostRefs: UInt64 = 0

    public init() {}

    public var exits: UInt64 { exitsPageFault + exitsCR3 + exitsInvlpg + exitsInvpcid + exitsCRWrite + exitsHypercall }

    public var fields: [(name: String, value: UInt64)] {
        [("pf_taken", pfTaken), ("pf_fixed", pfFixed), ("pf_guest", pfGuest), ("pf_emulate", pfEmulate),
         ("pf_spurious", pfSpurious), ("invlpg_exits", invlpg), ("tlb_flush", tlbFlush), ("exits", exits),
         ("exits_page_fault", exitsPageFault), ("exits_cr3", exitsCR3), ("exits_invlpg", exitsInvlpg),
         ("exits_invpcid", exitsInvpcid), ("exits_cr_write", exitsCRWrite), ("exits_hypercall", exitsHypercall), ("insn_emulation", insnEmulation),
         ("guest_walk_levels", guestWalkLevels), ("shadow_walks", shadowWalks), ("tdp_walks", tdpWalks),
         ("ept_violations", eptViolations), ("nested_walks", nestedWalks), ("nested_walk_host_refs", nestedWalkHostRefs)]
    }

    public static func + (a: VCPUMMUStats, b: VCPUMMUStats) -> VCPUMMUStats {
        var r = VCPUMMUStats()
        r.pfTaken = a.pfTaken + b.pfTaken; r.pfFixed = a.pfFixed + b.pfFixed; r.pfGuest = a.pfGuest + b.pfGuest
        r.pfEmulate = a.pfEmulate + b.pfEmulate; r.pfSpurious = a.pfSpurious + b.pfSpurious
        r.invlpg = a.invlpg + b.invlpg; r.tlbFlush = a.tlbFlush + b.tlbFlush
        r.exitsPageFault = a.exitsPageFault + b.exitsPageFault; r.exitsCR3 = a.exitsCR3 + b.exitsCR3
        r.exitsInvlpg = a.exitsInvlpg + b.exitsInvlpg; r.exitsInvpcid = a.exitsInvpcid + b.exitsInvpcid
        r.exitsCRWrite = a.exitsCRWrite + b.exitsCRWrite; r.exitsHypercall = a.exitsHypercall + b.exitsHypercall
        r.insnEmulation = a.insnEmulation + b.insnEmulation
        r.guestWalkLevels = a.guestWalkLevels + b.guestWalkLevels; r.shadowWalks = a.shadowWalks + b.shadowWalks
        r.tdpWalks = a.tdpWalks + b.tdpWalks; r.eptViolations = a.eptViolations + b.eptViolations
        r.nestedWalks = a.nestedWalks + b.nestedWalks; r.nestedWalkHostRefs = a.nestedWalkHostRefs + b.nestedWalkHostRefs
        return r
    }
}

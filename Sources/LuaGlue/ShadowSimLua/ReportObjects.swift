import ShadowMMU
import GuestKernel
import LinuxReplay

/// The root-load samples as a report object: the loads, then for the unsync pages lying
/// around and for those the new root reached, mean, p50, p90 and max.
func rootLoadObject(_ s: RootLoadSamples) -> JSONValue {
    func summary(_ h: Histogram) -> JSONValue {
        .object([("mean", .number((h.mean * 100).rounded() / 100)), ("p50", .integer(Int64(h.percentile(0.5)))),
                 ("p90", .integer(Int64(h.percentile(0.9)))), ("max", .integer(Int64(h.max)))])
    }
    return .object([("loads", .integer(Int64(s.loads))), ("unsync_lying_around", summary(s.lyingAround)),
                    ("unsync_reached", summary(s.reached))])
}

/// The Linux model's own counters.
func linuxObject(_ s: LinuxStats, options: LinuxOptions) -> JSONValue {
    let counts: [(String, Int)] = [
        ("processes_created", s.processesCreated), ("forks", s.forks), ("threads_created", s.threadsCreated),
        ("execs", s.execs), ("exits", s.exits), ("context_switches", s.contextSwitches), ("mm_switches", s.mmSwitches),
        ("cr3_loads", s.cr3Loads), ("cr3_loads_noflush", s.cr3LoadsNoFlush), ("invlpg", s.invlpg), ("invpcid", s.invpcid),
        ("page_tables_allocated", s.pageTablesAllocated), ("page_tables_freed", s.pageTablesFreed),
        ("ptes_cleared", s.ptesCleared), ("ptes_write_protected", s.ptesWriteProtected),
        ("pages_copied_at_fork", s.pagesCopiedAtFork), ("page_cache_pages", s.pageCachePages),
        ("inferred_areas", s.inferredAreas), ("fault_around_pages", s.faultAroundPages), ("populated_pages", s.populatedPages), ("forced_switches", s.forcedSwitches),
    ]
    return .object([
        ("kpti", .bool(options.kpti)), ("pcid", .bool(options.pcid)),
        ("counters", .object(counts.map { ($0.0, .integer(Int64($0.1))) })),
        ("faults", .object(s.faults.fields.map { ($0.name, .integer(Int64($0.value))) })),
        ("flushes", .array(s.flushes.keys.sorted().map { k in
            .object([("reason", .string(TLBFlushReason(rawValue: k.reason)?.name ?? "\(k.reason)")),
                     ("pages", .integer(k.pages)), ("count", .integer(Int64(s.flushes[k]!)))])
        })),
    ])
}

/// A replay's record: its headline numbers, then flushes by reason, faults whose bits
/// differed, skipped events and events by name.
func replayObject(_ trace: String, _ r: ReplayRecord) -> JSONValue {
    .object([
        ("trace", .string(trace)),
        ("truncated", .bool(r.truncated)),
        ("summary", .object(r.fields.map { ($0.name, .integer(Int64($0.value))) })),
        ("flushes_by_reason", .array(r.flushes.keys.sorted().map { reason in
            let a = r.flushes[reason]!
            return .object([("reason", .string(TLBFlushReason(rawValue: reason)?.name ?? "\(reason)")),
                            ("traced", .integer(Int64(a.traced))), ("replayed", .integer(Int64(a.replayed))),
                            ("matched", .integer(Int64(a.matched))), ("other_pages", .integer(Int64(a.otherPages))),
                            ("trace_only", .integer(Int64(a.traceOnly))), ("replay_only", .integer(Int64(a.replayOnly)))])
        })),
        ("faults_other_code", .object(r.faultsOtherCode.keys.sorted().map { ($0, .integer(Int64(r.faultsOtherCode[$0]!))) })),
        ("skipped", .object(r.skipped.keys.sorted().map { ($0, .integer(Int64(r.skipped[$0]!))) })),
        ("events_by_name", .object(r.eventsByName.keys.sorted().map { ($0, .integer(Int64(r.eventsByName[$0]!))) })),
    ])
}

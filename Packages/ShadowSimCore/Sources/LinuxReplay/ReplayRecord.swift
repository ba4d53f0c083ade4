import GuestKernel
import LinuxTrace

/// What a replay did, and how closely the model followed the trace.
public struct ReplayRecord: Sendable {
    /// Lines read and events decoded.
    public var lines = 0
    public var events = 0
    /// Events by name (`sched_switch`, `page_fault_user`, `sys_enter_mmap`, …).
    public var eventsByName: [String: Int] {
        var out = otherEvents
        for (i, n) in counts.enumerated() where n > 0 { out[EventName.all[i]] = n }
        return out
    }
    /// Counts of the events the replay knows, by `EventName` index (an array, not a
    /// dictionary: one increment per event of a long trace).
    var counts = [Int](repeating: 0, count: EventName.all.count)
    /// Events of other names.
    var otherEvents: [String: Int] = [:]

    // Tasks.
    public var contextSwitches = 0
    /// Clones by kind: a new mm (fork), the parent's mm lent until exec (vfork, or any
    /// CLONE_VM without CLONE_THREAD), a thread.
    public var forks = 0
    public var vforks = 0
    public var threads = 0
    public var execs = 0
    /// Execs done at `sched_process_exec` because their start (the mm switch) was not
    /// recognised: the new program's first faults were replayed in the old mm.
    public var execsAtEnd = 0
    public var exits = 0
    /// Traced tasks whose fork was not in the trace (the first ones): given a process of
    /// their own with an empty address space.
    public var tasksAdopted = 0
    /// Untraced tasks seen in sched_switch: user ones (an mm per name) and kernel threads.
    public var foreignTasks = 0
    public var kernelThreads = 0
    /// An event's task was not current on its CPU in the model (a switch the trace did
    /// not record): it was switched in first.
    public var implicitSwitches = 0
    /// A switch's `prev` was not current on its CPU in the model: the CPU had switched
    /// to it unseen (between untraced tasks). The model switches to it first, unjudged.
    public var unseenSwitches = 0

    // Faults: every traced fault replayed as the access that took it.
    public var faultsReplayed = 0
    /// The access faulted in the model with the traced P, W, U, RSVD and I bits.
    public var faultsAgreed = 0
    /// Disagreements a documented rule explains: another CPU faulted on the same page
    /// within a millisecond (both took the fault in Linux; the model handles one first).
    public var faultsRaced = 0
    /// Disagreements in an address space whose earlier contents the trace does not hold.
    public var faultsUnknownHistory = 0
    /// Disagreements at an address no traced call mapped: the model does not know that
    /// area's extent or file, so it cannot map pages around a fault there as Linux does.
    public var faultsUnknownArea = 0
    /// The rest: the access did not fault in the model (a page the model had mapped).
    public var faultsNotReproduced = 0
    /// The rest: it faulted with other bits; by "trace code → model code".
    public var faultsOtherCode: [String: Int] = [:]
    /// After the handler, the retried access faulted again.
    public var retriesFaulted = 0

    // Flushes, by reason: traced, done by the model where the trace would show them,
    // and matched (same CPU, reason and pages, close in the trace).
    public var flushes: [Int: FlushAgreement] = [:]

    /// Events the replay could not use, by reason.
    public var skipped: [String: Int] = [:]
    /// Ring-buffer overruns the trace reports, and the events they say were lost.
    public var lostMarkers = 0
    public var lostEvents = 0
    /// The last line had no newline (the trace was cut short).
    public var truncated = false
    /// Stopped before the end (Ctrl-C).
    public var interrupted = false

    public init() {}

    public struct FlushAgreement: Sendable, Equatable {
        public var traced = 0
        public var replayed = 0
        public var matched = 0
        /// Unmatched on both sides for the same CPU and reason, with different pages.
        public var otherPages = 0
        public var traceOnly = 0
        public var replayOnly = 0
        public init() {}
    }

    mutating func skip(_ reason: String) { skipped[reason, default: 0] += 1 }

    public var faultsOtherCodeTotal: Int { faultsOtherCode.values.reduce(0, +) }
    public var skippedTotal: Int { skipped.values.reduce(0, +) }

    /// The headline numbers, in a stable order (the `replay:` rows of a comparison).
    public var fields: [(name: String, value: Int)] {
        let f = flushes.values
        return [
            ("events", events), ("sched_switches", contextSwitches), ("forks", forks), ("vforks", vforks), ("threads", threads),
            ("execs", execs), ("execs_at_end", execsAtEnd), ("exits", exits), ("faults_replayed", faultsReplayed), ("faults_agreed", faultsAgreed),
            ("faults_raced", faultsRaced), ("faults_unknown_history", faultsUnknownHistory),
            ("faults_unknown_area", faultsUnknownArea),
            ("faults_not_reproduced", faultsNotReproduced), ("faults_other_code", faultsOtherCodeTotal),
            ("retries_faulted", retriesFaulted),
            ("flushes_traced", f.reduce(0) { $0 + $1.traced }), ("flushes_replayed", f.reduce(0) { $0 + $1.replayed }),
            ("flushes_matched", f.reduce(0) { $0 + $1.matched }), ("flushes_other_pages", f.reduce(0) { $0 + $1.otherPages }),
            ("flushes_trace_only", f.reduce(0) { $0 + $1.traceOnly }), ("flushes_replay_only", f.reduce(0) { $0 + $1.replayOnly }),
            ("tasks_adopted", tasksAdopted), ("foreign_tasks", foreignTasks), ("kernel_threads", kernelThreads),
            ("implicit_switches", implicitSwitches), ("unseen_switches", unseenSwitches), ("skipped", skippedTotal), ("lost_events", lostEvents),
        ]
    }
}

/// The names of the events the replay counts, by index.
enum EventName {
    static let fixed = ["sched_switch", "task_newtask", "sched_process_fork", "sched_process_exec", "sched_process_exit",
                        "sched_migrate_task", "page_fault_user", "page_fault_kernel", "tlb_flush", "lost"]
    static let all = fixed + TraceEvent.Syscall.allCases.flatMap { ["sys_enter_" + $0.rawValue, "sys_exit_" + $0.rawValue] }
    static let schedSwitch = 0, newTask = 1, fork = 2, exec = 3, exit = 4, migrate = 5, faultUser = 6, faultKernel = 7,
               tlbFlush = 8, lost = 9

    static func enter(_ call: TraceEvent.Syscall) -> Int { fixed.count + 2 * TraceEvent.Syscall.allCases.firstIndex(of: call)! }
    static func exit(_ call: TraceEvent.Syscall) -> Int { enter(call) + 1 }
}


import X86
import GuestKernel
import LinuxTrace

/// Replays a recorded Linux trace through the Linux model: every task switch, fork,
/// exec, exit and memory call the trace shows is done by the model on the vCPU of the
/// traced CPU; every traced page fault is replayed as the access that took it and must
/// fault in the guest too before the model handles it. The model's flushes are held to
/// the traced ones. Streaming: memory grows with the guest, not with the trace.
public final class TraceReplay {
    public let linux: LinuxKernel
    public private(set) var record = ReplayRecord()
    /// The trace being read (for messages).
    public private(set) var file = "trace"
    private var line = 0
    private let flushes: FlushMatcher
    /// A syscall entered and not yet exited, per pid.
    private var pending: [Int32: (TraceEvent.Syscall, [UInt64])] = [:]
    /// Foreign user tasks' mms, one per task name (threads of one program share it).
    private var foreignByName: [String: Int32] = [:]
    /// During a switch the trace did not show: nil (what it does is not judged).
    private var switchingFrom: [Int: LinuxTask?] = [:]
    /// The last traced fault on each page (of each mm): its CPU and time, for the race rule.
    /// Two generations, each spanning at least one race window, so that every fault
    /// within the window is in one of them and neither table is rebuilt (only cleared).
    private var recentFaults: [FaultKey: (cpu: Int, time: UInt64)] = [:]
    private var olderFaults: [FaultKey: (cpu: Int, time: UInt64)] = [:]
    private var recentFaultsSince: UInt64 = 0
    struct FaultKey: Hashable {
        var mm: ObjectIdentifier
        var page: UInt64
    }
    /// Two faults on one page from two CPUs this close (µs) raced in Linux.
    static let raceWindow: UInt64 = 1000
    /// Tasks whose exec began (its mm switch was seen) and has not yet ended.
    private var execsUnderWay = Set<Int32>()
    /// How many disagreements to describe (`explanations`), by trace line.
    public var explain = 0
    public private(set) var explanations: [String] = []

    public init(linux: LinuxKernel) {
        self.linux = linux
        flushes = FlushMatcher(cpus: linux.cpuCount)
        flushes.replay = self
        linux.sink = flushes
    }

    /// Progress of a long replay.
    public struct Progress: Sendable {
        public var events: Int
        public var bytes: UInt64
    }

    /// Reads and replays `path` (plain or gzip), at most `maxEvents` events. Errors name
    /// the file and line: a line of no trace format, an event on a CPU the guest lacks, a
    /// compressed file that ends early, or the guest failing (a checker violation).
    public func replay(path: String, maxEvents: Int? = nil, progressEvery: Int = 100_000,
                       progress: ((Progress) -> Void)? = nil, shouldStop: (() -> Bool)? = nil) throws(TraceError) {
        file = path
        let reader = try TraceReader(path: path)
        var parser = TraceLineParser()
        var stop = false
        let unterminated = try reader.forEachLine { (bytes, number) throws(TraceError) -> Bool in
            line = number
            record.lines = number
            switch parser.parse(bytes, number: number) {
            case .nothing:
                return true
            case .header(let h):
                if let written = h.entriesWritten, let kept = h.entriesInBuffer, written > kept {
                    // The ring buffer overwrote the oldest events.
                    record.lostMarkers += 1
                    record.lostEvents += written - kept
                }
                return true
            case .malformed(let why):
                if number == 1 {
                    throw TraceError(file: path, line: number, message: "not a trace of tracefs, trace-cmd report or perf script: \(why)")
                }
                if reader.atEnd {
                    record.truncated = true
                    record.skip("a truncated last line")
                    return true
                }
                throw TraceError(file: path, line: number, message: "unreadable trace line: \(why)")
            case .event(let event):
                try apply(event)
                if let maxEvents, record.events >= maxEvents { stop = true; return false }
                if record.events & 4095 == 0, let shouldStop, shouldStop() {
                    record.interrupted = true
                    return false
                }
                if let progress, record.events % progressEvery == 0 {
                    progress(Progress(events: record.events, bytes: reader.bytesRead))
                }
                return true
            }
        }
        if unterminated && !record.truncated {
            record.truncated = true
        }
        _ = stop
        flushes.settleAll()
    }

    private func error(_ message: String) -> TraceError { TraceError(file: file, line: line, message: message) }

    /// Replays one event.
    public func apply(_ event: TraceEvent) throws(TraceError) {
        record.events += 1
        linux.now = event.time
        guard event.cpu < linux.cpuCount else {
            throw error("an event on CPU \(event.cpu), but the guest has \(linux.cpuCount) vCPUs (give it more with --vcpus)")
        }
        do {
            try dispatch(event)
        } catch let e as MachineError {
            throw error("the guest failed: \(e)")
        } catch let e as TraceError {
            throw e
        } catch {
            throw self.error("\(error)")
        }
    }

    private func count(_ index: Int) { record.counts[index] += 1 }

    /// Notes a disagreement with the trace at the current line (when explaining).
    func note(_ what: @autoclosure () -> String, line at: Int? = nil) {
        guard explanations.count < explain else { return }
        explanations.append("\(file):\(at ?? line): \(what())")
    }

    var currentLine: Int { line }

    private func dispatch(_ event: TraceEvent) throws {
        let cpu = event.cpu
        switch event.body {
        case .schedSwitch(let prev, let prevComm, let next, let nextComm):
            count(EventName.schedSwitch)
            record.contextSwitches += 1
            let from = prev == 0 ? nil : task(prev, name: prevComm, cpu: cpu)
            let to = next == 0 ? nil : task(next, name: nextComm, cpu: cpu)
            if linux.current(on: cpu) !== from {
                // The CPU ran `prev` since the last switch the trace shows (switches between
                // untraced tasks are not recorded): it comes first, unjudged.
                record.unseenSwitches += 1
                switchingFrom[cpu] = .some(nil)
                try linux.schedule(from, on: cpu)
                switchingFrom[cpu] = nil
            }
            try linux.schedule(to, on: cpu)
            if let from, from.exited { linux.reap(from.pid) }
            flushes.settle(cpu)
        case .newTask(let pid, let cloneFlags):
            count(EventName.newTask)
            let parent = try current(event)
            guard parent.mm != nil else { record.skip("a task created by a task without an mm"); return }
            if let old = linux.task(pid) {
                guard old.exited else { record.skip("task_newtask of a pid still in use"); return }
                linux.reap(pid)
            }
            let flags = CloneFlags(rawValue: cloneFlags)
            try linux.fork(on: cpu, child: pid, flags: flags)
            if flags.contains(.thread) {
                record.threads += 1
            } else if flags.contains(.vm) {
                record.vforks += 1
            } else {
                record.forks += 1
            }
        case .fork(let parentPID, let child):
            count(EventName.fork)
            guard linux.task(child) == nil else { return }
            // No task_newtask before it: a plain fork is assumed.
            guard let parent = linux.task(parentPID), parent.mm != nil else {
                record.skip("sched_process_fork of an unknown parent"); return
            }
            _ = try current(event)
            try linux.fork(on: cpu, child: child, flags: [])
            record.forks += 1
            record.skip("sched_process_fork without task_newtask (a fork of the mm assumed)")
        case .exec(let pid, let oldPID, _):
            count(EventName.exec)
            let task = try current(event)
            if pid != oldPID, task.pid != pid { record.skip("exec by a thread other than the leader (pid kept)") }
            if execsUnderWay.remove(task.pid) == nil {
                // Its mm switch was not recognised: the exec happens here, late.
                try linux.exec(on: cpu)
                record.execsAtEnd += 1
                note("pid \(task.pid): exec done at sched_process_exec (its mm switch was not recognised)")
            }
            record.execs += 1
        case .exit(let pid, _):
            count(EventName.exit)
            let task = try current(event)
            if task.pid != pid { record.skip("sched_process_exit of another task") ; return }
            try linux.exit(on: cpu)
            record.exits += 1
        case .migrate:
            count(EventName.migrate)
        case .pageFault(let kernelMode, let address, let code):
            count(kernelMode ? EventName.faultKernel : EventName.faultUser)
            try pageFault(event, kernelMode: kernelMode, address: address, code: code)
        case .tlbFlush(let reason, let pages):
            count(EventName.tlbFlush)
            if reason == TLBFlushReason.taskSwitch.rawValue {
                // Recorded in the context of the task the switch left: no current task
                // to check. A flushing one may be an exec starting.
                if pages == -1 { try execMMSwitch(event) }
            } else if event.pid != 0 {
                // The initiator, or the task an IPI interrupted: it runs there (a
                // migration by the stopper thread is not recorded).
                _ = try current(event)
            }
            flushes.traced(cpu: cpu, reason: reason, pages: pages)
        case .syscallEnter(let call, let args):
            count(EventName.enter(call))
            try syscallEnter(event, call, args)
        case .syscallExit(let call, let value):
            count(EventName.exit(call))
            try syscallExit(event, call, value)
        case .lost(let n):
            count(EventName.lost)
            record.lostMarkers += 1
            record.lostEvents += n ?? 0
        case .other(let name):
            record.otherEvents[name, default: 0] += 1
            record.skip("event \(name), which the replay does not use")
        }
    }

    // MARK: Tasks

    /// The task of `pid`, made when first seen in a switch: idle, a kernel thread (by
    /// its name), or a foreign user task (one mm per name).
    private func task(_ pid: Int32, name: String, cpu: Int) -> LinuxTask {
        if let t = linux.task(pid) { return t }
        if Self.isKernelThread(name) {
            record.kernelThreads += 1
            return (try? linux.kernelThread(pid: pid, on: cpu))!
        }
        record.foreignTasks += 1
        if let shared = foreignByName[name], let owner = linux.task(shared), let mm = owner.mm {
            return linux.foreignTask(pid: pid, sharing: mm, cpu: cpu)
        }
        foreignByName[name] = pid
        return (try? linux.spawn(pid: pid, on: cpu))!
    }

    /// The task an event was recorded for (its prefix pid), current on the event's CPU.
    /// A pid first seen here is a traced task whose fork the trace does not hold.
    private func current(_ event: TraceEvent) throws -> LinuxTask {
        let cpu = event.cpu
        var t = linux.task(event.pid)
        if t == nil || t!.exited && linux.current(on: cpu) !== t {
            if t != nil { linux.reap(event.pid) }
            t = try linux.spawn(pid: event.pid, on: cpu)
            t!.mm?.adopted = true
            t!.traced = true
            record.tasksAdopted += 1
        }
        let task = t!
        if task.kind == .user && !task.traced {
            // A task first seen in a switch, now recording events: the traced tree's,
            // its fork not in the trace. Foreign tasks of its name no longer share its mm.
            task.traced = true
            task.mm?.adopted = true
            record.tasksAdopted += 1
            record.foreignTasks -= 1
            foreignByName = foreignByName.filter { $0.value != task.pid }
        }
        if linux.current(on: cpu) !== task {
            record.implicitSwitches += 1
            switchingFrom[cpu] = .some(nil)
            defer { switchingFrom[cpu] = nil }
            try linux.schedule(task, on: cpu)
        }
        return task
    }

    /// Whether Linux recorded what happens on `cpu` now: tracefs's pid filter follows the
    /// task a switch goes to (so the flush of a switch to a traced task is recorded, that
    /// of a switch away from one is not). A switch the trace did not show is not judged.
    func visible(_ cpu: Int) -> Bool {
        if let override = switchingFrom[cpu] { return override?.traced ?? false }
        return linux.current(on: cpu)?.traced ?? false
    }

    /// Kernel threads by name (sched_switch gives no other clue).
    static func isKernelThread(_ name: String) -> Bool {
        let prefixes = ["kworker/", "ksoftirqd/", "migration/", "rcu_", "rcuop/", "rcuos/", "cpuhp/", "idle_inject/",
                        "kthreadd", "kswapd", "khugepaged", "kcompactd", "watchdog", "irq/", "jbd2/", "kauditd",
                        "kdevtmpfs", "oom_reaper", "writeback", "kblockd", "kintegrityd", "khungtaskd", "ksmd",
                        "kstrp", "ipv6_addrconf", "mm_percpu_wq", "netns", "kthrotld", "edac-poller", "devfreq_wq",
                        "psimon", "ext4-", "xfs", "btrfs", "loop", "scsi_", "nvme", "kvm-", "vhost-", "card",
                        "zswap", "kpsmoused", "hwrng", "ksgxd", "tpm_", "dm_bufio", "kmpath", "charger_manager",
                        "inet_frag_wq", "blkcg_punt_bio", "acpi_thermal", "kaluad", "ata_sff", "md", "raid", "cryptd",
                        "swapper/", "pool_workqueue_", "kcryptd", "kdamond", "krfcommd", "kcmtpd", "hv_", "xen"]
        return prefixes.contains { name.hasPrefix($0) }
    }

    /// exec has no event of its own before `sched_process_exec`, which comes last, after
    /// the new program's first faults. Its start shows as a flushing reason-0 flush (the
    /// new mm loaded by exec_mmap) on a CPU already running the task's own mm, with no
    /// switch of the model's waiting for its partner: the exec is done there.
    private func execMMSwitch(_ event: TraceEvent) throws {
        // A traced pid's very first event being such a flush: its exec (a switch into it
        // would have been recorded first).
        if linux.task(event.pid) == nil, event.pid != 0 { _ = try current(event) }
        guard let task = linux.task(event.pid), task.traced, !task.exited, task.mm != nil,
              !execsUnderWay.contains(task.pid), linux.current(on: event.cpu) === task,
              linux.runsOwnMM(on: event.cpu), !flushes.hasPendingReplayed(cpu: event.cpu, reason: 0) else { return }
        execsUnderWay.insert(task.pid)
        try linux.exec(on: event.cpu)
    }

    // MARK: Faults

    private func pageFault(_ event: TraceEvent, kernelMode: Bool, address: UInt64, code: UInt32) throws {
        let cpu = event.cpu
        if kernelMode && address >= linux.userAddressLimit {
            record.skip("a kernel-mode fault on a kernel address")
            return
        }
        let task = try current(event)
        guard let mm = task.mm else { record.skip("a fault by a task without an mm"); return }
        guard address < linux.userAddressLimit else { record.skip("a user fault above user space"); return }
        let kind: AccessKind = code & 0x10 != 0 ? .fetch : (code & 0x2 != 0 ? .write : .read)
        record.faultsReplayed += 1
        let result = try linux.touch(on: cpu, address, kind, user: !kernelMode)
        let relevant: UInt32 = 0x1F
        let page = FaultKey(mm: ObjectIdentifier(mm), page: address >> 12)
        if event.time &- recentFaultsSince > Self.raceWindow {
            swap(&recentFaults, &olderFaults)
            recentFaults.removeAll(keepingCapacity: true)
            recentFaultsSince = event.time
        }
        let last = recentFaults[page] ?? olderFaults[page]
        let raced = last.map { $0.cpu != cpu && event.time &- $0.time <= Self.raceWindow } ?? false
        recentFaults[page] = (cpu, event.time)
        let agreed = result.first.outcome == .pageFault && result.first.errorCode & relevant == code & relevant
        if agreed {
            record.faultsAgreed += 1
        } else if raced {
            record.faultsRaced += 1
        } else if mm.adopted {
            record.faultsUnknownHistory += 1
        } else if mm.areas.find(address)?.inferred ?? true {
            record.faultsUnknownArea += 1
        } else if result.first.outcome != .pageFault {
            record.faultsNotReproduced += 1
            note("pid \(task.pid) \(kind) at \(hex(address)) did not fault in the model (traced code \(hex(UInt64(code))))")
        } else {
            record.faultsOtherCode["\(hex(UInt64(code & relevant))) → \(hex(UInt64(result.first.errorCode & relevant)))", default: 0] += 1
            note("pid \(task.pid) \(kind) at \(hex(address)): traced code \(hex(UInt64(code))), the model's \(hex(UInt64(result.first.errorCode)))")
        }
        if let retry = result.retry, !retry.isOK {
            record.retriesFaulted += 1
            note("pid \(task.pid) \(kind) at \(hex(address)) faulted again after the model handled it: \(retry.summary)")
        }
    }

    // MARK: System calls

    private func syscallEnter(_ event: TraceEvent, _ call: TraceEvent.Syscall, _ args: [UInt64]) throws {
        let cpu = event.cpu
        let task = try current(event)
        guard task.mm != nil else { record.skip("a system call by a task without an mm"); return }
        try linux.enterSyscall(on: cpu)
        pending[task.pid] = (call, args)
        func arg(_ i: Int) -> UInt64 { i < args.count ? args[i] : 0 }
        switch call {
        case .munmap:
            try linux.munmap(on: cpu, arg(0), arg(1))
        case .mprotect:
            try linux.mprotect(on: cpu, arg(0), arg(1), Protection(rawValue: arg(2) & 7))
        case .madvise:
            if try !linux.madvise(on: cpu, arg(0), arg(1), arg(2)) { record.skip("madvise advice \(arg(2)), which changes no table here") }
        case .mmap, .mremap, .brk:
            break   // done at the exit, which says where
        }
    }

    private func syscallExit(_ event: TraceEvent, _ call: TraceEvent.Syscall, _ value: Int64) throws {
        let cpu = event.cpu
        let task = try current(event)
        guard task.mm != nil else { return }
        guard let (entered, args) = pending.removeValue(forKey: task.pid), entered == call else {
            record.skip("sys_exit_\(call.rawValue) without its sys_enter")
            try linux.exitSyscall(on: cpu)
            return
        }
        func arg(_ i: Int) -> UInt64 { i < args.count ? args[i] : 0 }
        let failed = value < 0 && value >= -4095
        if failed && call != .brk {
            record.skip("a failed \(call.rawValue)")
        } else {
            let result = UInt64(bitPattern: value)
            switch call {
            case .mmap:
                let fd = Int64(Int32(truncatingIfNeeded: arg(4)))
                try linux.mmap(on: cpu, address: result, length: arg(1), protection: Protection(rawValue: arg(2) & 7),
                               flags: MapFlags(rawValue: arg(3)), fd: fd, offset: arg(5))
            case .brk:
                try linux.brk(on: cpu, requested: arg(0), result: result)
            case .mremap:
                try linux.mremap(on: cpu, arg(0), oldLength: arg(1), newLength: arg(2), result: result)
            case .munmap, .mprotect, .madvise:
                break
            }
        }
        try linux.exitSyscall(on: cpu)
    }
}

/// Pairs the model's flushes with the traced ones, per CPU: a flush waits for its
/// partner on the other side until its CPU has switched tasks twice, then counts as
/// unmatched (on both sides for the same reason: as a difference in pages).
final class FlushMatcher: LinuxEventSink {
    struct Pending {
        var reason: Int
        var pages: Int64
        var epoch: Int
        var line: Int
    }
    weak var replay: TraceReplay?
    private var traced: [[Pending]]
    private var replayed: [[Pending]]
    private var epochs: [Int]

    init(cpus: Int) {
        traced = Array(repeating: [], count: cpus)
        replayed = Array(repeating: [], count: cpus)
        epochs = Array(repeating: 0, count: cpus)
    }

    private func agreement(_ reason: Int, _ body: (inout ReplayRecord.FlushAgreement) -> Void) {
        guard let replay else { return }
        replay.updateFlushes(reason, body)
    }

    func traced(cpu: Int, reason: Int, pages: Int64) {
        agreement(reason) { $0.traced += 1 }
        if let i = replayed[cpu].firstIndex(where: { $0.reason == reason && $0.pages == pages }) {
            replayed[cpu].remove(at: i)
            agreement(reason) { $0.matched += 1 }
        } else {
            traced[cpu].append(Pending(reason: reason, pages: pages, epoch: epochs[cpu], line: replay?.currentLine ?? 0))
        }
    }

    func tlbFlush(cpu: Int, reason: TLBFlushReason, pages: Int64) {
        guard let replay, replay.visible(cpu) else { return }
        let r = reason.rawValue
        agreement(r) { $0.replayed += 1 }
        if let i = traced[cpu].firstIndex(where: { $0.reason == r && $0.pages == pages }) {
            traced[cpu].remove(at: i)
            agreement(r) { $0.matched += 1 }
        } else {
            replayed[cpu].append(Pending(reason: r, pages: pages, epoch: epochs[cpu], line: replay.currentLine))
        }
    }

    /// A switch on `cpu`: what has waited two switches is unmatched.
    func settle(_ cpu: Int) {
        epochs[cpu] += 1
        settle(cpu, olderThan: epochs[cpu] - 1)
    }

    /// Whether a flush of the model for `reason` waits for its partner on `cpu`.
    func hasPendingReplayed(cpu: Int, reason: Int) -> Bool {
        replayed[cpu].contains { $0.reason == reason }
    }

    func settleAll() {
        for cpu in epochs.indices { settle(cpu, olderThan: Int.max) }
    }

    private func settle(_ cpu: Int, olderThan epoch: Int) {
        var t = traced[cpu].filter { $0.epoch < epoch }
        var r = replayed[cpu].filter { $0.epoch < epoch }
        traced[cpu].removeAll { $0.epoch < epoch }
        replayed[cpu].removeAll { $0.epoch < epoch }
        // Same reason on both sides: one flush, different pages.
        var i = 0
        while i < t.count {
            if let j = r.firstIndex(where: { $0.reason == t[i].reason }) {
                agreement(t[i].reason) { $0.otherPages += 1 }
                replay?.note("CPU \(cpu): traced \(name(t[i].reason)) pages \(t[i].pages), the model's pages \(r[j].pages) (line \(r[j].line))", line: t[i].line)
                r.remove(at: j)
                t.remove(at: i)
            } else {
                i += 1
            }
        }
        for p in t {
            agreement(p.reason) { $0.traceOnly += 1 }
            replay?.note("CPU \(cpu): traced \(name(p.reason)) pages \(p.pages), not in the model", line: p.line)
        }
        for p in r {
            agreement(p.reason) { $0.replayOnly += 1 }
            replay?.note("CPU \(cpu): the model's \(name(p.reason)) pages \(p.pages), not in the trace", line: p.line)
        }
    }

    private func name(_ reason: Int) -> String { TLBFlushReason(rawValue: reason)?.name ?? "reason \(reason)" }
}

extension TraceReplay {
    func updateFlushes(_ reason: Int, _ body: (inout ReplayRecord.FlushAgreement) -> Void) {
        body(&record.flushes[reason, default: ReplayRecord.FlushAgreement()])
    }
}

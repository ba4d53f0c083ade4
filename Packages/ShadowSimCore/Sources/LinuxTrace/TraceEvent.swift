/// One event of a recorded Linux trace: the CPU it happened on, the task that was
/// current there, when, and what (decoded from whichever text format it came in).
public struct TraceEvent: Sendable, Equatable {
    /// 1-based line in the trace file.
    public var line: Int
    public var cpu: Int
    /// The task current on that CPU when the tracepoint fired (not always the task the
    /// event is about: see the bodies).
    public var pid: Int32
    /// Microseconds of the trace clock.
    public var time: UInt64
    public var body: Body

    public init(line: Int, cpu: Int, pid: Int32, time: UInt64, body: Body) {
        self.line = line
        self.cpu = cpu
        self.pid = pid
        self.time = time
        self.body = body
    }

    public enum Body: Sendable, Equatable {
        /// `sched:sched_switch`: the CPU leaves `prev` for `next` (pid 0 is idle), with
        /// their names (kernel threads are told apart by them).
        case schedSwitch(prev: Int32, prevComm: String, next: Int32, nextComm: String)
        /// `sched:sched_process_fork`: a new task (process or thread; `task_newtask`
        /// before it says which).
        case fork(parent: Int32, child: Int32)
        /// `sched:sched_process_exec`: `pid` runs a new program (a new mm).
        case exec(pid: Int32, oldPid: Int32, filename: String)
        /// `sched:sched_process_exit`: `groupDead` is true for the last thread of a
        /// process (nil on kernels that do not print it).
        case exit(pid: Int32, groupDead: Bool?)
        /// `sched:sched_migrate_task`.
        case migrate(pid: Int32, from: Int, to: Int)
        /// `task:task_newtask`, with its clone flags.
        case newTask(pid: Int32, cloneFlags: UInt64)
        /// `exceptions:page_fault_user` (CPL 3) or `page_fault_kernel` (`kernelMode`).
        case pageFault(kernelMode: Bool, address: UInt64, errorCode: UInt32)
        /// `tlb:tlb_flush`: the reason number and the pages (-1: everything).
        case tlbFlush(reason: Int, pages: Int64)
        /// `syscalls:sys_enter_*` of the memory calls, arguments in order.
        case syscallEnter(Syscall, [UInt64])
        /// `syscalls:sys_exit_*`: the raw return value (negative: -errno).
        case syscallExit(Syscall, Int64)
        /// Events missing here (a ring-buffer overrun): how many, when the trace says.
        case lost(count: Int?)
        /// An event the replay does not use (counted, skipped).
        case other(name: String)
    }

    /// The memory-management system calls the replay follows.
    public enum Syscall: String, Sendable, CaseIterable {
        case mmap, munmap, mprotect, mremap, brk, madvise
    }
}

/// What the first line of a trace recorded by `tools/record-linux-trace.sh` says.
public struct TraceHeader: Sendable, Equatable {
    public var kernel: String?
    public var cpus: Int?
    public var pageSize: Int?
    public var command: String?
    /// Events the kernel wrote, and those still in its buffer (the rest were lost).
    public var entriesWritten: Int?
    public var entriesInBuffer: Int?

    public init() {}
}

/// A trace that cannot be read: the file, the line (0 for the file as a whole) and why.
public struct TraceError: Error, CustomStringConvertible, Sendable, Equatable {
    public let file: String
    public let line: Int
    public let message: String

    public init(file: String, line: Int, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { line > 0 ? "\(file):\(line): \(message)" : "\(file): \(message)" }
}

import X86

/// How the modelled Linux is configured.
public struct LinuxOptions: Sendable {
    /// Page-table isolation: a kernel and a user PGD per process, a kernel and a user
    /// PCID per ASID, CR3 switched at every kernel entry and exit.
    public var kpti = false
    /// PCIDs (Linux's 6 dynamic ASIDs per CPU); off: every mm switch flushes.
    public var pcid = true
    /// `tlb_single_page_flush_ceiling`: flushes of more pages are full flushes.
    public var singlePageFlushCeiling = 33

    public init(kpti: Bool = false, pcid: Bool = true) {
        self.kpti = kpti
        self.pcid = pcid
    }
}

/// The reasons of Linux's `tlb:tlb_flush` tracepoint (`enum tlb_flush_reason`).
public enum TLBFlushReason: Int, Sendable, CaseIterable {
    case taskSwitch = 0, remoteShootdown = 1, localShootdown = 2, localMMShootdown = 3, remoteSendIPI = 4, remoteWrongCPU = 5

    public var name: String {
        switch self {
        case .taskSwitch: "task_switch"
        case .remoteShootdown: "remote_shootdown"
        case .localShootdown: "local_shootdown"
        case .localMMShootdown: "local_mm_shootdown"
        case .remoteSendIPI: "remote_ipi_send"
        case .remoteWrongCPU: "remote_wrong_cpu"
        }
    }
}

/// Told of what the model does where Linux has a tracepoint, so a replay can hold the
/// model to a trace.
public protocol LinuxEventSink: AnyObject {
    /// `trace_tlb_flush(reason, pages)` on `cpu` (pages -1: everything).
    func tlbFlush(cpu: Int, reason: TLBFlushReason, pages: Int64)
}

/// A task: a process or a thread (threads share their mm), a kernel thread or idle.
public final class LinuxTask {
    public enum Kind: Sendable { case user, kernelThread, idle }
    public let pid: Int32
    public let kind: Kind
    /// Nil for kernel threads and idle, and after exit.
    public internal(set) var mm: LinuxMM?
    /// The CPU it last ran on.
    public internal(set) var cpu: Int
    public internal(set) var exited = false
    /// Set by a replay for tasks of the traced process tree.
    public var traced = false

    init(pid: Int32, kind: Kind, mm: LinuxMM?, cpu: Int) {
        self.pid = pid
        self.kind = kind
        self.mm = mm
        self.cpu = cpu
    }
}

/// What one CPU's `cpu_tlbstate` holds, plus where the CPU is.
struct LinuxCPU {
    /// `loaded_mm`: init_mm when no process's tables are loaded.
    var loadedMM: LinuxMM
    var loadedASID = 0
    var nextASID = 1
    /// `ctxs[asid]`: which mm (ctx_id) each ASID holds and up to which tlb_gen.
    var contexts = [(id: UInt64, generation: UInt64)](repeating: (0, 0), count: 6)
    /// Running a kernel thread or idle on a user mm's tables (`is_lazy`).
    var lazy = false
    /// Nil: idle.
    var current: LinuxTask?
    /// In user mode (KPTI: the user CR3 is loaded).
    var inUser = false
    /// KPTI: user PCIDs to flush at the next return to user (`user_pcid_flush_mask`).
    var userFlushPending: UInt8 = 0
}

/// A model of Linux's x86-64 memory management on a guest: processes and threads with
/// their mm and areas, demand paging from a page cache and anonymous memory,
/// copy-on-write, fork/exec/exit, munmap/mprotect/madvise/mremap/brk, and the TLB
/// rules of arch/x86/mm/tlb.c (ASIDs, PCIDs, lazy TLB, shootdowns), optionally with
/// page-table isolation. Every page-table change is a guest store by the vCPU the model
/// runs on, every flush the instruction Linux would execute there.
///
/// docs/linux-model.md lists each behaviour, how closely it is modelled, and its source.
public final class LinuxKernel {
    public let kernel: GuestKernel
    public let machine: Machine
    public let options: LinuxOptions
    /// The kernel's own mm (`init_mm`): what idle CPUs have loaded.
    public let initMM: LinuxMM
    var cpus: [LinuxCPU]
    public internal(set) var tasks: [Int32: LinuxTask] = [:]
    /// The page cache: a file page is one frame for every mapping of it.
    var pageCache: [FileKey: [UInt64: UInt64]] = [:]
    /// Map counts of anonymous frames (a frame shared after fork has 2 or more).
    var anonymousMapCount = FrameCounts()
    /// The shared zero page, mapped by anonymous read faults.
    public let zeroPage: UInt64
    var nextContextID: UInt64 = 2
    var nextShmemID = 0
    /// Trace time in microseconds (the cpumask trim runs at most once a second).
    public var now: UInt64 = 0
    public weak var sink: (any LinuxEventSink)?
    public internal(set) var stats = LinuxStats()

    /// Boots the model on `machine` (4- or 5-level paging).
    public convenience init(machine: Machine, options: LinuxOptions = LinuxOptions()) throws(MachineError) {
        guard machine.mode.isLongMode else {
            throw .invalidArgument("the Linux model is x86-64: it needs a 4- or 5-level guest, not \(machine.mode)")
        }
        try self.init(kernel: GuestKernel(machine: machine), options: options)
    }

    /// Runs the model on a booted guest kernel (its tables are init_mm's): CR4.PCIDE set
    /// when PCIDs are on, init_mm loaded with ASID 0 on every vCPU.
    public init(kernel guestKernel: GuestKernel, options: LinuxOptions = LinuxOptions()) throws(MachineError) {
        let machine = guestKernel.machine
        guard machine.mode.isLongMode else {
            throw .invalidArgument("the Linux model is x86-64: it needs a 4- or 5-level guest, not \(machine.mode)")
        }
        self.machine = machine
        self.options = options
        let initial = LinuxMM(contextID: 1, pgd: guestKernel.kernelSpace.root, userPGD: nil)
        kernel = guestKernel
        initMM = initial
        cpus = machine.vcpus.map { _ in LinuxCPU(loadedMM: initial) }
        zeroPage = try guestKernel.allocateFrame(zeroedBy: machine.vcpus[0])
        for i in cpus.indices {
            cpus[i].contexts[0] = (initial.contextID, 0)
            let vcpu = machine.vcpus[i]
            if options.pcid && vcpu.cr4 & CR4.pcide == 0 {
                try expectOK(vcpu.writeCR4(vcpu.cr4 | CR4.pcide), "setting CR4.PCIDE")
            }
            try expectOK(vcpu.loadCR3(kernelCR3(initMM, asid: 0)), "loading init_mm")
        }
    }

    public var cpuCount: Int { cpus.count }

    /// The task current on `cpu` (nil: idle).
    public func current(on cpu: Int) -> LinuxTask? { cpus[cpu].current }

    public func task(_ pid: Int32) -> LinuxTask? { tasks[pid] }

    // MARK: Tasks

    /// A new process with an empty address space (the kernel half only), as if it had
    /// been running before the model started. It is not scheduled anywhere.
    @discardableResult
    public func spawn(pid: Int32, on cpu: Int) throws(MachineError) -> LinuxTask {
        try checkCPU(cpu)
        guard tasks[pid] == nil else { throw .invalidArgument("pid \(pid) is already a task") }
        let mm = try newMM(by: cpu)
        mm.users = 1
        let task = LinuxTask(pid: pid, kind: .user, mm: mm, cpu: cpu)
        tasks[pid] = task
        stats.processesCreated += 1
        return task
    }

    /// A kernel thread (no mm: it runs lazily on whatever was loaded).
    @discardableResult
    public func kernelThread(pid: Int32, on cpu: Int) throws(MachineError) -> LinuxTask {
        try checkCPU(cpu)
        if let t = tasks[pid] { return t }
        let task = LinuxTask(pid: pid, kind: pid == 0 ? .idle : .kernelThread, mm: nil, cpu: cpu)
        tasks[pid] = task
        return task
    }

    /// A task of a process the model does not follow that shares `mm` (a thread of it).
    public func foreignTask(pid: Int32, sharing mm: LinuxMM, cpu: Int) -> LinuxTask {
        if let t = tasks[pid] { return t }
        mm.users += 1
        let task = LinuxTask(pid: pid, kind: .user, mm: mm, cpu: cpu)
        tasks[pid] = task
        return task
    }

    /// One past the highest user address.
    public var userAddressLimit: UInt64 { userTop }

    /// A system call by the current task: from user mode into the kernel (KPTI: two CR3
    /// loads when the task was last seen in the kernel, since it returned to user first).
    public func enterSyscall(on cpu: Int) throws(MachineError) {
        try checkCPU(cpu)
        try returnToUser(cpu)
        try enterKernel(cpu)
    }

    /// The return of a system call to user mode.
    public func exitSyscall(on cpu: Int) throws(MachineError) {
        try checkCPU(cpu)
        try returnToUser(cpu)
    }

    /// Forgets an exited task's pid, so that it can be reused.
    public func reap(_ pid: Int32) {
        if let t = tasks[pid], t.exited { tasks[pid] = nil }
    }

    func checkCPU(_ cpu: Int) throws(MachineError) {
        guard cpu >= 0 && cpu < cpus.count else {
            throw .invalidArgument("CPU \(cpu) does not exist: the guest has \(cpus.count) vCPUs")
        }
    }

    func vcpu(_ cpu: Int) -> VCPU { machine.vcpus[cpu] }

    func expectOK(_ r: AccessResult, _ what: String) throws(MachineError) {
        guard r.isOK else { throw .kernel("\(what) failed: \(r.summary)") }
    }

    /// A fresh mm: a zeroed PGD with the kernel half copied (`pgd_alloc`); under KPTI a
    /// second, user PGD.
    func newMM(by cpu: Int) throws(MachineError) -> LinuxMM {
        let v = vcpu(cpu)
        let pgd = try kernel.allocateTable(by: v)
        let kernelTop = kernel.kernelSpace.root
        var userPGD: UInt64?
        // One batch under a paravirtual MMU.
        try lazyMMU(cpu) { () throws(MachineError) in
            for i in LinuxKernel.kernelPGDBoundary..<512 {
                let e = kernel.loadEntry(kernelTop + UInt64(i * 8))
                if e != 0 { try kernel.storeEntry(pgd + UInt64(i * 8), e, by: v) }
            }
            if options.kpti { userPGD = try kernel.allocateTable(by: v) }
            let physmapSlot = kernel.layout.physmapTopIndex
            if physmapSlot < LinuxKernel.kernelPGDBoundary {
                // A user-mode physmap (the kvm backend's layout): in every PGD, as GuestKernel puts it.
                let e = kernel.loadEntry(kernelTop + UInt64(physmapSlot * 8))
                for table in [pgd] + (userPGD.map { [$0] } ?? []) { try kernel.storeEntry(table + UInt64(physmapSlot * 8), e, by: v) }
            }
        }
        let mm = LinuxMM(contextID: nextContextID, pgd: pgd, userPGD: userPGD)
        mm.nextTrim = now + 1_000_000
        nextContextID += 1
        stats.pageTablesAllocated += options.kpti ? 2 : 1
        return mm
    }

    /// `KERNEL_PGD_BOUNDARY`: the first PGD slot copied from the kernel's (the physmap's).
    static let kernelPGDBoundary = 273
}

/// What the model did, for a replay's record and for scenarios.
public struct LinuxStats: Sendable, Equatable {
    public var processesCreated = 0
    public var forks = 0
    public var threadsCreated = 0
    public var execs = 0
    public var exits = 0
    public var contextSwitches = 0
    public var mmSwitches = 0
    public var cr3Loads = 0
    public var cr3LoadsNoFlush = 0
    public var invlpg = 0
    public var invpcid = 0
    public var faults = FaultCounts()
    public var pageTablesAllocated = 0
    public var pageTablesFreed = 0
    public var ptesCleared = 0
    public var ptesWriteProtected = 0
    public var pagesCopiedAtFork = 0
    public var pageCachePages = 0
    public var inferredAreas = 0
    /// Pages mapped around file read faults.
    public var faultAroundPages = 0
    /// mm switches forced on a CPU the model's state left on a torn-down mm.
    public var forcedSwitches = 0
    /// Pages faulted in by the kernel itself (MAP_POPULATE, mlock): no fault is traced.
    public var populatedPages = 0
    /// Flushes the model traced, by reason and pages (-1, 0 or a page count).
    public var flushes: [FlushKey: Int] = [:]

    public struct FlushKey: Hashable, Sendable, Comparable {
        public var reason: Int
        public var pages: Int64
        public init(reason: Int, pages: Int64) { self.reason = reason; self.pages = pages }
        public static func < (a: FlushKey, b: FlushKey) -> Bool { (a.reason, a.pages) < (b.reason, b.pages) }
    }

    public init() {}
}

/// Faults the model handled, by what it did.
public struct FaultCounts: Sendable, Equatable {
    /// A read of an anonymous page never written: the zero page, read-only.
    public var anonymousZeroPage = 0
    /// A write to an anonymous page not present: a new zeroed page.
    public var anonymousNew = 0
    /// A read of a file page: the page-cache frame, read-only.
    public var fileRead = 0
    /// A write to a file page not present in a private mapping: a private copy.
    public var fileCOW = 0
    /// A write to a file page not present in a shared mapping.
    public var sharedWrite = 0
    /// A write to a present read-only page that was copied (after fork, the zero page, a
    /// file page): store 0, flush one page, store the copy.
    public var copyOnWrite = 0
    /// A write to a present read-only page this mm alone maps: made writable in place.
    public var reuse = 0
    /// The page was already as the access needs it (a stale TLB entry elsewhere).
    public var spurious = 0
    /// The access is not allowed by the area (Linux sends SIGSEGV): nothing changed.
    public var refused = 0
    /// At an address no area covers: handled as anonymous private memory.
    public var withoutArea = 0
    /// Taken in the kernel (copy to or from user memory).
    public var kernelMode = 0

    public var total: Int { anonymousZeroPage + anonymousNew + fileRead + fileCOW + sharedWrite + copyOnWrite + reuse + spurious + refused }

    public var fields: [(name: String, value: Int)] {
        [("anonymous_zero_page", anonymousZeroPage), ("anonymous_new", anonymousNew), ("file_read", fileRead),
         ("file_cow", fileCOW), ("shared_write", sharedWrite), ("copy_on_write", copyOnWrite), ("reuse", reuse),
         ("spurious", spurious), ("refused", refused), ("without_area", withoutArea), ("kernel_mode", kernelMode)]
    }

    public init() {}
}

/// A count per guest frame, absent when zero: indexed by frame number, since every
/// anonymous fault reads one and a hash per fault showed in the replay's profile.
struct FrameCounts {
    private var counts: [Int32] = []

    subscript(frame: UInt64) -> Int32? {
        get {
            let i = Int(frame >> 12)
            return i < counts.count && counts[i] != 0 ? counts[i] : nil
        }
        set {
            let i = Int(frame >> 12)
            if i >= counts.count {
                guard let value = newValue, value != 0 else { return }
                counts.append(contentsOf: repeatElement(0, count: max(i + 1, counts.count * 2) - counts.count))
            }
            counts[i] = newValue ?? 0
        }
    }
}

import X86

/// `clone` flags the model reads.
public struct CloneFlags: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let vm = CloneFlags(rawValue: 0x100)
    public static let vfork = CloneFlags(rawValue: 0x4000)
    public static let thread = CloneFlags(rawValue: 0x10000)
}

/// fork, exec and exit (kernel/fork.c, fs/exec.c, kernel/exit.c, mm/mmap.c:exit_mmap).
extension LinuxKernel {
    /// `clone` by the task current on `cpu`: with CLONE_VM the child shares the mm (a
    /// thread, or vfork); otherwise `dup_mmap` copies the areas, and the tables of the
    /// areas holding anonymous pages: private writable PTEs are write-protected in
    /// parent and child, the child's made old, then the parent's whole mm is flushed.
    @discardableResult
    public func fork(on cpu: Int, child pid: Int32, flags: CloneFlags) throws(MachineError) -> LinuxTask {
        try checkCPU(cpu)
        guard let parent = cpus[cpu].current, let mm = parent.mm else {
            throw .invalidArgument("fork: no process is current on CPU \(cpu)")
        }
        guard tasks[pid] == nil else { throw .invalidArgument("fork: pid \(pid) is already a task") }
        try enterKernel(cpu)
        if flags.contains(.vm) {
            mm.users += 1
            let child = LinuxTask(pid: pid, kind: .user, mm: mm, cpu: cpu)
            child.traced = parent.traced
            tasks[pid] = child
            stats.threadsCreated += 1
            return child
        }
        let copy = try newMM(by: cpu)
        copy.users = 1
        copy.adopted = mm.adopted
        copy.brkStart = mm.brkStart
        copy.brk = mm.brk
        copy.fileOfDescriptor = mm.fileOfDescriptor
        copy.areas = mm.areas
        for area in mm.areas.areas where area.hasAnonPages {
            try lazyMMU(cpu) { () throws(MachineError) in try forEachPTE(mm, area.start, area.end) { (va, slot, pte) throws(MachineError) in
                guard Self.mapsPage(pte) else { return }
                var childValue = pte & ~PTE.accessed
                if !area.shared && pte & PTE.writable != 0 {
                    let protected = Self.writeProtected(pte)
                    try storeEntry(cpu, mm, slot, protected, level: 1)
                    stats.ptesWriteProtected += 1
                    childValue = Self.writeProtected(childValue)
                }
                if area.shared { childValue &= ~(PTE.dirty | Self.savedDirtyBit) }
                let frame = pte & Self.frameMask
                if let count = anonymousMapCount[frame] { anonymousMapCount[frame] = count + 1 }
                let childSlot = try pteAddress(cpu, copy, va)
                try storeEntry(cpu, copy, childSlot, childValue, level: 1)
                stats.pagesCopiedAtFork += 1
            } }
        }
        // dup_mmap ends with flush_tlb_mm(oldmm), whatever it changed.
        try flushRange(cpu, mm, start: 0, end: Self.flushAll, freedTables: true)
        let child = LinuxTask(pid: pid, kind: .user, mm: copy, cpu: cpu)
        child.traced = parent.traced
        tasks[pid] = child
        stats.forks += 1
        return child
    }

    /// `pte_wrprotect`: RW cleared, D kept as SavedDirty (6.6+).
    static func writeProtected(_ pte: UInt64) -> UInt64 {
        var v = pte & ~PTE.writable
        if v & PTE.dirty != 0 { v = (v & ~PTE.dirty) | savedDirtyBit }
        return v
    }

    /// `exec` by the task current on `cpu`: a new mm is loaded (a new ASID, a flushing
    /// CR3 load), then the old one is released (torn down when it was the last user).
    public func exec(on cpu: Int) throws(MachineError) {
        try checkCPU(cpu)
        guard let task = cpus[cpu].current, task.kind == .user else {
            throw .invalidArgument("exec: no process is current on CPU \(cpu)")
        }
        try enterKernel(cpu)
        let old = task.mm
        let mm = try newMM(by: cpu)
        mm.users = 1
        task.mm = mm
        try switchMM(cpu, to: mm)
        if let old { try release(cpu, old) }
        try setupArgPages(cpu, mm)
        stats.execs += 1
    }

    /// `setup_arg_pages`: the arguments are in one page at the top of user space (written
    /// by the kernel through get_user_pages: no fault is traced); the stack then moves
    /// down to its randomised top (up to 16 GiB lower): the PTE moves (a one-page flush)
    /// and the emptied tables are freed (a flush of their range: one 2 MiB-stride INVLPG
    /// when only the page table goes, everything when its directory goes too).
    func setupArgPages(_ cpu: Int, _ mm: LinuxMM) throws(MachineError) {
        let top = userTop - 4096
        let argPage = top - 4096
        let stack = VMA(start: argPage, end: top, protection: [.read, .write], shared: false, backing: .anonymous)
        mm.areas.insert(stack)
        let slot = try pteAddress(cpu, mm, argPage)
        let frame = try newAnonymousFrame(cpu, copying: false)
        try storeEntry(cpu, mm, slot, frame | pteBits(stack, writable: true, dirty: true), level: 1)
        mm.areas.markAnon(argPage)
        // randomize_stack_top: a page count below 2^22, the same for the same mm number.
        var z = mm.contextID &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        let shift = ((z ^ (z >> 31)) & 0x3F_FFFF) << 12
        guard shift > 0 else { return }
        let newTop = top - shift
        let pte = load(slot)
        try storeEntry(cpu, mm, slot, 0, level: 1)
        let newSlot = try pteAddress(cpu, mm, newTop - 4096)
        try storeEntry(cpu, mm, newSlot, pte, level: 1)
        try flushRange(cpu, mm, start: argPage, end: top, freedTables: true)
        mm.areas.remove(argPage, top)
        var moved = stack
        moved.start = newTop - 4096
        moved.end = newTop
        moved.hasAnonPages = true
        mm.areas.insert(moved)
        var gather = Gather()
        try freeTables(cpu, mm, argPage, top, floor: newTop, ceiling: userTop, &gather)
        try finish(gather, cpu, mm)
    }

    /// Whether `cpu` runs its current task's own mm, loaded and not lazily.
    public func runsOwnMM(on cpu: Int) -> Bool {
        guard let mm = cpus[cpu].current?.mm else { return false }
        return cpus[cpu].loadedMM === mm && !cpus[cpu].lazy
    }

    /// `do_exit` of the task current on `cpu`: its CPU goes lazy on the mm, which is
    /// torn down when this was its last user.
    public func exit(on cpu: Int) throws(MachineError) {
        try checkCPU(cpu)
        guard let task = cpus[cpu].current else { throw .invalidArgument("exit: no task is current on CPU \(cpu)") }
        try enterKernel(cpu)
        task.exited = true
        if let mm = task.mm {
            task.mm = nil
            if cpus[cpu].loadedMM === mm { enterLazy(cpu) }
            try release(cpu, mm)
        }
        stats.exits += 1
    }

    /// `mmput`: the last user tears the address space down.
    func release(_ cpu: Int, _ mm: LinuxMM) throws(MachineError) {
        mm.users -= 1
        guard mm.users <= 0, !mm.dead else { return }
        try exitMMAP(cpu, mm)
    }

    /// `exit_mmap`: every PTE cleared, every user table freed (entries above cleared,
    /// bottom-up), one flush of the whole mm; then the PGD goes.
    func exitMMAP(_ cpu: Int, _ mm: LinuxMM) throws(MachineError) {
        var gather = Gather()
        gather.fullMM = true
        try zap(cpu, mm, 0, userTop, &gather)
        try freeTables(cpu, mm, 0, userTop, floor: 0, ceiling: userTop, cleared: true, &gather)
        try finish(gather, cpu, mm)
        mm.areas = VMAList()
        mm.dead = true
        for other in cpus.indices where cpus[other].loadedMM === mm {
            // A CPU the flush did not move off (the model's state disagreed with it).
            try switchMM(other, to: initMM)
            stats.forcedSwitches += 1
        }
        try kernel.freeTable(mm.pgd, by: vcpu(cpu))
        if let user = mm.userPGD { try kernel.freeTable(user, by: vcpu(cpu)) }
        stats.pageTablesFreed += mm.userPGD == nil ? 1 : 2
    }
}

import Testing
import X86
import GuestKernel

/// Records the model's flushes (reason, pages) and the guest's CR3 loads and stores.
final class Recorder: LinuxEventSink, MachineObserver {
    var flushes: [(cpu: Int, reason: TLBFlushReason, pages: Int64)] = []
    var cr3Loads: [(cpu: Int, noFlush: Bool)] = []
    var stores: [(address: UInt64, value: UInt64)] = []
    let memory: GuestMemory

    init(_ memory: GuestMemory) { self.memory = memory }

    func tlbFlush(cpu: Int, reason: TLBFlushReason, pages: Int64) { flushes.append((cpu, reason, pages)) }
    func willStore(_ vcpu: VCPU?, physicalAddress: UInt64, size: Int) throws(MachineError) {}
    func didAccess(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool, result: AccessResult) throws(MachineError) {}
    func didControl(_ vcpu: VCPU, _ event: ControlEvent) throws(MachineError) {
        if case .cr3Load(_, _, let noFlush) = event { cr3Loads.append((vcpu.index, noFlush)) }
    }

    /// Flushes as "reason:pages" strings, and forgets them.
    func take() -> [String] {
        defer { flushes = [] }
        return flushes.map { "\($0.reason.rawValue):\($0.pages)" }
    }
}

/// A bare-metal guest running the Linux model, with a recorder attached.
func linuxGuest(vcpus: Int = 1, options: LinuxOptions = LinuxOptions()) throws -> (LinuxKernel, Recorder) {
    var config = MachineConfiguration(mode: .long4)
    config.vcpuCount = vcpus
    config.memoryBytes = 256 << 20
    let machine = try Machine(config)
    let linux = try LinuxKernel(machine: machine, options: options)
    let recorder = Recorder(machine.memory)
    linux.sink = recorder
    for v in machine.vcpus { v.observer = recorder }
    return (linux, recorder)
}

extension LinuxKernel {
    /// The PTE mapping `va` in the current task's mm on `cpu`.
    func pte(_ va: UInt64, cpu: Int = 0) -> UInt64 {
        guard let task = current(on: cpu) else { return 0 }
        return pte(va, of: task) ?? 0
    }
}

@Suite struct LinuxModelTests {
    let rw: Protection = [.read, .write]

    @Test func anonymousFaultsMapTheZeroPageThenANewPage() throws {
        let (linux, _) = try linuxGuest()
        let p = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(p, on: 0)
        let a = try linux.mmap(on: 0, address: nil, length: 8192, protection: rw, flags: [.private, .anonymous])
        let read = try linux.touch(on: 0, a, .read)
        #expect(read.resolution == .anonymousZeroPage && read.first.errorCode == 0x4 && read.retry?.isOK == true)
        #expect(linux.pte(a) & LinuxKernel.frameMask == linux.zeroPage && linux.pte(a) & PTE.writable == 0)
        let write = try linux.touch(on: 0, a, .write)
        #expect(write.resolution == .copyOnWrite && write.first.errorCode == 0x7)
        #expect(linux.pte(a) & (PTE.writable | PTE.dirty) == PTE.writable | PTE.dirty)
        let second = try linux.touch(on: 0, a + 4096, .write)
        #expect(second.resolution == .anonymousNew && second.first.errorCode == 0x6)
        #expect(try linux.touch(on: 0, a + 4096, .write).resolution == nil)
    }

    @Test func forkWriteProtectsBothAndCopyOnWriteFlushesOnePage() throws {
        let (linux, rec) = try linuxGuest()
        let parent = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(parent, on: 0)
        let a = try linux.mmap(on: 0, address: nil, length: 4096, protection: rw, flags: [.private, .anonymous])
        _ = try linux.touch(on: 0, a, .write)
        _ = rec.take()
        let child = try linux.fork(on: 0, child: 2, flags: [])
        #expect(rec.take() == ["3:-1"], "dup_mmap ends with a full flush of the parent")
        #expect(linux.pte(a) & PTE.writable == 0 && linux.pte(a) & LinuxKernel.savedDirtyBit != 0)
        try linux.schedule(child, on: 0)
        #expect(linux.pte(a) & (PTE.writable | PTE.accessed) == 0, "the child's copy is read-only and old")
        let w = try linux.touch(on: 0, a, .write)
        #expect(w.resolution == .copyOnWrite && w.first.errorCode == 0x7)
        #expect(rec.take() == ["0:-1", "3:1"], "a new ASID for the child, then the COW's one-page flush")
        try linux.schedule(parent, on: 0)
        _ = rec.take()
        #expect(try linux.touch(on: 0, a, .write).resolution == .reuse, "the parent's page is its own again")
        #expect(rec.take().isEmpty, "reuse makes the PTE writable without a flush")
    }

    @Test func unmapsFlushPageByPageUpToTheCeiling() throws {
        let (linux, rec) = try linuxGuest()
        let p = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(p, on: 0)
        // Two areas in one page table: unmapping one frees no table.
        let base: UInt64 = 0x7F00_0000_0000
        try linux.mmap(on: 0, address: base, length: 34 * 4096, protection: rw, flags: [.private, .anonymous, .fixed])
        try linux.mmap(on: 0, address: base + 64 * 4096, length: 4096, protection: rw, flags: [.private, .anonymous, .fixed])
        for i in 0..<34 { _ = try linux.touch(on: 0, base + UInt64(i) * 4096, .write) }
        _ = try linux.touch(on: 0, base + 64 * 4096, .write)
        _ = rec.take()
        try linux.munmap(on: 0, base, 33 * 4096)
        #expect(rec.take() == ["3:33"])
        try linux.munmap(on: 0, base + 33 * 4096, 4096)
        #expect(rec.take() == ["3:1"])
        // 34 pages is a full flush; emptying the table frees it, the range grows to its base.
        try linux.mmap(on: 0, address: base, length: 34 * 4096, protection: rw, flags: [.private, .anonymous, .fixed])
        for i in 0..<34 { _ = try linux.touch(on: 0, base + UInt64(i) * 4096, .write) }
        _ = rec.take()
        try linux.munmap(on: 0, base, 34 * 4096)
        #expect(rec.take() == ["3:-1"])
        let freed = linux.stats.pageTablesFreed
        try linux.munmap(on: 0, base + 64 * 4096, 4096)
        #expect(rec.take() == ["3:-1"], "the table goes: its PMD base joins the range")
        #expect(linux.stats.pageTablesFreed > freed)
    }

    @Test func mprotectRewritesEveryPTEAndFlushesOnlyChangedRights() throws {
        let (linux, rec) = try linuxGuest()
        let p = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(p, on: 0)
        let a = try linux.mmap(on: 0, address: nil, length: 4 * 4096, protection: rw, flags: [.private, .anonymous])
        for i in 0..<3 { _ = try linux.touch(on: 0, a + UInt64(i) * 4096, .write) }
        _ = rec.take()
        let cleared = linux.stats.ptesCleared
        try linux.mprotect(on: 0, a, 4 * 4096, [.read])
        #expect(rec.take() == ["3:3"])
        #expect(linux.pte(a) & PTE.writable == 0 && linux.pte(a) & PTE.present != 0)
        try linux.mprotect(on: 0, a, 4 * 4096, [.read])
        #expect(rec.take().isEmpty, "no change of rights, no PTE touched")
        try linux.mprotect(on: 0, a, 4 * 4096, rw)
        #expect(rec.take() == ["3:3"], "its own pages become writable at once, which flushes too")
        #expect(linux.pte(a) & PTE.writable != 0)
        #expect(linux.stats.ptesCleared == cleared, "mprotect's zero store is not an unmap")
        try linux.mprotect(on: 0, a, 4096, [])
        #expect(linux.pte(a) & PTE.present == 0 && linux.pte(a) & LinuxKernel.protNoneBit != 0)
        #expect(try linux.touch(on: 0, a, .read).resolution == .refused)
    }

    @Test func asidsAreReusedRoundRobinAndSwitchesBackDoNotFlush() throws {
        let (linux, rec) = try linuxGuest()
        var tasks: [LinuxTask] = []
        for pid in 1...7 { tasks.append(try linux.spawn(pid: Int32(pid), on: 0)) }
        for t in tasks.prefix(5) { try linux.schedule(t, on: 0) }
        #expect(rec.take() == Array(repeating: "0:-1", count: 5), "ASIDs 1-5, each new")
        try linux.schedule(tasks[0], on: 0)
        #expect(rec.take() == ["0:0"], "its ASID is intact and up to date: no flush")
        try linux.schedule(tasks[5], on: 0)
        try linux.schedule(tasks[6], on: 0)
        #expect(rec.take() == ["0:-1", "0:-1"], "ASID 0 (init_mm's), then ASID 1 again")
        try linux.schedule(tasks[0], on: 0)
        #expect(rec.take() == ["0:-1"], "task 1 lost ASID 1 to task 7")
        rec.cr3Loads = []
        let kthread = try linux.kernelThread(pid: 99, on: 0)
        try linux.schedule(kthread, on: 0)
        try linux.schedule(tasks[0], on: 0)
        #expect(rec.cr3Loads.isEmpty && rec.take().isEmpty, "lazy TLB: a kernel thread loads no CR3")
    }

    @Test func remoteCPUsOfTheMMAreShotDown() throws {
        let (linux, rec) = try linuxGuest(vcpus: 2)
        let p = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(p, on: 0)
        let thread = try linux.fork(on: 0, child: 2, flags: [.vm, .thread])
        try linux.schedule(thread, on: 1)
        // Four pages: the last stays mapped, so no page table is freed below.
        let a = try linux.mmap(on: 0, address: nil, length: 4 * 4096, protection: rw, flags: [.private, .anonymous])
        _ = try linux.touch(on: 0, a, .write)
        _ = try linux.touch(on: 1, a + 4096, .write)
        _ = rec.take()
        try linux.munmap(on: 0, a, 2 * 4096)
        let flushes = { rec.flushes.map { "\($0.cpu):\($0.reason.rawValue):\($0.pages)" } }
        #expect(flushes() == ["0:4:2", "0:3:2", "1:1:2"], "IPI sent, local flush, the other CPU's shootdown")
        _ = rec.take()
        // The thread's CPU moves to another process: since 6.13 its bit stays in the mm's
        // cpumask. A flush that frees no table spares it (should_flush_tlb)...
        let other = try linux.spawn(pid: 3, on: 1)
        try linux.schedule(other, on: 1)
        _ = rec.take()
        _ = try linux.touch(on: 0, a + 2 * 4096, .write)
        try linux.munmap(on: 0, a + 2 * 4096, 4096)
        #expect(flushes() == ["0:4:1", "0:3:1"])
        _ = rec.take()
        // ...one that frees tables reaches it, and it leaves the cpumask (reason 5).
        try linux.munmap(on: 0, a + 3 * 4096, 4096)
        #expect(flushes() == ["0:4:-1", "0:3:-1", "1:5:0"])
        _ = rec.take()
        let b = try linux.mmap(on: 0, address: nil, length: 4096, protection: rw, flags: [.private, .anonymous])
        _ = try linux.touch(on: 0, b, .write)
        try linux.munmap(on: 0, b, 4096)
        #expect(flushes() == ["0:3:-1"], "CPU 1 is gone from the cpumask: no IPI")
    }

    @Test func exitFreesEveryTableAndFrame() throws {
        let (linux, rec) = try linuxGuest()
        let before = linux.kernel.frames.inUse
        let p = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(p, on: 0)
        let a = try linux.mmap(on: 0, address: nil, length: 64 * 4096, protection: rw, flags: [.private, .anonymous])
        for i in 0..<64 { _ = try linux.touch(on: 0, a + UInt64(i) * 4096, .write) }
        _ = try linux.touch(on: 0, 0x40_0000, .fetch)
        _ = rec.take()
        try linux.exit(on: 0)
        #expect(rec.take() == ["0:0"], "the lazy CPU moves to init_mm (its ASID 0 is intact)")
        #expect(linux.kernel.frames.inUse == before, "tables, pages and the PGD are all freed")
    }

    @Test func execLoadsANewMMAndMovesTheStack() throws {
        let (linux, rec) = try linuxGuest()
        let p = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(p, on: 0)
        _ = rec.take()
        try linux.exec(on: 0)
        let flushes = rec.take()
        #expect(flushes.count == 3 && flushes[0] == "0:-1" && flushes[1] == "3:1", "\(flushes)")
        #expect(flushes[2] == "3:-1" || flushes[2] == "3:0")
    }

    @Test func kptiSwitchesCR3AtKernelEntryWithUserPCIDs() throws {
        let (linux, rec) = try linuxGuest(options: LinuxOptions(kpti: true))
        let p = try linux.spawn(pid: 1, on: 0)
        try linux.schedule(p, on: 0)
        let v = linux.machine.vcpus[0]
        let a = try linux.mmap(on: 0, address: nil, length: 4096, protection: rw, flags: [.private, .anonymous])
        rec.cr3Loads = []
        let t = try linux.touch(on: 0, a, .write)
        #expect(t.retry?.isOK == true)
        #expect(v.cr3 & 0x800 != 0 && v.cr3 & 0xFFF == 0x800 | 2, "user PCID: ASID 1 + 1, bit 11")
        #expect(rec.cr3Loads.count == 3, "to user, to the kernel for the fault, back to user")
        let mm = p.mm!
        let user = try #require(mm.userPGD)
        for i in 256..<512 { #expect(linux.machine.memory.load(user + UInt64(i * 8), size: 8) == 0, "no kernel half in the user PGD") }
        let slot = Int((a >> 39) & 511)
        #expect(linux.machine.memory.load(user + UInt64(slot * 8), size: 8) & PTE.executeDisable == 0)
        #expect(linux.machine.memory.load(mm.pgd + UInt64(slot * 8), size: 8) & PTE.executeDisable != 0, "the kernel's copy is NX")
    }

    @Test func fileMappingsShareThePageCacheAndMapAround() throws {
        let (linux, _) = try linuxGuest()
        let libc = FileKey("libc.so.6")
        var frames: [UInt64] = []
        for pid: Int32 in [1, 2] {
            let p = try linux.spawn(pid: pid, on: 0)
            try linux.schedule(p, on: 0)
            let a = try linux.mmap(on: 0, address: nil, length: 64 * 4096, protection: [.read, .exec], flags: [.private],
                                   fd: 3, offset: 0, file: libc)
            #expect(try linux.touch(on: 0, a + 5 * 4096, .fetch).resolution == .fileRead)
            #expect(try linux.touch(on: 0, a + 15 * 4096, .read).resolution == nil, "mapped around the first fault")
            #expect(try linux.touch(on: 0, a + 16 * 4096, .read).resolution == .fileRead, "the next window is not")
            frames.append(linux.pte(a + 5 * 4096) & LinuxKernel.frameMask)
        }
        #expect(frames[0] == frames[1], "one page-cache frame for both processes")
    }
}

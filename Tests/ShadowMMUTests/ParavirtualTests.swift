import Testing
import X86
import GuestKernel
import ShadowMMU
import Checker
import KVMUnsync
import GlobalList
import PVMMU

/// pv-mmu's hypercalls and the engine's `RootLoadDecision`s, by exact counts.
@Suite struct ParavirtualMMU {
    /// Process 0's first table linked a second time, read-only, one directory entry
    /// further: the table is then shadowed under two roles (two shadow pages).
    func aliasedTable(_ g: Guest) throws -> (frames: [UInt64], alias: UInt64) {
        let frames = try (0..<2).map { try g.map(0, table: 0, page: $0) }
        let pde = try #require(try g.spaces[0].entry(g.va(table: 0, page: 0), level: 2))
        let alias = g.va(table: 1, page: 0)
        _ = try g.map(0, table: 1, page: 8)   // gives the alias's directory entry a table
        try g.spaces[0].setEntry(alias, level: 2, value: pde.value & ~PTE.writable, by: g.cpu)
        try g.switchTo(0)
        for va in [g.va(table: 0, page: 0), alias] { #expect(try g.read(va).physicalAddress == frames[0]) }
        #expect(g.mmu.shadowPages(of: (pde.value & PTE.bits(51, 12)) >> 12).count == 2)
        return (frames, alias)
    }

    @Test func anUpdateBatchIsOneExitAndReachesEveryShadowOfTheTable() throws {
        let g = try Guest(PVMMU())
        let (frames, alias) = try aliasedTable(g)
        let before = (g.vcpuStats, g.mmu.stats)
        let fresh = try g.kernel.allocateFrame(zeroedBy: g.cpu)
        var a = MappingAttributes()
        a.writable = true
        try g.kernel.batchingUpdates(by: g.cpu) { () throws(MachineError) in
            try g.spaces[0].map(g.va(table: 0, page: 0), to: fresh, attributes: a, by: g.cpu)
            try g.spaces[0].map(g.va(table: 0, page: 1), to: frames[0], attributes: a, by: g.cpu)
        }
        #expect(g.vcpuStats.exitsHypercall - before.0.exitsHypercall == 1)
        #expect(g.vcpuStats.exitsPageFault == before.0.exitsPageFault)
        #expect(g.mmu.stats.pvUpdates - before.1.pvUpdates == 2)
        #expect(g.mmu.stats.unsyncEvents == 0 && g.mmu.stats.mmuPTEWrite == before.1.mmuPTEWrite)
        // Both shadows dropped their spte for page 0 (another frame now) and flushed:
        // both addresses see the new frame without an INVLPG.
        #expect(g.mmu.stats.remoteTLBFlushRequests - before.1.remoteTLBFlushRequests == 1)
        #expect(try g.read(g.va(table: 0, page: 0)).physicalAddress == fresh)
        #expect(try g.read(alias).physicalAddress == fresh)
        g.expectConsistent()
    }

    @Test func thePlantedBugLeavesTheSecondShadowStaleAndTheCheckerSeesIt() throws {
        let g = try Guest(PVMMU()) { $0.plantedBugs = [.pvUpdateFirstShadowOnly] }
        let checker = ArchitecturalChecker(machine: g.machine, mmu: g.mmu)
        _ = checker
        let (_, alias) = try aliasedTable(g)
        let fresh = try g.kernel.allocateFrame(zeroedBy: g.cpu)
        try g.kernel.batchingUpdates(by: g.cpu) { () throws(MachineError) in
            try g.spaces[0].map(g.va(table: 0, page: 0), to: fresh, attributes: MappingAttributes(), by: g.cpu)
        }
        // The guest invalidates both addresses: one of the two shadows still maps the old
        // frame, a translation x86 no longer allows.
        let original = g.va(table: 0, page: 0)
        #expect(try g.cpu.invlpg(original).isOK && g.cpu.invlpg(alias).isOK)
        #expect(throws: MachineError.self) {
            _ = try g.read(original)
            _ = try g.read(alias)
        }
    }

    @Test func aReleasedTableLosesItsShadowsSoClearingItIsNative() throws {
        let g = try Guest(PVMMU())
        _ = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        let pde = try #require(try g.spaces[0].entry(g.va(table: 0, page: 0), level: 2))
        let table = pde.value & PTE.bits(51, 12)
        try g.switchTo(1)
        #expect(g.mmu.isShadowed(table >> 12))
        try g.kernel.batchingUpdates(by: g.cpu) { () throws(MachineError) in
            try g.spaces[0].setEntry(g.va(table: 0, page: 0), level: 2, value: 0, by: g.cpu)
            try g.kernel.freeTable(table, by: g.cpu)
        }
        #expect(!g.mmu.isShadowed(table >> 12))
        let emulated = g.vcpuStats.insnEmulation, faults = g.vcpuStats.exitsPageFault
        #expect(try g.kernel.allocateFrame(zeroedBy: g.cpu) == table, "the freed table is reused first")
        #expect(g.vcpuStats.insnEmulation == emulated && g.mmu.stats.mmuPTEWrite == 0)
        #expect(g.vcpuStats.exitsPageFault - faults <= 1, "at most the physmap fault of the clearing store")
        g.expectConsistent()
    }

    @Test func aFlushHypercallKicksRunningTargetsOnce() throws {
        let g = try Guest(PVMMU(), vcpus: 3)
        let frame = try g.map(0, table: 0, page: 0)
        for v in 0..<3 { try g.switchTo(0, vcpu: v); #expect(try g.read(g.va(table: 0, page: 0), vcpu: v).physicalAddress == frame) }
        g.mmu.vcpus[2].running = false
        let before = g.mmu.stats, calls = g.mmu.vcpus[0].stats.exitsHypercall
        let r = try g.cpu.hypercall(.flushTLB(.addresses([g.va(table: 0, page: 0)]), vcpus: [0, 1, 2]))
        #expect(r.isOK)
        #expect(g.mmu.vcpus[0].stats.exitsHypercall - calls == 1)
        #expect(g.mmu.stats.remoteFlushTargets - before.remoteFlushTargets == 1, "vcpu 2 runs, vcpu 3 is halted")
        #expect(throws: MachineError.invalidArgument("a flush hypercall names vcpu 4, but the VM has 3")) {
            _ = try g.cpu.hypercall(.flushTLB(.everything, vcpus: [3]))
        }
    }

    @Test func policiesWithoutHypercallsRefuseThem() throws {
        let g = try Guest(KVMUnsync())
        #expect(!g.cpu.offersPageTableHypercalls)
        #expect(throws: MachineError.self) { _ = try g.cpu.hypercall(.flushTLB(.everything, vcpus: [0])) }
        // The kernel's stores stay ordinary guest stores: a batch changes nothing.
        let frame = try g.kernel.allocateFrame(zeroedBy: g.cpu)
        let writes = g.cpu.tally.writes
        try g.kernel.batchingUpdates(by: g.cpu) { () throws(MachineError) in
            try g.spaces[0].map(g.va(table: 0, page: 0), to: frame, attributes: MappingAttributes(), by: g.cpu)
        }
        #expect(g.cpu.tally.writes > writes)
    }
}

/// What each `RootLoadDecision` leaves in a vCPU's root cache after a flushing switch
/// away and back (A, B, A).
@Suite struct RootLoadDecisions {
    func switchAwayAndBack(_ policy: any SyncPolicy) throws -> (cachedRoots: Int, stats: MMUStats, vcpu: VCPUMMUStats) {
        let g = try Guest(policy)
        _ = try g.map(0, table: 0, page: 0)
        _ = try g.map(1, table: 0, page: 0)
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        try g.switchTo(1)
        _ = try g.read(g.va(table: 0, page: 0))
        let before = g.mmu.stats
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        var delta = g.mmu.stats
        delta.mmuCacheMiss -= before.mmuCacheMiss
        delta.pagesSynced -= before.pagesSynced
        return (g.mmu.vcpus[0].previousRoots.filter(\.isValid).count, delta, g.vcpuStats)
    }

    // The cache holds the boot root and B's.
    @Test func switchToCachedRootKeepsTheRootLeft() throws {
        let r = try switchAwayAndBack(KVMUnsync())
        #expect(r.cachedRoots == 2)
        #expect(r.stats.mmuCacheMiss == 0)
    }

    @Test func freeAllRootsCachesNothing() throws {
        let r = try switchAwayAndBack(GlobalList())
        #expect(r.cachedRoots == 0)
    }

    @Test func switchWithoutSyncKeepsTheRootAndSyncsNothing() throws {
        let r = try switchAwayAndBack(PVMMU())
        #expect(r.cachedRoots == 2)
        #expect(r.stats.mmuCacheMiss == 0 && r.stats.pagesSynced == 0)
    }
}

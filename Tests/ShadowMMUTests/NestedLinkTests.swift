import Testing
import X86
import GuestKernel
import ShadowMMU
import Checker
import Agile

/// The architectural checker throws on an access x86 does not allow: every access of
/// these tests is judged.
///
/// A policy that walks the tables it is told to nested (`WalkDecision`), KVM otherwise.
final class NestedTables: SyncPolicy {
    let name = "nested-tables"
    let summary = "test: the listed guest tables are walked nested"
    let lockDomain = LockDomain.vmLock
    var tables = Set<UInt64>()
    func attach(to mmu: ShadowMMU) {}
    func walkDecision(forTable gfn: UInt64, level: Int, in mmu: ShadowMMU) -> WalkDecision {
        tables.contains(gfn) ? .nested : .shadow
    }
}

/// Nested links (agile paging's mechanism) and the agile policy, by exact counts.
@Suite struct NestedLinks {
    /// Process 0 with two pages in its first table, running; the table's frame.
    func running(_ g: Guest) throws -> (frames: [UInt64], table: UInt64) {
        let frames = try (0..<2).map { try g.map(0, table: 0, page: $0) }
        try g.switchTo(0)
        for (i, f) in frames.enumerated() { #expect(try g.read(g.va(table: 0, page: i)).physicalAddress == f) }
        let entry = try #require(try g.spaces[0].entry(g.va(table: 0, page: 0), level: 1))
        return (frames, entry.address >> 12)
    }

    @Test func aNestedTableIsWalkedInGuestMemoryAndItsStoresDoNotExit() throws {
        let policy = NestedTables()
        let g = try Guest(policy)
        let checker = ArchitecturalChecker(machine: g.machine, mmu: g.mmu)
        let (frames, table) = try running(g)
        #expect(g.mmu.shadowPages(of: table).count == 1)
        policy.tables.insert(table)
        #expect(g.mmu.switchTable(table, to: .nested))
        #expect(g.mmu.shadowPages(of: table).isEmpty && g.mmu.stats.tablesToNested == 1)

        // One fault links it; the retried walk finishes in the table: EPT violations for
        // the table's frame and the page's. (The switch's flush is pending until the vCPU
        // next exits; the guest's INVLPG is one.)
        #expect(try g.cpu.invlpg(g.va(table: 0, page: 1)).isOK)
        let before = g.vcpuStats
        #expect(try g.read(g.va(table: 0, page: 1)).physicalAddress == frames[1])
        #expect(g.vcpuStats.nestedWalks - before.nestedWalks == 1)
        #expect(g.vcpuStats.nestedWalkHostRefs - before.nestedWalkHostRefs == 8)   // (1 level + 1) × 4
        #expect(g.vcpuStats.eptViolations - before.eptViolations == 2)
        #expect(g.vcpuStats.exitsPageFault - before.exitsPageFault == 3)
        #expect(g.mmu.stats.nestedLinks == 1 && g.mmu.nestedLinkCount(toTable: table) == 1)
        let walk = g.mmu.vcpus[0].shadowWalk(of: g.va(table: 0, page: 1))
        #expect(walk.end == .nested(table: table, level: 1) && walk.steps.map(\.level) == [4, 3, 2])
        g.expectConsistent("linked nested")

        // Stores to the table are native once the kernel's mapping of its frame, read-only
        // while it was shadowed, faults once to become writable: nothing unsyncs. The
        // guest's INVLPG then shows the new frame.
        #expect(!g.mmu.nestedTableWasWritten(table))
        let fresh = try g.kernel.allocateFrame(zeroedBy: g.cpu)
        var a = MappingAttributes()
        a.writable = true
        var exits = g.vcpuStats.exits
        try g.spaces[0].map(g.va(table: 0, page: 2), to: fresh, attributes: a, by: g.cpu)
        #expect(g.vcpuStats.exits == exits + 1)
        exits = g.vcpuStats.exits
        try g.spaces[0].map(g.va(table: 0, page: 1), to: fresh, attributes: a, by: g.cpu)
        #expect(g.vcpuStats.exits == exits && g.mmu.stats.unsyncEvents == 0)
        #expect(g.mmu.nestedTableWasWritten(table) && !g.mmu.nestedTableWasWritten(table))
        _ = try g.cpu.invlpg(g.va(table: 0, page: 1))
        #expect(try g.read(g.va(table: 0, page: 1)).physicalAddress == fresh)
        g.expectConsistent("after a native store")

        // Back to shadow: the link goes, every vCPU flushes, the next walk shadows it.
        policy.tables.remove(table)
        let flushes = g.mmu.stats.remoteTLBFlushRequests
        #expect(g.mmu.switchTable(table, to: .shadow))
        #expect(g.mmu.stats.nestedLinks == 0 && g.mmu.stats.tablesToShadow == 1)
        #expect(g.mmu.stats.remoteTLBFlushRequests == flushes + 1)
        let walks = g.vcpuStats.nestedWalks
        #expect(try g.read(g.va(table: 0, page: 0)).physicalAddress == frames[0])
        #expect(g.vcpuStats.nestedWalks == walks && g.mmu.shadowPages(of: table).count == 1)
        g.expectConsistent("shadowed again")
        withExtendedLifetime(checker) {}
    }

    @Test func aRootCannotGoNested() throws {
        let g = try Guest(NestedTables())
        _ = try running(g)
        let root = g.spaces[0].root >> 12
        #expect(!g.mmu.switchTable(root, to: .nested))
        #expect(g.mmu.stats.tablesToNested == 0 && g.mmu.shadowPages(of: root).count == 1)
    }

    /// A nested walk caches a shadowed, synced table read-only; a store through it exits
    /// and unsyncs that table, as through an spte.
    @Test func writeProtectionHoldsAcrossModes() throws {
        let policy = NestedTables()
        let g = try Guest(policy)
        let checker = ArchitecturalChecker(machine: g.machine, mmu: g.mmu)
        let (_, table) = try running(g)
        let other = try g.map(0, table: 1, page: 0)
        #expect(try g.read(g.va(table: 1, page: 0)).physicalAddress == other)
        let otherTable = try #require(try g.spaces[0].entry(g.va(table: 1, page: 0), level: 1)).address >> 12
        // Page 2 of the nested table maps the other (shadowed) table.
        var a = MappingAttributes()
        a.writable = true
        try g.spaces[0].map(g.va(table: 0, page: 2), to: otherTable << 12, attributes: a, by: g.cpu)
        policy.tables.insert(table)
        #expect(g.mmu.switchTable(table, to: .nested))
        let va = g.va(table: 0, page: 2)
        #expect(try g.read(va).physicalAddress == otherTable << 12)
        let before = (g.vcpuStats, g.mmu.stats)
        let entry = try #require(try g.spaces[0].entry(g.va(table: 1, page: 0), level: 1))
        #expect(try g.cpu.write(va + (entry.address & 0xFFF), value: entry.value, size: 8, cpl: 0).isOK)
        #expect(g.vcpuStats.exitsPageFault - before.0.exitsPageFault == 1)
        #expect(g.mmu.stats.unsyncEvents - before.1.unsyncEvents == 1)
        #expect(g.vcpuStats.nestedWalks - before.0.nestedWalks == 1)
        g.expectConsistent()
        withExtendedLifetime(checker) {}
    }

    /// agile: a table whose stores exit 4 times in an epoch of 8 CR3 loads goes nested;
    /// after an epoch without stores it is shadowed again.
    @Test func agileSwitchesABusyTableAndBringsItBackWhenQuiet() throws {
        let g = try Guest(Agile())
        let checker = ArchitecturalChecker(machine: g.machine, mmu: g.mmu)
        let (_, table) = try running(g)
        var a = MappingAttributes()
        a.writable = true
        for round in 0..<8 where g.mmu.stats.tablesToNested == 0 {
            let frame = try g.kernel.allocateFrame(zeroedBy: g.cpu)
            try g.spaces[0].map(g.va(table: 0, page: 3), to: frame, attributes: a, by: g.cpu)
            _ = try g.cpu.invlpg(g.va(table: 0, page: 3))
            #expect(try g.read(g.va(table: 0, page: 3)).physicalAddress == frame, "round \(round)")
            try g.switchTo(1)
            try g.switchTo(0)
        }
        #expect(g.mmu.stats.tablesToNested == 1 && g.mmu.shadowPages(of: table).isEmpty)
        _ = try g.read(g.va(table: 0, page: 0))
        #expect(g.mmu.nestedLinkCount(toTable: table) == 1)
        for _ in 0..<8 {
            try g.switchTo(1)
            try g.switchTo(0)
            _ = try g.read(g.va(table: 0, page: 0))
        }
        #expect(g.mmu.stats.tablesToShadow == 1 && g.mmu.stats.nestedLinks == 0)
        g.expectConsistent()
        withExtendedLifetime(checker) {}
    }
}

import Testing
import X86
import GuestKernel
import ShadowMMU
import KVMUnsync

/// A machine may outlive the shadow MMU attached to it: its vCPUs go back to bare
/// metal (the vCPU does not retain its backend).
@Suite struct LifetimeTests {
    @Test func machineKeepsWorkingOnBareMetalAfterItsMMUGoes() throws {
        var config = MachineConfiguration(mode: .long4)
        config.memoryBytes = 16 << 20
        let machine = try Machine(config)
        let kernel = try GuestKernel(machine: machine)
        let cpu = machine.vcpus[0]
        let space = try kernel.newAddressSpace(by: cpu)
        let frame = try kernel.allocateFrame(zeroedBy: cpu)
        try space.map(0x40_0000, to: frame, attributes: MappingAttributes(), by: cpu)
        do {
            let mmu = ShadowMMU(machine: machine, policy: KVMUnsync())
            #expect(cpu.backend === mmu.vcpus[0])
            #expect(try cpu.loadCR3(space.root).isOK)
            #expect(try cpu.write(0x40_0000, value: 7).isOK)
            #expect(mmu.stats.shadowPages > 0)
        }
        #expect(cpu.backend === BareMetal.shared)
        cpu.tlb.flushAll()
        let r = try cpu.read(0x40_0000)
        #expect(r.isOK && r.value == 7)
        #expect(try cpu.loadCR3(space.root).isOK)
    }

    /// A handle names one page for good: once that page is freed, the handle resolves to
    /// nothing, even when a new page has taken the same id.
    @Test func aStaleHandleIsDetectablyStale() throws {
        let g = try Guest(KVMUnsync())
        _ = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        let entry = try #require(try g.spaces[0].entry(g.va(table: 0, page: 0), level: 1))
        let table = try #require(g.mmu.shadowPages(of: entry.address >> 12).first)
        let handle = table.handle
        #expect(g.mmu.page(handle) == table && g.mmu.isLive(table))
        g.mmu.prepareZap(table)
        g.mmu.commitZaps()
        #expect(g.mmu.page(handle) == nil && !g.mmu.isLive(table))
        // The next shadow page built takes the freed id; the old handle still names nothing.
        _ = try g.cpu.invlpg(g.va(table: 0, page: 0))
        _ = try g.read(g.va(table: 0, page: 0))
        let rebuilt = try #require(g.mmu.shadowPages(of: entry.address >> 12).first)
        #expect(rebuilt.id == handle.id && rebuilt.handle != handle)
        #expect(g.mmu.page(handle) == nil && g.mmu.page(rebuilt.handle) == rebuilt)
        g.expectConsistent()
    }
}

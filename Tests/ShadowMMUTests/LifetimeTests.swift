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
}

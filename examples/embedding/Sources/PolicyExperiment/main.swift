import Checker
import GuestKernel
import ShadowMMU
import X86

// A guest with two processes on vCPU 1 and a worker remapping pages on vCPU 2, run
// under each of the experiment's policies with the architectural checker attached;
// the counters say what each policy cost.

struct Figures {
    var exits: UInt64 = 0
    var emulated: UInt64 = 0
    var unsynced: UInt64 = 0
    var synced: UInt64 = 0
    var cycles: Double = 0
    var checked: UInt64 = 0
}

func run(_ policy: ExperimentPolicy, rounds: Int) throws -> Figures {
    var config = MachineConfiguration(mode: .long4)
    config.vcpuCount = 2
    config.memoryBytes = 64 << 20
    let machine = try Machine(config)
    let mmu = ShadowMMU(machine: machine, policy: policy)
    let checker = ArchitecturalChecker(machine: machine, mmu: mmu)
    let kernel = try GuestKernel(machine: machine)
    let (runner, workerCPU) = (machine.vcpus[0], machine.vcpus[1])
    let a = try kernel.newAddressSpace(by: runner), b = try kernel.newAddressSpace(by: runner)
    let worker = try kernel.newAddressSpace(by: workerCPU)
    var writable = MappingAttributes()
    writable.accessed = true
    writable.dirty = true
    let pages = 32
    for i in 0..<pages {
        let va = 0x40_0000 + UInt64(i) << 12
        try a.map(va, to: try kernel.allocateFrame(zeroedBy: runner), attributes: writable, by: runner)
        try b.map(va, to: try kernel.allocateFrame(zeroedBy: runner), attributes: writable, by: runner)
        try worker.map(va, to: try kernel.allocateFrame(zeroedBy: workerCPU), attributes: writable, by: workerCPU)
    }
    _ = try workerCPU.loadCR3(worker.root)
    var seed: UInt64 = 42
    func next(_ n: Int) -> Int {
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        return Int(seed >> 33) % n
    }
    for round in 0..<rounds {
        for space in [a, b] {
            _ = try runner.loadCR3(space.root)
            for _ in 0..<16 {
                let va = 0x40_0000 + UInt64(next(pages)) << 12
                guard try runner.write(va, value: UInt64(round), cpl: 3).isOK else { fatalError("unexpected fault") }
            }
        }
        for _ in 0..<4 {
            let va = 0x40_0000 + UInt64(next(pages)) << 12
            try worker.map(va, to: try kernel.allocateFrame(zeroedBy: workerCPU), attributes: writable, by: workerCPU)
            _ = try workerCPU.invlpg(va)
            _ = try workerCPU.write(va, value: 1, cpl: 3)
        }
    }
    precondition(mmu.verify().isEmpty, "the MMU's invariants hold")
    let perVCPU = mmu.vcpus.reduce(VCPUMMUStats()) { $0 + $1.stats }
    let stats = mmu.stats
    func counter(_ name: String) -> UInt64 {
        (perVCPU.fields + stats.fields).first { $0.name == name }?.value ?? 0
    }
    return Figures(exits: counter("exits"), emulated: counter("insn_emulation"), unsynced: counter("mmu_unsync_events"),
                   synced: counter("pages_synced") + counter("sptes_resynced"), cycles: mmu.estimatedCycles().vm,
                   checked: checker.accessesChecked)
}

let rounds = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 20 : 20
print("policy            exits  emulated  unsync events  resynced  est. cycles  checked accesses")
for policy in [ExperimentPolicy(lazy: false), ExperimentPolicy(lazy: true)] {
    let f = try run(policy, rounds: rounds)
    func pad(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
    print(policy.name + String(repeating: " ", count: max(0, 16 - policy.name.count))
          + pad("\(f.exits)", 7) + pad("\(f.emulated)", 10) + pad("\(f.unsynced)", 15) + pad("\(f.synced)", 10)
          + pad("\(Int(f.cycles))", 13) + pad("\(f.checked)", 18))
}

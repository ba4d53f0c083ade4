#if canImport(Glibc)
import Glibc
#endif
import X86
import GuestKernel
import ShadowMMU
import Checker
import ShadowSimPolicies

enum ProcessEnvironment {
    /// SHADOWSIM_BENCH_OPS overrides the scenario's length (for profiling).
    static var scenarioOperations: Int {
        getenv("SHADOWSIM_BENCH_OPS").flatMap { Int(String(cString: $0)) } ?? 1_000_000
    }
}

/// Issue 5's item 7: a guest kernel forking, exec-ing and switching between processes,
/// run for a given number of operations (an operation is an access, a mapping change
/// or a MOV to CR3), under one policy, with or without the checker.
struct ForkExecScenario {
    let processes = 8
    let pagesPerProcess = 64
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15

    mutating func random(_ n: Int) -> Int {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Int(state % UInt64(n))
    }

    /// Runs `operations` operations; returns the elapsed nanoseconds of the run itself
    /// (the machine's setup is not timed).
    mutating func run(policy: String, checked: Bool, operations: Int) throws -> UInt64 {
        let g = try BenchGuest(policy: policy, memory: 256 << 20)
        let checker = checked ? ArchitecturalChecker(machine: g.machine, mmu: g.mmu) : nil
        defer { withExtendedLifetime(checker) {} }
        // Each process keeps its address space (so a long run needs no more guest
        // memory); exec and fork rewrite all of its mappings.
        let spaces = try (0..<processes).map { _ in try g.kernel.newAddressSpace(by: g.cpu) }
        var writable = MappingAttributes(); writable.accessed = true; writable.dirty = true
        var readOnly = writable; readOnly.writable = false
        var generation = 0
        func exec(_ p: Int) throws {
            generation += 1
            for i in 0..<pagesPerProcess {
                try spaces[p].map(0x40_0000 + UInt64(i) << 12, to: g.frames[(p * 7 + i + generation) % g.frames.count],
                                  attributes: writable, by: g.cpu)
            }
        }
        for p in 0..<processes { try exec(p) }
        var current = 0
        _ = try g.cpu.loadCR3(spaces[current].root)
        return try measuredWork { () throws in
            var done = 0
            while done < operations {
                let r = random(1000)
                if r < 2 {
                    // exec: a fresh address space for a process
                    let p = random(processes)
                    try exec(p)
                    done += pagesPerProcess
                    if p == current { _ = try g.cpu.loadCR3(spaces[current].root); done += 1 }
                } else if r < 4 {
                    // fork: the child maps the parent's pages read-only (copy on write)
                    let parent = current, child = (current + 1 + random(processes - 1)) % processes
                    for i in 0..<pagesPerProcess {
                        let va = 0x40_0000 + UInt64(i) << 12
                        guard let pte = try spaces[parent].leaf(va) else { continue }
                        try spaces[child].map(va, to: pte.value & PTE.bits(51, 12), attributes: readOnly, by: g.cpu)
                    }
                    done += pagesPerProcess
                } else if r < 24 {
                    // context switch
                    current = random(processes)
                    _ = try g.cpu.loadCR3(spaces[current].root)
                    done += 1
                } else {
                    // the running process touches its pages (a write may hit a read-only
                    // page: the fault is the guest's, counted, and the run goes on)
                    let va = 0x40_0000 + UInt64(random(pagesPerProcess)) << 12 | UInt64(random(512)) << 3
                    if r < 300 { _ = try g.cpu.write(va, value: UInt64(done), cpl: 3) } else { _ = try g.cpu.read(va, cpl: 3) }
                    done += 1
                }
            }
        }.nanoseconds
    }
}

extension BenchRunner {
    /// Item 7 under every policy, checker off and on, and item "flat curves": the
    /// per-operation cost of the same scenario at 10^5, 10^6 and 10^7 operations.
    public func scenarios(operations: Int? = nil, flatness: Bool = true) throws {
        let operations = operations ?? ProcessEnvironment.scenarioOperations
        for policy in [PolicyCatalog.bareMetalName] + PolicyCatalog.builtins.map(\.name) {
            var perOp: [Bool: Double] = [:]
            for checked in [false, true] {
                let name = "fork/exec + switch, \(operations / 1000)k ops, \(policy), checker \(checked ? "on" : "off")"
                try measureSelfTimed(name, operations: operations, repetitions: 1, setup: { ForkExecScenario() }) { s in
                    var s = s
                    return try s.run(policy: policy, checked: checked, operations: operations)
                }
                perOp[checked] = results.last(where: { $0.name == name })?.medianNanoseconds
            }
            if let off = perOp[false], let on = perOp[true], off > 0 {
                record(value: "ratio checker on / off, fork/exec + switch (\(policy))", on / off, target: 3)
            }
        }
        guard flatness else { return }
        for n in [100_000, 1_000_000, 10_000_000] {
            try measureSelfTimed("per-op cost at \(n) ops, fork/exec + switch (kvm-unsync)", operations: n, repetitions: 1,
                                 setup: { ForkExecScenario() }) { s in
                var s = s
                return try s.run(policy: "kvm-unsync", checked: false, operations: n)
            }
        }
    }

    /// Item 8's memory figures: a guest with 1 Mi mapped (and touched) pages, and a
    /// 64 GiB guest that touched 1 GiB.
    ///
    /// The first guest's RSS growth is split: its guest memory (page tables; the data
    /// frames are only read, so they stay unallocated), the reverse map (which costs per
    /// mapped frame, not per shadow page: the MMU counts its bytes), and the rest — shadow
    /// pages with their sptes, lookup tables and TLB — per shadow page.
    public func memoryAtScale() throws {
        if wants("bytes") {
            // Warm up first: the code and runtime pages the paths below fault in are not
            // data, and would otherwise count as growth.
            do {
                let warm = try BenchGuest(policy: "kvm-unsync", memory: 8 << 30)
                try warm.map(4096, resident: false)
                try warm.touch(4096)
            }
            let before = residentBytes()
            let g = try BenchGuest(policy: "kvm-unsync", memory: 8 << 30)
            let pages = 1 << 20
            try g.map(pages, resident: false)
            try g.touch(pages)
            let grown = residentBytes() - before
            let mmu = g.mmu!
            let shadowSide = grown - Int(g.machine.memory.residentBytes)
            let reverseMap = mmu.reverseMapBytes
            record(value: "bytes of RSS growth, 1 Mi mapped and touched pages (guest tables + shadow)", Double(grown))
            record(value: "bytes per shadow page, sptes and bookkeeping (\(mmu.usedShadowPages) pages)",
                   Double(shadowSide - reverseMap) / Double(max(mmu.usedShadowPages, 1)), target: 4.5 * 1024)
            record(value: "bytes per touched guest page, reverse map", Double(reverseMap) / Double(pages))
            record(value: "bytes per touched guest page, shadow side in all", Double(shadowSide) / Double(pages))
        }
        if wants("bytes") {
            var config = MachineConfiguration(mode: .long4)
            config.memoryBytes = 64 << 30
            let machine = try Machine(config)
            for gfn in 0..<UInt64(1 << 18) { try machine.writePhysical(gfn << 12, gfn, size: 8) }
            record(value: "bytes resident, 64 GiB guest that touched 1 GiB", Double(machine.memory.residentBytes),
                   target: Double(1 << 30) * 1.05)
        }
    }
}

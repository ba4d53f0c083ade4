import X86
import GuestKernel
import ShadowMMU
import ShadowSimPolicies
import ShadowSimLua
#if canImport(Glibc)
import Glibc
#endif

/// A 4-level guest under one policy: one vCPU running on `space`.
final class BenchGuest {
    let machine: Machine
    let kernel: GuestKernel
    let mmu: ShadowMMU?
    let cpu: VCPU
    let space: AddressSpace
    /// Frames the mappings point at (mappings reuse them: the frames' contents do not matter).
    var frames: [UInt64] = []

    init(policy: String, memory: UInt64 = 512 << 20, tlbEntries: Int = 1024, shadowPages: Int? = nil,
         prefetch: Bool = true) throws {
        var config = MachineConfiguration(mode: .long4)
        config.memoryBytes = memory
        config.tlbEntries = tlbEntries
        machine = try Machine(config)
        if policy != PolicyCatalog.bareMetalName {
            var c = ShadowMMUConfiguration()
            c.maxShadowPages = shadowPages ?? 1 << 20
            c.prefetch = prefetch
            mmu = ShadowMMU(machine: machine, policy: try PolicyCatalog.factory(policy).make(), configuration: c)
        } else {
            mmu = nil
        }
        kernel = try GuestKernel(machine: machine)
        cpu = machine.vcpus[0]
        space = try kernel.newAddressSpace(by: cpu)
        _ = try cpu.loadCR3(space.root)
        for _ in 0..<64 { frames.append(try kernel.allocateFrame(zeroedBy: cpu)) }
    }

    /// The frame of data page `i`: one per page, as in a real guest (so each mapping has
    /// its own reverse-map entry), from the upper half of guest memory (the guest kernel
    /// allocates from the bottom).
    func dataFrame(_ i: Int) -> UInt64 { machine.memory.capacity / 2 + UInt64(i) << 12 }

    /// Maps `count` pages from `base` (one page table per 512) to their own frames,
    /// accessed and dirty unless told otherwise. The frames get host storage unless
    /// `resident` is false (then they read as zeros and cost nothing).
    func map(_ count: Int, at base: UInt64 = 0x4000_0000, accessed: Bool = true, in space: AddressSpace? = nil,
             resident: Bool = true) throws {
        var a = MappingAttributes()
        a.accessed = accessed
        a.dirty = accessed
        for i in 0..<count {
            let frame = dataFrame(i)
            if resident { _ = machine.memory.frameForWriting(frame >> 12) }
            try (space ?? self.space).map(base + UInt64(i) << 12, to: frame, attributes: a, by: cpu)
        }
    }

    /// Reads each of `count` pages once (building their shadow).
    func touch(_ count: Int, at base: UInt64 = 0x4000_0000) throws {
        for i in 0..<count { _ = try cpu.read(base + UInt64(i) << 12) }
    }
}

extension BenchRunner {
    /// Every benchmark of the suite (issue 5's list), 4-level guests.
    public func runAll() throws {
        try memoryAtScale()   // first, while the process's resident memory is fresh
        try tlbHits()
        try tlbMisses()
        try firstTouchFaults()
        try pageTableStores()
        try cr3Syncs()
        try invlpgs()
        try scenarios()
    }

    func tlbHits() throws {
        let n = 1_000_000
        for (kind, isWrite) in [("load", false), ("store", true)] {
            try measure("tlb-hit \(kind), Swift (16-page working set)", target: 3, operations: n, setup: {
                let g = try BenchGuest(policy: "kvm-unsync")
                try g.map(16)
                for i in 0..<16 { _ = try g.cpu.write(0x4000_0000 + UInt64(i) << 12, value: 1) }
                return g
            }) { g in
                let cpu = g.cpu
                if isWrite {
                    for i in 0..<n { _ = try cpu.write(0x4000_0000 | UInt64(i & 15) << 12, value: UInt64(i)) }
                } else {
                    // The values are summed and kept, so no load can be optimised away.
                    var sum: UInt64 = 0
                    for i in 0..<n { sum &+= try cpu.read(0x4000_0000 | UInt64(i & 15) << 12).value }
                    keep(sum)
                }
            }
        }
    }

    func tlbMisses() throws {
        for pages in [4096, 65536] {
            // 1024 TLB entries: a stride over `pages` pages misses every time; the shadow
            // tables are complete, so each miss is a shadow walk.
            try measure("tlb-miss + shadow walk (\(pages)-page working set)", target: 20, operations: pages, setup: {
                let g = try BenchGuest(policy: "kvm-unsync")
                try g.map(pages)
                try g.touch(pages)
                try g.touch(pages)
                return g
            }) { g in
                let cpu = g.cpu
                for i in 0..<pages { _ = try cpu.read(0x4000_0000 | UInt64(i) << 12) }
            }
        }
    }

    func firstTouchFaults() throws {
        let pages = 4096
        for (label, accessed) in [("A clear", false), ("A set, prefetch", true)] {
            try measure("first-touch shadow fault (\(label))", target: 150, operations: pages, setup: {
                let g = try BenchGuest(policy: "kvm-unsync")
                try g.map(pages, accessed: accessed)
                return g
            }) { g in
                let cpu = g.cpu
                for i in 0..<pages { _ = try cpu.read(0x4000_0000 | UInt64(i) << 12) }
            }
        }
    }

    func pageTableStores() throws {
        let tables = 256
        for (policy, label, target) in [("kvm-unsync", "unsync", 150.0), ("wp-emulate", "emulated", 200.0)] {
            // One store to each of `tables` shadowed leaf tables (kvm-unsync: the store
            // that unsyncs it; wp-emulate: an emulated store).
            try measure("page-table store, \(label) (\(policy))", target: target, operations: tables, setup: {
                let g = try BenchGuest(policy: policy)
                var ptes: [UInt64] = []
                for t in 0..<tables {
                    let va = 0x4000_0000 + UInt64(t) << 21
                    try g.map(8, at: va)
                    try g.touch(8, at: va)
                    ptes.append(try g.space.leaf(va)!.address)
                }
                return (g, ptes)
            }) { state in
                let (g, ptes) = state
                for pte in ptes { try g.kernel.storeEntry(pte, g.frames[1] << 0 | 0x67, by: g.cpu) }
            }
        }
    }

    func cr3Syncs() throws {
        for policy in ["kvm-unsync", "vm-list"] {
            for entries in [8, 512] {
                for k in [1, 16, 128] {
                    for reachable in [true, false] {
                        let name = "CR3 load, \(k) unsync tables × \(entries) entries, \(reachable ? "reachable" : "unreachable") (\(policy))"
                        try measureSelfTimed(name, target: reachable && entries == 512 ? 2000 * Double(k) : nil,
                                             operations: 1, setup: {
                            try cr3Setup(policy: policy, tables: k, entries: entries, reachable: reachable)
                        }) { g in
                            try measuredWork { _ = try g.cpu.loadCR3(g.space.root) }.nanoseconds
                        }
                    }
                }
            }
        }
    }

    /// A guest whose current space `space` is about to be reloaded, with `tables` leaf
    /// tables of `entries` present entries each made unsync — in `space` itself
    /// (reachable) or in another space (unreachable from the new root).
    private func cr3Setup(policy: String, tables: Int, entries: Int, reachable: Bool) throws -> BenchGuest {
        let g = try BenchGuest(policy: policy)
        let holder = reachable ? g.space : try g.kernel.newAddressSpace(by: g.cpu)
        if !reachable { _ = try g.cpu.loadCR3(holder.root) }
        for t in 0..<tables {
            let va = 0x4000_0000 + UInt64(t) << 21
            try g.map(entries, at: va, in: holder)
            try g.touch(entries, at: va)
        }
        if !reachable {
            // Back on `space` (one page of its own), the holder's tables stay shadowed.
            _ = try g.cpu.loadCR3(g.space.root)
            try g.map(1)
            try g.touch(1)
        }
        // The store that makes each table unsync (through the physmap, a guest store):
        // the measured CR3 load is the first one after them.
        for t in 0..<tables {
            let pte = try holder.leaf(0x4000_0000 + UInt64(t) << 21)!.address
            try g.kernel.storeEntry(pte, g.frames[2] | 0x67, by: g.cpu)
        }
        return g
    }

    func invlpgs() throws {
        let n = 512
        for unsync in [false, true] {
            try measure("INVLPG on a \(unsync ? "unsync" : "synced") table (kvm-unsync)", operations: n, setup: {
                let g = try BenchGuest(policy: "kvm-unsync")
                try g.map(n)
                try g.touch(n)
                if unsync { try g.kernel.storeEntry(try g.space.leaf(0x4000_0000)!.address, g.frames[3] | 0x67, by: g.cpu) }
                return g
            }) { g in
                for i in 0..<n { _ = try g.cpu.invlpg(0x4000_0000 + UInt64(i) << 12) }
            }
        }
    }

}

extension BenchRunner {
    /// Lua calls into the simulator: `vcpu:read` per access, and `vcpu:fill` touching 16
    /// pages per call. Each run is timed whole with `n` and with 0 operations; the
    /// difference per operation is the figure (setup cancels out).
    public func luaCalls(scratchDirectory: String) throws {
        let script = scratchDirectory + "/shadowsim-bench-lua-\(getpid()).lua"
        try writeFile(script, luaBenchScript)
        defer { unlink(script) }
        let n = 2_000_000
        for (label, mode, target, perCall) in [("tlb-hit load, Lua vcpu:read per access", "read", 45.0, 1),
                                               ("tlb-hit store, Lua vcpu:fill per page (16 pages a call)", "fill", nil, 16)] {
            try measureSelfTimed(label, target: target, operations: n, setup: { () }) { _ in
                func timed(_ count: Int) throws -> UInt64 {
                    let (r, ns) = measuredWork { ScenarioRunner.run(path: script, arguments: [String(count), mode]) }
                    if let error = r.error { throw BenchError(description: "Lua benchmark failed: \(error)") }
                    return ns
                }
                let full = try timed(n / perCall * perCall)
                let empty = try timed(0)
                return full > empty ? full - empty : 0
            }
        }
    }
}

/// Makes a value observable, so the computation of it cannot be dropped.
@inline(never) func keep(_ value: UInt64) { if value == 0x5EED_0F_0B5E55ED { print("") } }

struct BenchError: Error, CustomStringConvertible { let description: String }

func writeFile(_ path: String, _ text: String) throws {
    guard let f = fopen(path, "w") else { throw BenchError(description: "cannot write \(path)") }
    defer { fclose(f) }
    fputs(text, f)
}

let luaBenchScript = """
local S = shadowsim
local n, mode = tonumber(S.args[1]), S.args[2]
local vm = S.vm{ mode = "long4", memory = "64M" }
local p = vm:space{}
for i = 0, 15 do p:map(0x40000000 + i * 4096, vm:alloc_frame{}) end
local cpu = vm.vcpu[1]
S.expect_ok(cpu:load_cr3(p))
for i = 0, 15 do S.expect_ok(cpu:write(0x40000000 + i * 4096, 1)) end
if mode == "read" then
  local read = cpu.read
  for i = 1, n do read(cpu, 0x40000000 + (i & 15) * 4096) end
else
  local fill = cpu.fill
  for _ = 1, n // 16 do fill(cpu, 0x40000000, 65536, 0) end
end
"""

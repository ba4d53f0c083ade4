import Testing
import X86
import GuestKernel
import ShadowMMU
import KVMUnsync
import WPEmulate
import GlobalList
import VMList
import XenOOS
import TDP

/// A guest under a policy with two processes whose user pages live in several page tables.
final class Guest {
    let machine: Machine
    let kernel: GuestKernel
    let mmu: ShadowMMU
    let spaces: [AddressSpace]
    var cpu: VCPU { machine.vcpus[0] }

    init(_ policy: any SyncPolicy, mode: PagingMode = .long4, vcpus: Int = 1, processes: Int = 2,
         host: SimulationHost = SimulationHost(),
         configure: (inout ShadowMMUConfiguration) -> Void = { _ in }) throws {
        var config = MachineConfiguration(mode: mode)
        config.vcpuCount = vcpus
        config.memoryBytes = 64 << 20
        machine = try Machine(config)
        var mmuConfig = ShadowMMUConfiguration()
        configure(&mmuConfig)
        mmu = ShadowMMU(machine: machine, policy: policy, configuration: mmuConfig, host: host)
        kernel = try GuestKernel(machine: machine)
        let k = kernel, m = machine
        spaces = try (0..<processes).map { _ in try k.newAddressSpace(by: m.vcpus[0]) }
    }

    /// Virtual address of page `i` of page table `t` (each table covers 2 or 4 MiB).
    func va(table t: Int, page i: Int) -> UInt64 { UInt64(0x40_0000 + t * 0x40_0000 + i * 0x1000) }

    func map(_ space: Int, table t: Int, page i: Int, writable: Bool = true) throws -> UInt64 {
        let frame = try kernel.allocateFrame(zeroedBy: cpu)
        var a = MappingAttributes()
        a.writable = writable
        try spaces[space].map(va(table: t, page: i), to: frame, attributes: a, by: cpu)
        return frame
    }

    func switchTo(_ space: Int, vcpu: Int = 0) throws {
        #expect(try machine.vcpus[vcpu].loadCR3(spaces[space].root).isOK)
    }

    func read(_ va: UInt64, vcpu: Int = 0) throws -> AccessResult { try machine.vcpus[vcpu].read(va, cpl: 3) }

    var vcpuStats: VCPUMMUStats { mmu.vcpus.reduce(VCPUMMUStats()) { $0 + $1.stats } }

    func expectConsistent(_ comment: Comment? = nil) {
        let problems = mmu.verify()
        #expect(problems.isEmpty, "\(comment.map { "\($0): " } ?? "")\(problems.joined(separator: "; "))")
    }
}

@Suite struct KVMUnsyncDecisions {
    @Test func firstStoreToASyncedLeafTableUnsyncsItAndLaterStoresDoNotExit() throws {
        let g = try Guest(KVMUnsync())
        _ = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        #expect(try g.read(g.va(table: 0, page: 0)).isOK)         // shadows the page table
        #expect(g.mmu.stats.mmuUnsync == 0)
        let exitsBefore = g.vcpuStats.exits
        _ = try g.map(0, table: 0, page: 1)                      // guest store to the PTE page
        #expect(g.mmu.stats.mmuUnsync == 1)
        #expect(g.mmu.stats.mmuPTEWrite == 0, "no emulation: the page went unsync")
        let exitsAfterUnsync = g.vcpuStats.exits
        #expect(exitsAfterUnsync > exitsBefore)
        _ = try g.map(0, table: 0, page: 2)
        #expect(g.vcpuStats.exits == exitsAfterUnsync, "stores to an unsync table run natively")
        g.expectConsistent()
    }

    @Test func storesToUpperLevelTablesAreAlwaysEmulated() throws {
        let g = try Guest(KVMUnsync())
        _ = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        // A new page table: the guest writes a PDE into the shadowed (write-tracked) PD.
        _ = try g.map(0, table: 1, page: 0)
        #expect(g.mmu.stats.mmuPTEWrite == 1)
        #expect(g.vcpuStats.pfEmulate == 1)
        #expect(g.mmu.stats.mmuUnsync == 0, "upper levels never unsync")
        g.expectConsistent()
    }

    @Test func aFlushingCR3LoadSyncsOnlyWhatTheNewRootReaches() throws {
        let g = try Guest(KVMUnsync())
        for s in 0..<2 {
            _ = try g.map(s, table: 0, page: 0)
            try g.switchTo(s)
            _ = try g.read(g.va(table: 0, page: 0))
            _ = try g.map(s, table: 0, page: 1)                  // unsync this process's PT
        }
        #expect(g.mmu.stats.mmuUnsync == 2)
        try g.switchTo(0)
        #expect(g.mmu.stats.mmuUnsync == 1, "process 0's table synced, process 1's left writable")
        #expect(g.mmu.stats.pagesSynced >= 1)
        g.expectConsistent()
    }

    @Test func prefetchAndSyncNeverUnsync() throws {
        let g = try Guest(KVMUnsync())
        _ = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        let entry = try g.spaces[0].entry(g.va(table: 0, page: 0), level: 1)
        let pt = try #require(entry).address >> 12
        let policy = g.mmu.policy
        // KVM's decision is the engine's unsync, which refuses syncs and prefetches.
        #expect(policy.writeDecision(for: pt, WritableMappingRequest(synchronizing: false, prefetch: false, vcpu: nil), in: g.mmu) == .unsyncAndAllow)
        #expect(!g.mmu.unsyncLeafShadows(of: pt, WritableMappingRequest(synchronizing: true, prefetch: false, vcpu: nil)))
        #expect(!g.mmu.unsyncLeafShadows(of: pt, WritableMappingRequest(synchronizing: false, prefetch: true, vcpu: nil)))
        #expect(g.mmu.stats.mmuUnsync == 0)
        #expect(g.mmu.unsyncLeafShadows(of: pt, WritableMappingRequest(synchronizing: false, prefetch: false, vcpu: nil)))
        #expect(g.mmu.stats.mmuUnsync == 1)
        // A frame that is no page table may always be writable.
        #expect(g.mmu.unsyncLeafShadows(of: 0x3000, WritableMappingRequest(synchronizing: true, prefetch: true, vcpu: nil)))
    }

    @Test func invlpgResyncsOneEntryAndKeepsThePageUnsync() throws {
        let g = try Guest(KVMUnsync())
        let first = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        #expect(try g.read(g.va(table: 0, page: 0)).physicalAddress == first)
        let second = try g.map(0, table: 0, page: 0)             // remap: table goes unsync
        #expect(try g.read(g.va(table: 0, page: 0)).physicalAddress == first, "stale until invalidated")
        try g.cpu.invlpg(g.va(table: 0, page: 0))
        #expect(try g.read(g.va(table: 0, page: 0)).physicalAddress == second)
        #expect(g.mmu.stats.mmuUnsync == 1)
        g.expectConsistent()
    }

    @Test func recyclingUnderASmallBudgetKeepsResultsRight() throws {
        let g = try Guest(KVMUnsync(), processes: 6) { $0.maxShadowPages = 16 }
        var frames: [[UInt64]] = []
        for s in 0..<6 { frames.append(try (0..<4).map { try g.map(s, table: $0, page: 0) }) }
        for round in 0..<3 {
            for s in 0..<6 {
                try g.switchTo(s)
                for t in 0..<4 { #expect(try g.read(g.va(table: t, page: 0)).physicalAddress == frames[s][t], "round \(round)") }
            }
        }
        #expect(g.mmu.stats.mmuRecycled > 0)
        #expect(g.mmu.usedShadowPages <= 16 + 4)
        g.expectConsistent()
    }
}

@Suite struct OtherPolicyDecisions {
    @Test func wpEmulateNeverUnsyncsAndEmulatesEveryTableStore() throws {
        let g = try Guest(WPEmulate())
        _ = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        for i in 1...2 { _ = try g.map(0, table: 0, page: i) }
        #expect(g.mmu.stats.mmuUnsync == 0)
        #expect(g.mmu.stats.mmuPTEWrite == 2)
        #expect(g.vcpuStats.pfEmulate == 2)
        g.expectConsistent()
    }

    @Test func vmListSyncsUnreachablePagesToo() throws {
        let g = try Guest(VMList())
        for s in 0..<2 {
            _ = try g.map(s, table: 0, page: 0)
            try g.switchTo(s)
            _ = try g.read(g.va(table: 0, page: 0))
        }
        for s in 0..<2 { _ = try g.map(s, table: 0, page: 1) }   // no CR3 load in between
        #expect(g.mmu.stats.mmuUnsync == 2)
        try g.switchTo(0)
        #expect(g.mmu.stats.mmuUnsync == 0, "every unsync page of the VM was synced")
        g.expectConsistent()
    }

    @Test func globalListWalksPastOtherVMsEntries() throws {
        let host = SimulationHost()
        let a = try Guest(GlobalList(), host: host), b = try Guest(GlobalList(), host: host)
        for g in [a, b] {
            _ = try g.map(0, table: 0, page: 0)
            try g.switchTo(0)
            _ = try g.read(g.va(table: 0, page: 0))
            _ = try g.map(0, table: 0, page: 1)
        }
        let before = a.mmu.stats.lockWorkForOtherVMs
        try a.switchTo(1)
        #expect(a.mmu.stats.lockWorkForOtherVMs > before, "VM a's sync walked past VM b's entry")
        #expect(b.mmu.stats.mmuUnsync == 1, "and left it alone")
        #expect(a.mmu.stats.mmuUnsync == 0)
    }

    @Test func xenKeepsAtMostThreeOutOfSyncPagesPerVCPU() throws {
        let g = try Guest(XenOOS())
        for t in 0..<6 { _ = try g.map(0, table: t, page: 0) }
        try g.switchTo(0)
        for t in 0..<6 { _ = try g.read(g.va(table: t, page: 0)) }
        for t in 0..<6 { _ = try g.map(0, table: t, page: 1) }
        #expect(g.mmu.stats.mmuUnsync <= 3)
        #expect(g.mmu.stats.mmuUnsync >= 1)
        try g.switchTo(1)
        #expect(g.mmu.stats.mmuUnsync == 0, "a CR3 write resyncs the vCPU's own pages")
        g.expectConsistent()
    }

    @Test func tdpBuildsNoShadowPagesAndTakesNoCR3Exits() throws {
        let g = try Guest(TDP())
        _ = try g.map(0, table: 0, page: 0)
        try g.switchTo(0)
        _ = try g.read(g.va(table: 0, page: 0))
        try g.switchTo(1)
        try g.switchTo(0)
        #expect(g.mmu.usedShadowPages == 0)
        #expect(g.vcpuStats.exitsCR3 == 0)
        #expect(g.vcpuStats.eptViolations > 0)
        let violations = g.vcpuStats.eptViolations
        g.cpu.tlb.flushAll()
        _ = try g.read(g.va(table: 0, page: 0))
        #expect(g.vcpuStats.eptViolations == violations, "frames already mapped in the EPT")
    }
}

/// KVM's decisions with one changed: an unsync page, or one with unsync pages below it,
/// is linked as it is (`LinkDecision.linkUnsync`).
final class LinkUnsyncPolicy: SyncPolicy {
    let kvm = KVMUnsync()
    var name: String { "link-unsync" }
    var summary: String { "kvm-unsync, linking unsync pages without a sync" }
    var lockDomain: LockDomain { kvm.lockDomain }
    func attach(to mmu: ShadowMMU) { kvm.attach(to: mmu) }
    func linkDecision(for page: ShadowPage, in mmu: ShadowMMU) -> LinkDecision { .linkUnsync }
}

@Suite struct LinkDecisions {
    /// Two processes share one page table; A's store unsyncs it, then B faults on it.
    func sharedTableFlow(_ policy: any SyncPolicy, bug: PlantedBug? = nil) throws -> (MMUStats, VCPUMMUStats) {
        let g = try Guest(policy) { if let bug { $0.plantedBugs = [bug] } }
        _ = try g.map(0, table: 0, page: 0)
        _ = try g.map(1, table: 1, page: 0)          // B's own directory entry, then shared:
        let pde = try #require(try g.spaces[0].entry(g.va(table: 0, page: 0), level: 2)).value
        try g.spaces[1].setEntry(g.va(table: 0, page: 0), level: 2, value: pde, by: g.cpu)
        try g.switchTo(0)
        #expect(try g.read(g.va(table: 0, page: 0)).isOK)
        _ = try g.map(0, table: 0, page: 1)          // the shared table goes unsync
        try g.switchTo(1)
        _ = try g.read(g.va(table: 0, page: 1))      // B finds the unsync page by lookup
        return (g.mmu.stats, g.vcpuStats)
    }

    @Test func linkUnsyncIsWhatThePlantedBugForces() throws {
        let planted = try sharedTableFlow(KVMUnsync(), bug: .linkUnsyncWithoutSync)
        let decided = try sharedTableFlow(LinkUnsyncPolicy())
        let kvm = try sharedTableFlow(KVMUnsync())
        #expect(planted.0.fields.map(\.value) == decided.0.fields.map(\.value))
        #expect(planted.1 == decided.1)
        #expect(kvm.0.pagesSynced > decided.0.pagesSynced, "KVM syncs the page it finds; linkUnsync does not")
    }
}

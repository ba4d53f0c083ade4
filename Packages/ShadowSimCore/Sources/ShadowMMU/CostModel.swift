import X86

/// Cycle costs of MMU events, for estimates. Each cost's default and where it comes from
/// is in docs/costs.md; every cost is charged once, by exactly one counter.
public struct CostModel: Equatable, Sendable {
    /// VM exit + entry (world switch): every exit, whatever its reason.
    public var exit = 2_000.0
    /// One level of a software walk of guest tables (the shadow fault path's).
    public var guestWalkLevel = 40.0
    /// Decoding and emulating one instruction.
    public var emulation = 1_500.0
    /// Comparing or rebuilding one spte during a sync.
    public var syncEntry = 30.0
    /// Allocating and initialising a shadow page.
    public var allocShadowPage = 600.0
    /// Clearing one present spte when a page is zapped.
    public var zapEntry = 10.0
    /// Making one spte read-only.
    public var writeProtectEntry = 20.0
    /// A local TLB flush.
    public var localFlush = 300.0
    /// Sending one IPI and the target's exit, flush and re-entry.
    public var remoteFlushTarget = 4_000.0
    /// One memory reference of a hardware walk on a TLB miss: a level of shadow, native
    /// or (in a two-dimensional walk) guest tables, or a level of an EPT walk.
    public var hardwareWalkLevel = 25.0
    /// Handling an EPT/NPT violation beyond its exit (which `exit` charges): looking up
    /// the host page and installing the EPT entry.
    public var eptViolation = 1_000.0
    /// Walking one entry of a host-wide or per-VM unsync list.
    public var listEntry = 15.0
    /// Checking and writing one guest entry of a paravirtual update batch (its shadows'
    /// re-derivation is charged as sync work).
    public var pvUpdateEntry = 60.0

    public init() {}

    public var fields: [(name: String, value: Double)] {
        [("exit", exit), ("guest_walk_level", guestWalkLevel), ("emulation", emulation), ("sync_entry", syncEntry),
         ("alloc_shadow_page", allocShadowPage), ("zap_entry", zapEntry), ("write_protect_entry", writeProtectEntry),
         ("local_flush", localFlush), ("remote_flush_target", remoteFlushTarget),
         ("hardware_walk_level", hardwareWalkLevel), ("ept_violation", eptViolation),
         ("list_entry", listEntry), ("pv_update_entry", pvUpdateEntry)]
    }

    /// Sets a cost by its report name; false when there is no such cost.
    public mutating func set(_ name: String, _ value: Double) -> Bool {
        switch name {
        case "exit": exit = value
        case "guest_walk_level": guestWalkLevel = value
        case "emulation": emulation = value
        case "sync_entry": syncEntry = value
        case "alloc_shadow_page": allocShadowPage = value
        case "zap_entry": zapEntry = value
        case "write_protect_entry": writeProtectEntry = value
        case "local_flush": localFlush = value
        case "remote_flush_target": remoteFlushTarget = value
        case "hardware_walk_level": hardwareWalkLevel = value
        case "ept_violation": eptViolation = value
        case "list_entry": listEntry = value
        case "pv_update_entry": pvUpdateEntry = value
        default: return false
        }
        return true
    }
}

/// Estimated cycles split by what they pay for: each component is one counter times
/// one cost, so the components add up to the estimate and none is counted twice.
public struct CycleBreakdown: Equatable, Sendable {
    /// Component name → cycles, in a fixed order (zero components included).
    public private(set) var components: [(name: String, cycles: Double)] = []

    public init() {}

    public var total: Double { components.reduce(0) { $0 + $1.cycles } }

    mutating func add(_ name: String, _ count: UInt64, _ cost: Double) {
        let cycles = Double(count) * cost
        if let i = components.firstIndex(where: { $0.name == name }) {
            components[i].cycles += cycles
        } else {
            components.append((name, cycles))
        }
    }

    public static func + (a: CycleBreakdown, b: CycleBreakdown) -> CycleBreakdown {
        var r = a
        for (name, cycles) in b.components {
            if let i = r.components.firstIndex(where: { $0.name == name }) { r.components[i].cycles += cycles } else { r.components.append((name, cycles)) }
        }
        return r
    }

    public static func == (a: CycleBreakdown, b: CycleBreakdown) -> Bool {
        a.components.map(\.name) == b.components.map(\.name) && a.components.map(\.cycles) == b.components.map(\.cycles)
    }

    /// What one vCPU's own work costs: its exits, walks, emulation and flushes.
    /// `hardwareWalks` are its TLB misses walked by the hardware without a hypervisor's
    /// help (shadow walks and walks nested from CR3, or every walk on bare metal), each
    /// reading `walkLevels` levels; the EPT references of two-dimensional walks are
    /// `nested_walk_host_refs`.
    public static func vcpu(_ s: VCPUMMUStats, hardwareWalks: UInt64, walkLevels: Int, costs c: CostModel) -> CycleBreakdown {
        var b = CycleBreakdown()
        b.add("exits", s.exits, c.exit)
        b.add("guest_walks", s.guestWalkLevels, c.guestWalkLevel)
        b.add("emulation", s.insnEmulation, c.emulation)
        b.add("local_flushes", s.tlbFlush, c.localFlush)
        b.add("hardware_walks", hardwareWalks, Double(walkLevels) * c.hardwareWalkLevel)
        b.add("nested_walk_host_refs", s.nestedWalkHostRefs, c.hardwareWalkLevel)
        b.add("ept_violations", s.eptViolations, c.eptViolation)
        return b
    }

    /// What the VM-wide MMU work costs: syncs, allocation, zaps, write protection, IPIs
    /// and list walks.
    public static func mmu(_ s: MMUStats, costs c: CostModel) -> CycleBreakdown {
        var b = CycleBreakdown()
        b.add("sync", s.sptesResynced, c.syncEntry)
        b.add("shadow_page_allocation", s.mmuCacheMiss, c.allocShadowPage)
        b.add("zaps", s.sptesZapped, c.zapEntry)
        b.add("write_protection", s.writeProtections, c.writeProtectEntry)
        b.add("remote_flushes", s.remoteFlushTargets, c.remoteFlushTarget)
        b.add("list_walks", s.listEntriesWalked, c.listEntry)
        b.add("pv_updates", s.pvUpdates, c.pvUpdateEntry)
        return b
    }

    /// A machine with no hypervisor: only the hardware walks of its TLB misses (every
    /// other component is there, at zero, so runs under any policy have the same rows).
    public static func bareMetal(_ machine: Machine, costs c: CostModel = CostModel()) -> (vm: CycleBreakdown, perVCPU: [CycleBreakdown]) {
        let perVCPU = machine.vcpus.map { v in
            vcpu(VCPUMMUStats(), hardwareWalks: v.counters.walks, walkLevels: machine.mode.levels, costs: c)
        }
        return (perVCPU.reduce(CycleBreakdown(), +) + mmu(MMUStats(), costs: c), perVCPU)
    }
}

extension ShadowMMU {
    /// Estimated cycles of each vCPU (its exits, walks, emulation and flushes) and of the
    /// VM-wide MMU work, from the counters and `configuration.costs`.
    public func cycleBreakdown() -> (vm: CycleBreakdown, perVCPU: [CycleBreakdown]) {
        let c = configuration.costs
        let levels = max(machine.mode.levels, 2)
        let perVCPU = vcpus.map {
            CycleBreakdown.vcpu($0.stats, hardwareWalks: $0.stats.shadowWalks + $0.stats.tdpWalks, walkLevels: levels, costs: c)
        }
        let vm = perVCPU.reduce(CycleBreakdown(), +) + CycleBreakdown.mmu(stats, costs: c)
        return (vm, perVCPU)
    }

    /// `cycleBreakdown()` as totals.
    public func estimatedCycles() -> (vm: Double, perVCPU: [Double]) {
        let b = cycleBreakdown()
        return (b.vm.total, b.perVCPU.map(\.total))
    }
}

/// Event counts of one vCPU.
public struct VCPUCounters: Equatable, Sendable {
    public var reads: UInt64 = 0
    public var writes: UInt64 = 0
    public var fetches: UInt64 = 0
    public var tlbHits: UInt64 = 0
    public var tlbMisses: UInt64 = 0
    public var walks: UInt64 = 0
    /// A/D flag updates made by walks.
    public var adUpdates: UInt64 = 0
    public var pfNotPresent: UInt64 = 0
    public var pfProtection: UInt64 = 0
    public var pfReserved: UInt64 = 0
    public var gp: UInt64 = 0
    public var cr3Loads: UInt64 = 0
    public var cr3NoFlush: UInt64 = 0
    public var invlpg: UInt64 = 0
    public var invpcid: UInt64 = 0
    /// Flushes of one PCID's (or every PCID's) non-global entries.
    public var tlbFlushPCID: UInt64 = 0
    /// Flushes of everything, globals included.
    public var tlbFlushAll: UInt64 = 0

    public init() {}

    public mutating func countPageFault(_ code: UInt32) {
        if code & PageFaultCode.reservedBit != 0 {
            pfReserved &+= 1
        } else if code & PageFaultCode.present != 0 {
            pfProtection &+= 1
        } else {
            pfNotPresent &+= 1
        }
    }

    /// Every counter by its report name, in a fixed order.
    public var fields: [(name: String, value: UInt64)] {
        [("reads", reads), ("writes", writes), ("fetches", fetches),
         ("tlb_hits", tlbHits), ("tlb_misses", tlbMisses), ("walks", walks), ("ad_updates", adUpdates),
         ("pf_not_present", pfNotPresent), ("pf_protection", pfProtection), ("pf_reserved", pfReserved),
         ("gp", gp), ("cr3_loads", cr3Loads), ("cr3_noflush", cr3NoFlush), ("invlpg", invlpg),
         ("invpcid", invpcid), ("tlb_flush_pcid", tlbFlushPCID), ("tlb_flush_all", tlbFlushAll)]
    }

    /// Element-wise sum, for per-VM totals.
    public static func + (a: VCPUCounters, b: VCPUCounters) -> VCPUCounters {
        var r = VCPUCounters()
        r.reads = a.reads &+ b.reads; r.writes = a.writes &+ b.writes; r.fetches = a.fetches &+ b.fetches
        r.tlbHits = a.tlbHits &+ b.tlbHits; r.tlbMisses = a.tlbMisses &+ b.tlbMisses
        r.walks = a.walks &+ b.walks; r.adUpdates = a.adUpdates &+ b.adUpdates
        r.pfNotPresent = a.pfNotPresent &+ b.pfNotPresent; r.pfProtection = a.pfProtection &+ b.pfProtection
        r.pfReserved = a.pfReserved &+ b.pfReserved; r.gp = a.gp &+ b.gp
        r.cr3Loads = a.cr3Loads &+ b.cr3Loads; r.cr3NoFlush = a.cr3NoFlush &+ b.cr3NoFlush
        r.invlpg = a.invlpg &+ b.invlpg; r.invpcid = a.invpcid &+ b.invpcid
        r.tlbFlushPCID = a.tlbFlushPCID &+ b.tlbFlushPCID; r.tlbFlushAll = a.tlbFlushAll &+ b.tlbFlushAll
        return r
    }
}

/// How to build a machine.
public struct MachineConfiguration: Sendable {
    public var mode: PagingMode
    public var vcpuCount: Int = 1
    public var memoryBytes: UInt64 = 64 << 20
    public var maxPhysAddr: Int = 46
    /// Initial control bits of every vCPU.
    public var cr0WP = true
    public var cr4PSE = true
    public var cr4PGE = true
    public var cr4SMEP = false
    public var cr4SMAP = false
    public var eferNXE = true
    /// TLB entries per vCPU for 4 KiB pages (a power of two).
    public var tlbEntries = 1024

    public init(mode: PagingMode) { self.mode = mode }

    /// The largest vCPU count a machine accepts.
    public static let maxVCPUs = 256
}

/// A guest: its physical memory and its vCPUs, all in one paging mode.
public final class Machine {
    public let configuration: MachineConfiguration
    public let memory: GuestMemory
    public let vcpus: [VCPU]

    public init(_ config: MachineConfiguration) throws(MachineError) {
        guard (1...MachineConfiguration.maxVCPUs).contains(config.vcpuCount) else {
            throw .invalidArgument("a VM needs 1…\(MachineConfiguration.maxVCPUs) vCPUs, got \(config.vcpuCount)")
        }
        guard PagingControls.maxPhysAddrRange.contains(config.maxPhysAddr) else {
            throw .invalidArgument("maxphyaddr must be 32…52, got \(config.maxPhysAddr)")
        }
        let limit: UInt64 = config.mode.isLongMode ? (1 << UInt64(config.maxPhysAddr)) : (1 << 32)
        guard config.memoryBytes <= limit else {
            throw .invalidArgument("\(hex(config.memoryBytes)) bytes of memory exceed what \(config.mode) paging with maxphyaddr \(config.maxPhysAddr) addresses")
        }
        guard config.tlbEntries >= 4, config.tlbEntries <= 1 << 20, config.tlbEntries & (config.tlbEntries - 1) == 0 else {
            throw .invalidArgument("tlb_entries must be a power of two from 4 to 1048576, got \(config.tlbEntries)")
        }
        configuration = config
        let memory = try GuestMemory(capacity: config.memoryBytes)
        self.memory = memory
        var cr0 = CR0.pe | CR0.et | CR0.pg
        if config.cr0WP { cr0 |= CR0.wp }
        var cr4: UInt64 = 0
        switch config.mode {
        case .legacy32: break
        case .pae, .long4: cr4 |= CR4.pae
        case .long5: cr4 |= CR4.pae | CR4.la57
        }
        if config.cr4PSE { cr4 |= CR4.pse }   // only 32-bit paging looks at it
        if config.cr4PGE { cr4 |= CR4.pge }
        if config.cr4SMEP { cr4 |= CR4.smep }
        if config.cr4SMAP { cr4 |= CR4.smap }
        var efer: UInt64 = config.mode.isLongMode ? EFER.lme | EFER.lma : 0
        if config.eferNXE { efer |= EFER.nxe }
        vcpus = (0..<config.vcpuCount).map {
            VCPU(index: $0, memory: memory, mode: config.mode, cr0: cr0, cr4: cr4, efer: efer,
                 maxPhysAddr: config.maxPhysAddr,
                 tlb: TLB(smallEntries: config.tlbEntries, largeEntries: max(4, config.tlbEntries / 16),
                          hugeEntries: max(4, config.tlbEntries / 64)))
        }
    }

    public var mode: PagingMode { configuration.mode }

    /// Counters summed over every vCPU.
    public var counters: VCPUCounters { vcpus.reduce(VCPUCounters()) { $0 + $1.counters } }

    // MARK: Host-side physical access (as a device or the loader would do it)

    /// Reads guest-physical memory; out-of-range addresses are errors.
    public func readPhysical(_ address: UInt64, size: Int) throws(MachineError) -> UInt64 {
        try checkPhysical(address, size: size)
        return memory.load(address, size: size)
    }

    /// Writes guest-physical memory. Not a guest store: nothing traps on it.
    public func writePhysical(_ address: UInt64, _ value: UInt64, size: Int) throws(MachineError) {
        try checkPhysical(address, size: size)
        try vcpus.first?.observer?.willStore(nil, physicalAddress: address, size: size)
        memory.store(address, value, size: size)
    }

    /// Fills `count` bytes of guest-physical memory with `byte`, as the loader would.
    public func fillPhysical(_ address: UInt64, count: Int, byte: UInt8) throws(MachineError) {
        guard count >= 0, memory.contains(address, size: 1), memory.contains(address + UInt64(max(count, 1) - 1), size: 1) else {
            throw .unbackedMemory(address: address, capacity: memory.capacity, what: "physical fill")
        }
        try vcpus.first?.observer?.willStore(nil, physicalAddress: address, size: count)
        memory.fill(address, count: count, byte: byte)
    }

    private func checkPhysical(_ address: UInt64, size: Int) throws(MachineError) {
        guard size == 1 || size == 2 || size == 4 || size == 8 else {
            throw .invalidArgument("access size must be 1, 2, 4 or 8 bytes, got \(size)")
        }
        guard memory.contains(address, size: size) else {
            throw .unbackedMemory(address: address, capacity: memory.capacity, what: "physical access")
        }
    }
}

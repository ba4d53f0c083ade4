import X86
import GuestKernel
import ShadowMMU
import Checker
import ShadowSimPolicies

/// Turns fuzzer bytes into a guest — one to three VMs, each with vCPUs, processes and
/// frames — and a sequence of operations a guest kernel does to its page tables, then
/// runs that same sequence under every policy with the architectural checker attached.
///
/// The operations are weighted the way real guests behave towards a shadow MMU (see
/// `FuzzWorld`): most accesses go to a small working set of pages whose tables are
/// already shadowed, and most page-table stores rewrite present entries of those tables
/// (rights only, or the frame only, with A and D set), so tables go unsync and get
/// synced, resynced by INVLPG, recycled and flooded. An operation the model refuses with
/// an argument error is skipped; a checker violation, a broken shadow-MMU invariant or an
/// engine that makes no progress is a finding (`FuzzFinding`).
///
/// An input is explicit choices followed by a seed: once its bytes run out, the reader
/// goes on with a pseudo-random stream derived from them, so even a short input is a
/// full program and libFuzzer's first random inputs already exercise synchronisation.
public struct FuzzProgram {
    /// Upper bound on operations per input and policy, so one input stays fast.
    public static let maxOperations = 512
    /// Operations an input gets at least (the stream after its bytes supplies them).
    public static let minOperations = 128
    /// Every policy an input runs under: the hardware reference and each built-in.
    public static let policies = [PolicyCatalog.bareMetalName] + PolicyCatalog.builtins.map(\.name)

    let bytes: [UInt8]
    /// A bug planted in every shadow MMU (to show that the fuzzer finds what it should).
    let plantedBug: PlantedBug?
    /// Attach the architectural checker (without it the vCPUs take their fast paths,
    /// which must change no result: a test compares the two traces).
    let checked: Bool

    public init(_ bytes: [UInt8], plantedBug: PlantedBug? = nil, checked: Bool = true) {
        self.bytes = bytes
        self.plantedBug = plantedBug
        self.checked = checked
    }

    /// Operations this input runs under each policy.
    var operationCount: Int { min(FuzzProgram.maxOperations, FuzzProgram.minOperations + bytes.count / 8) }

    /// What running one input did.
    public struct Outcome: Sendable {
        public var operations = 0
        public var skipped = 0
        public var checkedAccesses: UInt64 = 0
        /// Per policy: the sync machinery the input exercised.
        public var coverage: [String: SyncCoverage] = [:]
    }

    /// Runs the input under each of `policies`; throws the first finding. `trace`
    /// receives a line per operation (to read a finding's history).
    public func run(policies: [String] = FuzzProgram.policies, trace: ((String) -> Void)? = nil) throws(FuzzFinding) -> Outcome {
        var total = Outcome()
        for policy in policies {
            var world = FuzzWorld(bytes: bytes, policy: policy, operations: operationCount, plantedBug: plantedBug,
                                  checked: checked)
            world.trace = trace
            try world.build()
            try world.runOperations()
            total.operations += world.operations
            total.skipped += world.skipped
            total.checkedAccesses += world.checkedAccesses
            total.coverage[policy, default: SyncCoverage()] += world.coverage
        }
        return total
    }
}

/// How much of the sync machinery a run exercised, summed over its VMs: what the fuzz
/// pass prints per policy and holds to its floors.
public struct SyncCoverage: Sendable, Equatable {
    public var unsyncEvents: UInt64 = 0
    public var pagesSynced: UInt64 = 0
    public var invlpgResyncs: UInt64 = 0
    public var syncSPTEsDropped: UInt64 = 0
    public var recycled: UInt64 = 0
    public var floodZaps: UInt64 = 0
    public var remoteFlushRequests: UInt64 = 0
    public var emulatedTableWrites: UInt64 = 0
    public var pvUpdates: UInt64 = 0
    /// Agile paging's switches of guest tables to nested mode and back.
    public var tablesToNested: UInt64 = 0
    public var tablesToShadow: UInt64 = 0

    public init() {}

    init(_ s: MMUStats) {
        unsyncEvents = s.unsyncEvents
        pagesSynced = s.pagesSynced
        invlpgResyncs = s.invlpgResyncs
        syncSPTEsDropped = s.syncSPTEsDropped
        recycled = s.mmuRecycled
        floodZaps = s.mmuFlooded
        remoteFlushRequests = s.remoteTLBFlushRequests
        emulatedTableWrites = s.mmuPTEWrite
        pvUpdates = s.pvUpdates
        tablesToNested = s.tablesToNested
        tablesToShadow = s.tablesToShadow
    }

    /// Name (as the fuzz pass prints it and floors name it) and value.
    public var fields: [(name: String, value: UInt64)] {
        [("unsync_events", unsyncEvents), ("pages_synced", pagesSynced), ("invlpg_resyncs", invlpgResyncs),
         ("sync_sptes_dropped", syncSPTEsDropped), ("recycled", recycled), ("flood_zaps", floodZaps),
         ("remote_flush_requests", remoteFlushRequests), ("emulated_table_writes", emulatedTableWrites),
         ("pv_updates", pvUpdates), ("to_nested", tablesToNested), ("to_shadow", tablesToShadow)]
    }

    public static func += (a: inout SyncCoverage, b: SyncCoverage) {
        a.unsyncEvents &+= b.unsyncEvents; a.pagesSynced &+= b.pagesSynced; a.invlpgResyncs &+= b.invlpgResyncs
        a.syncSPTEsDropped &+= b.syncSPTEsDropped; a.recycled &+= b.recycled; a.floodZaps &+= b.floodZaps
        a.remoteFlushRequests &+= b.remoteFlushRequests; a.emulatedTableWrites &+= b.emulatedTableWrites
        a.pvUpdates &+= b.pvUpdates; a.tablesToNested &+= b.tablesToNested; a.tablesToShadow &+= b.tablesToShadow
    }
}

/// A result the model must never produce: the policy, the operation and the message.
public struct FuzzFinding: Error, CustomStringConvertible {
    public let policy: String
    public let operation: Int
    public let message: String
    public var description: String { "policy \(policy), operation \(operation): \(message)" }
}

/// Reads the input a little at a time; past its end, a splitmix64 stream seeded by a
/// hash of the input goes on supplying bytes.
struct ByteReader {
    let bytes: [UInt8]
    var position = 0
    private var state: UInt64
    private var buffered: UInt64 = 0
    private var bufferedCount = 0

    init(bytes: [UInt8]) {
        self.bytes = bytes
        // FNV-1a over the input: every byte of it changes the stream.
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        state = h
    }

    mutating func byte() -> UInt8 {
        if position < bytes.count {
            defer { position += 1 }
            return bytes[position]
        }
        if bufferedCount == 0 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            buffered = z ^ (z >> 31)
            bufferedCount = 8
        }
        defer { buffered >>= 8; bufferedCount -= 1 }
        return UInt8(truncatingIfNeeded: buffered)
    }

    mutating func word() -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(byte()) << (8 * i) }
        return v
    }

    /// A value in 0..<n (n > 0).
    mutating func pick(_ n: Int) -> Int { Int(byte()) % n }

    /// True with probability about `numerator`/256.
    mutating func chance(_ numerator: Int) -> Bool { Int(byte()) < numerator }
}

/// One VM of a fuzz world: its machine, MMU, checker, kernel, spaces and frames.
final class FuzzVM {
    let machine: Machine
    let mmu: ShadowMMU?
    let checker: ArchitecturalChecker?
    let kernel: GuestKernel
    var spaces: [AddressSpace] = []
    /// Frames the guest allocated for data (and that entries may point at).
    var frames: [UInt64] = []
    /// The working set: user pages in four regions (two share a page directory, one is
    /// on the 1 GiB line, one at the top of the user half), eight pages each.
    let hot: [UInt64]

    init(machine: Machine, mmu: ShadowMMU?, kernel: GuestKernel, checked: Bool) {
        self.machine = machine
        self.mmu = mmu
        self.kernel = kernel
        checker = checked ? ArchitecturalChecker(machine: machine, mmu: mmu) : nil
        // Fuzzing tests the checker's own shortcut too: the incremental MMU verification
        // must agree with the full one (checked at every fourth sync point, and in full at
        // the end of every run).
        checker?.verification = .crossCheckedEvery(4)
        let regions: [UInt64] = machine.mode.isLongMode
            ? [0x40_0000, 0x60_0000, 0x4000_0000, 0x7FFF_FFE0_0000]
            : [0x40_0000, 0x60_0000, 0x4000_0000, 0xBF80_0000]
        hot = regions.flatMap { base in (0..<8).map { base + UInt64($0) << 12 } }
    }

    var mode: PagingMode { machine.mode }
}

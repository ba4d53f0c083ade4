import X86
import GuestKernel
import ShadowMMU
import Checker
import ShadowSimPolicies

/// Turns fuzzer bytes into a scenario — several VMs, each with several vCPUs, address
/// spaces and frames — and a sequence of operations on it, then runs that same
/// sequence under every policy with the architectural checker attached.
///
/// The bytes only choose among operations a guest kernel could do (map, unmap, raw
/// entry stores, accesses at CPL 0 and 3, MOV to CR3 with PCIDs, INVLPG, INVPCID, CR0
/// and CR4 toggles, host stores to its frames). An operation the model refuses with an
/// argument error is skipped; a checker violation, a broken shadow-MMU invariant or an
/// engine that makes no progress is a finding (`FuzzFinding`).
public struct FuzzProgram {
    /// Upper bound on operations per input, so one input stays fast.
    public static let maxOperations = 4096
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

    /// What running one input under every policy did.
    public struct Outcome: Sendable {
        public var operations = 0
        public var skipped = 0
        public var checkedAccesses: UInt64 = 0
        var failures = 0
    }

    /// Runs the input under each of `policies`; throws the first finding. `trace`
    /// receives a line per operation (to read a finding's history).
    public func run(policies: [String] = FuzzProgram.policies, trace: ((String) -> Void)? = nil) throws(FuzzFinding) -> Outcome {
        var total = Outcome()
        for policy in policies {
            var world = FuzzWorld(bytes: bytes, policy: policy, plantedBug: plantedBug, checked: checked)
            world.trace = trace
            try world.build()
            try world.runOperations()
            total.operations += world.outcome.operations
            total.skipped += world.outcome.skipped
            total.checkedAccesses += world.checkedAccesses
            total.failures += world.outcome.skipped
        }
        return total
    }
}

/// A result the model must never produce: the policy, the operation and the message.
public struct FuzzFinding: Error, CustomStringConvertible {
    public let policy: String
    public let operation: Int
    public let message: String
    public var description: String { "policy \(policy), operation \(operation): \(message)" }
}

/// Reads the input a little at a time; past the end every read is 0.
struct ByteReader {
    let bytes: [UInt8]
    var position = 0

    var isAtEnd: Bool { position >= bytes.count }

    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func word() -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(byte()) << (8 * i) }
        return v
    }

    /// A value in 0..<n (n > 0).
    mutating func pick(_ n: Int) -> Int { Int(byte()) % n }
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

    init(machine: Machine, mmu: ShadowMMU?, kernel: GuestKernel, checked: Bool) {
        self.machine = machine
        self.mmu = mmu
        self.kernel = kernel
        checker = checked ? ArchitecturalChecker(machine: machine, mmu: mmu) : nil
        // Fuzzing tests the checker's own shortcut too: the incremental MMU verification
        // must agree with the full one at every sync point.
        checker?.verification = .crossChecked
    }

    var mode: PagingMode { machine.mode }
}

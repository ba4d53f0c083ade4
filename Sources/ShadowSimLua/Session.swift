import X86
import GuestKernel

/// Everything one scenario run owns besides its Lua state: the seed and random
/// stream, the VMs it created (so their counters can be reported even when the script
/// fails) and the values it recorded.
public final class Session {
    public let seed: UInt64
    public let scriptArguments: [String]
    public private(set) var vms: [ScenarioVM] = []
    /// Values the script stored with `shadowsim.record`, in the order first recorded.
    public private(set) var records: [(key: String, value: JSONValue)] = []
    var random: Xoshiro256

    public init(seed: UInt64, arguments: [String]) {
        self.seed = seed
        scriptArguments = arguments
        random = Xoshiro256(seed: seed)
    }

    func add(_ vm: ScenarioVM) { vms.append(vm) }

    func record(_ key: String, _ value: JSONValue) {
        if let i = records.firstIndex(where: { $0.key == key }) {
            records[i].value = value
        } else {
            records.append((key, value))
        }
    }

    /// Counters and records as a JSON object (stable key order).
    public func report(script: String, status: String, error: String?) -> JSONValue {
        var fields: [(String, JSONValue)] = [
            ("tool", .string("shadowsim \(shadowSimVersion)")),
            ("script", .string(script)),
            ("seed", .integer(Int64(bitPattern: seed))),
            ("status", .string(status)),
        ]
        if let error { fields.append(("error", .string(error))) }
        fields.append(("vms", .array(vms.map { $0.report() })))
        fields.append(("records", .object(records.map { ($0.key, $0.value) })))
        return .object(fields)
    }
}

/// The version printed by the CLI and written into reports.
public let shadowSimVersion = "0.1.0"

/// A VM as a scenario sees it: the machine plus its guest kernel.
public final class ScenarioVM {
    public let name: String
    public let machine: Machine
    public let kernel: GuestKernel

    init(name: String, machine: Machine, kernel: GuestKernel) {
        self.name = name
        self.machine = machine
        self.kernel = kernel
    }

    func report() -> JSONValue {
        .object([
            ("name", .string(name)),
            ("mode", .string(machine.mode.description)),
            ("vcpus", .integer(Int64(machine.vcpus.count))),
            ("memory_bytes", .integer(Int64(machine.memory.capacity))),
            ("resident_bytes", .integer(Int64(machine.memory.residentBytes))),
            ("counters", counterObject(machine.counters)),
            ("per_vcpu", .array(machine.vcpus.map { counterObject($0.counters) })),
        ])
    }
}

func counterObject(_ c: VCPUCounters) -> JSONValue {
    .object(c.fields.map { ($0.name, .integer(Int64(bitPattern: $0.value))) })
}

/// xoshiro256** seeded through splitmix64: the same seed gives the same stream on
/// every platform and Lua version.
struct Xoshiro256 {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    /// Uniform in 0..<bound without modulo bias.
    mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        let limit = UInt64.max - UInt64.max % bound
        while true {
            let v = next()
            if v < limit { return v % bound }
        }
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}

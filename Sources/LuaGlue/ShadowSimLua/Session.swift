import X86
import GuestKernel
import ShadowMMU
import Checker
import ShadowSimPolicies
import LinuxReplay

/// Everything one scenario run owns besides its Lua state: the seed and random
/// stream, the VMs it created (so their counters can be reported even when the script
/// fails) and the values it recorded.
public final class Session {
    public let seed: UInt64
    public let scriptArguments: [String]
    /// `name=value` parameters (`--param`, or a sweep's point), as `shadowsim.params`.
    public let parameters: [(name: String, value: String)]
    /// The policy of VMs that do not name one (`--policy`).
    public let defaultPolicy: String
    /// Attach the architectural checker to every VM (`--check`), and verify the MMU
    /// after every event rather than at sync points (`--paranoid`).
    public let check: Bool
    public let paranoid: Bool
    /// A bug planted in every shadow MMU (`--inject-bug`).
    public let plantedBug: PlantedBug?
    public private(set) var vms: [ScenarioVM] = []
    /// What the session's VMs share (host-wide policy state).
    public let host = SimulationHost()
    /// Values the script stored with `shadowsim.record`, in the order first recorded.
    public private(set) var records: [(key: String, value: JSONValue)] = []
    var random: Xoshiro256
    /// Samples of cumulative events over the run (`--trace`): operations done, page
    /// faults taken, sync work, TLB flushes. At most 1024: when full, every other
    /// sample goes and sampling slows down by half.
    public internal(set) var timeline: [(ops: UInt64, faults: UInt64, sync: UInt64, flushes: UInt64)]?
    private var sampleEvery = 1
    private var sampleTick = 0
    /// Where the MMUs of the session's VMs trace their events (`--mmu-trace`), if anywhere.
    public var mmuTrace: MMUTraceSink?
    /// Phase markers (`shadowsim.mark`): each label with every VM's counters when it was
    /// set, so the report gives each phase's counter deltas.
    private var marks: [(label: String, counters: [[(name: String, value: UInt64)]])] = []

    /// A second backend that runs the session's guest too (`--backend kvm`): told of every
    /// VM made (before the script uses it) and every phase marker.
    public var vmMade: ((ScenarioVM) throws(VMError) -> Void)?
    public var marked: ((String) -> Void)?
    /// Give every VM a user-mode physmap (the layout `--backend kvm` needs; see GuestKernel).
    public var userPhysmap = false
    /// Applied to every VM's MMU settings after the script's (a backend's requirements).
    public var adjustMMU: ((inout ShadowMMUConfiguration) -> Void)?

    /// Starts a phase: marks the MMU trace and remembers where the counters stood.
    func mark(_ label: String) {
        marked?(label)
        mmuTrace?.mark(label)
        marks.append((label, vms.map(\.counters)))
    }

    /// Per phase: its label and, per VM, the counters that moved during it (VMs made
    /// during a phase count from zero).
    private func phaseObjects() -> JSONValue {
        let end = vms.map(\.counters)
        return .array(marks.enumerated().map { i, mark in
            let next = i + 1 < marks.count ? marks[i + 1].counters : end
            return .object([("label", .string(mark.label)), ("vms", .array(vms.indices.compactMap { v in
                guard v < next.count else { return nil }
                let before = v < mark.counters.count ? mark.counters[v] : []
                var moved: [(String, JSONValue)] = []
                for c in next[v] {
                    let old = before.first { $0.name == c.name }?.value ?? 0
                    if c.value != old { moved.append((c.name, .integer(Int64(bitPattern: c.value &- old)))) }
                }
                return .object([("name", .string(vms[v].name)), ("counters", .object(moved))])
            }))])
        })
    }

    func sampleTimeline() {
        guard timeline != nil else { return }
        sampleTick += 1
        guard sampleTick >= sampleEvery else { return }
        sampleTick = 0
        var ops: UInt64 = 0, faults: UInt64 = 0, sync: UInt64 = 0, flushes: UInt64 = 0
        for vm in vms {
            let c = vm.machine.counters
            ops &+= c.reads &+ c.writes &+ c.fetches &+ c.cr3Loads &+ c.invlpg &+ c.invpcid
            let fields = vm.counters
            func value(_ name: String) -> UInt64 { fields.first { $0.name == name }?.value ?? 0 }
            faults &+= vm.mmu == nil ? c.pfNotPresent &+ c.pfProtection &+ c.pfReserved : value("pf_taken")
            sync &+= value("pages_synced") &+ value("sptes_resynced")
            flushes &+= value("tlb_flush") &+ c.tlbFlushPCID &+ c.tlbFlushAll
        }
        if let last = timeline?.last, last.ops == ops { return }
        timeline!.append((ops, faults, sync, flushes))
        if timeline!.count > 1024 {
            timeline = timeline!.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)
            sampleEvery *= 2
        }
    }

    public init(seed: UInt64, arguments: [String], parameters: [(name: String, value: String)] = [],
                defaultPolicy: String = "kvm-unsync", check: Bool = false,
                paranoid: Bool = false, plantedBug: PlantedBug? = nil) {
        self.parameters = parameters
        self.plantedBug = plantedBug
        self.seed = seed
        self.defaultPolicy = defaultPolicy
        self.check = check
        self.paranoid = paranoid
        scriptArguments = arguments
        random = Xoshiro256(seed: seed)
    }

    func add(_ vm: ScenarioVM) { vms.append(vm) }

    /// A VM of this session: the machine, its guest kernel, the shadow MMU of `policy`
    /// (none for bare metal) and the checker when `check`. Errors: a policy that does
    /// not load, a machine that cannot be built.
    public func makeVM(_ config: MachineConfiguration, name: String, policy policyName: String,
                       mmu mmuConfig: ShadowMMUConfiguration, check: Bool, boot: Bool = true) throws(VMError) -> ScenarioVM {
        var factory: PolicyFactory?
        if policyName != PolicyCatalog.bareMetalName {
            do { factory = try PolicyCatalog.factory(policyName) } catch { throw VMError(description: error.description) }
        }
        if userPhysmap && config.mode != .long4 {
            throw VMError(description: "--backend kvm runs long4 guests (kvm-pvm runs long mode only; the backend builds 4-level tables), not \(config.mode)")
        }
        do {
            let machine = try Machine(config)
            var mmu: ShadowMMU?
            if let factory {
                let policy: any SyncPolicy
                do { policy = try factory.make() } catch { throw VMError(description: error.description) }
                var mmuConfig = mmuConfig
                adjustMMU?(&mmuConfig)
                mmu = ShadowMMU(machine: machine, policy: policy, configuration: mmuConfig, host: host)
                mmu?.traceEvents(to: mmuTrace, vm: vms.count)
            }
            let kernel = try GuestKernel(machine: machine, boot: boot, userPhysmap: userPhysmap)
            let checker = check ? ArchitecturalChecker(machine: machine, mmu: mmu, paranoid: paranoid) : nil
            let vm = ScenarioVM(name: name, machine: machine, kernel: kernel, mmu: mmu, checker: checker)
            add(vm)
            try vmMade?(vm)
            return vm
        } catch let e as VMError {
            throw e
        } catch {
            throw VMError(description: "\(error)")
        }
    }

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
            ("params", .object(parameters.map { ($0.name, parameterValue($0.value)) })),
            ("status", .string(status)),
        ]
        if let error { fields.append(("error", .string(error))) }
        fields.append(("vms", .array(vms.map { $0.report() })))
        // Pooled over the VMs: a distribution cannot be summed VM by VM.
        var pooled = RootLoadSamples()
        for vm in vms { if let m = vm.mmu { pooled.merge(m.rootLoads) } }
        fields.append(("root_loads", rootLoadObject(pooled)))
        if var timeline {
            sampleTimeline()   // the state at the end
            timeline = self.timeline ?? timeline
            fields.append(("timeline", .array(timeline.map { s in
                .object([("ops", .integer(Int64(s.ops))), ("pf_taken", .integer(Int64(s.faults))),
                         ("sync", .integer(Int64(s.sync))), ("tlb_flush", .integer(Int64(s.flushes)))])
            })))
        }
        if !marks.isEmpty { fields.append(("phases", phaseObjects())) }
        fields.append(("records", .object(records.map { ($0.key, $0.value) })))
        return .object(fields)
    }
}

/// Why a VM could not be made.
public struct VMError: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// The version printed by the CLI and written into reports.
public let shadowSimVersion = "0.1.0"

/// A VM as a scenario sees it: the machine, its guest kernel and (unless it runs on
/// bare metal) the shadow MMU its policy drives.
public final class ScenarioVM {
    public let name: String
    public let machine: Machine
    public let kernel: GuestKernel
    public let mmu: ShadowMMU?
    public let checker: ArchitecturalChecker?
    /// The Linux model running on the VM (`shadowsim.linux`, a replay).
    public internal(set) var linux: LinuxKernel?
    /// The traces replayed on it.
    public internal(set) var replays: [(trace: String, record: ReplayRecord)] = []
    /// Why host-side MMU actions (invalidating gfns, dirty logging) are refused on this
    /// VM, when a second backend that cannot make them runs it too.
    public var hostActionsRefused: String?
    /// Disagreements of its replays with their traces, by line (when asked for).
    public internal(set) var explanations: [String] = []

    init(name: String, machine: Machine, kernel: GuestKernel, mmu: ShadowMMU?, checker: ArchitecturalChecker?) {
        self.name = name
        self.machine = machine
        self.kernel = kernel
        self.mmu = mmu
        self.checker = checker
    }

    public var policyName: String { mmu?.policy.name ?? PolicyCatalog.bareMetalName }

    /// Every counter of the VM: the x86 counters summed over vCPUs, then the MMU's (all
    /// zero on bare metal, so every run has the same rows), then the checker's.
    public var counters: [(name: String, value: UInt64)] {
        var fields = machine.counters.fields
        fields += (mmu?.vcpus.reduce(VCPUMMUStats()) { $0 + $1.stats } ?? VCPUMMUStats()).fields
        fields += (mmu?.stats ?? MMUStats()).fields
        if let checker { fields.append(("stale_allowed", checker.staleAllowed.reduce(0, +))) }
        return fields
    }

    /// Counters of one vCPU (x86, then its MMU statistics, then the checker's).
    public func counters(vcpu index: Int) -> [(name: String, value: UInt64)] {
        var fields = machine.vcpus[index].counters.fields
        fields += (mmu?.vcpus[index].stats ?? VCPUMMUStats()).fields
        if let checker { fields.append(("stale_allowed", checker.staleAllowed[index])) }
        return fields
    }

    /// Estimated cycles by component: the MMU's estimate, or hardware walks on bare metal.
    public var cycleBreakdown: (vm: CycleBreakdown, perVCPU: [CycleBreakdown]) {
        mmu?.cycleBreakdown() ?? CycleBreakdown.bareMetal(machine)
    }

    /// Estimated cycles: the total of `cycleBreakdown`.
    public var estimatedCycles: (vm: Double, perVCPU: [Double]) {
        let b = cycleBreakdown
        return (b.vm.total, b.perVCPU.map(\.total))
    }

    func report() -> JSONValue {
        let breakdown = cycleBreakdown
        var fields: [(String, JSONValue)] = [
            ("name", .string(name)),
            ("mode", .string(machine.mode.description)),
            ("policy", .string(policyName)),
            ("vcpus", .integer(Int64(machine.vcpus.count))),
            ("memory_bytes", .integer(Int64(machine.memory.capacity))),
            ("resident_bytes", .integer(Int64(machine.memory.residentBytes))),
            ("estimated_cycles", .integer(Int64(breakdown.vm.total + 0.5))),
            ("estimated_cycles_breakdown", .object(breakdown.vm.components.map { ($0.name, .integer(Int64($0.cycles + 0.5))) })),
            ("checked_accesses", .integer(Int64(checker?.accessesChecked ?? 0))),
            ("unjudged_after_host_stores", .integer(Int64(checker?.hostStoreExemptions ?? 0))),
            ("counters", counterObject(counters)),
            ("root_loads", rootLoadObject(mmu?.rootLoads ?? RootLoadSamples())),
            ("per_vcpu", .array(machine.vcpus.indices.map { counterObject(counters(vcpu: $0)) })),
        ]
        if let linux { fields.append(("linux", linuxObject(linux.stats, options: linux.options))) }
        if !replays.isEmpty { fields.append(("replays", .array(replays.map { replayObject($0.trace, $0.record) }))) }
        if !explanations.isEmpty { fields.append(("explanations", .array(explanations.map { .string($0) }))) }
        return .object(fields)
    }
}

func counterObject(_ fields: [(name: String, value: UInt64)]) -> JSONValue {
    .object(fields.map { ($0.name, .integer(Int64(bitPattern: $0.value))) })
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

/// A parameter's value as Lua and JSON see it: an integer or a number when it reads as
/// one, else the string.
public func parameterValue(_ text: String) -> JSONValue {
    if let i = Int64(text) { return .integer(i) }
    if let d = Double(text), d.isFinite { return .number(d) }
    return .string(text)
}

import X86
import ShadowMMU
import ShadowSimLua

/// `shadowsim run SCRIPT --backend kvm`: the scenario runs in the simulator with the
/// layout the host's KVM needs (a user-mode physmap, see GuestKernel), its guest
/// operations are recorded, and afterwards the same operations run on `/dev/kvm`. Both
/// sides' counters are taken at every `shadowsim.mark`, so each phase compares.
public final class KVMSideBySide {
    /// Simulator counters and the real KVM statistics they correspond to. All of these
    /// are deterministic on KVM (measured: byte-identical per phase over repeated runs).
    public static let compared: [(sim: String, kvm: String)] = [
        ("pf_taken", "pf_taken"), ("pf_fixed", "pf_fixed"), ("pf_emulate", "pf_emulate"),
        ("pf_spurious", "pf_spurious"), ("pf_guest", "pf_guest"), ("invlpg_exits", "invlpg"),
        ("tlb_flush", "tlb_flush"), ("mmu_cache_miss", "mmu_cache_miss"), ("mmu_unsync", "mmu_unsync"),
        ("pages_4k", "pages_4k"), ("mmu_pte_write", "mmu_pte_write"), ("mmu_pde_zapped", "mmu_pde_zapped"),
        ("mmu_flooded", "mmu_flooded"), ("mmu_shadow_zapped", "mmu_shadow_zapped"), ("mmu_recycled", "mmu_recycled"),
        ("remote_tlb_flush_requests", "remote_tlb_flush_requests"),
    ]
    /// Shown for reference only: they depend on host interrupts and on where the other
    /// vCPU is at the instant of a flush, and the agent's own CPL 0 code adds to them.
    public static let informational: [(sim: String, kvm: String)] = [
        ("exits", "exits"), ("insn_emulation", "insn_emulation"), ("remote_tlb_flush", "remote_tlb_flush"),
    ]

    private var vm: ScenarioVM?
    private var recorder: GuestOperationRecorder?
    private var layout: AgentLayout?
    /// Simulator counters at the start of each phase (the first phase, `start`, begins
    /// when the VM is made).
    private var simMarks: [(label: String, counters: [String: UInt64])] = []
    private var initialControl: [(cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64)] = []
    private var refused: String?
    public let host: KVMHost

    /// `host`: what `KVMHost.probe()` found.
    public init(host: KVMHost) { self.host = host }

    /// The operations recorded so far, with what each did in the simulator.
    public var recordedOperations: [(operation: GuestOperation, outcome: OperationOutcome?)] {
        guard let recorder else { return [] }
        return Array(zip(recorder.operations, recorder.outcomes))
    }

    /// Sets up a session for the kvm backend.
    public func prepare(_ session: Session) {
        session.userPhysmap = true
        let zapUnsyncChildren = host.zapsUnsyncChildren
        session.adjustMMU = { config in
            // The vCPUs take turns on KVM: while one runs an operation the others are
            // outside guest mode, so a flush asked of them waits for their next entry.
            config.otherVCPUsRunning = false
            config.zapUnsyncChildren = zapUnsyncChildren
        }
        session.vmMade = { [unowned self] vm throws(VMError) in try self.attach(vm) }
        session.marked = { [unowned self] label in self.mark(label) }
    }

    private func attach(_ vm: ScenarioVM) throws(VMError) {
        guard self.vm == nil else { throw VMError(description: "the kvm backend runs one VM; this scenario makes a second (\(vm.name))") }
        guard vm.machine.mode == .long4 else {
            throw VMError(description: "the kvm backend runs long4 guests (kvm-pvm runs long mode only), not \(vm.machine.mode)")
        }
        guard (1...2).contains(vm.machine.vcpus.count) else {
            throw VMError(description: "the kvm backend runs one or two vCPUs, not \(vm.machine.vcpus.count)")
        }
        guard vm.machine.vcpus.allSatisfy({ $0.cr3 != 0 }) else {
            throw VMError(description: "the kvm backend needs every vCPU on the boot tables (a VM made with boot = false is not supported)")
        }
        guard vm.machine.vcpus.allSatisfy({ $0.cr4 & 0x30_0000 == 0 }) else {
            throw VMError(description: "the kvm backend runs VMs without SMEP and SMAP (its agent runs CPL 0 code from user pages\(host.smep ? "" : "; the host's KVM offers no SMEP")): make the VM with smep = false, smap = false")
        }
        if let budget = vm.mmu?.maxShadowPages, budget < 64 {
            throw VMError(description: "the host's KVM takes a shadow-page budget of at least 64 pages (KVM_SET_NR_MMU_PAGES), not \(budget)")
        }
        guard vm.mmu?.configuration.hostPageSize ?? .size4K == .size4K else {
            throw VMError(description: "the kvm backend maps guest memory with 4 KiB host pages; this VM asks for larger ones")
        }
        let layout = AgentLayout(physmapBase: vm.kernel.layout.physmapBase)
        vm.hostActionsRefused = "--backend kvm runs guest operations only (host-side MMU actions have no counterpart in its guest)"
        self.vm = vm
        self.layout = layout
        initialControl = vm.machine.vcpus.map { ($0.cr0, $0.cr3, $0.cr4, $0.efer) }
        let shadow = vm.mmu?.vcpus ?? []
        let recorder = GuestOperationRecorder(machine: vm.machine, agentFetch: { layout.userSnippet(for: $0) },
                                              landing: layout.landing, reserved: AgentLayout.reserved,
                                              enter: { (v: Int) throws(MachineError) in if v < shadow.count { try shadow[v].reenter() } },
                                              lacks: { [host] in host.lacks(for: $0) },
                                              counters: { [unowned vm] in
                                                  let all = vm.counters
                                                  return Self.compared.map { c in all.first { $0.name == c.sim }?.value ?? 0 }
                                              })
        recorder.snapshotMemory()
        self.recorder = recorder
        simMarks = [("start", [:])]
    }

    private func mark(_ label: String) {
        guard let vm, let recorder else { return }
        do { try recorder.mark(label) } catch { refused = "\(error)" }
        simMarks.append((label, Dictionary(vm.counters.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })))
    }

    /// The operation after which the two sides' counts (summed from the phase's start)
    /// differ for the rest of the phase: a count that only moved to a neighbouring
    /// operation (a flush KVM services at the vCPU's next entry) is passed over.
    static func firstLastingDifference(_ ops: [CounterDifference]) -> CounterDifference? {
        var sum = [Int64](repeating: 0, count: compared.count)
        var lastEven = -1
        for (k, d) in ops.enumerated() {
            for j in sum.indices { sum[j] += d.sim[j] - d.kvm[j] }
            if sum.allSatisfy({ $0 == 0 }) { lastEven = k }
        }
        return lastEven + 1 < ops.count ? ops[lastEven + 1] : nil
    }

    /// Runs the recorded operations on /dev/kvm and compares. Call after the scenario ran.
    public func runOnKVM() throws(BackendError) -> KVMComparison {
        guard let vm, let recorder, let layout else { throw BackendError("the scenario made no VM, so there is nothing to run on KVM") }
        do { try recorder.finish() } catch { throw BackendError("the simulator failed after the last operation: \(error)") }
        if let why = recorder.unsupported { throw BackendError("the kvm backend cannot run this scenario: it has \(why)") }
        if let refused { throw BackendError("the simulator failed at a phase marker: \(refused)") }
        let simEnd = Dictionary(vm.counters.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        let guest = try KVMGuest(memoryBytes: vm.machine.memory.capacity, vcpus: vm.machine.vcpus.count,
                                 physmapBase: layout.physmapBase,
                                 shadowPageBudget: UInt64(vm.mmu?.maxShadowPages ?? 1 << 20),
                                 control: initialControl)
        func compared(_ stats: [String: UInt64]) -> [UInt64] { Self.compared.map { stats[$0.kvm] ?? 0 } }
        var kvmMarks: [[String: UInt64]] = [[:]]
        // Each vCPU's first entry loads its root, as the boot's MOV CR3 did in the
        // simulator: done once the boot tables are in memory (the first host stores).
        var entered = false
        var divergences: [Divergence] = []
        var divergenceCount = 0
        var cpl0Accesses = [0]
        // Per phase, each operation's compared counter deltas on both sides.
        var perOperation: [Int: [CounterDifference]] = [:]
        let simBefore = recorder.countersBefore
        for (i, op) in recorder.operations.enumerated() {
            if !entered, op.vcpu != nil || op.isMark {
                for v in 0..<guest.vcpus { try guest.settle(v) }
                entered = true
            }
            switch op {
            case .physicalStore(let address, let bytes):
                guest.storeBytes(address, bytes)
            case .mark:
                for v in 0..<guest.vcpus { try guest.settle(v) }
                kvmMarks.append(try guest.statistics())
                cpl0Accesses.append(0)
            default:
                if case .access(_, _, _, _, _, false) = op { cpl0Accesses[cpl0Accesses.count - 1] += 1 }
                if case .fill(_, _, _, _, false) = op { cpl0Accesses[cpl0Accesses.count - 1] += 1 }
                let phase = kvmMarks.count - 1
                let kvmBefore = compared(try guest.statistics())
                let real = try guest.run(op, fetchedFrom: recorder.outcomes[i]?.fetchedFrom)
                let kvmAfter = compared(try guest.statistics())
                if i + 1 < simBefore.count {
                    let sim = zip(simBefore[i + 1], simBefore[i]).map { Int64(bitPattern: $0 &- $1) }
                    let kvm = zip(kvmAfter, kvmBefore).map { Int64(bitPattern: $0 &- $1) }
                    perOperation[phase, default: []].append(CounterDifference(index: i, operation: op, sim: sim, kvm: kvm))
                }
                if let simulated = recorder.outcomes[i], !simulated.agrees(with: real) {
                    divergenceCount += 1
                    if divergences.count < 20 {
                        divergences.append(Divergence(index: i, phase: phase, operation: op, simulated: simulated, kvm: real))
                    }
                }
            }
        }
        for v in 0..<guest.vcpus { try guest.settle(v) }
        kvmMarks.append(try guest.statistics())
        var simAll = simMarks.map(\.counters)
        simAll.append(simEnd)
        let phases = simMarks.indices.map { p in
            PhaseComparison(label: simMarks[p].label, simBefore: simAll[p], simAfter: simAll[p + 1],
                            kvmBefore: kvmMarks[p], kvmAfter: kvmMarks[p + 1], cpl0Accesses: cpl0Accesses[p],
                            firstDifference: Self.firstLastingDifference(perOperation[p] ?? []))
        }
        return KVMComparison(phases: phases, operations: recorder.operations.count { $0.vcpu != nil },
                             divergences: divergences, divergenceCount: divergenceCount)
    }
}

extension OperationOutcome {
    /// Same result: both completed (with the same value for a load that read one), or
    /// both faulted the same way.
    func agrees(with other: OperationOutcome) -> Bool {
        guard result == other.result else { return false }
        switch result {
        case .ok: return value == nil || other.value == nil || value == other.value
        case .pageFault: return errorCode == other.errorCode && faultAddress == other.faultAddress
        case .generalProtection: return true
        }
    }
}

/// An operation whose architectural result differs between the simulator and KVM.
public struct Divergence: Sendable {
    public let index: Int
    public let phase: Int
    public let operation: GuestOperation
    public let simulated: OperationOutcome
    public let kvm: OperationOutcome
}

/// One operation's compared counter deltas on both sides (in `KVMSideBySide.compared` order).
public struct CounterDifference: Sendable {
    public let index: Int
    public let operation: GuestOperation
    public let sim: [Int64]
    public let kvm: [Int64]

    /// The counters that moved differently, as `name sim/kvm`.
    public var summary: String {
        KVMSideBySide.compared.indices.filter { sim[$0] != kvm[$0] }
            .map { "\(KVMSideBySide.compared[$0].sim) \(sim[$0])/\(kvm[$0])" }.joined(separator: ", ")
    }
}

/// One phase on both sides: counter deltas of the compared and informational counters.
public struct PhaseComparison: Sendable {
    public struct Row: Sendable {
        public let name: String
        public let sim: Int64
        public let kvm: Int64
        public let compared: Bool
        public var agrees: Bool { sim == kvm }
    }
    public let label: String
    public let rows: [Row]
    /// CPL 0 accesses in the phase that are not marked as emulated: the simulator runs
    /// them on the shadow tables, kvm-pvm's instruction emulator runs them.
    public let cpl0Accesses: Int
    /// The phase's first operation whose compared counters moved differently on the two
    /// sides (reported when the phase differs; a flush KVM counts at the vCPU's next
    /// entry can move a count to the next operation without the phase differing).
    public let firstDifference: CounterDifference?

    init(label: String, simBefore: [String: UInt64], simAfter: [String: UInt64],
         kvmBefore: [String: UInt64], kvmAfter: [String: UInt64], cpl0Accesses: Int,
         firstDifference: CounterDifference?) {
        self.label = label
        self.cpl0Accesses = cpl0Accesses
        self.firstDifference = firstDifference
        func delta(_ a: [String: UInt64], _ b: [String: UInt64], _ name: String) -> Int64 {
            Int64(bitPattern: (b[name] ?? 0) &- (a[name] ?? 0))
        }
        rows = KVMSideBySide.compared.map {
            Row(name: $0.sim, sim: delta(simBefore, simAfter, $0.sim), kvm: delta(kvmBefore, kvmAfter, $0.kvm), compared: true)
        } + KVMSideBySide.informational.map {
            Row(name: $0.sim, sim: delta(simBefore, simAfter, $0.sim), kvm: delta(kvmBefore, kvmAfter, $0.kvm), compared: false)
        }
    }

    public var agrees: Bool { rows.allSatisfy { !$0.compared || $0.agrees } }
}

/// The whole side-by-side result.
public struct KVMComparison: Sendable {
    public let phases: [PhaseComparison]
    public let operations: Int
    public let divergences: [Divergence]
    public let divergenceCount: Int

    public var agrees: Bool { divergenceCount == 0 && phases.allSatisfy(\.agrees) }

    /// Per phase, both columns, differences marked `≠` (compared counters) or `~`
    /// (informational ones).
    public func table() -> String {
        var out = ""
        for (i, phase) in phases.enumerated() {
            let rows = phase.rows.filter { $0.sim != 0 || $0.kvm != 0 || $0.compared && i == 0 }
            out += "phase \(i + 1): \(phase.label)\(phase.agrees ? "" : "  (differs)")\n"
            out += "  counter                         simulator          kvm\n"
            for r in rows {
                let mark = r.agrees ? "" : (r.compared ? "  ≠" : "  ~")
                let name = r.name + String(repeating: " ", count: max(0, 26 - r.name.count))
                let sim = String(r.sim).leftPadded(15), kvm = String(r.kvm).leftPadded(13)
                out += "  \(name)\(sim)\(kvm)\(mark)\n"
            }
            if !phase.agrees, let d = phase.firstDifference {
                out += "  first operation with different counters: \(d.index) \(d.operation.description) (simulator/kvm: \(d.summary))\n"
            }
            if phase.cpl0Accesses > 0 {
                out += "  (\(phase.cpl0Accesses) CPL 0 accesses: run on the shadow tables by the simulator, by kvm-pvm's instruction emulator)\n"
            }
        }
        let mismatched = phases.flatMap { $0.rows.filter { $0.compared && !$0.agrees } }.count
        out += "\(operations) guest operations on both; "
        out += mismatched == 0 ? "every compared counter agrees in every phase" : "\(mismatched) compared counter(s) differ (≠)"
        out += divergenceCount == 0 ? "; every operation had the same result.\n" : "; \(divergenceCount) operation(s) had different results:\n"
        for d in divergences {
            out += "  operation \(d.index) (phase \(d.phase + 1)) \(d.operation.description): simulator \(d.simulated.summary), kvm \(d.kvm.summary)\n"
        }
        out += "(~ marks counters that differ for reasons outside the MMU: host interrupts, the agent's own CPL 0 code.)\n"
        return out
    }

    public var json: JSONValue {
        .object([
            ("agrees", .bool(agrees)),
            ("operations", .integer(Int64(operations))),
            ("divergences", .integer(Int64(divergenceCount))),
            ("first_divergences", .array(divergences.map {
                .object([("operation", .integer(Int64($0.index))), ("phase", .integer(Int64($0.phase + 1))),
                         ("what", .string($0.operation.description)), ("simulator", .string($0.simulated.summary)),
                         ("kvm", .string($0.kvm.summary))])
            })),
            ("phases", .array(phases.map { p in
                .object([("label", .string(p.label)), ("agrees", .bool(p.agrees)),
                         ("cpl0_accesses", .integer(Int64(p.cpl0Accesses))),
                         ("simulator", .object(p.rows.map { ($0.name, .integer($0.sim)) })),
                         ("kvm", .object(p.rows.map { ($0.name, .integer($0.kvm)) })),
                         ("compared", .array(p.rows.filter(\.compared).map { .string($0.name) })),
                         ("first_difference", p.agrees || p.firstDifference == nil ? .null : .object([
                             ("operation", .integer(Int64(p.firstDifference!.index))),
                             ("what", .string(p.firstDifference!.operation.description)),
                             ("counters", .string(p.firstDifference!.summary))]))])
            })),
        ])
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}

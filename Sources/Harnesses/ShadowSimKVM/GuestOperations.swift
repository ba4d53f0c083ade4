import X86

/// One guest operation of a scenario, as recorded from the simulator so that the same
/// stream can run on the host's KVM. `vcpu` is the vCPU's index.
public enum GuestOperation: Equatable, Sendable {
    /// Bytes the loader or the host wrote into guest memory (no guest instruction).
    case physicalStore(address: UInt64, bytes: [UInt8])
    /// A load or store by guest code; `isUser` is CPL 3.
    case access(vcpu: Int, kind: AccessKind, va: UInt64, size: Int, value: UInt64, isUser: Bool)
    /// REP STOSB of `count` copies of `byte`.
    case fill(vcpu: Int, va: UInt64, count: Int, byte: UInt8, isUser: Bool)
    /// A store the hypervisor's instruction emulator makes (CPL 0 code on kvm-pvm).
    case emulatedWrite(vcpu: Int, va: UInt64, size: Int, value: UInt64)
    case emulatedFill(vcpu: Int, va: UInt64, count: Int, byte: UInt8)
    case loadCR3(vcpu: Int, value: UInt64, isUser: Bool)
    case invlpg(vcpu: Int, va: UInt64, isUser: Bool)
    case invpcid(vcpu: Int, type: Int, pcid: UInt64, va: UInt64, isUser: Bool)
    /// MOV to CR0 or CR4, or WRMSR to EFER.
    case writeControl(vcpu: Int, register: ControlRegister, value: UInt64, isUser: Bool)
    /// `shadowsim.mark(label)`: the start of a phase.
    case mark(String)

    /// The vCPU that executes it (nil for host stores and marks).
    public var vcpu: Int? {
        switch self {
        case .physicalStore, .mark: nil
        case .access(let v, _, _, _, _, _), .fill(let v, _, _, _, _), .emulatedWrite(let v, _, _, _),
             .emulatedFill(let v, _, _, _), .loadCR3(let v, _, _), .invlpg(let v, _, _),
             .invpcid(let v, _, _, _, _), .writeControl(let v, _, _, _): v
        }
    }

    public var isMark: Bool { if case .mark = self { true } else { false } }

    /// A control instruction: MOV CR3, INVLPG, INVPCID, a CR0/CR4/EFER write.
    public var isControl: Bool {
        switch self {
        case .loadCR3, .invlpg, .invpcid, .writeControl: true
        default: false
        }
    }

    /// Whether guest code runs it at CPL 3, natively on the shadow tables (on kvm-pvm,
    /// CPL 0 code is emulated).
    public var runsAtCPL3: Bool {
        switch self {
        case .access(_, _, _, _, _, let u), .fill(_, _, _, _, let u), .loadCR3(_, _, let u), .invlpg(_, _, let u),
             .invpcid(_, _, _, _, let u), .writeControl(_, _, _, let u): u
        default: false
        }
    }
}

extension GuestOperation: CustomStringConvertible {
    /// Like the scenario call: `vcpu 1: write 0x400000 = 0x1 (8 bytes, CPL 3)`.
    public var description: String {
        func cpl(_ user: Bool) -> String { user ? "CPL 3" : "CPL 0" }
        switch self {
        case .physicalStore(let address, let bytes): return "host store of \(bytes.count) bytes at \(hex(address))"
        case .mark(let label): return "mark \"\(label)\""
        case .access(let v, let kind, let va, let size, let value, let user):
            let what = kind == .write ? "write \(hex(va)) = \(hex(value))" : "\(kind) \(hex(va))"
            return "vcpu \(v + 1): \(what) (\(size) bytes, \(cpl(user)))"
        case .fill(let v, let va, let count, let byte, let user):
            return "vcpu \(v + 1): fill \(hex(va)) with \(count) × \(hex(UInt64(byte))) (\(cpl(user)))"
        case .emulatedWrite(let v, let va, let size, let value):
            return "vcpu \(v + 1): emulated write \(hex(va)) = \(hex(value)) (\(size) bytes)"
        case .emulatedFill(let v, let va, let count, let byte):
            return "vcpu \(v + 1): emulated fill \(hex(va)) with \(count) × \(hex(UInt64(byte)))"
        case .loadCR3(let v, let value, let user): return "vcpu \(v + 1): MOV CR3 \(hex(value)) (\(cpl(user)))"
        case .invlpg(let v, let va, let user): return "vcpu \(v + 1): INVLPG \(hex(va)) (\(cpl(user)))"
        case .invpcid(let v, let type, let pcid, let va, let user):
            return "vcpu \(v + 1): INVPCID type \(type) PCID \(pcid) \(hex(va)) (\(cpl(user)))"
        case .writeControl(let v, let register, let value, let user):
            return "vcpu \(v + 1): write \(register.rawValue.uppercased()) = \(hex(value)) (\(cpl(user)))"
        }
    }
}

/// A control register the kvm backend writes.
public enum ControlRegister: String, Sendable { case cr0, cr4, efer }

/// What an operation did in the simulator: it completed (with the value a load read,
/// when it read within one page), or it faulted.
public struct OperationOutcome: Equatable, Sendable {
    public var result: AccessResult.Outcome
    public var errorCode: UInt32 = 0
    public var faultAddress: UInt64 = 0
    public var value: UInt64?
    /// Where a fetch went (the frame the simulator's translation, stale or not, gave).
    public var fetchedFrom: UInt64?

    public static let completed = OperationOutcome(result: .ok)

    public var summary: String {
        switch result {
        case .ok: value.map { "ok, read \(hex($0))" } ?? "ok"
        case .pageFault: "#PF error code \(hex(UInt64(errorCode))) at \(hex(faultAddress))"
        case .generalProtection: "#GP"
        }
    }
}

/// Why a scenario cannot run on the kvm backend.
public struct BackendError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Records a VM's guest operations (and what each did) as the simulator runs them, and
/// makes the simulator run what the kvm backend's agent adds around them — the vCPU's
/// entry, the fetch of its CPL 3 snippet before a CPL 3 operation, the return to CPL 3
/// after a CPL 0 one — so both sides run the same instruction stream. Installed as the
/// vCPUs' observer in front of the checker.
public final class GuestOperationRecorder: MachineObserver {
    public private(set) var operations: [GuestOperation] = []
    public private(set) var outcomes: [OperationOutcome?] = []
    /// The simulator's counters before each operation (and one more at the end), when a
    /// `counters` closure was given: to find the first operation that moved them
    /// differently from KVM.
    public private(set) var countersBefore: [[UInt64]] = []
    private let counters: (() -> [UInt64])?
    /// The first operation the kvm backend cannot run, if any.
    public private(set) var unsupported: String?
    private let next: (any MachineObserver)?
    private unowned let machine: Machine
    private let agentFetch: (GuestOperation) -> UInt64
    private let landing: UInt64
    /// A CPL 0 operation whose return to CPL 3 (the landing's fetch) is still to run.
    private var pendingLanding: (vcpu: VCPU, operation: Int)?
    private let enter: (Int) throws(MachineError) -> Void
    private let lacks: (GuestOperation) -> String?
    private let reserved: Range<UInt64>
    private var pendingHostStores: [(address: UInt64, size: Int)] = []
    /// Inside the simulated agent fetch: its events are the agent's, not the scenario's.
    private var inAgentFetch = false
    /// Per vCPU, the operation whose first result is still to be seen.
    private var awaiting: [Int: Int] = [:]

    /// `agentFetch` gives the address of the agent's code for an operation it runs at
    /// CPL 3; `reserved` is guest-physical memory the agent keeps for itself.
    /// `enter(v)` is what the simulator does when vCPU `v` enters the guest to run an
    /// operation (on KVM every operation is a KVM_RUN, which services pending requests).
    /// `landing` is the agent's CPL 3 instruction a CPL 0 operation returns to.
    public init(machine: Machine, agentFetch: @escaping (GuestOperation) -> UInt64, landing: UInt64, reserved: Range<UInt64>,
                enter: @escaping (Int) throws(MachineError) -> Void, lacks: @escaping (GuestOperation) -> String? = { _ in nil },
                counters: (() -> [UInt64])? = nil) {
        self.machine = machine
        self.counters = counters
        self.lacks = lacks
        self.enter = enter
        self.next = machine.vcpus.first?.observer
        self.agentFetch = agentFetch
        self.landing = landing
        self.reserved = reserved
        for v in machine.vcpus { v.observer = self }
    }

    /// Guest memory as it is now, as host stores (run once, when the recorder starts).
    public func snapshotMemory() {
        let memory = machine.memory
        var frame: UInt64 = 0
        while frame < memory.capacity >> 12 {
            if memory.frame(frame) != nil {
                var bytes = [UInt8](repeating: 0, count: 4096)
                var nonzero = false
                for i in 0..<4096 {
                    bytes[i] = UInt8(truncatingIfNeeded: memory.load(frame << 12 + UInt64(i), size: 1))
                    if bytes[i] != 0 { nonzero = true }
                }
                if nonzero { append(.physicalStore(address: frame << 12, bytes: bytes)) }
            }
            frame += 1
        }
    }

    /// A phase marker: on KVM every vCPU enters once before the statistics are read, so
    /// every vCPU enters here too.
    public func mark(_ label: String) throws(MachineError) {
        flushHostStores()
        try returnToUser()
        let before = counters?()
        for v in machine.vcpus.indices { try enter(v) }
        append(.mark(label), before: before)
    }

    /// Ends the recording: host stores still pending are read now.
    public func finish() throws(MachineError) {
        flushHostStores()
        try returnToUser()
        for v in machine.vcpus.indices { try enter(v) }
        if let counters { countersBefore.append(counters()) }
    }

    /// `before`: the simulator's counters before the operation (and before its vCPU
    /// entered the guest for it), when they are being kept.
    private func append(_ op: GuestOperation, before: [UInt64]? = nil) {
        operations.append(op)
        outcomes.append(nil)
        if let counters { countersBefore.append(before ?? counters()) }
    }

    private func flushHostStores() {
        for (address, size) in pendingHostStores {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(size)
            for i in 0..<size { bytes.append(UInt8(truncatingIfNeeded: machine.memory.load(address + UInt64(i), size: 1))) }
            append(.physicalStore(address: address, bytes: bytes))
        }
        pendingHostStores.removeAll()
    }

    private func refuse(_ why: String) {
        if unsupported == nil { unsupported = why }
    }

    public func willExecute(_ vcpu: VCPU, _ instruction: GuestInstruction) throws(MachineError) {
        try next?.willExecute(vcpu, instruction)
        guard !inAgentFetch else { return }
        flushHostStores()
        try returnToUser()
        let v = vcpu.index
        let user = vcpu.cpl == 3
        let before = counters?()
        inAgentFetch = true
        do {
            defer { inAgentFetch = false }
            try enter(v)
        }
        let op: GuestOperation
        switch instruction {
        case .access(let kind, let va, let size, let value, let isUser):
            op = .access(vcpu: v, kind: kind, va: va, size: size, value: value, isUser: isUser)
        case .fill(let va, let count, let byte, let isUser):
            op = .fill(vcpu: v, va: va, count: count, byte: byte, isUser: isUser)
        case .emulatedWrite(let va, let size, let value, let isUser):
            if isUser { refuse("an emulated store at CPL 3 (the kvm backend's emulated stores are CPL 0 code)") }
            op = .emulatedWrite(vcpu: v, va: va, size: size, value: value)
        case .emulatedFill(let va, let count, let byte, let isUser):
            if isUser { refuse("an emulated fill at CPL 3 (the kvm backend's emulated stores are CPL 0 code)") }
            op = .emulatedFill(vcpu: v, va: va, count: count, byte: byte)
        case .loadCR3(let value):
            op = .loadCR3(vcpu: v, value: value, isUser: user)
        case .invlpg(let va):
            op = .invlpg(vcpu: v, va: va, isUser: user)
        case .invpcid(let type, let pcid, let va):
            op = .invpcid(vcpu: v, type: type, pcid: pcid, va: va, isUser: user)
        case .writeCR0(let value):
            op = .writeControl(vcpu: v, register: .cr0, value: value, isUser: user)
        case .writeCR4(let value):
            op = .writeControl(vcpu: v, register: .cr4, value: value, isUser: user)
        case .writeEFER(let value):
            op = .writeControl(vcpu: v, register: .efer, value: value, isUser: user)
        case .hypercall:
            refuse("a paravirtual MMU hypercall (the host's KVM offers no such interface)")
            return
        }
        if let why = lacks(op) { refuse(why) }
        append(op, before: before)
        awaiting[v] = operations.count - 1
        if !op.runsAtCPL3 { pendingLanding = (vcpu, operations.count - 1) }
        if op.runsAtCPL3 {
            // The agent's instruction, fetched before the operation as on the real guest.
            inAgentFetch = true
            defer { inAgentFetch = false }
            let r = try vcpu.fetch(agentFetch(op), cpl: 3)
            if !r.isOK { refuse("the kvm backend's agent code is not reachable at CPL 3 in this address space: \(r.summary)") }
        }
        if op.isControl {
            // #GP unless the instruction completes (didControl says so).
            outcomes[operations.count - 1] = OperationOutcome(result: .generalProtection)
        }
    }

    /// The agent's return to CPL 3 after a CPL 0 operation that completed: the vCPU
    /// enters the guest and fetches the landing, as on KVM.
    private func returnToUser() throws(MachineError) {
        guard let (vcpu, i) = pendingLanding else { return }
        pendingLanding = nil
        guard outcomes[i]?.result == .ok || outcomes[i] == nil else { return }
        inAgentFetch = true
        defer { inAgentFetch = false }
        try enter(vcpu.index)
        let r = try vcpu.fetch(landing, cpl: 3)
        if !r.isOK { refuse("the kvm backend's agent code is not reachable at CPL 3 in this address space: \(r.summary)") }
    }

    public func willStore(_ vcpu: VCPU?, physicalAddress: UInt64, size: Int) throws(MachineError) {
        try next?.willStore(vcpu, physicalAddress: physicalAddress, size: size)
        if reserved.overlaps(physicalAddress..<physicalAddress + UInt64(max(size, 1))) {
            refuse("a store to guest-physical \(hex(physicalAddress)), which the kvm backend's agent keeps for itself (\(hex(reserved.lowerBound))–\(hex(reserved.upperBound - 1)))")
        }
        guard vcpu == nil else { return }
        flushHostStores()
        pendingHostStores.append((physicalAddress, size))
    }

    public func didAccess(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool, result: AccessResult) throws(MachineError) {
        try next?.didAccess(vcpu, va, kind, isUser: isUser, result: result)
        guard !inAgentFetch, let i = awaiting[vcpu.index] else { return }
        if !result.isOK {
            outcomes[i] = OperationOutcome(result: result.outcome, errorCode: result.errorCode, faultAddress: result.faultAddress)
            awaiting[vcpu.index] = nil
        } else if outcomes[i] == nil {
            if case .access(_, .read, let opVA, let size, _, _) = operations[i], opVA == va, (va & 0xFFF) + UInt64(size) <= 4096 {
                outcomes[i] = OperationOutcome(result: .ok, value: result.value)
            } else if case .access(_, .fetch, _, _, _, _) = operations[i] {
                outcomes[i] = OperationOutcome(result: .ok, fetchedFrom: result.physicalAddress)
            } else {
                outcomes[i] = .completed
            }
        }
    }

    public func didControl(_ vcpu: VCPU, _ event: ControlEvent) throws(MachineError) {
        try next?.didControl(vcpu, event)
        guard !inAgentFetch, let i = awaiting[vcpu.index], operations[i].isControl else { return }
        outcomes[i] = .completed
    }
}

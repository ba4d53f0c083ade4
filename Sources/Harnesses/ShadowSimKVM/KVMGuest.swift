import CKVM
import X86

/// The guest the kvm backend runs on `/dev/kvm`: the scenario's own memory and page
/// tables (written by the recorded host stores and guest operations), plus a small agent
/// in guest-physical pages the simulated kernel never allocates (below 1 MiB), reached
/// through the physmap. The agent is a page of code: for each operation a CPL 3 snippet
/// (the access, then INT3) or a CPL 0 one (MOV CR3, INVLPG, an emulated store, then IRETQ
/// to a CPL 3 INT3, as a kernel returns to user mode), and exception handlers that OUT
/// their vector to port 0xE9. On kvm-pvm only CPL 3 code runs natively on KVM's shadow
/// tables; CPL 0 code is emulated, and requests an emulated instruction makes (the sync
/// and flush of a MOV CR3) wait for the next entry: the return to CPL 3 is that entry, so
/// each operation ends with its requests served, as on a KVM that exits for it.
public struct AgentLayout: Sendable {
    public static let gdt: UInt64 = 0x1000
    public static let idt: UInt64 = 0x2000
    public static let tss: UInt64 = 0x3000
    public static let stackTop: UInt64 = 0x5000
    /// The INVPCID descriptor.
    public static let data: UInt64 = 0x6000
    public static let code: UInt64 = 0x7000
    /// Guest-physical memory the agent keeps for itself.
    public static let reserved: Range<UInt64> = 0x1000..<0x8000

    public static let kernelCode: UInt16 = 0x08, kernelData: UInt16 = 0x10
    public static let userData: UInt16 = 0x18 | 3, userCode: UInt16 = 0x20 | 3, tssSelector: UInt16 = 0x28
    static let exitPort: UInt16 = 0xE9
    /// What the OUT of a finished CPL 0 snippet writes (exception handlers write their vector).
    static let doneValue: UInt8 = 0xFF

    public let physmapBase: UInt64
    let code: AgentCode

    public init(physmapBase: UInt64) {
        self.physmapBase = physmapBase
        code = AgentCode()
    }

    public func address(_ gpa: UInt64) -> UInt64 { physmapBase + gpa }

    /// Where the agent's CPL 3 instruction for `op` is (what the simulator fetches too).
    public func userSnippet(for op: GuestOperation) -> UInt64 {
        address(Self.code + UInt64(code.user[AgentCode.name(of: op)] ?? 0))
    }

    /// The CPL 3 instruction a CPL 0 snippet returns to (the simulator fetches it too).
    public var landing: UInt64 { address(Self.code + UInt64(code.user["landing"]!)) }
}

/// The agent's machine code, assembled by hand (a few fixed encodings).
struct AgentCode {
    private(set) var bytes: [UInt8] = []
    private(set) var user: [String: Int] = [:]
    private(set) var kernel: [String: Int] = [:]
    private(set) var handler: [Int] = []

    /// The body of each operation's snippet: RAX = address, RBX = value (and the result
    /// of a load), RDI/RCX/AL = REP STOSB's destination, count and byte.
    static let bodies: [(String, [UInt8])] = [
        ("r1", [0x0F, 0xB6, 0x18]), ("r2", [0x0F, 0xB7, 0x18]), ("r4", [0x8B, 0x18]), ("r8", [0x48, 0x8B, 0x18]),
        ("w1", [0x88, 0x18]), ("w2", [0x66, 0x89, 0x18]), ("w4", [0x89, 0x18]), ("w8", [0x48, 0x89, 0x18]),
        ("fill", [0xF3, 0xAA]), ("cr3", [0x0F, 0x22, 0xD8]), ("invlpg", [0x0F, 0x01, 0x38]),
        ("cr0", [0x0F, 0x22, 0xC0]), ("cr4", [0x0F, 0x22, 0xE0]), ("efer", [0x0F, 0x30]),   // WRMSR: ECX, EDX:EAX
        ("invpcid", [0x66, 0x0F, 0x38, 0x82, 0x03]),   // INVPCID RAX, [RBX]: RBX points at the descriptor
        ("fetch", [0xFF, 0xE0]),   // JMP RAX: the target byte is an INT3 for the duration
    ]

    static func name(of op: GuestOperation) -> String {
        switch op {
        case .access(_, .read, _, let size, _, _): "r\(size)"
        case .access(_, .write, _, let size, _, _), .emulatedWrite(_, _, let size, _): "w\(size)"
        case .access(_, .fetch, _, _, _, _): "fetch"
        case .fill: "fill"
        case .emulatedFill: "efill"
        case .loadCR3: "cr3"
        case .invlpg: "invlpg"
        case .invpcid: "invpcid"
        case .writeControl(_, let register, _, _): register.rawValue
        case .physicalStore, .mark: ""
        }
    }

    init() {
        func align() { while bytes.count % 16 != 0 { bytes.append(0xCC) } }
        for (name, body) in Self.bodies {
            user[name] = bytes.count
            bytes += body + [0xCC, 0xEB, 0xFE]                             // INT3; JMP $
            align()
            guard name != "fetch" else { continue }
            kernel[name] = bytes.count
            bytes += body + [0x48, 0xCF]                                    // IRETQ (to the landing)
            align()
        }
        // An emulated fill as the simulator's emulator makes it: single bytes up to an
        // 8-byte boundary, 8-byte iterations, single bytes at the end (RCX, RDX, RSI).
        kernel["efill"] = bytes.count
        bytes += [0xF3, 0xAA, 0x48, 0x89, 0xD1, 0xF3, 0x48, 0xAB, 0x48, 0x89, 0xF1, 0xF3, 0xAA]
        bytes += [0x48, 0xCF]
        align()
        // Where a CPL 0 snippet returns to: CPL 3 code that reports back.
        user["landing"] = bytes.count
        bytes += [0xCC, 0xEB, 0xFE]
        align()
        kernel["nop"] = bytes.count
        bytes += [0xB0, AgentLayout.doneValue, 0xE6, 0xE9, 0xEB, 0xFE]
        align()
        kernel["iret"] = bytes.count
        bytes += [0x48, 0xCF]                                               // IRETQ
        align()
        for vector in 0..<32 {
            handler.append(bytes.count)
            bytes += [0xB0, UInt8(vector), 0xE6, 0xE9, 0xEB, 0xFE]         // MOV AL, vector; OUT 0xE9, AL; JMP $
            align()
        }
        precondition(bytes.count <= 4096, "the agent's code must fit one page")
    }
}

/// A VM on /dev/kvm running recorded guest operations.
final class KVMGuest {
    let layout: AgentLayout
    private let vm: OpaquePointer
    let vcpus: Int
    private let memoryBytes: UInt64
    static let timeoutMilliseconds: UInt32 = 5000

    /// Opens /dev/kvm and builds the agent; each vCPU starts in long mode at CPL 0 with
    /// the simulated vCPU's CR3 and control registers.
    init(memoryBytes: UInt64, vcpus: Int, physmapBase: UInt64, shadowPageBudget: UInt64,
         control: [(cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64)]) throws(BackendError) {
        var message = [CChar](repeating: 0, count: 256)
        guard let vm = ckvm_open(memoryBytes, Int32(vcpus), &message, message.count) else {
            throw BackendError(text(of: message))
        }
        self.vm = vm
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        layout = AgentLayout(physmapBase: physmapBase)
        try check(ckvm_set_mmu_pages(vm, shadowPageBudget))
        writeAgent()
        for (i, c) in control.enumerated() {
            var state = ckvm_long_mode(
                cr0: c.cr0 | 0x22, cr3: c.cr3, cr4: c.cr4 | 0x600, efer: c.efer,
                gdt_base: layout.address(AgentLayout.gdt), idt_base: layout.address(AgentLayout.idt),
                tss_base: layout.address(AgentLayout.tss), gdt_limit: 7 * 8 - 1, idt_limit: 32 * 16 - 1, tss_limit: 0x67,
                code_selector: AgentLayout.kernelCode, data_selector: AgentLayout.kernelData,
                tss_selector: AgentLayout.tssSelector)
            try check(ckvm_enter_long_mode(vm, Int32(i), &state))
        }
    }

    deinit { ckvm_close(vm) }

    private func check(_ r: Int32) throws(BackendError) {
        if r < 0 { throw BackendError("kvm: " + String(cString: ckvm_error(vm))) }
    }

    private var memory: UnsafeMutablePointer<UInt8> { ckvm_memory(vm) }

    func store(_ gpa: UInt64, _ value: UInt64, size: Int) {
        for i in 0..<size { memory[Int(gpa) + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * i)) }
    }

    func load(_ gpa: UInt64, size: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(memory[Int(gpa) + i]) << UInt64(8 * i) }
        return v
    }

    func storeBytes(_ gpa: UInt64, _ bytes: [UInt8]) {
        for (i, b) in bytes.enumerated() { memory[Int(gpa) + i] = b }
    }

    private func writeAgent() {
        let code = layout.code
        storeBytes(AgentLayout.code, code.bytes)
        // GDT: null, kernel code (64-bit), kernel data, user data, user code (64-bit), TSS.
        let gdt: [UInt64] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00CF_F200_0000_FFFF, 0x00AF_FA00_0000_FFFF]
        for (i, d) in gdt.enumerated() { store(AgentLayout.gdt + UInt64(8 * i), d, size: 8) }
        let tss = layout.address(AgentLayout.tss)
        store(AgentLayout.gdt + 40, 0x67 | (tss & 0xFF_FFFF) << 16 | 0x89 << 40 | (tss >> 24 & 0xFF) << 56, size: 8)
        store(AgentLayout.gdt + 48, tss >> 32, size: 8)
        store(AgentLayout.tss + 4, layout.address(AgentLayout.stackTop), size: 8)   // RSP0
        // IDT: interrupt gates to the handlers; INT3's is DPL 3 so CPL 3 code can use it.
        for vector in 0..<32 {
            let h = layout.address(AgentLayout.code + UInt64(code.handler[vector]))
            let type: UInt64 = vector == 3 ? 0xEE : 0x8E
            store(AgentLayout.idt + UInt64(16 * vector), h & 0xFFFF | UInt64(AgentLayout.kernelCode) << 16 | type << 40 | (h >> 16 & 0xFFFF) << 48, size: 8)
            store(AgentLayout.idt + UInt64(16 * vector) + 8, h >> 32, size: 8)
        }
    }

    /// The architectural walk of the guest's 4-level tables (no rights checked): where a
    /// fetched byte is, so that it can be an INT3 while the fetch runs.
    private func physicalAddress(of va: UInt64, cr3: UInt64) -> UInt64? {
        var table = cr3 & 0x000F_FFFF_FFFF_F000
        for level in stride(from: 4, through: 1, by: -1) {
            let index = va >> UInt64(12 + 9 * (level - 1)) & 0x1FF
            let e = load(table + index * 8, size: 8)
            guard e & 1 != 0 else { return nil }
            let frame = e & 0x000F_FFFF_FFFF_F000
            if level == 1 || (level <= 3 && e & 0x80 != 0) {
                let mask = (UInt64(1) << UInt64(12 + 9 * (level - 1))) - 1
                return (frame & ~mask) | (va & mask)
            }
            table = frame
        }
        return nil
    }

    /// Enters vCPU `v` once to run CPL 0 code that does nothing: KVM services the
    /// requests still pending (on kvm-pvm, a TLB flush asked for by an emulated MOV CR3
    /// waits for the next entry, as the emulator runs on to the agent's OUT), so they
    /// count in the phase that made them. Changes no MMU counter (measured).
    func settle(_ v: Int) throws(BackendError) {
        var regs = ckvm_regs()
        regs.rflags = 2
        regs.rsp = layout.address(AgentLayout.stackTop)
        regs.rip = layout.address(AgentLayout.code + UInt64(layout.code.kernel["nop"]!))
        try check(ckvm_set_regs(vm, Int32(v), &regs))
        var exit = ckvm_exit()
        try check(ckvm_run(vm, Int32(v), Self.timeoutMilliseconds, &exit))
        guard exit.reason == 2, exit.value == AgentLayout.doneValue else { throw stopped(v, exit, running: "the agent's no-op") }
    }

    /// Why vCPU `v` did not report back, with where it stopped.
    private func stopped(_ v: Int, _ exit: ckvm_exit, running what: String) -> BackendError {
        var now = ckvm_regs(), cr2: UInt64 = 0, cr3: UInt64 = 0, cpl: Int32 = 0
        _ = ckvm_get_regs(vm, Int32(v), &now)
        _ = ckvm_get_control(vm, Int32(v), &cr2, &cr3, &cpl)
        let why = exit.reason == 8 ? "shut down (a triple fault)" : exit.reason == 2 ? "reported \(exit.value) on port \(hex(UInt64(exit.port)))" : "stopped with exit reason \(exit.reason)"
        let walk = physicalAddress(of: now.rip, cr3: cr3).map { "maps to \(hex($0))" } ?? "is not mapped (top entry \(hex(load((cr3 & ~0xFFF) + (now.rip >> 39 & 0x1FF) * 8, size: 8))))"
        return BackendError("kvm: vCPU \(v) \(why) at RIP \(hex(now.rip)) (which \(walk)) CPL \(cpl) CR3 \(hex(cr3)) CR2 \(hex(cr2)) running \(what)")
    }

    /// Runs one guest operation on vCPU `op.vcpu` and says what it did. `fetchedFrom`:
    /// for a fetch, the byte the simulator fetched (a stale translation may lead there
    /// rather than where the tables point now).
    func run(_ op: GuestOperation, fetchedFrom: UInt64? = nil) throws(BackendError) -> OperationOutcome {
        guard let v = op.vcpu else { return .completed }
        let name = AgentCode.name(of: op)
        var regs = ckvm_regs()
        regs.rflags = 2
        regs.rsp = layout.address(AgentLayout.stackTop)
        switch op {
        case .access(_, _, let va, _, let value, _), .emulatedWrite(_, let va, _, let value):
            regs.rax = va; regs.rbx = value
        case .fill(_, let va, let count, let byte, _):
            regs.rdi = va; regs.rcx = UInt64(count); regs.rax = UInt64(byte)
        case .emulatedFill(_, let va, let count, let byte):
            let head = min(UInt64(count), (8 - va & 7) & 7)
            let rest = UInt64(count) - head
            regs.rdi = va; regs.rcx = head; regs.rdx = rest / 8; regs.rsi = rest % 8
            regs.rax = UInt64(byte) &* 0x0101_0101_0101_0101
        case .loadCR3(_, let value, _), .invlpg(_, let value, _):
            regs.rax = value
        case .invpcid(_, let type, let pcid, let va, _):
            store(AgentLayout.data, pcid, size: 8)
            store(AgentLayout.data + 8, va, size: 8)
            regs.rax = UInt64(type); regs.rbx = layout.address(AgentLayout.data)
        case .writeControl(_, let register, let value, _):
            regs.rax = register == .efer ? value & 0xFFFF_FFFF : value
            if register == .efer { regs.rdx = value >> 32; regs.rcx = 0xC000_0080 }
        case .physicalStore, .mark:
            return .completed
        }
        // A fetch executes the byte it reaches: it is an INT3 for the duration, where the
        // tables point and where the simulator's translation went.
        var patched: [(gpa: UInt64, byte: UInt8)] = []
        if case .access(_, .fetch, let va, _, _, _) = op {
            var cr2: UInt64 = 0, cr3: UInt64 = 0, cpl: Int32 = 0
            try check(ckvm_get_control(vm, Int32(v), &cr2, &cr3, &cpl))
            for gpa in [physicalAddress(of: va, cr3: cr3), fetchedFrom].compactMap({ $0 })
            where gpa < memoryBytes && !AgentLayout.reserved.contains(gpa) && !patched.contains(where: { $0.gpa == gpa }) {
                patched.append((gpa, UInt8(load(gpa, size: 1))))
                store(gpa, 0xCC, size: 1)
            }
        }
        defer { for p in patched.reversed() { store(p.gpa, UInt64(p.byte), size: 1) } }
        // An IRETQ frame (RIP, CS, RFLAGS, RSP, SS) into CPL 3: the snippet itself for a
        // CPL 3 operation (entered through the IRETQ), the landing after a CPL 0 one.
        let frame = AgentLayout.stackTop - 40
        let entry = op.runsAtCPL3 ? layout.userSnippet(for: op) : layout.landing
        for (i, word) in [entry, UInt64(AgentLayout.userCode), 2, layout.address(AgentLayout.stackTop), UInt64(AgentLayout.userData)].enumerated() {
            store(frame + UInt64(8 * i), word, size: 8)
        }
        regs.rsp = layout.address(frame)
        regs.rip = layout.address(AgentLayout.code + UInt64(layout.code.kernel[op.runsAtCPL3 ? "iret" : name]!))
        try check(ckvm_set_regs(vm, Int32(v), &regs))
        var exit = ckvm_exit()
        try check(ckvm_run(vm, Int32(v), Self.timeoutMilliseconds, &exit))
        guard exit.reason == 2 /* KVM_EXIT_IO */, exit.is_out != 0, exit.port == AgentLayout.exitPort else {
            throw stopped(v, exit, running: "\(op)")
        }
        let finished: UInt8 = 3   // INT3, from the snippet or the landing
        var after = ckvm_regs()
        try check(ckvm_get_regs(vm, Int32(v), &after))
        switch exit.value {
        case finished:
            if case .access(_, .read, let va, let size, _, _) = op, (va & 0xFFF) + UInt64(size) <= 4096 {
                return OperationOutcome(result: .ok, value: after.rbx)
            }
            return .completed
        case 14:
            var cr2: UInt64 = 0, cr3: UInt64 = 0, cpl: Int32 = 0
            try check(ckvm_get_control(vm, Int32(v), &cr2, &cr3, &cpl))
            let code = load(after.rsp &- layout.physmapBase, size: 8)
            return OperationOutcome(result: .pageFault, errorCode: UInt32(truncatingIfNeeded: code), faultAddress: cr2)
        case 13:
            return OperationOutcome(result: .generalProtection)
        default:
            throw BackendError("kvm: the guest took exception \(exit.value) running \(op)")
        }
    }

    /// The statistics of the VM and the sum over its vCPUs, by name.
    func statistics() throws(BackendError) -> [String: UInt64] {
        var all: [String: UInt64] = [:]
        var buffer = [ckvm_stat](repeating: ckvm_stat(), count: Int(CKVM_MAX_STATS))
        for owner in -1..<vcpus {
            let n = ckvm_stats(vm, Int32(owner), &buffer, Int32(buffer.count))
            try check(n)
            for s in buffer.prefix(Int(n)) {
                let name = withUnsafeBytes(of: s.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                all[name, default: 0] &+= s.value
            }
        }
        return all
    }
}

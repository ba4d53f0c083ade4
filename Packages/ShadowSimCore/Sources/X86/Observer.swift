/// A control instruction that completed (did not fault), as an observer sees it.
public enum ControlEvent: Sendable {
    case cr3Load(previousCR3: UInt64, previousPCID: UInt16, noFlush: Bool)
    case cr4Write(previous: UInt64)
    case cr0Write(previous: UInt64)
    case eferWrite(previous: UInt64)
    case invlpg(UInt64)
    case invpcid(InvpcidType, pcid: UInt16, address: UInt64)
    /// A paravirtual flush hypercall (made by vCPU `by`) reached this vCPU.
    case flushHypercall(FlushScope, by: Int)
}

/// A guest instruction about to execute, as an observer sees it before any of its
/// effects: what a recorder needs to run the same instruction stream on another
/// backend (`shadowsim run --backend kvm`). `isUser` is CPL 3.
public enum GuestInstruction: Sendable, Equatable {
    case access(AccessKind, va: UInt64, size: Int, value: UInt64, isUser: Bool)
    case fill(va: UInt64, count: Int, byte: UInt8, isUser: Bool)
    /// Stores carried out by the hypervisor's instruction emulator (`emulatedWrite`).
    case emulatedWrite(va: UInt64, size: Int, value: UInt64, isUser: Bool)
    case emulatedFill(va: UInt64, count: Int, byte: UInt8, isUser: Bool)
    case loadCR3(UInt64)
    case invlpg(UInt64)
    case invpcid(type: Int, pcid: UInt64, address: UInt64)
    case writeCR0(UInt64)
    case writeCR4(UInt64)
    case writeEFER(UInt64)
    case hypercall(Hypercall)
}

/// Watches a machine's architectural events: every store before it lands (guest or
/// host), every access result and every completed control instruction. The checker is
/// one. An observer may throw to stop the run (a violation).
public protocol MachineObserver: AnyObject {
    func willStore(_ vcpu: VCPU?, physicalAddress: UInt64, size: Int) throws(MachineError)
    func didAccess(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool, result: AccessResult) throws(MachineError)
    func didControl(_ vcpu: VCPU, _ event: ControlEvent) throws(MachineError)
    /// Called before each guest instruction of the slow path (every instruction while an
    /// observer is attached: the fast translations are off then).
    func willExecute(_ vcpu: VCPU, _ instruction: GuestInstruction) throws(MachineError)
}

extension MachineObserver {
    public func willExecute(_ vcpu: VCPU, _ instruction: GuestInstruction) throws(MachineError) {}
}

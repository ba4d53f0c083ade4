/// A control instruction that completed (did not fault), as an observer sees it.
public enum ControlEvent: Sendable {
    case cr3Load(previousCR3: UInt64, previousPCID: UInt16, noFlush: Bool)
    case cr4Write(previous: UInt64)
    case cr0Write(previous: UInt64)
    case eferWrite(previous: UInt64)
    case invlpg(UInt64)
    case invpcid(InvpcidType, pcid: UInt16, address: UInt64)
}

/// Watches a machine's architectural events: every store before it lands (guest or
/// host), every access result and every completed control instruction. The checker is
/// one. An observer may throw to stop the run (a violation).
public protocol MachineObserver: AnyObject {
    func willStore(_ vcpu: VCPU?, physicalAddress: UInt64, size: Int) throws(MachineError)
    func didAccess(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool, result: AccessResult) throws(MachineError)
    func didControl(_ vcpu: VCPU, _ event: ControlEvent) throws(MachineError)
}

/// What runs beneath a vCPU: the processor walking the guest's own tables (`BareMetal`),
/// or a hypervisor's MMU. The vCPU does the architectural checks of each instruction;
/// the backend services TLB misses and carries out the instructions' effects on
/// translations (TLB flushes, and for a hypervisor whatever its MMU needs).
public protocol VCPUBackend: AnyObject {
    /// Whether a TLB hit that lacks the rights for an access goes to the backend as a
    /// miss. Under shadow paging every hardware #PF exits to the hypervisor, which may
    /// find the guest allows the access (an spte made for CR0.WP = 0, say) and fix it;
    /// on bare metal the processor raises the #PF from the entry.
    var handlesProtectionFaults: Bool { get }
    /// A TLB miss: translate `va` (filling the TLB) or return the fault the guest sees.
    func translateMiss(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool) throws(MachineError) -> AccessResult
    /// A store the backend let through with `needsEmulation` has been written to memory.
    func emulatedWrite(_ vcpu: VCPU, physicalAddress: UInt64, size: Int) throws(MachineError)
    /// A string store (REP STOS) hit a frame the hypervisor protects: it may unprotect
    /// the frame and let the instruction run again (true), or emulate it (false).
    func unprotectForRetry(_ vcpu: VCPU, va: UInt64, physicalAddress: UInt64) throws(MachineError) -> Bool
    /// The hypervisor's instruction emulator ran one instruction (`VCPU.emulatedWrite`),
    /// or one more iteration of a REP instruction (`newInstruction` false), and wrote
    /// `stores` to memory (none when it faulted): no fault exit, but the hypervisor sees
    /// every store.
    func emulatorRan(_ vcpu: VCPU, stores: [(physicalAddress: UInt64, size: Int)], newInstruction: Bool) throws(MachineError)
    /// The emulator walked the guest's tables for a store to `va` (`fault`: the #PF
    /// error code it will inject, if the walk failed). For tracing only.
    func emulatorWalked(_ vcpu: VCPU, _ va: UInt64, isUser: Bool, fault: UInt32?)
    /// MOV to CR3 has loaded a new value (and, for PAE paging, the PDPTE registers).
    func cr3Loaded(_ vcpu: VCPU, previous: UInt64, pdptesChanged: Bool, noFlush: Bool) throws(MachineError)
    /// MOV to CR4 has changed it (and, for PAE paging, may have reloaded the PDPTEs).
    func cr4Written(_ vcpu: VCPU, previous: UInt64, pdptesChanged: Bool) throws(MachineError)
    func cr0Written(_ vcpu: VCPU, previous: UInt64) throws(MachineError)
    func eferWritten(_ vcpu: VCPU, previous: UInt64) throws(MachineError)
    /// INVLPG of a canonical address.
    func invlpg(_ vcpu: VCPU, _ va: UInt64) throws(MachineError)
    /// INVPCID whose operands passed the architectural checks.
    func invpcid(_ vcpu: VCPU, _ type: InvpcidType, pcid: UInt16, address: UInt64) throws(MachineError)
    /// Whether `hypercall` is answered (a paravirtual MMU; none by default).
    var offersPageTableHypercalls: Bool { get }
    /// A paravirtual MMU hypercall whose checks passed (an update's stores have landed).
    /// Returns the vCPUs a flush reached.
    func hypercall(_ vcpu: VCPU, _ call: Hypercall) throws(MachineError) -> [VCPU]
}

extension VCPUBackend {
    public var offersPageTableHypercalls: Bool { false }
    public func hypercall(_ vcpu: VCPU, _ call: Hypercall) throws(MachineError) -> [VCPU] {
        throw .unsupported("no paravirtual MMU here: the VM's policy offers no page-table hypercalls")
    }
}

/// The processor on its own: TLB misses walk the guest tables, and control
/// instructions flush the TLB as SDM 4.10.4.1 says.
public final class BareMetal: VCPUBackend, Sendable {
    public static let shared = BareMetal()

    public var handlesProtectionFaults: Bool { false }

    public func translateMiss(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool) throws(MachineError) -> AccessResult {
        try vcpu.walkGuestTablesAndFill(va, kind, isUser: isUser)
    }

    public func emulatedWrite(_ vcpu: VCPU, physicalAddress: UInt64, size: Int) {}
    /// Bare metal has no emulator: nothing to track.
    public func emulatorRan(_ vcpu: VCPU, stores: [(physicalAddress: UInt64, size: Int)], newInstruction: Bool) {}
    public func unprotectForRetry(_ vcpu: VCPU, va: UInt64, physicalAddress: UInt64) -> Bool { false }
    public func emulatorWalked(_ vcpu: VCPU, _ va: UInt64, isUser: Bool, fault: UInt32?) {}

    /// MOV to CR3 flushes the new PCID's non-global entries unless bit 63 was set.
    public func cr3Loaded(_ vcpu: VCPU, previous: UInt64, pdptesChanged: Bool, noFlush: Bool) {
        guard !noFlush else { return }
        vcpu.tlb.flushNonGlobal(pcid: vcpu.currentPCID)
        vcpu.tally.tlbFlushPCID &+= 1
    }

    /// Toggling PGE, clearing PCIDE or setting SMEP flushes everything (SMEP and PAE
    /// changes need only the current PCID; flushing more is allowed).
    public func cr4Written(_ vcpu: VCPU, previous: UInt64, pdptesChanged: Bool) {
        let changed = previous ^ vcpu.cr4
        if changed & CR4.pge != 0 || (changed & CR4.pcide != 0 && vcpu.cr4 & CR4.pcide == 0)
            || (changed & CR4.smep != 0 && vcpu.cr4 & CR4.smep != 0) {
            vcpu.tlb.flushAll()
            vcpu.tally.tlbFlushAll &+= 1
        }
    }

    public func cr0Written(_ vcpu: VCPU, previous: UInt64) {}
    public func eferWritten(_ vcpu: VCPU, previous: UInt64) {}

    /// INVLPG: the page's entries for the current PCID and any global entry for it.
    public func invlpg(_ vcpu: VCPU, _ va: UInt64) {
        vcpu.tlb.flushAddress(va, pcid: vcpu.currentPCID, includeGlobal: true)
    }

    public func invpcid(_ vcpu: VCPU, _ type: InvpcidType, pcid: UInt16, address: UInt64) {
        switch type {
        case .individualAddress:
            vcpu.tlb.flushAddress(address, pcid: pcid, includeGlobal: false)
        case .singleContext:
            vcpu.tlb.flushNonGlobal(pcid: pcid)
            vcpu.tally.tlbFlushPCID &+= 1
        case .allContextsIncludingGlobals:
            vcpu.tlb.flushAll()
            vcpu.tally.tlbFlushAll &+= 1
        case .allContexts:
            vcpu.tlb.flushAllNonGlobal()
            vcpu.tally.tlbFlushPCID &+= 1
        }
    }
}

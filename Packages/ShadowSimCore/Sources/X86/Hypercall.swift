/// One operation of a paravirtual guest's update batch (a PV MMU's `mmu_update`
/// element; KVM's old `kvm_pv_mmu_op` had the same two).
public enum PageTableUpdate: Sendable, Equatable {
    /// Write `value` to the paging-structure entry at guest-physical `address`.
    case write(address: UInt64, value: UInt64)
    /// The frame at `table` no longer holds a page table (the guest freed it): the
    /// hypervisor may drop what it derived from it and stop protecting it.
    case release(table: UInt64)
}

/// What a paravirtual TLB flush covers on each target vCPU.
public enum FlushScope: Sendable, Equatable {
    /// As INVLPG of each address on the target (its current PCID, and global entries).
    case addresses([UInt64])
    /// Every translation the target may cache, global ones and every PCID's included.
    case everything
}

/// A paravirtual MMU's hypercalls (made at CPL 0 by the guest kernel, through VMCALL or,
/// under PVM, a syscall from the deprivileged kernel).
public enum Hypercall: Sendable, Equatable {
    /// Write these entries, in order: the hypervisor writes guest memory and applies
    /// each entry to what it keeps derived from the table, in one exit.
    case updatePageTables([PageTableUpdate])
    /// Flush `scope` on the vCPUs numbered `vcpus` (0-based; the caller may be one), in
    /// one exit and without the guest sending IPIs.
    case flushTLB(FlushScope, vcpus: [Int])
}

extension VCPU {
    /// Whether this vCPU's backend answers `hypercall` (a hypervisor whose policy offers
    /// a paravirtual MMU). Bare metal has no hypervisor to call.
    public var offersPageTableHypercalls: Bool { backend.offersPageTableHypercalls }

    /// Makes a paravirtual MMU hypercall at `cpl` (default: the vCPU's): #GP above CPL 0. An update's address must be an
    /// entry of this mode (aligned to its size) in guest RAM; flush targets must exist
    /// (an invalid argument otherwise).
    /// The stores land (seen by the observer) before the backend applies them.
    public func hypercall(_ call: Hypercall, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        guard backend.offersPageTableHypercalls else {
            throw .unsupported("no paravirtual MMU here: the VM's policy offers no page-table hypercalls")
        }
        switch call {
        case .updatePageTables(let updates):
            let size = mode.entrySize
            for u in updates {
                switch u {
                case .write(let address, let value):
                    guard memory.contains(address, size: size) else {
                        throw .unbackedMemory(address: address, capacity: memory.capacity, what: "page-table update")
                    }
                    guard address % UInt64(size) == 0 else {
                        throw .invalidArgument("a page-table update's address \(hex(address)) is not aligned to its \(size)-byte entry")
                    }
                    guard size == 8 || value <= 0xFFFF_FFFF else {
                        throw .invalidArgument("a page-table update's value \(hex(value)) does not fit a 4-byte entry")
                    }
                case .release(let table):
                    guard memory.contains(table, size: 1) else {
                        throw .unbackedMemory(address: table, capacity: memory.capacity, what: "page-table release")
                    }
                }
            }
        case .flushTLB:
            break   // the backend knows the VM's vCPUs and checks the targets
        }
        try observer?.willExecute(self, .hypercall(call))
        guard (cpl ?? self.cpl) == 0 else { tally.gp &+= 1; return .generalProtection }
        if case .updatePageTables(let updates) = call {
            for case .write(let address, let value) in updates {
                try observer?.willStore(self, physicalAddress: address, size: mode.entrySize)
                memory.store(address, value, size: mode.entrySize)
            }
        }
        let flushed = try backend.hypercall(self, call)
        if case .flushTLB(let scope, _) = call {
            for target in flushed { try target.observer?.didControl(target, .flushHypercall(scope, by: index)) }
        }
        return .ok(0)
    }
}

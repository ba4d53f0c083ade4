/// Stores carried out by the hypervisor's instruction emulator instead of the processor:
/// guest kernel code run by an emulator (as PVM runs all CPL 0 code), or an emulated
/// instruction that writes a page table. The emulator translates with a software walk
/// of the guest's tables (setting A/D as the processor would) and neither uses nor
/// fills the TLB; the written bytes then go through the hypervisor's write tracking
/// (`VCPUBackend.emulatorRan`) rather than through a shadow page fault.
extension VCPU {
    /// Writes the low `size` bytes of `value` at `va` as the emulator does.
    public func emulatedWrite(_ va: UInt64, value: UInt64, size: Int = 8, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        try checkLinear(va, size: size)
        let isUser = (cpl ?? self.cpl) == 3
        try observer?.willExecute(self, .emulatedWrite(va: va, size: size, value: value, isUser: isUser))
        tally.writes &+= 1
        let pageEnd = mode.isLongMode ? (va | 0xFFF) &+ 1 : ((va | 0xFFF) &+ 1) & 0xFFFF_FFFF
        let firstBytes = min(size, Int(0x1000 - (va & 0xFFF)))
        // Both pages are translated before anything is written, as for the processor.
        let first = try emulatorTranslate(va, isUser: isUser)
        guard first.isOK else {
            try backend.emulatorRan(self, stores: [], newInstruction: true)
            return first
        }
        var second = AccessResult.ok(0)
        if firstBytes < size {
            second = try emulatorTranslate(pageEnd, isUser: isUser)
            guard second.isOK else {
                try backend.emulatorRan(self, stores: [], newInstruction: true)
                return second
            }
        }
        var stores = [try emulatorStore(first.physicalAddress, value, size: firstBytes, va: va)]
        if firstBytes < size {
            stores.append(try emulatorStore(second.physicalAddress, value >> UInt64(8 * firstBytes), size: size - firstBytes, va: pageEnd))
        }
        try backend.emulatorRan(self, stores: stores, newInstruction: true)
        return first
    }

    /// Stores `count` copies of `byte` from `va` as an emulated REP STOS does: one
    /// translation per page, each iteration (8 bytes where aligned, else 1) an emulated
    /// instruction whose store the hypervisor tracks.
    public func emulatedFill(_ va: UInt64, count: Int, byte: UInt8, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        guard count >= 0 else { throw .invalidArgument("fill count must not be negative, got \(count)") }
        let isUser = (cpl ?? self.cpl) == 3
        try observer?.willExecute(self, .emulatedFill(va: va, count: count, byte: byte, isUser: isUser))
        var address = va, left = count
        var first = AccessResult.ok(0)
        var newInstruction = true
        let pattern = UInt64(byte) &* 0x0101_0101_0101_0101
        while left > 0 {
            try checkLinear(address, size: 1)
            tally.writes &+= 1
            let t = try emulatorTranslate(address, isUser: isUser)
            guard t.isOK else {
                try backend.emulatorRan(self, stores: [], newInstruction: newInstruction)
                return t
            }
            if address == va { first = t }
            var n = min(left, Int(4096 - (address & 0xFFF)))
            left -= n
            var pa = t.physicalAddress
            while n > 0 {
                let chunk = pa & 7 == 0 && n >= 8 ? 8 : 1
                try backend.emulatorRan(self, stores: [try emulatorStore(pa, pattern, size: chunk, va: address)], newInstruction: newInstruction)
                newInstruction = false
                pa &+= UInt64(chunk)
                address &+= UInt64(chunk)
                n -= chunk
            }
        }
        return first
    }

    /// The emulator's walk: A/D set, faults counted and delivered, the TLB untouched
    /// except that a fault drops the address's entries, as a #PF does.
    private func emulatorTranslate(_ va: UInt64, isUser: Bool) throws(MachineError) -> AccessResult {
        tally.walks &+= 1
        var store = GuestPagingStore(memory: memory, entrySize: mode.entrySize)
        let outcome = PageWalker.walk(va, kind: .write, context: AccessContext(cpl: isUser ? 3 : 0, rflagsAC: rflagsAC),
                                      controls: controls, permissions: permissions, root: root, store: &store)
        tally.adUpdates &+= UInt64(store.flagUpdates)
        if let bad = store.unbackedAddress {
            throw .unbackedMemory(address: bad, capacity: memory.capacity,
                                  what: "paging-structure entry read while emulating a store to \(hex(va))")
        }
        let result: AccessResult
        var fault: UInt32?
        switch outcome {
        case .translated(let t):
            result = .ok(t.physicalAddress)
        case .pageFault(let code, _):
            fault = code
            tally.countPageFault(code)
            tlb.flushAddress(va, pcid: pcid, includeGlobal: true)
            result = .pageFault(code, at: va)
        case .generalProtection:
            tally.gp &+= 1
            result = .generalProtection
        }
        backend.emulatorWalked(self, va, isUser: isUser, fault: fault)
        if let observer { try observer.didAccess(self, va, .write, isUser: isUser, result: result) }
        return result
    }

    private func emulatorStore(_ pa: UInt64, _ value: UInt64, size: Int, va: UInt64) throws(MachineError)
        -> (physicalAddress: UInt64, size: Int) {
        try checkBacked(pa, size: size, va: va)
        try observer?.willStore(self, physicalAddress: pa, size: size)
        memory.store(pa, value, size: size)
        return (pa, size)
    }
}

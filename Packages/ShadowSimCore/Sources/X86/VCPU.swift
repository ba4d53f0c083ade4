/// The result of one access or control instruction: success, or the exception x86
/// raises. Exceptions are results the guest sees, not errors of the simulator.
public struct AccessResult: Equatable, Sendable {
    public enum Outcome: UInt8, Sendable { case ok, pageFault, generalProtection }

    public var outcome: Outcome
    /// #PF error code (SDM 4.7).
    public var errorCode: UInt32
    /// CR2 for a #PF: the linear address that faulted.
    public var faultAddress: UInt64
    /// Guest-physical address of the first byte (on success).
    public var physicalAddress: UInt64
    /// Value read (reads only).
    public var value: UInt64
    /// Set by a backend that let a write through without a writable translation (a
    /// hypervisor emulating the store): the vCPU stores the data and reports it back
    /// with `VCPUBackend.emulatedWrite`.
    public var needsEmulation = false

    @inlinable public init(outcome: Outcome, errorCode: UInt32, faultAddress: UInt64,
                           physicalAddress: UInt64, value: UInt64) {
        self.outcome = outcome
        self.errorCode = errorCode
        self.faultAddress = faultAddress
        self.physicalAddress = physicalAddress
        self.value = value
    }

    @inlinable public static func ok(_ pa: UInt64, value: UInt64 = 0) -> AccessResult {
        AccessResult(outcome: .ok, errorCode: 0, faultAddress: 0, physicalAddress: pa, value: value)
    }
    @inlinable public static func pageFault(_ code: UInt32, at va: UInt64) -> AccessResult {
        AccessResult(outcome: .pageFault, errorCode: code, faultAddress: va, physicalAddress: 0, value: 0)
    }
    public static let generalProtection = AccessResult(outcome: .generalProtection, errorCode: 0,
                                                      faultAddress: 0, physicalAddress: 0, value: 0)

    @inlinable public var isOK: Bool { outcome == .ok }

    /// `ok`, `#PF(P|W|U) at 0x…, error code 0x…` or `#GP`.
    public var summary: String {
        switch outcome {
        case .ok: "ok"
        case .pageFault:
            "#PF(\(PageFaultCode.describe(errorCode))) at \(hex(faultAddress)), error code \(hex(UInt64(errorCode)))"
        case .generalProtection: "#GP(0)"
        }
    }
}

/// One virtual CPU: control state, a TLB and counters. It runs "bare metal": TLB misses
/// walk the guest's own page tables in guest memory.
public final class VCPU {
    /// Position in the machine, from 0.
    public let index: Int
    public let memory: GuestMemory
    public let tlb: TLB
    /// This vCPU's counters, accesses the fast path served included.
    public var counters: VCPUCounters {
        get {
            var c = tally
            c.tlbHits &+= (tally.reads &+ tally.writes) &- slowReadsAndWrites
            return c
        }
        set {
            tally = newValue
            slowReadsAndWrites = newValue.reads &+ newValue.writes
        }
    }
    /// The counters as the paths bump them; `counters` adds the hits of the fast path,
    /// which counts only the access itself (a second increment there, around the guest
    /// memory load, costs more than the rest of the hit).
    public var tally = VCPUCounters()
    /// Reads and writes the fast path did not serve.
    @usableFromInline var slowReadsAndWrites: UInt64 = 0
    /// What services TLB misses and the side effects of control instructions. Not
    /// retained (a retain/release pair per TLB miss otherwise): whoever installs a
    /// backend keeps it alive and puts `BareMetal.shared` back before it goes, as
    /// `ShadowMMU` does.
    public unowned(unsafe) var backend: any VCPUBackend = BareMetal.shared
    /// Sees every store, access result and control instruction (nil: nobody watches).
    public var observer: (any MachineObserver)? { didSet { tlb.fast.clear() } }

    public private(set) var cr0: UInt64
    /// CR3 as stored (bit 63 of a MOV source is never stored).
    public private(set) var cr3: UInt64 = 0
    public private(set) var cr4: UInt64
    public private(set) var efer: UInt64
    /// Current privilege level, 0…3 (3 is user mode).
    public private(set) var cpl: Int = 0
    public private(set) var rflagsAC = false
    /// PAE: the PDPTE registers loaded by the last MOV to CR3 (or CR0/CR4 reload).
    public private(set) var pdptes = PDPTERegisters(0, 0, 0, 0)

    public private(set) var controls: PagingControls
    @usableFromInline var permissions: PermissionTable
    @usableFromInline var pcid: UInt16 = 0
    @usableFromInline var root: PagingRoot = .table(0)

    init(index: Int, memory: GuestMemory, mode: PagingMode, cr0: UInt64, cr4: UInt64, efer: UInt64,
         maxPhysAddr: Int, tlb: TLB) {
        self.index = index
        self.memory = memory
        self.tlb = tlb
        self.cr0 = cr0
        self.cr4 = cr4
        self.efer = efer
        controls = PagingControls(mode: mode, maxPhysAddr: maxPhysAddr)
        permissions = PermissionTable(controls: controls, rflagsAC: false)
        recomputeControls()
    }

    @inlinable public var mode: PagingMode { controls.mode }
    /// The rights check for the current controls and RFLAGS.AC (what a walk uses).
    public var permissionTable: PermissionTable { permissions }
    /// The current PCID (0 unless CR4.PCIDE = 1).
    public var currentPCID: UInt16 { pcid }
    /// Where a walk starts now: the table CR3 points at, or (PAE) the PDPTE registers.
    public var pagingRoot: PagingRoot { root }

    private func recomputeControls() {
        tlb.fast.clear()
        controls.cr0WP = cr0 & CR0.wp != 0
        controls.cr4PSE = cr4 & CR4.pse != 0
        controls.cr4SMEP = cr4 & CR4.smep != 0
        controls.cr4SMAP = cr4 & CR4.smap != 0
        controls.eferNXE = efer & EFER.nxe != 0
        permissions = PermissionTable(controls: controls, rflagsAC: rflagsAC)
        pcid = cr4 & CR4.pcide != 0 ? UInt16(cr3 & CR3Bits.pcidMask) : 0
        root = mode == .pae ? .pdptes(pdptes) : .table(tableBase(cr3))
    }

    private func tableBase(_ cr3: UInt64) -> UInt64 {
        switch mode {
        case .legacy32: cr3 & 0xFFFF_F000
        case .pae: cr3 & 0xFFFF_FFE0
        case .long4, .long5: cr3 & controls.physicalAddressMask & ~0xFFF
        }
    }

    // MARK: Memory accesses

    /// Reads `size` bytes (1, 2, 4 or 8) at `va` with the vCPU's CPL unless `cpl` is given.
    @inlinable @inline(__always)
    public func read(_ va: UInt64, size: Int = 8, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        tally.reads &+= 1
        let isUser = (cpl ?? self.cpl) == 3
        let fast = tlb.fast
        if let slot = fast.find(va, size: size, allow: isUser ? FastTranslations.Allow.userRead : FastTranslations.Allow.supervisorRead) {
            let offset = Int(truncatingIfNeeded: va & 0xFFF)
            return .ok(fast.pages[slot] | UInt64(offset), value: GuestMemory.load(fast.frames[slot]!, offset: offset, size: size))
        }
        slowReadsAndWrites &+= 1
        return try access(va, .read, size: size, isUser: isUser, value: 0)
    }

    /// Writes the low `size` bytes of `value` at `va`.
    @inlinable @inline(__always)
    public func write(_ va: UInt64, value: UInt64, size: Int = 8, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        tally.writes &+= 1
        let isUser = (cpl ?? self.cpl) == 3
        let fast = tlb.fast
        if let slot = fast.find(va, size: size, allow: isUser ? FastTranslations.Allow.userWrite : FastTranslations.Allow.supervisorWrite) {
            let offset = Int(truncatingIfNeeded: va & 0xFFF)
            GuestMemory.store(fast.frames[slot]!, offset: offset, value, size: size)
            return .ok(fast.pages[slot] | UInt64(offset))
        }
        slowReadsAndWrites &+= 1
        return try access(va, .write, size: size, isUser: isUser, value: value)
    }

    /// Fetches an instruction byte at `va`.
    @inlinable
    public func fetch(_ va: UInt64, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        tally.fetches &+= 1
        let isUser = (cpl ?? self.cpl) == 3
        return try access(va, .fetch, size: 1, isUser: isUser, value: 0)
    }

    /// Stores `count` copies of `byte` from `va` (like REP STOSB): one write
    /// translation per page touched, stopping at the first fault.
    public func fill(_ va: UInt64, count: Int, byte: UInt8, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        guard count >= 0 else { throw .invalidArgument("fill count must not be negative, got \(count)") }
        let isUser = (cpl ?? self.cpl) == 3
        try observer?.willExecute(self, .fill(va: va, count: count, byte: byte, isUser: isUser))
        var address = va
        var left = count
        var first = AccessResult.ok(0)
        var retried = false
        while left > 0 {
            try checkLinear(address, size: 1)
            let t = try translate(address, .write, isUser: isUser)
            if t.needsEmulation && !retried {
                // A string store is not an instruction that writes page tables: the
                // hypervisor unprotects the frame and lets it run again (KVM's
                // kvm_mmu_unprotect_gfn_and_retry), unless that changed nothing.
                retried = true
                if try backend.unprotectForRetry(self, va: address, physicalAddress: t.physicalAddress) { continue }
            }
            retried = false
            tally.writes &+= 1
            guard t.isOK else { return t }
            var n = min(left, Int(4096 - (address & 0xFFF)))
            // Emulated, the iterations run in batches (KVM's emulator, and kvm-pvm's
            // pvm_emul_batch, re-enter the guest every 1024), then the store goes on natively.
            if t.needsEmulation { n = min(n, 1024) }
            try checkBacked(t.physicalAddress, size: n, va: address)
            if let observer {
                try observer.didAccess(self, address, .write, isUser: isUser, result: t)
                try observer.willStore(self, physicalAddress: t.physicalAddress, size: n)
            }
            memory.fill(t.physicalAddress, count: n, byte: byte)
            if t.needsEmulation { try backend.emulatedWrite(self, physicalAddress: t.physicalAddress, size: n) }
            if address == va { first = t }
            address &+= UInt64(n)
            left -= n
        }
        return first
    }

    /// Translates without touching data: what the TLB or a walk gives for this access.
    public func translate(_ va: UInt64, _ kind: AccessKind, cpl: Int? = nil) throws(MachineError) -> AccessResult {
        try checkLinear(va, size: 1)
        return try translate(va, kind, isUser: (cpl ?? self.cpl) == 3)
    }

    @usableFromInline
    /// One access, reported to the observer page by page: an access that crosses a page
    /// boundary is judged as two (the second at the next page's first byte).
    func access(_ va: UInt64, _ kind: AccessKind, size: Int, isUser: Bool, value: UInt64) throws(MachineError) -> AccessResult {
        try checkLinear(va, size: size)
        if let observer { try observer.willExecute(self, .access(kind, va: va, size: size, value: value, isUser: isUser)) }
        let first = try translate(va, kind, isUser: isUser)
        guard first.isOK else {
            if let observer { try observer.didAccess(self, va, kind, isUser: isUser, result: first) }
            return first
        }
        let pageEnd = (va | 0xFFF) &+ 1
        let firstBytes = Int(min(UInt64(size), pageEnd &- va))
        guard firstBytes < size else {
            // Within one page: the common case.
            let pa = first.physicalAddress
            try checkBacked(pa, size: size, va: va)
            let r: AccessResult
            switch kind {
            case .read:
                r = .ok(pa, value: memory.load(pa, size: size))
            case .write:
                try observer?.willStore(self, physicalAddress: pa, size: size)
                memory.store(pa, value, size: size)
                if first.needsEmulation { try backend.emulatedWrite(self, physicalAddress: pa, size: size) }
                r = .ok(pa)
            case .fetch:
                r = .ok(pa)
            }
            if let observer {
                try observer.didAccess(self, va, kind, isUser: isUser, result: r)
            } else if kind != .fetch && !first.needsEmulation {
                rememberFastTranslation(va)
            }
            return r
        }
        return try accessAcrossPages(va, kind, size: size, isUser: isUser, value: value, first: first)
    }

    /// Fills the fast cache from the TLB entry that now serves `va` (if the TLB holds
    /// one and its frame has storage), with every access kind that entry allows under
    /// the current controls — a store only through a dirty entry, as on a TLB hit.
    func rememberFastTranslation(_ va: UInt64) {
        let data = tlb.lookup(va, pcid: pcid)
        guard data != 0 else { return }
        let mask = TLB.offsetMask(of: data)
        let page = ((data & ~mask) | (va & mask)) & ~0xFFF
        guard let frame = memory.frame(page >> 12) else { return }
        let rights = PageRights(rawValue: UInt8(truncatingIfNeeded: data & 7))
        let dirty = data & TLB.Flag.dirty != 0
        var allow: UInt8 = 0
        if permissions.permits(.read, isUser: false, rights: rights) { allow |= FastTranslations.Allow.supervisorRead }
        if permissions.permits(.read, isUser: true, rights: rights) { allow |= FastTranslations.Allow.userRead }
        if dirty && permissions.permits(.write, isUser: false, rights: rights) { allow |= FastTranslations.Allow.supervisorWrite }
        if dirty && permissions.permits(.write, isUser: true, rights: rights) { allow |= FastTranslations.Allow.userWrite }
        tlb.fast.fill(va, frame: frame, page: page, allow: allow)
    }

    /// An access crossing into the next page needs both translations before it happens.
    /// (In 32-bit modes the linear address wraps at 4 GiB.)
    func accessAcrossPages(_ va: UInt64, _ kind: AccessKind, size: Int, isUser: Bool, value: UInt64,
                           first: AccessResult) throws(MachineError) -> AccessResult {
        let pageEnd = mode.isLongMode ? (va | 0xFFF) &+ 1 : ((va | 0xFFF) &+ 1) & 0xFFFF_FFFF
        let firstBytes = Int(0x1000 - (va & 0xFFF))
        let second = try translate(pageEnd, kind, isUser: isUser)
        if let observer { try observer.didAccess(self, va, kind, isUser: isUser, result: first) }
        guard second.isOK else {
            if let observer { try observer.didAccess(self, pageEnd, kind, isUser: isUser, result: second) }
            return second
        }
        let pa = first.physicalAddress
        try checkBacked(pa, size: firstBytes, va: va)
        try checkBacked(second.physicalAddress, size: size - firstBytes, va: pageEnd)
        func byteAddress(_ i: Int) -> UInt64 {
            i < firstBytes ? pa + UInt64(i) : second.physicalAddress + UInt64(i - firstBytes)
        }
        var r = AccessResult.ok(pa)
        switch kind {
        case .read:
            var v: UInt64 = 0
            for i in 0..<size { v |= memory.load(byteAddress(i), size: 1) << UInt64(8 * i) }
            r = .ok(pa, value: v)
        case .write:
            if let observer {
                try observer.willStore(self, physicalAddress: pa, size: firstBytes)
                try observer.willStore(self, physicalAddress: second.physicalAddress, size: size - firstBytes)
            }
            for i in 0..<size { memory.store(byteAddress(i), value >> UInt64(8 * i), size: 1) }
            if first.needsEmulation { try backend.emulatedWrite(self, physicalAddress: pa, size: firstBytes) }
            if second.needsEmulation {
                try backend.emulatedWrite(self, physicalAddress: second.physicalAddress, size: size - firstBytes)
            }
        case .fetch:
            break
        }
        if let observer { try observer.didAccess(self, pageEnd, kind, isUser: isUser, result: .ok(second.physicalAddress)) }
        return r
    }

    @inlinable func checkLinear(_ va: UInt64, size: Int) throws(MachineError) {
        guard size == 1 || size == 2 || size == 4 || size == 8 else {
            throw .invalidArgument("access size must be 1, 2, 4 or 8 bytes, got \(size)")
        }
        if !mode.isLongMode && va > 0xFFFF_FFFF {
            throw .invalidArgument("linear address \(hex(va)) does not fit the 32 bits of \(mode) paging")
        }
    }

    @usableFromInline func checkBacked(_ pa: UInt64, size: Int, va: UInt64) throws(MachineError) {
        guard memory.contains(pa, size: size) else {
            throw .unbackedMemory(address: pa, capacity: memory.capacity, what: "access to \(hex(va))")
        }
    }

    /// The TLB, then a walk on a miss. A #PF invalidates the address's TLB entries.
    @inlinable
    func translate(_ va: UInt64, _ kind: AccessKind, isUser: Bool) throws(MachineError) -> AccessResult {
        guard PageWalker.isCanonical(va, mode: mode) else {
            tally.gp &+= 1
            return .generalProtection
        }
        let data = tlb.lookup(va, pcid: pcid)
        if data != 0 && (kind != .write || data & TLB.Flag.dirty != 0) {
            // A hit; a write through a clean entry walks again so the walk can set D.
            let rights = PageRights(rawValue: UInt8(truncatingIfNeeded: data & 7))
            if permissions.permits(kind, isUser: isUser, rights: rights) {
                tally.tlbHits &+= 1
                let mask = TLB.offsetMask(of: data)
                return .ok((data & ~mask) | (va & mask))
            }
            tlb.flushAddress(va, pcid: pcid, includeGlobal: true)
            if backend.handlesProtectionFaults {
                tally.tlbMisses &+= 1
                return try backend.translateMiss(self, va, kind, isUser: isUser)
            }
            tally.tlbHits &+= 1
            tally.pfProtection &+= 1
            let code = PageFaultCode.accessBits(kind: kind, isUser: isUser, controls: controls) | PageFaultCode.present
            return .pageFault(code, at: va)
        }
        tally.tlbMisses &+= 1
        return try backend.translateMiss(self, va, kind, isUser: isUser)
    }

    /// The processor's own page walk of the guest tables, filling the TLB on success
    /// (what a TLB miss does on bare metal).
    public func walkGuestTablesAndFill(_ va: UInt64, _ kind: AccessKind, isUser: Bool) throws(MachineError) -> AccessResult {
        tally.walks &+= 1
        var store = GuestPagingStore(memory: memory, entrySize: mode.entrySize)
        let outcome = PageWalker.walk(va, kind: kind, context: AccessContext(cpl: isUser ? 3 : 0, rflagsAC: rflagsAC),
                                      controls: controls, permissions: permissions, root: root, store: &store)
        tally.adUpdates &+= UInt64(store.flagUpdates)
        if let bad = store.unbackedAddress {
            throw .unbackedMemory(address: bad, capacity: memory.capacity,
                                  what: "paging-structure entry read while translating \(hex(va))")
        }
        switch outcome {
        case .translated(let t):
            tlb.insert(va, translation: t, pcid: pcid, global: t.isGlobal && cr4 & CR4.pge != 0)
            return .ok(t.physicalAddress)
        case .pageFault(let code, _):
            tally.countPageFault(code)
            tlb.flushAddress(va, pcid: pcid, includeGlobal: true)
            return .pageFault(code, at: va)
        case .generalProtection:
            tally.gp &+= 1
            return .generalProtection
        }
    }

    // MARK: Control instructions: the architectural checks here, their TLB effects in the backend

    /// MOV to CR3 (#GP above CPL 0). With CR4.PCIDE = 1, bit 63 set means "do not flush the new PCID".
    /// PAE paging loads the PDPTE registers here; a PDPTE with reserved bits is #GP.
    public func loadCR3(_ source: UInt64) throws(MachineError) -> AccessResult {
        try observer?.willExecute(self, .loadCR3(source))
        guard cpl == 0 else { tally.gp &+= 1; return .generalProtection }
        let pcide = cr4 & CR4.pcide != 0
        let noFlush = pcide && source & CR3Bits.noFlush != 0
        let value = pcide ? source & ~CR3Bits.noFlush : source
        if mode.isLongMode {
            // Bits 63:MAXPHYADDR are reserved.
            guard value & PTE.bits(63, controls.maxPhysAddr) == 0 else { tally.gp &+= 1; return .generalProtection }
        } else if value > 0xFFFF_FFFF {
            throw .invalidArgument("CR3 value \(hex(value)) does not fit the 32 bits of \(mode) paging")
        }
        let previous = cr3
        let previousPCID = pcid
        let previousPDPTEs = pdptes
        if mode == .pae {
            guard let loaded = try loadPDPTEs(cr3: value) else { tally.gp &+= 1; return .generalProtection }
            pdptes = loaded
        }
        cr3 = value
        recomputeControls()
        tally.cr3Loads &+= 1
        if noFlush { tally.cr3NoFlush &+= 1 }
        try backend.cr3Loaded(self, previous: previous, pdptesChanged: previousPDPTEs != pdptes, noFlush: noFlush)
        try observer?.didControl(self, .cr3Load(previousCR3: previous, previousPCID: previousPCID, noFlush: noFlush))
        return .ok(0)
    }

    /// Reads the four PDPTEs CR3 points at; nil when one is present with reserved bits.
    private func loadPDPTEs(cr3 value: UInt64) throws(MachineError) -> PDPTERegisters? {
        let base = value & 0xFFFF_FFE0
        guard memory.contains(base, size: 32) else {
            throw .unbackedMemory(address: base, capacity: memory.capacity, what: "PAE PDPT load")
        }
        let e = (0..<4).map { memory.load(base + UInt64($0 * 8), size: 8) }
        for pdpte in e where PageWalker.pdpteFaults(pdpte, controls: controls) { return nil }
        return PDPTERegisters(e[0], e[1], e[2], e[3])
    }

    /// MOV to CR4. #GP for reserved bits, clearing PAE or toggling LA57 in IA-32e mode,
    /// and setting PCIDE outside IA-32e mode or with CR3[11:0] ≠ 0. PAE paging reloads
    /// the PDPTEs when PGE, PSE or SMEP change.
    public func writeCR4(_ value: UInt64) throws(MachineError) -> AccessResult {
        try observer?.willExecute(self, .writeCR4(value))
        guard cpl == 0 else { tally.gp &+= 1; return .generalProtection }
        let changed = value ^ cr4
        guard value & ~CR4.defined == 0 else { tally.gp &+= 1; return .generalProtection }
        if changed & (CR4.pae | CR4.la57) != 0 {
            if mode.isLongMode { tally.gp &+= 1; return .generalProtection }
            throw .unsupported("changing CR4.PAE switches the paging mode, which a running vCPU cannot do here")
        }
        if changed & CR4.pcide != 0 && value & CR4.pcide != 0 {
            guard mode.isLongMode, cr3 & CR3Bits.pcidMask == 0 else { tally.gp &+= 1; return .generalProtection }
        }
        let previous = cr4
        let previousPDPTEs = pdptes
        cr4 = value
        recomputeControls()
        if mode == .pae && changed & (CR4.pge | CR4.pse | CR4.smep) != 0 {
            guard let loaded = try loadPDPTEs(cr3: cr3) else {
                cr4 = previous
                recomputeControls()
                tally.gp &+= 1
                return .generalProtection
            }
            pdptes = loaded
            recomputeControls()
        }
        try backend.cr4Written(self, previous: previous, pdptesChanged: previousPDPTEs != pdptes)
        try observer?.didControl(self, .cr4Write(previous: previous))
        return .ok(0)
    }

    /// MOV to CR0. Only WP may change on a running vCPU; PG and PE are fixed.
    public func writeCR0(_ value: UInt64) throws(MachineError) -> AccessResult {
        try observer?.willExecute(self, .writeCR0(value))
        guard cpl == 0, value >> 32 == 0 else { tally.gp &+= 1; return .generalProtection }
        if (value ^ cr0) & (CR0.pg | CR0.pe) != 0 {
            throw .unsupported("changing CR0.PG or CR0.PE switches the paging mode, which a running vCPU cannot do here")
        }
        let previous = cr0
        cr0 = value
        recomputeControls()
        try backend.cr0Written(self, previous: previous)
        try observer?.didControl(self, .cr0Write(previous: previous))
        return .ok(0)
    }

    /// WRMSR to IA32_EFER. Only NXE (and bits with no paging effect) may change.
    public func writeEFER(_ value: UInt64) throws(MachineError) -> AccessResult {
        try observer?.willExecute(self, .writeEFER(value))
        guard cpl == 0, value & ~EFER.defined == 0 else { tally.gp &+= 1; return .generalProtection }
        if (value ^ efer) & (EFER.lme | EFER.lma) != 0 {
            throw .unsupported("changing EFER.LME switches the paging mode, which a running vCPU cannot do here")
        }
        let previous = efer
        efer = value
        recomputeControls()
        try backend.eferWritten(self, previous: previous)
        try observer?.didControl(self, .eferWrite(previous: previous))
        return .ok(0)
    }

    /// Sets RFLAGS.AC (STAC/CLAC).
    public func setAlignmentCheck(_ on: Bool) {
        rflagsAC = on
        recomputeControls()
    }

    /// Sets the current privilege level (0…3).
    public func setCPL(_ level: Int) throws(MachineError) {
        guard (0...3).contains(level) else { throw .invalidArgument("CPL must be 0…3, got \(level)") }
        cpl = level
    }

    /// INVLPG (#GP above CPL 0). A non-canonical address makes it a no-op.
    @discardableResult
    public func invlpg(_ va: UInt64) throws(MachineError) -> AccessResult {
        if !mode.isLongMode && va > 0xFFFF_FFFF {
            throw .invalidArgument("linear address \(hex(va)) does not fit the 32 bits of \(mode) paging")
        }
        try observer?.willExecute(self, .invlpg(va))
        guard cpl == 0 else { tally.gp &+= 1; return .generalProtection }
        tally.invlpg &+= 1
        guard PageWalker.isCanonical(va, mode: mode) else { return .ok(0) }
        try backend.invlpg(self, va)
        try observer?.didControl(self, .invlpg(va))
        return .ok(0)
    }

    /// INVPCID (executed at CPL 0): #GP for a bad type, a PCID above 4095, a non-canonical
    /// address (type 0), or a non-zero PCID while CR4.PCIDE = 0 (types 0 and 1).
    public func invpcid(type rawType: Int, pcid target: UInt64, address va: UInt64) throws(MachineError) -> AccessResult {
        try observer?.willExecute(self, .invpcid(type: rawType, pcid: target, address: va))
        tally.invpcid &+= 1
        guard cpl == 0, let type = InvpcidType(rawValue: rawType), target <= 0xFFF else {
            tally.gp &+= 1
            return .generalProtection
        }
        let pcideOn = cr4 & CR4.pcide != 0
        switch type {
        case .individualAddress:
            guard PageWalker.isCanonical(va, mode: mode), pcideOn || target == 0 else {
                tally.gp &+= 1
                return .generalProtection
            }
        case .singleContext:
            guard pcideOn || target == 0 else { tally.gp &+= 1; return .generalProtection }
        case .allContextsIncludingGlobals, .allContexts:
            break
        }
        try backend.invpcid(self, type, pcid: UInt16(target), address: va)
        try observer?.didControl(self, .invpcid(type, pcid: UInt16(target), address: va))
        return .ok(0)
    }
}

/// Walk reads and A/D writes against guest memory.
@usableFromInline struct GuestPagingStore: PagingStructureStore {
    @usableFromInline let memory: GuestMemory
    @usableFromInline let entrySize: Int
    /// Set when a walk reads an entry outside guest memory (the walk then sees zero).
    @usableFromInline var unbackedAddress: UInt64?
    @usableFromInline var flagUpdates = 0

    @inlinable init(memory: GuestMemory, entrySize: Int) {
        self.memory = memory
        self.entrySize = entrySize
    }

    @inlinable mutating func loadEntry(at address: UInt64, level: Int) -> UInt64 {
        guard memory.contains(address, size: entrySize) else {
            if unbackedAddress == nil { unbackedAddress = address }
            return 0
        }
        return memory.load(address, size: entrySize)
    }

    @inlinable mutating func setEntryBits(_ bits: UInt64, at address: UInt64, level: Int) {
        guard memory.contains(address, size: entrySize) else { return }
        memory.store(address, memory.load(address, size: entrySize) | bits, size: entrySize)
        flagUpdates += 1
    }
}

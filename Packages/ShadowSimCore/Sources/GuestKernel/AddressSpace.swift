import X86

/// Rights and attributes of a mapping made by `AddressSpace.map`.
public struct MappingAttributes: Equatable, Sendable {
    public var writable = true
    public var user = true
    public var executeDisable = false
    public var global = false
    public var accessed = false
    public var dirty = false
    public var size: PageSize = .size4K

    public init() {}
}

/// One process address space: a top-level table (what CR3 points at) and helpers that
/// edit its tables with guest stores by a chosen vCPU.
///
/// Intermediate tables the helpers create are present, writable and user-accessible
/// (rights are decided by the leaf, as Linux does); the kernel half of the top-level
/// table is copied when the space is created.
public final class AddressSpace {
    public unowned let kernel: GuestKernel
    /// Guest-physical address of the top-level table (PDPT for PAE).
    public let root: UInt64

    init(kernel: GuestKernel, root: UInt64) {
        self.kernel = kernel
        self.root = root
    }

    public var mode: PagingMode { kernel.mode }
    private var memory: GuestMemory { kernel.machine.memory }

    /// Where an entry on the path of a va lives, and its current value.
    public struct EntryLocation: Equatable, Sendable {
        public var level: Int
        public var address: UInt64
        public var value: UInt64
    }

    /// The entry at `level` on the walk path of `va`, or nil when a level above is not
    /// present or maps a page. Reads memory directly (no A/D changes, no TLB).
    public func entry(_ va: UInt64, level: Int) throws(MachineError) -> EntryLocation? {
        try checkVA(va)
        guard (1...mode.levels).contains(level) else {
            throw .invalidArgument("level must be 1…\(mode.levels) for \(mode) paging, got \(level)")
        }
        var table = topTable
        var current = mode.levels
        while true {
            let address = table + UInt64(mode.index(of: va, level: current) * mode.entrySize)
            let value = try readTableEntry(address, va: va)
            if current == level { return EntryLocation(level: level, address: address, value: value) }
            guard value & PTE.present != 0, !mapsPage(value, level: current) else { return nil }
            table = nextTable(value, level: current)
            current -= 1
        }
    }

    /// The entry that maps `va` (a present leaf), or nil when `va` is not mapped.
    public func leaf(_ va: UInt64) throws(MachineError) -> EntryLocation? {
        try checkVA(va)
        var table = topTable
        var level = mode.levels
        while true {
            let address = table + UInt64(mode.index(of: va, level: level) * mode.entrySize)
            let value = try readTableEntry(address, va: va)
            guard value & PTE.present != 0 else { return nil }
            if level == 1 || mapsPage(value, level: level) {
                return EntryLocation(level: level, address: address, value: value)
            }
            table = nextTable(value, level: level)
            level -= 1
        }
    }

    /// Maps `va` to `gpa` with `attributes`, creating missing tables. Every store is a
    /// guest store by `vcpu`. No TLB is invalidated: that is the caller's business.
    public func map(_ va: UInt64, to gpa: UInt64, attributes a: MappingAttributes, by vcpu: VCPU) throws(MachineError) {
        try checkVA(va)
        let size = a.size
        let leafLevel = try level(for: size)
        guard va & size.offsetMask == 0 else { throw .invalidArgument("va \(hex(va)) is not aligned to a \(size) page") }
        guard gpa & size.offsetMask == 0 else { throw .invalidArgument("gpa \(hex(gpa)) is not aligned to a \(size) page") }
        guard memory.contains(gpa, size: 1), gpa + size.bytes <= memory.capacity else {
            throw .unbackedMemory(address: gpa, capacity: memory.capacity, what: "a \(size) mapping")
        }
        if size == .size4M && vcpu.cr4 & CR4.pse == 0 {
            throw .invalidArgument("4m pages need CR4.PSE, which is clear on this vCPU")
        }
        if a.executeDisable && !(mode.hasWideEntries && vcpu.efer & EFER.nxe != 0) {
            throw .invalidArgument("nx needs EFER.NXE and PAE-style paging (the bit would be reserved)")
        }
        let location = try pathToLevel(va, leafLevel, by: vcpu)
        var value = gpa | PTE.present
        if a.writable { value |= PTE.writable }
        if a.user { value |= PTE.user }
        if a.global { value |= PTE.global }
        if a.accessed { value |= PTE.accessed }
        if a.dirty { value |= PTE.dirty }
        if a.executeDisable { value |= PTE.executeDisable }
        if leafLevel > 1 { value |= PTE.pageSize }
        if mode == .legacy32 && size == .size4M {
            // PSE-36: physical bits 39:32 go in PDE bits 20:13.
            value = (gpa & 0xFFC0_0000) | ((gpa >> 32) & 0xFF) << 13 | (value & 0xFFF)
        }
        try kernel.storeEntry(location, value, by: vcpu)
    }

    /// Clears the leaf that maps `va` (P = 0). Returns whether anything was mapped.
    @discardableResult
    public func unmap(_ va: UInt64, by vcpu: VCPU) throws(MachineError) -> Bool {
        guard let leaf = try leaf(va) else { return false }
        try kernel.storeEntry(leaf.address, 0, by: vcpu)
        return true
    }

    /// Writes a raw value into the entry at `level` on the path of `va`. The tables above
    /// must exist (the entry's table is found by reading the path).
    public func setEntry(_ va: UInt64, level: Int, value: UInt64, by vcpu: VCPU) throws(MachineError) {
        if mode == .legacy32 && value > 0xFFFF_FFFF {
            throw .invalidArgument("\(hex(value)) does not fit a 32-bit entry")
        }
        guard let location = try entry(va, level: level) else {
            throw .kernel("no \(mode.entryName(level: level)) for \(hex(va)): a table above it is not present or maps a large page")
        }
        try kernel.storeEntry(location.address, value, by: vcpu)
    }

    // MARK: Helpers

    private var topTable: UInt64 { root }

    /// An entry of a table on the path of `va`; tables outside guest memory are errors.
    private func readTableEntry(_ address: UInt64, va: UInt64) throws(MachineError) -> UInt64 {
        guard memory.contains(address, size: mode.entrySize) else {
            throw .unbackedMemory(address: address, capacity: memory.capacity,
                                  what: "paging-structure entry on the path of \(hex(va))")
        }
        return kernel.loadEntry(address)
    }

    private func checkVA(_ va: UInt64) throws(MachineError) {
        if !mode.isLongMode && va > 0xFFFF_FFFF {
            throw .invalidArgument("va \(hex(va)) does not fit the 32 bits of \(mode) paging")
        }
        guard PageWalker.isCanonical(va, mode: mode) else {
            throw .invalidArgument("va \(hex(va)) is not canonical for \(mode) paging")
        }
    }

    private func level(for size: PageSize) throws(MachineError) -> Int {
        switch (mode, size) {
        case (_, .size4K): return 1
        case (.legacy32, .size4M), (.pae, .size2M), (.long4, .size2M), (.long5, .size2M): return 2
        case (.long4, .size1G), (.long5, .size1G): return 3
        default: throw .invalidArgument("\(mode) paging has no \(size) pages")
        }
    }

    private func mapsPage(_ entry: UInt64, level: Int) -> Bool {
        entry & PTE.pageSize != 0 && mode.honoursPageSize(level: level, pse: kernel.machine.vcpus[0].cr4 & CR4.pse != 0)
    }

    private func nextTable(_ entry: UInt64, level: Int) -> UInt64 {
        mode == .legacy32 ? entry & 0xFFFF_F000 : entry & PTE.bits(51, 12)
    }

    /// Address of the entry at `leafLevel` for `va`, creating missing tables above it.
    private func pathToLevel(_ va: UInt64, _ leafLevel: Int, by vcpu: VCPU) throws(MachineError) -> UInt64 {
        var table = topTable
        var level = mode.levels
        while true {
            let address = table + UInt64(mode.index(of: va, level: level) * mode.entrySize)
            if level == leafLevel { return address }
            var value = try readTableEntry(address, va: va)
            if value & PTE.present == 0 {
                if mode == .pae && level == 3 {
                    throw .kernel("the PAE PDPTE for \(hex(va)) is not present; PDPTEs are loaded at MOV to CR3, so spaces preallocate their page directories")
                }
                let newTable = try kernel.allocateTable(by: vcpu)
                value = newTable | PTE.present | (mode == .pae && level == 3 ? 0 : PTE.writable | PTE.user)
                try kernel.storeEntry(address, value, by: vcpu)
            } else if mapsPage(value, level: level) {
                throw .kernel("\(hex(va)) lies inside a \(mode.pageSize(leafLevel: level)) page mapped by a \(mode.entryName(level: level)); unmap it first")
            }
            table = nextTable(value, level: level)
            level -= 1
        }
    }
}

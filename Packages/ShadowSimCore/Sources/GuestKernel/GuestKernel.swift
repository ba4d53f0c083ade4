import X86

/// A minimal guest kernel: the memory layout, page-frame allocator and page-table
/// helpers a scenario needs, built the way Linux builds them.
///
/// At boot the loader writes the kernel's own tables straight into guest memory: a
/// *physmap* that maps all guest RAM at `layout.physmapBase` with the largest pages
/// the mode has (global, supervisor, writable). Every vCPU then loads the kernel's CR3.
/// From then on every page-table change a helper makes is a **guest store** by a vCPU
/// through the physmap, because that is the path a shadow MMU write-protects and traps.
///
/// With `userPhysmap` (4-level paging only) the physmap sits in the lower half,
/// user-accessible, and the kernel's stores are made at CPL 3: the layout a guest on
/// kvm-pvm needs, where CPL 0 code is emulated and only CPL 3 code runs on the shadow
/// tables (`shadowsim run --backend kvm` runs both sides with it).
///
/// Without `boot`, no vCPU loads a CR3: the hypervisor has no root until the scenario
/// loads one, so the shadow state is exactly what the scenario builds. Until some vCPU
/// has loaded a CR3 the loader makes the kernel's stores (nothing can be shadowed yet,
/// so nothing is missed); after that they are guest stores as above.
public final class GuestKernel {
    public let machine: Machine
    public let layout: KernelLayout
    public let frames: FrameAllocator
    /// The kernel's own address space (Linux's init_mm); new spaces copy its kernel half.
    public private(set) var kernelSpace: AddressSpace!

    /// Whether stores still go straight to memory (a VM made without `boot` whose vCPUs
    /// have not loaded a CR3 yet).
    private var loaderStores: Bool
    /// Page-table updates queued by a batch, and how deep it is, per vCPU index.
    var queuedUpdates: [Int: [PageTableUpdate]] = [:]
    var batchDepth: [Int: Int] = [:]

    public init(machine: Machine, boot: Bool = true, userPhysmap: Bool = false) throws(MachineError) {
        self.machine = machine
        if userPhysmap && machine.mode != .long4 {
            throw .invalidArgument("a user-mode physmap needs 4-level paging, not \(machine.mode)")
        }
        layout = KernelLayout(mode: machine.mode, userPhysmap: userPhysmap)
        if !machine.mode.isLongMode && machine.memory.capacity > layout.physmapSize {
            throw .invalidArgument("\(machine.mode) guests can have at most 1 GiB of memory (all of it mapped at \(hex(layout.physmapBase))), got \(hex(machine.memory.capacity)) bytes")
        }
        frames = FrameAllocator(capacity: machine.memory.capacity, firstFrame: 0x10_0000)
        loaderStores = !boot
        let root = try buildBootTables()
        kernelSpace = AddressSpace(kernel: self, root: root)
        for vcpu in machine.vcpus where boot {
            let result = try vcpu.loadCR3(root)
            guard result.isOK else { throw .kernel("the boot page tables were refused by MOV to CR3: \(result.summary)") }
        }
    }

    public var mode: PagingMode { machine.mode }

    /// Guest-virtual address of guest-physical `gpa` in the physmap.
    @inlinable public func physmapAddress(of gpa: UInt64) -> UInt64 { layout.physmapBase &+ gpa }

    // MARK: Boot

    /// The loader's work: kernel tables written directly into guest memory.
    private func buildBootTables() throws(MachineError) -> UInt64 {
        let memory = machine.memory
        let capacity = memory.capacity
        let user = layout.storeCPL == 3 ? PTE.user : 0
        let kernelLeaf = PTE.present | PTE.writable | PTE.accessed | PTE.dirty | PTE.global | user
        let entrySize = mode.entrySize
        func put(_ table: UInt64, _ index: Int, _ value: UInt64) {
            memory.store(table + UInt64(index * entrySize), value, size: entrySize)
        }
        let top = try frames.allocateFresh(memory)
        switch mode {
        case .legacy32:
            let pse = machine.configuration.cr4PSE
            for (i, base) in stride(from: UInt64(0), to: capacity, by: 1 << 22).enumerated() {
                if pse {
                    put(top, 768 + i, base | kernelLeaf | PTE.pageSize)
                } else {
                    let pt = try frames.allocateFresh(memory)
                    for j in 0..<1024 where base + UInt64(j) << 12 < capacity {
                        put(pt, j, (base + UInt64(j) << 12) | kernelLeaf)
                    }
                    put(top, 768 + i, pt | PTE.present | PTE.writable | PTE.accessed)
                }
            }
        case .pae:
            // Linux preallocates all four page directories of a PAE space (the PDPTEs are
            // only read at MOV to CR3); the kernel one maps RAM with 2 MiB pages.
            for i in 0..<3 { put(top, i, try frames.allocateFresh(memory) | PTE.present) }
            let pd = try frames.allocateFresh(memory)
            put(top, 3, pd | PTE.present)
            for (i, base) in stride(from: UInt64(0), to: capacity, by: 1 << 21).enumerated() {
                put(pd, i, base | kernelLeaf | PTE.pageSize)
            }
        case .long4, .long5:
            var pml4 = top
            if mode == .long5 {
                pml4 = try frames.allocateFresh(memory)
                put(top, layout.physmapTopIndex, pml4 | PTE.present | PTE.writable | PTE.accessed)
            }
            let firstPML4Index = mode == .long5 ? 0 : layout.physmapTopIndex
            var pdpt: UInt64 = 0
            for (i, base) in stride(from: UInt64(0), to: capacity, by: 1 << 30).enumerated() {
                if i % 512 == 0 {
                    pdpt = try frames.allocateFresh(memory)
                    put(pml4, firstPML4Index + i / 512, pdpt | PTE.present | PTE.writable | PTE.accessed | user)
                }
                if layout.storeCPL == 3 {
                    // 2 MiB pages: a processor without 1 GiB pages (kvm-pvm reports none) can walk it.
                    let pd = try frames.allocateFresh(memory)
                    for j in 0..<512 where base + UInt64(j) << 21 < capacity {
                        put(pd, j, (base + UInt64(j) << 21) | kernelLeaf | PTE.pageSize)
                    }
                    put(pdpt, i % 512, pd | PTE.present | PTE.writable | PTE.accessed | user)
                } else {
                    put(pdpt, i % 512, base | kernelLeaf | PTE.pageSize)
                }
            }
        }
        return top
    }

    // MARK: Address spaces

    /// A new process address space: a fresh top-level table whose kernel half is copied
    /// from the kernel's (Linux's pgd_alloc), written by `vcpu` through the physmap.
    /// Without `kernelHalf`, the user table of a KPTI pair: user mappings only.
    public func newAddressSpace(by vcpu: VCPU, kernelHalf: Bool = true) throws(MachineError) -> AddressSpace {
        let top = try allocateTable(by: vcpu)
        // Linux's pgd_alloc under a paravirtual MMU: the new table's entries in one batch.
        try batchingUpdates(by: vcpu) { () throws(MachineError) in try copyKernelHalf(into: top, kernelHalf: kernelHalf, by: vcpu) }
        return AddressSpace(kernel: self, root: top)
    }

    private func copyKernelHalf(into top: UInt64, kernelHalf: Bool, by vcpu: VCPU) throws(MachineError) {
        let kernelTop = kernelSpace.root
        switch mode {
        case .pae:
            for i in 0..<3 { try storeEntry(top + UInt64(i * 8), try allocateTable(by: vcpu) | PTE.present, by: vcpu) }
            if kernelHalf { try storeEntry(top + 24, loadEntry(kernelTop + 24), by: vcpu) }
        default:
            if layout.physmapTopIndex < layout.kernelHalfFirstIndex {
                // A user-mode physmap: every space has it (the kernel's stores go through it).
                let address = UInt64(layout.physmapTopIndex * mode.entrySize)
                try storeEntry(top + address, loadEntry(kernelTop + address), by: vcpu)
            }
            guard kernelHalf else { break }
            let n = mode.entriesPerTable(level: mode.levels)
            for i in layout.kernelHalfFirstIndex..<n {
                let address = UInt64(i * mode.entrySize)
                let e = loadEntry(kernelTop + address)
                if e != 0 { try storeEntry(top + address, e, by: vcpu) }
            }
        }
    }

    /// A zeroed frame for a page table: fresh frames are zero already; a reused one is
    /// cleared by `vcpu` with guest stores, as a kernel would.
    public func allocateTable(by vcpu: VCPU) throws(MachineError) -> UInt64 {
        try allocateFrame(zeroedBy: vcpu)
    }

    /// A zeroed frame from the allocator (see `allocateTable`).
    public func allocateFrame(zeroedBy vcpu: VCPU) throws(MachineError) -> UInt64 {
        let (gpa, reused) = try frames.allocate()
        if storesByLoader {
            if reused { try machine.fillPhysical(gpa, count: 4096, byte: 0) }
        } else if reused || machine.memory.frame(gpa >> 12) != nil {
            let r = try vcpu.fill(physmapAddress(of: gpa), count: 4096, byte: 0, cpl: layout.storeCPL)
            guard r.isOK else { throw .kernel("clearing frame \(hex(gpa)) through the physmap faulted: \(r.summary)") }
        }
        return gpa
    }

    /// True until a vCPU of a VM made without `boot` loads a CR3 (then false for good).
    private var storesByLoader: Bool {
        if loaderStores && machine.vcpus.contains(where: { $0.tally.cr3Loads > 0 }) { loaderStores = false }
        return loaderStores
    }

    /// Returns a frame to the allocator.
    public func freeFrame(_ gpa: UInt64) throws(MachineError) {
        try frames.free(gpa)
    }

    /// Returns a page-table frame to the allocator. Under a paravirtual MMU the
    /// hypervisor is told first (a release in the update batch), as Xen's unpin does.
    public func freeTable(_ gpa: UInt64, by vcpu: VCPU) throws(MachineError) {
        if !storesByLoader && vcpu.offersPageTableHypercalls { try sendOrQueue(.release(table: gpa & ~0xFFF), by: vcpu) }
        try frames.free(gpa)
    }

    /// Stores one paging-structure entry at guest-physical `address`, as `vcpu` at CPL 0
    /// (CPL 3 with a user-mode physmap).
    /// Under a paravirtual MMU the store is an update hypercall instead (queued while
    /// `vcpu` is batching updates).
    public func storeEntry(_ address: UInt64, _ value: UInt64, by vcpu: VCPU) throws(MachineError) {
        if storesByLoader {
            try machine.writePhysical(address, value, size: mode.entrySize)
            return
        }
        if vcpu.offersPageTableHypercalls {
            try sendOrQueue(.write(address: address, value: value), by: vcpu)
            return
        }
        let r = try vcpu.write(physmapAddress(of: address), value: value, size: mode.entrySize, cpl: layout.storeCPL)
        guard r.isOK else {
            throw .kernel("the page-table store to \(hex(address)) through the physmap faulted: \(r.summary)")
        }
    }
}

// MARK: Paravirtual page-table updates

extension GuestKernel {
    /// The entry at guest-physical `address` as the kernel last wrote it: an update still
    /// queued by a batch, or guest memory.
    public func loadEntry(_ address: UInt64) -> UInt64 {
        if queuedUpdates.isEmpty { return machine.memory.load(address, size: mode.entrySize) }
        for queue in queuedUpdates.values {
            for case .write(address, let value) in queue.reversed() { return value }
        }
        return machine.memory.load(address, size: mode.entrySize)
    }

    /// Linux's lazy MMU mode under a paravirtual MMU: `vcpu`'s page-table stores are
    /// queued and sent as one update hypercall when `endBatch` is called (nested batches
    /// join the outer one). Without a paravirtual MMU, stores happen as they are made.
    public func beginBatch(by vcpu: VCPU) {
        guard vcpu.offersPageTableHypercalls else { return }
        batchDepth[vcpu.index, default: 0] += 1
        if queuedUpdates[vcpu.index] == nil { queuedUpdates[vcpu.index] = [] }
    }

    /// Ends a `beginBatch`; the outermost end sends what was queued.
    public func endBatch(by vcpu: VCPU) throws(MachineError) {
        guard let depth = batchDepth[vcpu.index] else { return }
        if depth > 1 {
            batchDepth[vcpu.index] = depth - 1
            return
        }
        batchDepth[vcpu.index] = nil
        let queue = queuedUpdates.removeValue(forKey: vcpu.index) ?? []
        if !queue.isEmpty { try sendUpdates(queue, by: vcpu) }
    }

    /// `body` inside `beginBatch`/`endBatch` (what was queued is sent even if it throws).
    public func batchingUpdates<T>(by vcpu: VCPU, _ body: () throws(MachineError) -> T) throws(MachineError) -> T {
        beginBatch(by: vcpu)
        let result: T
        do {
            result = try body()
        } catch {
            while batchDepth[vcpu.index] != nil { try endBatch(by: vcpu) }
            throw error
        }
        try endBatch(by: vcpu)
        return result
    }

    /// `update` queued when `vcpu` is batching, else sent on its own.
    func sendOrQueue(_ update: PageTableUpdate, by vcpu: VCPU) throws(MachineError) {
        if queuedUpdates[vcpu.index] != nil {
            queuedUpdates[vcpu.index]!.append(update)
        } else {
            try sendUpdates([update], by: vcpu)
        }
    }

    /// One update hypercall, made at CPL 0 as the kernel.
    func sendUpdates(_ updates: [PageTableUpdate], by vcpu: VCPU) throws(MachineError) {
        let r = try vcpu.hypercall(.updatePageTables(updates), cpl: 0)
        guard r.isOK else { throw .kernel("the page-table update hypercall failed: \(r.summary)") }
    }
}

/// Where the guest kernel puts things, per mode (Linux's layout).
public struct KernelLayout: Sendable {
    /// Guest-virtual base of the map of all guest RAM.
    public let physmapBase: UInt64
    /// How much RAM the physmap can map.
    public let physmapSize: UInt64
    /// Index, in the top-level table, of the entry that holds the physmap.
    public let physmapTopIndex: Int
    /// First top-level index of the kernel half, shared by every address space.
    public let kernelHalfFirstIndex: Int
    /// The privilege level of the kernel's stores through the physmap: 0, or 3 when the
    /// physmap is user-mode (below the kernel half, U = 1).
    public let storeCPL: Int

    public init(mode: PagingMode, userPhysmap: Bool = false) {
        storeCPL = userPhysmap ? 3 : 0
        if userPhysmap {
            // PML4 index 128: below the kernel half and clear of the user addresses
            // scenarios use (the first 64 TiB).
            physmapBase = 0x0000_4000_0000_0000; physmapSize = 64 << 40; physmapTopIndex = 128; kernelHalfFirstIndex = 256
            return
        }
        switch mode {
        case .legacy32:
            physmapBase = 0xC000_0000; physmapSize = 1 << 30; physmapTopIndex = 768; kernelHalfFirstIndex = 768
        case .pae:
            physmapBase = 0xC000_0000; physmapSize = 1 << 30; physmapTopIndex = 3; kernelHalfFirstIndex = 3
        case .long4:
            physmapBase = 0xFFFF_8880_0000_0000; physmapSize = 64 << 40; physmapTopIndex = 273; kernelHalfFirstIndex = 256
        case .long5:
            physmapBase = 0xFF11_0000_0000_0000; physmapSize = 1 << 52; physmapTopIndex = 273; kernelHalfFirstIndex = 256
        }
    }
}

/// Guest page frames: a bump pointer over never-used RAM and a LIFO list of freed frames.
public final class FrameAllocator {
    public let capacity: UInt64
    public private(set) var next: UInt64
    private var freeList: [UInt64] = []
    /// One bit per frame handed out (grown on demand), to refuse a double free.
    private var allocated: [UInt64] = []
    public private(set) var inUse = 0

    init(capacity: UInt64, firstFrame: UInt64) {
        self.capacity = capacity
        next = min(firstFrame, capacity)
    }

    /// Marks `gpa` handed out.
    private func mark(_ gpa: UInt64) {
        let frame = Int(gpa >> 12), word = frame >> 6
        if word >= allocated.count {
            allocated.append(contentsOf: repeatElement(0, count: max(word + 1, allocated.count * 2) - allocated.count))
        }
        allocated[word] |= 1 << UInt64(frame & 63)
        inUse += 1
    }

    /// Clears `gpa`'s bit; false if it was not handed out.
    private func unmark(_ gpa: UInt64) -> Bool {
        let frame = Int(gpa >> 12), word = frame >> 6, bit: UInt64 = 1 << UInt64(frame & 63)
        guard word < allocated.count, allocated[word] & bit != 0 else { return false }
        allocated[word] &= ~bit
        inUse -= 1
        return true
    }

    /// A frame and whether it was used before (and so may hold old data).
    func allocate() throws(MachineError) -> (UInt64, reused: Bool) {
        if let f = freeList.popLast() {
            mark(f)
            return (f, true)
        }
        guard next + 4096 <= capacity else {
            throw .kernel("the guest is out of memory: all \(capacity >> 12) frames above 1 MiB are in use")
        }
        let f = next
        next += 4096
        mark(f)
        return (f, false)
    }

    /// A never-used frame, for the loader (which writes memory directly).
    func allocateFresh(_ memory: GuestMemory) throws(MachineError) -> UInt64 {
        guard next + 4096 <= capacity else { throw .kernel("the guest is too small for its boot page tables") }
        let f = next
        next += 4096
        mark(f)
        return f
    }

    func free(_ gpa: UInt64) throws(MachineError) {
        guard gpa & 0xFFF == 0 else { throw .invalidArgument("frame address \(hex(gpa)) is not 4 KiB aligned") }
        guard unmark(gpa) else {
            throw .invalidArgument("frame \(hex(gpa)) is not allocated (double free, or never allocated)")
        }
        freeList.append(gpa)
    }
}

import X86

/// Editing a process's page tables the way mm/memory.c and mm/pgtable-generic.c do:
/// levels allocated top-down on demand, entries cleared and tables freed through a
/// gather whose range decides the flush.
extension LinuxKernel {
    /// `_PAGE_TABLE`: what an entry pointing at a user page table holds besides the frame.
    static let tableBits: UInt64 = PTE.present | PTE.writable | PTE.user | PTE.accessed | PTE.dirty
    /// `_PAGE_SPECIAL` (software bit 9): a PTE with no struct page behind it (the zero page).
    public static let specialBit: UInt64 = 1 << 9
    /// `_PAGE_SAVED_DIRTY` (software bit 58, Linux 6.6+): D of a write-protected PTE.
    public static let savedDirtyBit: UInt64 = 1 << 58
    public static let frameMask: UInt64 = PTE.bits(51, 12)
    /// The top of user space (one past the last user address).
    var userTop: UInt64 { machine.mode == .long5 ? 1 << 56 : 1 << 47 }

    /// Bytes one entry maps at `level` (1: a page).
    static func span(_ level: Int) -> UInt64 { 1 << UInt64(12 + 9 * (level - 1)) }

    func index(_ va: UInt64, _ level: Int) -> UInt64 { (va >> UInt64(12 + 9 * (level - 1))) & 511 }

    func load(_ address: UInt64) -> UInt64 { kernel.loadEntry(address) }

    /// `arch_enter_lazy_mmu_mode` … `arch_leave_lazy_mmu_mode`: under a paravirtual MMU
    /// the stores `body` makes on `cpu` go to the hypervisor as one batch at the end.
    func lazyMMU(_ cpu: Int, _ body: () throws(MachineError) -> Void) throws(MachineError) {
        try kernel.batchingUpdates(by: vcpu(cpu), body)
    }

    /// A store to a page-table entry by `cpu` through the physmap. A PGD slot of the user
    /// half goes to the user PGD too under KPTI, and the kernel's copy gets NX
    /// (`__pti_set_user_pgtbl`).
    func storeEntry(_ cpu: Int, _ mm: LinuxMM, _ address: UInt64, _ value: UInt64, level: Int) throws(MachineError) {
        let v = vcpu(cpu)
        if level == machine.mode.levels, let user = mm.userPGD, address & 0xFFF < 256 * 8 {
            try kernel.storeEntry(user + (address & 0xFFF), value, by: v)
            let kernelCopy = value & (PTE.present | PTE.user) == (PTE.present | PTE.user) ? value | PTE.executeDisable : value
            try kernel.storeEntry(address, kernelCopy, by: v)
            return
        }
        try kernel.storeEntry(address, value, by: v)
    }

    /// The address of the PTE for `va`, allocating the missing tables above it
    /// (`pud_alloc`, `pmd_alloc`, `pte_alloc`: each a zeroed page, then the entry).
    func pteAddress(_ cpu: Int, _ mm: LinuxMM, _ va: UInt64) throws(MachineError) -> UInt64 {
        var table = mm.pgd
        var level = machine.mode.levels
        while level > 1 {
            let address = table + index(va, level) * 8
            var entry = load(address)
            if entry & PTE.present == 0 {
                let newTable = try kernel.allocateTable(by: vcpu(cpu))
                stats.pageTablesAllocated += 1
                entry = newTable | Self.tableBits
                try storeEntry(cpu, mm, address, entry, level: level)
            }
            table = entry & Self.frameMask
            level -= 1
        }
        return table + index(va, 1) * 8
    }

    /// The address of the PTE for `va` when its tables exist.
    func existingPTEAddress(_ mm: LinuxMM, _ va: UInt64) -> UInt64? {
        var table = mm.pgd
        var level = machine.mode.levels
        while level > 1 {
            let entry = load(table + index(va, level) * 8)
            guard entry & PTE.present != 0 else { return nil }
            table = entry & Self.frameMask
            level -= 1
        }
        return table + index(va, 1) * 8
    }

    /// The PTE that maps `va` in `task`'s address space (nil when its tables are missing).
    public func pte(_ va: UInt64, of task: LinuxTask) -> UInt64? {
        guard let mm = task.mm, let slot = existingPTEAddress(mm, va) else { return nil }
        return load(slot)
    }

    /// Entry `index` of the table at `table` (a frame never written reads as zeros).
    @inline(__always)
    func entry(_ frame: GuestMemory.Frame?, _ index: Int) -> UInt64 {
        guard let frame else { return 0 }
        return GuestMemory.load(frame, offset: index * 8, size: 8)
    }

    /// The indices of the entries of a table at `level` mapping from `base` that overlap
    /// `[start, end)` (the top level's user half only).
    func indices(level: Int, base: UInt64, _ start: UInt64, _ end: UInt64) -> ClosedRange<Int>? {
        let span = Self.span(level)
        let top = level == machine.mode.levels ? 255 : 511
        guard end > start, end > base else { return nil }
        let first = start > base ? Int((start - base) / span) : 0
        let last = min(top, Int((end - 1 - base) / span))
        return first <= last ? first...last : nil
    }

    /// Calls `body` with the address and value of every non-empty PTE of `[start, end)`,
    /// walking only the tables that exist.
    /// The PGD slot of a user-mode physmap (the kvm backend's layout): the kernel's,
    /// never unmapped or freed with the user half.
    func isUserPhysmapSlot(_ level: Int, _ index: Int) -> Bool {
        level == machine.mode.levels && index == kernel.layout.physmapTopIndex && index < LinuxKernel.kernelPGDBoundary
    }

    func forEachPTE(_ mm: LinuxMM, _ start: UInt64, _ end: UInt64,
                    _ body: (UInt64, UInt64, UInt64) throws(MachineError) -> Void) throws(MachineError) {
        try walkPTEs(table: mm.pgd, level: machine.mode.levels, base: 0, start, end, body)
    }

    private func walkPTEs(table: UInt64, level: Int, base: UInt64, _ start: UInt64, _ end: UInt64,
                          _ body: (UInt64, UInt64, UInt64) throws(MachineError) -> Void) throws(MachineError) {
        guard let range = indices(level: level, base: base, start, end),
              let frame = machine.memory.frame(table >> 12) else { return }
        let span = Self.span(level)
        for i in range where !isUserPhysmapSlot(level, i) {
            let value = entry(frame, i)
            guard value != 0 else { continue }
            let entryBase = base &+ UInt64(i) &* span
            if level == 1 {
                try body(entryBase, table + UInt64(i) * 8, value)
            } else if value & PTE.present != 0 {
                try walkPTEs(table: value & Self.frameMask, level: level - 1, base: entryBase,
                             max(start, entryBase), min(end, entryBase &+ span), body)
            }
        }
    }

    // MARK: The gather (mmu_gather)

    /// The range and kind of what an unmap cleared, flushed once at the end.
    struct Gather {
        var start = UInt64.max
        var end: UInt64 = 0
        var clearedPTEs = false
        var clearedTables = false
        var freedTables = false
        var fullMM = false

        mutating func add(_ from: UInt64, _ to: UInt64) {
            start = min(start, from)
            end = max(end, to)
        }

        var isEmpty: Bool { !clearedPTEs && !clearedTables && !freedTables && !fullMM }
    }

    /// `tlb_finish_mmu` → `tlb_flush`: one flush of the gathered range (everything for
    /// a whole-mm teardown), with the stride of the smallest level cleared.
    func finish(_ gather: Gather, _ cpu: Int, _ mm: LinuxMM) throws(MachineError) {
        guard !gather.isEmpty else { return }
        let stride: UInt64 = gather.clearedPTEs ? 12 : (gather.clearedTables ? 21 : 12)
        if gather.fullMM {
            try flushRange(cpu, mm, start: 0, end: Self.flushAll, freedTables: true)
        } else {
            try flushRange(cpu, mm, start: gather.start, end: gather.end, strideShift: stride, freedTables: gather.freedTables)
        }
    }

    /// Clears one present or non-empty PTE (a store of 0) and drops the page's mapping.
    func clearPTE(_ cpu: Int, _ mm: LinuxMM, _ va: UInt64, _ address: UInt64, _ pte: UInt64,
                  _ gather: inout Gather) throws(MachineError) {
        try storeEntry(cpu, mm, address, 0, level: 1)
        stats.ptesCleared += 1
        gather.add(va, va + 4096)
        gather.clearedPTEs = true
        if pte & PTE.present != 0 { try dropMapping(pte & Self.frameMask) }
    }

    /// One mapping of `frame` is gone; an anonymous frame mapped nowhere is freed.
    func dropMapping(_ frame: UInt64) throws(MachineError) {
        guard let count = anonymousMapCount[frame] else { return }
        if count <= 1 {
            anonymousMapCount[frame] = nil
            try kernel.freeFrame(frame)
        } else {
            anonymousMapCount[frame] = count - 1
        }
    }

    /// `unmap_vmas` over `[start, end)`: every PTE there cleared.
    func zap(_ cpu: Int, _ mm: LinuxMM, _ start: UInt64, _ end: UInt64, _ gather: inout Gather) throws(MachineError) {
        try lazyMMU(cpu) { () throws(MachineError) in
            try forEachPTE(mm, start, end) { (va, address, pte) throws(MachineError) in
                try clearPTE(cpu, mm, va, address, pte, &gather)
            }
        }
    }

    /// `free_pgtables` for the hole `[start, end)` left between `floor` (the end of the
    /// area before it) and `ceiling` (the start of the one after): a table goes when
    /// everything it could map lies in the hole; its entry above is cleared. With
    /// `cleared`, every PTE of the hole is known to be zero already.
    func freeTables(_ cpu: Int, _ mm: LinuxMM, _ start: UInt64, _ end: UInt64, floor: UInt64, ceiling: UInt64,
                    cleared: Bool = false, _ gather: inout Gather) throws(MachineError) {
        // Entries cleared and tables released in one batch under a paravirtual MMU (a
        // table's own entries are read before anything below it is queued).
        try lazyMMU(cpu) { () throws(MachineError) in
            try freeLevel(cpu, mm, table: mm.pgd, level: machine.mode.levels, base: 0, start, end, floor, ceiling, cleared, &gather)
        }
    }

    /// Frees the tables below `table` (at `level`, mapping from `base`) that lie in the
    /// hole. Returns whether `table` is now empty.
    @discardableResult
    private func freeLevel(_ cpu: Int, _ mm: LinuxMM, table: UInt64, level: Int, base: UInt64, _ start: UInt64,
                           _ end: UInt64, _ floor: UInt64, _ ceiling: UInt64, _ cleared: Bool,
                           _ gather: inout Gather) throws(MachineError) -> Bool {
        guard let frame = machine.memory.frame(table >> 12) else { return true }
        let range = indices(level: level, base: base, start, end)
        let span = Self.span(level)
        var kept = false
        for i in range ?? 1...0 {
            if isUserPhysmapSlot(level, i) { kept = true; continue }
            let address = table + UInt64(i) * 8
            let value = entry(frame, i)
            guard value & PTE.present != 0 else {
                if value != 0 { kept = true }
                continue
            }
            let entryBase = base &+ UInt64(i) &* span
            let entryEnd = entryBase &+ span
            let inHole = entryBase >= floor && entryEnd <= ceiling
            let below = value & Self.frameMask
            var emptied = true
            if level > 2 {
                emptied = try freeLevel(cpu, mm, table: below, level: level - 1, base: entryBase, max(start, entryBase),
                                        min(end, entryEnd), floor, ceiling, cleared, &gather)
            } else if inHole && !cleared {
                // A page table going: stray PTEs (of areas the model never knew) go first.
                try walkPTEs(table: below, level: 1, base: entryBase, entryBase, entryEnd) { (va, a, pte) throws(MachineError) in
                    try clearPTE(cpu, mm, va, a, pte, &gather)
                }
            }
            guard emptied, inHole else {
                kept = true
                continue
            }
            try storeEntry(cpu, mm, address, 0, level: level)
            try kernel.freeTable(below, by: vcpu(cpu))
            stats.pageTablesFreed += 1
            gather.add(entryBase, entryBase + 4096)
            gather.clearedTables = true
            gather.freedTables = true
        }
        if kept { return false }
        let top = level == machine.mode.levels ? 256 : 512
        for i in 0..<top where !(range?.contains(i) ?? false) && entry(frame, i) & PTE.present != 0 { return false }
        return true
    }

    /// The hole `[start, end)` was just unmapped: its PTEs cleared and the tables wholly
    /// inside the gap between the neighbouring areas freed, then one flush.
    func unmapRegion(_ cpu: Int, _ mm: LinuxMM, _ start: UInt64, _ end: UInt64) throws(MachineError) {
        var gather = Gather()
        try zap(cpu, mm, start, end, &gather)
        let floor = mm.areas.previousEnd(before: start)
        let ceiling = mm.areas.nextStart(atOrAfter: end) ?? userTop
        try freeTables(cpu, mm, start, end, floor: floor, ceiling: ceiling, &gather)
        try finish(gather, cpu, mm)
    }
}

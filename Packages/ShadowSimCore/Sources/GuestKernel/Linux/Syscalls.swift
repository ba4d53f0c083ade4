import X86

/// `mmap` flags the model reads.
public struct MapFlags: OptionSet, Sendable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let shared = MapFlags(rawValue: 0x01)
    public static let `private` = MapFlags(rawValue: 0x02)
    public static let fixed = MapFlags(rawValue: 0x10)
    public static let anonymous = MapFlags(rawValue: 0x20)
    public static let locked = MapFlags(rawValue: 0x2000)
    public static let populate = MapFlags(rawValue: 0x8000)
}

/// `madvise` advice values the model acts on.
public enum Advice: UInt64, Sendable {
    case dontNeed = 4, free = 8, remove = 9, dontNeedLocked = 24
}

/// The memory system calls, as mm/mmap.c, mm/vma.c, mm/mprotect.c, mm/madvise.c and
/// mm/mremap.c change the tables and flush.
extension LinuxKernel {
    static func pageUp(_ v: UInt64) -> UInt64 { (v &+ 0xFFF) & ~0xFFF }

    func currentMM(_ cpu: Int) throws(MachineError) -> LinuxMM {
        try checkCPU(cpu)
        guard let mm = cpus[cpu].current?.mm else {
            throw .invalidArgument("no process is current on CPU \(cpu)")
        }
        return mm
    }

    /// The lowest free range of `length` bytes below the mmap base, top-down as Linux
    /// places mappings.
    func freeRange(_ mm: LinuxMM, _ length: UInt64) throws(MachineError) -> UInt64 {
        var top: UInt64 = 0x7F00_0000_0000
        for area in mm.areas.areas.reversed() where area.start < top {
            if area.end <= top && top - area.end >= length { break }
            top = area.start
        }
        guard top >= length + 0x10000 else { throw .kernel("no free range of \(hex(length)) bytes below the mmap base") }
        return top - length
    }

    /// `mmap` by the task current on `cpu`, which returned `address` (nil: the model
    /// chooses, top-down). Areas already there are unmapped first (MAP_FIXED). A file
    /// is `file`, or else inferred from the descriptor: the first offset-0 mapping of a
    /// descriptor names the file by the descriptor and that mapping's length.
    @discardableResult
    public func mmap(on cpu: Int, address: UInt64?, length: UInt64, protection: Protection, flags: MapFlags,
                     fd: Int64 = -1, offset: UInt64 = 0, file: FileKey? = nil) throws(MachineError) -> UInt64 {
        let mm = try currentMM(cpu)
        try enterKernel(cpu)
        let length = Self.pageUp(length)
        guard length > 0 else { throw .invalidArgument("mmap of 0 bytes") }
        var start: UInt64
        if let address { start = address } else { start = try freeRange(mm, length) }
        guard start & 0xFFF == 0, start &+ length > start, start + length <= userTop else {
            throw .invalidArgument("mmap range \(hex(start))+\(hex(length)) is not page aligned user space")
        }
        if !mm.areas.within(start, start + length).isEmpty { try unmapAreas(cpu, mm, start, start + length) }
        let backing: Backing
        if flags.contains(.anonymous) || fd < 0 {
            if flags.contains(.shared) {
                nextShmemID += 1
                backing = .file(FileKey("shmem#\(nextShmemID)", shmem: true), offset: 0)
            } else {
                backing = .anonymous
            }
        } else {
            let key: FileKey
            if let file {
                key = file
            } else if offset == 0 && !flags.contains(.fixed) {
                key = FileKey("fd\(fd):\(hex(length))")
            } else {
                key = mm.fileOfDescriptor[UInt64(bitPattern: fd)] ?? FileKey("fd\(fd):\(hex(offset)):\(hex(length))")
            }
            mm.fileOfDescriptor[UInt64(bitPattern: fd)] = key
            backing = .file(key, offset: offset & ~0xFFF)
        }
        mm.areas.insert(VMA(start: start, end: start + length, protection: protection, shared: flags.contains(.shared), backing: backing))
        if flags.contains(.populate) || flags.contains(.locked) {
            try populate(cpu, mm, start, start + length, write: protection.contains(.write))
        }
        return start
    }

    /// MAP_POPULATE: the pages faulted in by the kernel (GUP: no fault is traced).
    func populate(_ cpu: Int, _ mm: LinuxMM, _ start: UInt64, _ end: UInt64, write: Bool) throws(MachineError) {
        let saved = stats.faults
        var va = start
        while va < end {
            _ = try handleFault(on: cpu, va, write ? .write : .read, user: false)
            va += 4096
        }
        let made = stats.faults.total - saved.total
        stats.faults = saved
        stats.populatedPages += made
    }

    /// Removes the areas in `[start, end)` and unmaps what they mapped (one gather).
    func unmapAreas(_ cpu: Int, _ mm: LinuxMM, _ start: UInt64, _ end: UInt64) throws(MachineError) {
        let removed = mm.areas.remove(start, end)
        guard let first = removed.first, let last = removed.last else { return }
        try unmapRegion(cpu, mm, first.start, last.end)
    }

    /// `munmap`.
    public func munmap(on cpu: Int, _ address: UInt64, _ length: UInt64) throws(MachineError) {
        let mm = try currentMM(cpu)
        try enterKernel(cpu)
        let end = min(Self.pageUp(address &+ length), userTop)
        guard address & 0xFFF == 0, end > address else { return }
        try unmapAreas(cpu, mm, address, end)
    }

    /// `brk` that returned `result` (the new break; nil: the model grants `requested`).
    @discardableResult
    public func brk(on cpu: Int, requested: UInt64, result: UInt64? = nil) throws(MachineError) -> UInt64 {
        let mm = try currentMM(cpu)
        try enterKernel(cpu)
        if mm.brkStart == 0 {
            let initial = result.map { requested == 0 ? $0 : mm.brk } ?? 0x5555_5600_0000
            mm.brkStart = initial
            mm.brk = initial
            if requested == 0 { return mm.brk }
        }
        let new = result ?? (requested >= mm.brkStart ? requested : mm.brk)
        let oldTop = Self.pageUp(mm.brk), newTop = Self.pageUp(new)
        if newTop > oldTop {
            mm.areas.insert(VMA(start: oldTop, end: newTop, protection: [.read, .write], shared: false, backing: .anonymous))
        } else if newTop < oldTop {
            try unmapAreas(cpu, mm, newTop, oldTop)
        }
        mm.brk = new
        return new
    }

    /// `mprotect`: areas whose rights change get every mapped PTE rewritten (store 0,
    /// store the new value); one flush at the end covers those whose rights shrank or
    /// grew.
    public func mprotect(on cpu: Int, _ address: UInt64, _ length: UInt64, _ protection: Protection) throws(MachineError) {
        let mm = try currentMM(cpu)
        try enterKernel(cpu)
        let end = min(Self.pageUp(address &+ length), userTop)
        guard address & 0xFFF == 0, end > address else { return }
        var gather = Gather()
        for old in mm.areas.within(address, end) where old.protection != protection {
            var area = old
            area.protection = protection
            mm.areas.update(old.start, old.end) { $0.protection = protection }
            try lazyMMU(cpu) { () throws(MachineError) in try forEachPTE(mm, old.start, old.end) { (va, slot, pte) throws(MachineError) in
                guard Self.mapsPage(pte) else { return }
                let new = modifiedPTE(pte, area)
                try storeEntry(cpu, mm, slot, 0, level: 1)
                try storeEntry(cpu, mm, slot, new, level: 1)
                if Self.needsFlush(pte, new) {
                    gather.add(va, va + 4096)
                    gather.clearedPTEs = true
                }
            } }
        }
        try finish(gather, cpu, mm)
    }

    /// `pte_modify` with the area's new rights (+ `can_change_pte_writable`: a private
    /// page this mm alone maps, or a dirty shared one, becomes writable at once).
    func modifiedPTE(_ pte: UInt64, _ area: VMA) -> UInt64 {
        let frame = pte & Self.frameMask
        let kept = pte & (Self.frameMask | PTE.accessed | PTE.dirty | Self.savedDirtyBit | Self.specialBit)
        if area.protection.isEmpty { return (kept & ~PTE.present) | Self.protNoneBit }
        var writable = false
        if area.protection.contains(.write) {
            if area.shared {
                if case .file(let key, _) = area.backing, key.shmem { writable = true } else { writable = pte & PTE.dirty != 0 }
            } else {
                writable = pte & Self.specialBit == 0 && anonymousMapCount[frame] == 1
            }
        }
        var value = kept | pteBits(area, writable: writable, dirty: false)
        // 6.6+: D lives in SavedDirty while the PTE is read-only.
        if writable, value & Self.savedDirtyBit != 0 { value = (value & ~Self.savedDirtyBit) | PTE.dirty }
        if !writable, value & PTE.dirty != 0 { value = (value & ~PTE.dirty) | Self.savedDirtyBit }
        return value
    }

    /// `pte_needs_flush`: a present PTE whose frame, rights or caching changed, or that
    /// lost P or D.
    static func needsFlush(_ old: UInt64, _ new: UInt64) -> Bool {
        guard old & PTE.present != 0 else { return false }
        if old & frameMask != new & frameMask { return true }
        let lost = old & ~new & (PTE.present | PTE.dirty)
        let rights: UInt64 = PTE.writable | PTE.user | PTE.writeThrough | PTE.cacheDisable | PTE.pageSize | PTE.global | PTE.executeDisable
        return lost != 0 || (old ^ new) & rights != 0
    }

    /// `madvise`: DONTNEED zaps each area with a flush of its own (tables stay); FREE
    /// clears A and D of this mm's own pages; other advice changes no table.
    /// Returns false for advice the model does not act on.
    @discardableResult
    public func madvise(on cpu: Int, _ address: UInt64, _ length: UInt64, _ advice: UInt64) throws(MachineError) -> Bool {
        let mm = try currentMM(cpu)
        try enterKernel(cpu)
        let end = min(Self.pageUp(address &+ length), userTop)
        guard let advice = Advice(rawValue: advice) else { return false }
        guard address & 0xFFF == 0, end > address else { return true }
        for area in mm.areas.within(address, end) {
            var gather = Gather()
            switch advice {
            case .dontNeed, .dontNeedLocked, .remove:
                try zap(cpu, mm, area.start, area.end, &gather)
            case .free:
                guard !area.shared, case .anonymous = area.backing else { continue }
                try lazyMMU(cpu) { () throws(MachineError) in try forEachPTE(mm, area.start, area.end) { (va, slot, pte) throws(MachineError) in
                    guard pte & PTE.present != 0, anonymousMapCount[pte & Self.frameMask] == 1,
                          pte & (PTE.accessed | PTE.dirty) != 0 else { return }
                    try storeEntry(cpu, mm, slot, pte & ~(PTE.accessed | PTE.dirty), level: 1)
                    gather.add(va, va + 4096)
                    gather.clearedPTEs = true
                } }
            }
            try finish(gather, cpu, mm)
        }
        return true
    }

    /// `mremap` that returned `result` (nil: the model moves only when it must grow
    /// into another area). In place it shrinks (an unmap of the tail) or grows; a move
    /// takes every PTE along (store 0 at the old place, store at the new), one flush
    /// per 2 MiB of the old range, then unmaps the old range.
    @discardableResult
    public func mremap(on cpu: Int, _ address: UInt64, oldLength: UInt64, newLength: UInt64,
                       result: UInt64? = nil) throws(MachineError) -> UInt64 {
        let mm = try currentMM(cpu)
        try enterKernel(cpu)
        let oldLength = Self.pageUp(oldLength), newLength = Self.pageUp(newLength)
        guard address & 0xFFF == 0, oldLength > 0, newLength > 0 else { throw .invalidArgument("mremap of an unaligned or empty range") }
        let areas = mm.areas.within(address, address + oldLength)
        guard let last = areas.last else { throw .invalidArgument("mremap: nothing is mapped at \(hex(address))") }
        let fitsInPlace = newLength <= oldLength || mm.areas.within(address + oldLength, address + newLength).isEmpty
        var target = address
        if let result { target = result } else if !fitsInPlace { target = try freeRange(mm, newLength) }
        if target == address {
            if newLength < oldLength {
                try unmapAreas(cpu, mm, address + newLength, address + oldLength)
            } else if newLength > oldLength {
                var grown = last.slice(last.start, last.end)
                grown.start = address + oldLength
                grown.end = address + newLength
                if case .file(let key, let offset) = last.backing { grown.backing = .file(key, offset: offset + (grown.start - last.start)) }
                mm.areas.insert(grown)
            }
            return target
        }
        if !mm.areas.within(target, target + newLength).isEmpty { try unmapAreas(cpu, mm, target, target + newLength) }
        let moved = min(oldLength, newLength)
        var chunk = address
        while chunk < address + moved {
            let chunkEnd = min(address + moved, (chunk & ~(Self.span(2) - 1)) + Self.span(2))
            var anyPresent = false
            try lazyMMU(cpu) { () throws(MachineError) in try forEachPTE(mm, chunk, chunkEnd) { (va, slot, pte) throws(MachineError) in
                try storeEntry(cpu, mm, slot, 0, level: 1)
                let newSlot = try pteAddress(cpu, mm, target + (va - address))
                try storeEntry(cpu, mm, newSlot, pte, level: 1)
                if pte & PTE.present != 0 { anyPresent = true }
            } }
            if anyPresent { try flushRange(cpu, mm, start: chunk, end: chunkEnd, freedTables: true) }
            chunk = chunkEnd
        }
        let old = mm.areas.remove(address, address + oldLength)
        for var area in old where area.start < address + moved {
            area.end = min(area.end, address + moved)
            let shift = target &- address
            area.start = area.start &+ shift
            area.end = area.end &+ shift
            mm.areas.insert(area)
        }
        if newLength > oldLength {
            var grown = old.last!
            grown.start = target + oldLength
            grown.end = target + newLength
            mm.areas.insert(grown)
        }
        try unmapRegion(cpu, mm, address, address + oldLength)
        return target
    }
}

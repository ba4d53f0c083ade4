import X86

/// How the model resolved a page fault (mm/memory.c's paths).
public enum FaultResolution: String, Sendable {
    case anonymousZeroPage = "anonymous_zero_page", anonymousNew = "anonymous_new", fileRead = "file_read"
    case fileCOW = "file_cow", sharedWrite = "shared_write", copyOnWrite = "copy_on_write", reuse, spurious, refused
}

/// An access and, when it faulted, what the handler did and the access retried.
public struct TouchResult: Sendable {
    public var first: AccessResult
    public var resolution: FaultResolution?
    public var retry: AccessResult?
}

extension LinuxKernel {
    /// `_PAGE_PROTNONE` (bit 8 with P clear): a PROT_NONE page that is still mapped.
    public static let protNoneBit: UInt64 = PTE.global

    /// Whether a PTE maps a page (present, or PROT_NONE).
    static func mapsPage(_ pte: UInt64) -> Bool { pte & (PTE.present | protNoneBit) != 0 }

    /// An access by the task current on `cpu`: user code's at CPL 3 (KPTI: on the user
    /// CR3), or the kernel's own to user memory (copy_to_user: CPL 0 with RFLAGS.AC set).
    public func access(on cpu: Int, _ va: UInt64, _ kind: AccessKind, user: Bool) throws(MachineError) -> AccessResult {
        try checkCPU(cpu)
        let v = vcpu(cpu)
        if user {
            try returnToUser(cpu)
        } else {
            try enterKernel(cpu)
            v.setAlignmentCheck(true)
        }
        defer { if !user { v.setAlignmentCheck(false) } }
        let cpl = user ? 3 : 0
        switch kind {
        case .read: return try v.read(va, size: 1, cpl: cpl)
        case .write: return try v.write(va, value: 0, size: 1, cpl: cpl)
        case .fetch: return try v.fetch(va, cpl: cpl)
        }
    }

    /// An access that, when it faults, enters the kernel, has the fault handled, and is
    /// retried (as the faulting instruction is).
    public func touch(on cpu: Int, _ va: UInt64, _ kind: AccessKind, user: Bool = true) throws(MachineError) -> TouchResult {
        let first = try access(on: cpu, va, kind, user: user)
        guard first.outcome == .pageFault else { return TouchResult(first: first) }
        let resolution = try handleFault(on: cpu, va, kind, user: user)
        if resolution == .refused { return TouchResult(first: first, resolution: resolution) }
        let retry = try access(on: cpu, va, kind, user: user)
        return TouchResult(first: first, resolution: resolution, retry: retry)
    }

    /// `handle_mm_fault` for the task current on `cpu`: the area's rules decide what
    /// the PTE becomes. An address no area covers gets an anonymous private area
    /// (counted): the model did not see what mapped it.
    public func handleFault(on cpu: Int, _ va: UInt64, _ kind: AccessKind, user: Bool) throws(MachineError) -> FaultResolution {
        try checkCPU(cpu)
        try enterKernel(cpu)
        if !user { stats.faults.kernelMode += 1 }
        guard let task = cpus[cpu].current, let mm = task.mm, va < userTop else {
            stats.faults.refused += 1
            return .refused
        }
        let page = va & ~0xFFF
        if mm.areas.find(va) == nil {
            mm.areas.insert(Self.inferredArea(page))
            stats.faults.withoutArea += 1
            stats.inferredAreas += 1
        }
        let area = mm.areas.find(va)!
        let allowed: Bool = switch kind {
        case .write: area.protection.contains(.write)
        case .fetch: area.protection.contains(.exec)
        case .read: !area.protection.isEmpty
        }
        guard allowed else {
            stats.faults.refused += 1
            return .refused
        }
        let slot = try pteAddress(cpu, mm, page)
        let pte = load(slot)
        if pte & PTE.present == 0 {
            return try faultNotPresent(cpu, mm, area, page, slot, kind)
        }
        if kind == .write && pte & PTE.writable == 0 {
            return try writeProtectFault(cpu, mm, area, page, slot, pte)
        }
        // Already as needed: a stale TLB entry. Only a write that finds D clear stores.
        let wanted = pte | PTE.accessed | (kind == .write ? PTE.dirty : 0)
        if kind == .write && wanted != pte { try storeEntry(cpu, mm, slot, wanted, level: 1) }
        stats.faults.spurious += 1
        return .spurious
    }

    /// The rights bits of a user PTE in `area` (`vm_page_prot`, A preset).
    func pteBits(_ area: VMA, writable: Bool, dirty: Bool) -> UInt64 {
        var bits = PTE.present | PTE.user | PTE.accessed
        if writable { bits |= PTE.writable }
        if dirty { bits |= PTE.dirty }
        if !area.protection.contains(.exec) && vcpu(0).efer & EFER.nxe != 0 { bits |= PTE.executeDisable }
        return bits
    }

    /// do_anonymous_page, do_read_fault, do_cow_fault, do_shared_fault.
    private func faultNotPresent(_ cpu: Int, _ mm: LinuxMM, _ area: VMA, _ page: UInt64, _ slot: UInt64,
                                 _ kind: AccessKind) throws(MachineError) -> FaultResolution {
        let write = kind == .write
        switch area.backing {
        case .anonymous:
            if !write {
                try storeEntry(cpu, mm, slot, zeroPage | pteBits(area, writable: false, dirty: false) | Self.specialBit, level: 1)
                stats.faults.anonymousZeroPage += 1
                return .anonymousZeroPage
            }
            let frame = try newAnonymousFrame(cpu, copying: false)
            try storeEntry(cpu, mm, slot, frame | pteBits(area, writable: true, dirty: true), level: 1)
            mm.areas.markAnon(page)
            stats.faults.anonymousNew += 1
            return .anonymousNew
        case .file(let key, _):
            let frame = try pageCacheFrame(cpu, area.filePage(page)!.0, area.filePage(page)!.1)
            if write && area.shared {
                try storeEntry(cpu, mm, slot, frame | pteBits(area, writable: true, dirty: true), level: 1)
                stats.faults.sharedWrite += 1
                return .sharedWrite
            }
            if write {
                let copy = try newAnonymousFrame(cpu, copying: true)
                try storeEntry(cpu, mm, slot, copy | pteBits(area, writable: true, dirty: true), level: 1)
                mm.areas.markAnon(page)
                stats.faults.fileCOW += 1
                return .fileCOW
            }
            let writable = area.shared && area.protection.contains(.write) && key.shmem
            try storeEntry(cpu, mm, slot, frame | pteBits(area, writable: writable, dirty: false), level: 1)
            try faultAround(cpu, mm, area, page, slot, writable: writable)
            stats.faults.fileRead += 1
            return .fileRead
        }
    }

    /// `do_fault_around`: a read fault on a file page also maps the empty slots of its
    /// aligned 16-page window (inside the area and the page table) with their page-cache
    /// pages, read-only and not dirty. Linux maps only pages already read in; the model
    /// takes the whole window as read in (readahead reads ahead of the fault).
    private func faultAround(_ cpu: Int, _ mm: LinuxMM, _ area: VMA, _ page: UInt64, _ slot: UInt64,
                             writable: Bool) throws(MachineError) {
        let window = UInt64(Self.faultAroundPages) * 4096
        let table = page & ~(Self.span(2) - 1)
        let start = max(page & ~(window - 1), area.start, table)
        let end = min((page & ~(window - 1)) + window, area.end, table + Self.span(2))
        var va = start
        while va < end {
            defer { va += 4096 }
            guard va != page else { continue }
            // The same page table: the slot `(va - page) / 4 KiB` entries away.
            let address = UInt64(bitPattern: Int64(bitPattern: slot) + Int64(bitPattern: va &- page) / 4096 * 8)
            guard load(address) == 0, let (key, index) = area.filePage(va) else { continue }
            let frame = try pageCacheFrame(cpu, key, index)
            try storeEntry(cpu, mm, address, frame | pteBits(area, writable: writable, dirty: false), level: 1)
            stats.faultAroundPages += 1
        }
    }

    /// An area made up for a page no traced call mapped: one page, anonymous, any rights.
    static func inferredArea(_ page: UInt64) -> VMA {
        var area = VMA(start: page, end: page + 4096, protection: [.read, .write, .exec], shared: false, backing: .anonymous)
        area.inferred = true
        return area
    }

    /// `fault_around_bytes` / 4 KiB.
    static let faultAroundPages = 16

    /// do_wp_page: a shared mapping or a page this mm alone maps is made writable in
    /// place (one store, no flush); anything else is copied (store 0, flush the page,
    /// store the copy).
    private func writeProtectFault(_ cpu: Int, _ mm: LinuxMM, _ area: VMA, _ page: UInt64, _ slot: UInt64,
                                   _ pte: UInt64) throws(MachineError) -> FaultResolution {
        let frame = pte & Self.frameMask
        if area.shared || anonymousMapCount[frame] == 1 {
            let value = (pte & ~Self.savedDirtyBit) | PTE.writable | PTE.dirty | PTE.accessed
            try storeEntry(cpu, mm, slot, value, level: 1)
            stats.faults.reuse += 1
            return .reuse
        }
        let copy = try newAnonymousFrame(cpu, copying: true)
        try storeEntry(cpu, mm, slot, 0, level: 1)
        try flushRange(cpu, mm, start: page, end: page + 4096, freedTables: false)
        try storeEntry(cpu, mm, slot, copy | pteBits(area, writable: true, dirty: true), level: 1)
        try dropMapping(frame)
        mm.areas.markAnon(page)
        stats.faults.copyOnWrite += 1
        return .copyOnWrite
    }

    /// A frame for anonymous memory, zeroed (or filled with a copy) through the physmap.
    func newAnonymousFrame(_ cpu: Int, copying: Bool) throws(MachineError) -> UInt64 {
        let frame = try kernel.allocateFrame(zeroedBy: vcpu(cpu))
        if copying {
            let r = try vcpu(cpu).fill(kernel.physmapAddress(of: frame), count: 4096, byte: 0, cpl: kernel.layout.storeCPL)
            try expectOK(r, "copying a page through the physmap")
        }
        anonymousMapCount[frame] = 1
        return frame
    }

    /// The page-cache frame of a file page, read in (one 4 KiB store) the first time.
    func pageCacheFrame(_ cpu: Int, _ key: FileKey, _ index: UInt64) throws(MachineError) -> UInt64 {
        if let frame = pageCache[key]?[index] { return frame }
        let frame = try kernel.allocateFrame(zeroedBy: vcpu(cpu))
        pageCache[key, default: [:]][index] = frame
        stats.pageCachePages += 1
        return frame
    }
}

import X86

/// Protection bits of a mapping, as `mmap` and `mprotect` take them (PROT_*).
public struct Protection: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let read = Protection(rawValue: 1)
    public static let write = Protection(rawValue: 2)
    public static let exec = Protection(rawValue: 4)
}

/// What backs a mapping's pages.
public enum Backing: Hashable, Sendable {
    /// Private anonymous memory (heap, stacks, `MAP_ANONYMOUS|MAP_PRIVATE`).
    case anonymous
    /// A file's pages from the page cache, at `offset` bytes into the file where the
    /// mapping starts. `MAP_SHARED|MAP_ANONYMOUS` is a shmem file of its own.
    case file(FileKey, offset: UInt64)
}

/// A file as the page cache keys it.
public struct FileKey: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    /// shmem (`MAP_SHARED|MAP_ANONYMOUS`, tmpfs): no write notification, so a read
    /// fault in a writable shared mapping maps the page writable.
    public let shmem: Bool
    public init(_ name: String, shmem: Bool = false) {
        self.name = name
        self.shmem = shmem
    }
    public var description: String { name }
}

/// One virtual memory area: `[start, end)`, page aligned.
///
/// Invariant: `start < end`, both multiples of 4 KiB.
public struct VMA: Sendable, Equatable {
    public var start: UInt64
    public var end: UInt64
    public var protection: Protection
    public var shared: Bool
    public var backing: Backing
    /// Linux's `anon_vma`: set once a private page of this area became anonymous (a
    /// write fault, a COW). fork copies the page tables only of such areas (and of
    /// shared anonymous ones); the child refaults the rest.
    public var hasAnonPages = false
    /// Made up by the replay for a fault at an address no traced call mapped (the
    /// program and its loader, mapped by exec; the stack): anonymous and private.
    public var inferred = false

    public init(start: UInt64, end: UInt64, protection: Protection, shared: Bool, backing: Backing) {
        self.start = start
        self.end = end
        self.protection = protection
        self.shared = shared
        self.backing = backing
    }

    /// The file page behind `va` (file mappings only).
    func filePage(_ va: UInt64) -> (FileKey, UInt64)? {
        guard case .file(let key, let offset) = backing else { return nil }
        return (key, (offset + (va - start)) >> 12)
    }

    /// Linux's `is_cow_mapping`: private and possibly writable.
    var isCOW: Bool { !shared }

    /// The area cut to `[from, to)` (which must overlap it), its file offset moved along.
    func slice(_ from: UInt64, _ to: UInt64) -> VMA {
        var v = self
        v.start = max(start, from)
        v.end = min(end, to)
        if case .file(let key, let offset) = backing { v.backing = .file(key, offset: offset + (v.start - start)) }
        return v
    }
}

/// The areas of one address space, sorted and disjoint.
public struct VMAList: Sendable {
    public private(set) var areas: [VMA] = []

    public init() {}

    /// The index of the first area that ends after `va`.
    private func firstEnding(after va: UInt64) -> Int {
        var lo = 0, hi = areas.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if areas[mid].end <= va { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// The area holding `va`.
    public func find(_ va: UInt64) -> VMA? {
        let i = firstEnding(after: va)
        return i < areas.count && areas[i].start <= va ? areas[i] : nil
    }

    /// Indices of the areas overlapping `[start, end)`.
    func overlapping(_ start: UInt64, _ end: UInt64) -> Range<Int> {
        let first = firstEnding(after: start)
        var last = first
        while last < areas.count && areas[last].start < end { last += 1 }
        return first..<last
    }

    /// The areas overlapping `[start, end)`, cut to it.
    public func within(_ start: UInt64, _ end: UInt64) -> [VMA] {
        overlapping(start, end).map { areas[$0].slice(start, end) }
    }

    /// End of the area before `va` (0 when none): free_pgtables' floor.
    func previousEnd(before va: UInt64) -> UInt64 {
        let i = firstEnding(after: va)
        return i > 0 ? areas[i - 1].end : 0
    }

    /// Start of the first area at or after `va` (nil when none): free_pgtables' ceiling.
    func nextStart(atOrAfter va: UInt64) -> UInt64? {
        let i = firstEnding(after: va)
        guard i < areas.count else { return nil }
        return max(areas[i].start, va)
    }

    /// Removes `[start, end)` from every area (splitting those that straddle it) and
    /// returns the parts removed.
    @discardableResult
    mutating func remove(_ start: UInt64, _ end: UInt64) -> [VMA] {
        let range = overlapping(start, end)
        guard !range.isEmpty else { return [] }
        var removed: [VMA] = []
        var kept: [VMA] = []
        for i in range {
            let a = areas[i]
            removed.append(a.slice(start, end))
            if a.start < start { kept.append(a.slice(a.start, start)) }
            if a.end > end { kept.append(a.slice(end, a.end)) }
        }
        areas.replaceSubrange(range, with: kept)
        return removed
    }

    /// Inserts `area` (which must not overlap any), merging it with a neighbour it
    /// continues exactly (same rights, backing and file offset), as vma_merge does.
    mutating func insert(_ area: VMA) {
        var area = area
        let i = firstEnding(after: area.start)
        var lo = i, hi = i
        if i > 0, Self.continues(areas[i - 1], area) {
            area.start = areas[i - 1].start
            area.backing = areas[i - 1].backing
            area.hasAnonPages = area.hasAnonPages || areas[i - 1].hasAnonPages
            lo = i - 1
        }
        if i < areas.count, Self.continues(area, areas[i]) {
            area.end = areas[i].end
            area.hasAnonPages = area.hasAnonPages || areas[i].hasAnonPages
            hi = i + 1
        }
        areas.replaceSubrange(lo..<hi, with: [area])
    }

    /// Whether `b` starts where `a` ends and could be one area with it.
    static func continues(_ a: VMA, _ b: VMA) -> Bool {
        // Inferred areas stay one page each: the model does not know where the real
        // areas (text, data) begin and end, and fork copies an area's tables whole.
        // Nor does an area with anonymous pages absorb one without: fork would copy the
        // tables of both (traces show a child refaulting libc's read-only data after the
        // RELRO mprotect made the page before it read-only too).
        guard a.end == b.start, a.protection == b.protection, a.shared == b.shared, !a.inferred, !b.inferred,
              a.hasAnonPages == b.hasAnonPages else { return false }
        switch (a.backing, b.backing) {
        case (.anonymous, .anonymous): return true
        case (.file(let k1, let o1), .file(let k2, let o2)): return k1 == k2 && o1 + (a.end - a.start) == o2
        default: return false
        }
    }

    /// Sets `hasAnonPages` on the area holding `va`.
    mutating func markAnon(_ va: UInt64) {
        let i = firstEnding(after: va)
        if i < areas.count && areas[i].start <= va { areas[i].hasAnonPages = true }
    }

    /// Applies `change` to every area within `[start, end)`, splitting at the edges.
    mutating func update(_ start: UInt64, _ end: UInt64, _ change: (inout VMA) -> Void) {
        let parts = remove(start, end)
        for var p in parts {
            change(&p)
            insert(p)
        }
    }
}

/// A process address space (Linux's `mm_struct`): its top-level tables, its areas, and
/// the TLB bookkeeping of arch/x86/mm/tlb.c.
public final class LinuxMM {
    /// `mm->context.ctx_id`: unique, never reused (init_mm's is 1).
    public let contextID: UInt64
    /// `mm->context.tlb_gen`: bumped by every flush of the mm.
    public internal(set) var tlbGeneration: UInt64 = 0
    /// The PGD (the kernel's view under KPTI).
    public let pgd: UInt64
    /// KPTI: the user PGD, the user half only.
    public let userPGD: UInt64?
    public internal(set) var areas = VMAList()
    /// CPUs that may hold TLB entries of this mm (`mm_cpumask`).
    public internal(set) var cpumask = CPUMask()
    /// Tasks using this mm (`mm_users`).
    public internal(set) var users = 0
    /// The program break: its start and where it is now.
    public internal(set) var brkStart: UInt64 = 0
    public internal(set) var brk: UInt64 = 0
    /// The next time (trace µs) a flush may trim the cpumask (`next_trim_cpumask`).
    var nextTrim: UInt64 = 0
    /// File identities of mmap'd descriptors, inferred when the trace has no `openat`.
    var fileOfDescriptor: [UInt64: FileKey] = [:]
    /// Set once the address space is torn down.
    public internal(set) var dead = false
    /// What it held before the model saw it is unknown (a task whose fork is not in the
    /// trace, and its forks until they exec).
    public var adopted = false

    init(contextID: UInt64, pgd: UInt64, userPGD: UInt64?) {
        self.contextID = contextID
        self.pgd = pgd
        self.userPGD = userPGD
    }
}

/// A set of CPUs (up to 256, the most a guest has), as a bitmap: Linux's `cpumask`.
public struct CPUMask: Sendable, Equatable, Sequence {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    private func word(_ i: Int) -> UInt64 {
        switch i {
        case 0: words.0
        case 1: words.1
        case 2: words.2
        default: words.3
        }
    }

    private mutating func update(_ i: Int, _ change: (inout UInt64) -> Void) {
        switch i {
        case 0: change(&words.0)
        case 1: change(&words.1)
        case 2: change(&words.2)
        default: change(&words.3)
        }
    }

    public func contains(_ cpu: Int) -> Bool { word(cpu >> 6) & (1 << UInt64(cpu & 63)) != 0 }
    public mutating func insert(_ cpu: Int) { update(cpu >> 6) { $0 |= 1 << UInt64(cpu & 63) } }
    public mutating func remove(_ cpu: Int) { update(cpu >> 6) { $0 &= ~(1 << UInt64(cpu & 63)) } }

    /// Whether a CPU other than `cpu` is in the set.
    public func containsOther(than cpu: Int) -> Bool {
        var copy = self
        copy.remove(cpu)
        return copy.words != (0, 0, 0, 0)
    }

    public static func == (a: CPUMask, b: CPUMask) -> Bool { a.words == b.words }

    /// The CPUs in ascending order.
    public func makeIterator() -> AnyIterator<Int> {
        var i = 0
        var bits = word(0)
        return AnyIterator {
            while bits == 0 {
                i += 1
                guard i < 4 else { return nil }
                bits = self.word(i)
            }
            let cpu = i << 6 | bits.trailingZeroBitCount
            bits &= bits - 1
            return cpu
        }
    }
}


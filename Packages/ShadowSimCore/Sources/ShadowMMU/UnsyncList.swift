import X86

/// A list of unsync shadow pages, possibly shared by several VMs (the 2010 patch's
/// global list), kept by the engine for a policy's `UnsyncIndex`. Entries leave in
/// O(1) by tombstone; walking the list skips them.
///
/// Invariant: a page is on at most one list, at index `page.listIndex`, exactly while
/// it is unsync.
public final class UnsyncList {
    /// An MMU takes its entries off a host-wide list as it goes.
    struct Entry {
        private let reference: UnownedReference<ShadowMMU>
        let page: ShadowPage
        init(mmu: ShadowMMU, page: ShadowPage) {
            reference = UnownedReference(mmu)
            self.page = page
        }
        var mmu: ShadowMMU { reference.object }
    }

    private var entries: [Entry?] = []
    private var holes = 0

    public init() {}

    /// Live entries.
    public var count: Int { entries.count - holes }

    func append(_ page: ShadowPage, of mmu: ShadowMMU) {
        page.listIndex = entries.count
        entries.append(Entry(mmu: mmu, page: page))
    }

    func remove(_ page: ShadowPage) {
        let i = page.listIndex
        guard i >= 0, i < entries.count, entries[i]?.page == page else { return }
        entries[i] = nil
        page.listIndex = -1
        holes += 1
        if holes > 64 && holes * 2 > entries.count { compact() }
    }

    /// Drops every entry of `mmu` (its VM is going away).
    func removeAll(of mmu: ShadowMMU) {
        for (i, e) in entries.enumerated() where e?.mmu === mmu {
            e?.page.listIndex = -1
            entries[i] = nil
            holes += 1
        }
        compact()
    }

    private func compact() {
        entries = entries.filter { $0 != nil }
        for (i, e) in entries.enumerated() { e?.page.listIndex = i }
        holes = 0
    }

    /// Syncs every listed page of `vcpu`'s VM, reachable or not (the 2010 proposal), then
    /// one remote flush if anything was write-protected or dropped and one local flush.
    /// Entries of other VMs are walked past: that work is charged to the lock.
    func syncEveryPage(of vcpu: ShadowVCPU) {
        let mmu = vcpu.mmu
        var mine: [ShadowPage] = []
        var others: UInt64 = 0
        for e in entries {
            guard let e else { continue }
            if e.mmu === mmu { mine.append(e.page) } else { others += 1 }
        }
        mmu.chargeLock(work: UInt64(mine.count) + others, othersWork: others, listEntries: UInt64(mine.count) + others)
        var flush = false
        for page in mine { flush = mmu.syncUnsyncPage(page, vcpu: vcpu) || flush }
        if mmu.injected.corrupts(.otherVMsPagesOnListSync) {
            for e in entries.compactMap({ $0 }) where e.mmu !== mmu && e.page.unsync { e.mmu.markSynced(e.page) }
        }
        if flush { mmu.flushRemoteTLBs() }
        mmu.commitZaps()
        vcpu.request(.flushCurrent)
    }
}

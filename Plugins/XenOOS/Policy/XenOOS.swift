import ShadowMMU
import X86

/// Xen's out-of-sync L1 shadows ("Shadow-3", Xen 3.3): a write fault on a guest page
/// table that is shadowed only as one L1 makes it out of sync on that vCPU, with a
/// snapshot of its contents; each vCPU holds at most 3 (hash slot = frame mod 3, with a
/// second chance). On that vCPU's CR3 writes its own pages are resynced fully (write
/// protection back, then only entries that differ from the snapshot re-derived);
/// other vCPUs' pages are updated but stay out of sync, or skipped when this vCPU cannot
/// reach them. INVLPG blanks one spte of an out-of-sync L1. Not modelled: the two
/// writable-mapping fixups per page (write protection goes through the reverse map).
public final class XenOOS: SyncPolicy {
    public let name = "xen-oos"
    public let summary = "Xen out-of-sync L1s: at most 3 per vCPU with snapshots, resynced on that vCPU's CR3 writes"
    public let lockDomain = LockDomain.vmLock

    static let slotsPerVCPU = 3

    /// An out-of-sync page, held by handle: a page freed since is detectably gone.
    struct OutOfSync {
        let page: ShadowPageHandle
        let gfn: UInt64
        var snapshot: [UInt64]
    }

    /// Slots per vCPU, in vCPU order.
    private var slots: [[OutOfSync?]] = []

    public init() {}

    public func attach(to mmu: ShadowMMU) {
        slots = Array(repeating: Array(repeating: nil, count: XenOOS.slotsPerVCPU), count: mmu.vcpus.count)
    }

    /// Unsync only a table shadowed once, as an L1; the faulting vCPU keeps it.
    public func writeDecision(for gfn: UInt64, _ request: WritableMappingRequest, in mmu: ShadowMMU) -> WriteDecision {
        if mmu.isWriteTracked(gfn) { return .keepProtected }
        let pages = mmu.shadowPages(of: gfn)
        guard let page = pages.first else { return .allow }
        // Already out of sync: writable, unless it is being resynced (Xen clears "may
        // write" before re-propagating, so a table that maps itself stays protected).
        if pages.count == 1 && page.unsync { return request.synchronizing ? .keepProtected : .allow }
        guard !request.synchronizing, !request.prefetch, pages.count == 1, page.level == 1,
              let v = request.vcpuIndex else { return .keepProtected }
        takeSlot(for: page, on: mmu.vcpus[v])
        // The mapping becomes writable, but Xen re-executes natively only a supervisor
        // store: the user-mode store that unsynced the table is emulated.
        return request.userWrite ? .allowAndEmulateThisStore : .allow
    }

    /// Xen keeps "shadow = f(snapshot)": an entry the fault path or a prefetch
    /// propagated from the guest updates the snapshot too.
    public func didPropagate(_ page: ShadowPage, _ index: Int, in mmu: ShadowMMU) {
        guard page.unsync else { return }
        for v in slots.indices {
            for i in slots[v].indices where slots[v][i]?.page == page.handle {
                slots[v][i]!.snapshot[index] = mmu.guestEntry(page, index) ?? 0
            }
        }
    }

    /// Xen's `oos_hash_add`: the home slot's occupant moves to the next slot if it is
    /// at home; whatever is then in the target slot is resynced and evicted.
    private func takeSlot(for page: ShadowPage, on vcpu: ShadowVCPU) {
        let mmu = vcpu.mmu
        let v = vcpu.index
        var index = Int(page.gfn % UInt64(XenOOS.slotsPerVCPU))
        var incoming = OutOfSync(page: page.handle, gfn: page.gfn, snapshot: (0..<512).map { mmu.guestEntry(page, $0) ?? 0 })
        if let occupant = slots[v][index], Int(occupant.gfn % UInt64(XenOOS.slotsPerVCPU)) == index {
            slots[v][index] = incoming
            incoming = occupant
            index = (index + 1) % XenOOS.slotsPerVCPU
        }
        if let evicted = slots[v][index] {
            slots[v][index] = nil
            resyncFully(evicted, vcpu: vcpu)
        }
        slots[v][index] = incoming
        mmu.markUnsync(page)
    }

    /// Write-protect, re-derive the entries that changed since the snapshot, back in sync.
    private func resyncFully(_ oos: OutOfSync, vcpu: ShadowVCPU) {
        let mmu = vcpu.mmu
        guard let page = mmu.page(oos.page), page.unsync else { return }
        if mmu.writeProtect(gfn: page.gfn) { mmu.flushRemoteTLBs() }
        _ = update(oos, vcpu: vcpu)
        mmu.markSynced(page)
    }

    /// Xen's `sh_resync_l1`: only entries whose guest value differs from the snapshot.
    private func update(_ oos: OutOfSync, vcpu: ShadowVCPU) -> OutOfSync {
        let mmu = vcpu.mmu
        guard let page = mmu.page(oos.page) else { return oos }
        var oos = oos
        var changed: [Int] = []
        for i in 0..<512 {
            let guest = mmu.guestEntry(page, i) ?? 0
            guard guest != oos.snapshot[i] else { continue }
            changed.append(i)
            oos.snapshot[i] = guest
        }
        if mmu.resyncEntries(page, changed, vcpu: vcpu) { mmu.flushRemoteTLBs() }
        return oos
    }

    public func willLeaveUnsync(_ page: ShadowPage, in mmu: ShadowMMU) {
        for v in slots.indices {
            for i in slots[v].indices where slots[v][i]?.page == page.handle { slots[v][i] = nil }
        }
    }

    /// `sh_update_cr3`: this vCPU's pages are resynced before the switch; after it,
    /// other vCPUs' pages are updated (on entry).
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision { .policyHandles }
    /// Xen's resync rules are its own: every sync point below is the policy's.
    public var rootSync: RootSync { .policyHandles }
    public var addressInvalidation: AddressInvalidation { .policyHandles }
    public var pcidInvalidation: PCIDInvalidation { .policyHandles }
    public var guestFlush: GuestFlush { .policyHandles }
    public func cr3Loaded(_ vcpu: ShadowVCPU, previousCR3: UInt64, pdptesChanged: Bool, noFlush: Bool) {
        resyncOwn(vcpu)
        let cr3 = vcpu.vcpu.cr3
        if pdptesChanged { vcpu.freeRoots(.current) }
        if cr3 != previousCR3 { vcpu.switchRoot(to: cr3) }
        vcpu.request(.syncRoots)
        vcpu.request(.flushCurrent)
    }

    private func resyncOwn(_ vcpu: ShadowVCPU) {
        for i in slots[vcpu.index].indices {
            guard let oos = slots[vcpu.index][i] else { continue }
            slots[vcpu.index][i] = nil
            resyncFully(oos, vcpu: vcpu)
        }
    }

    /// Other vCPUs' out-of-sync pages: skip those this vCPU cannot reach
    /// (`sh_safe_not_to_sync`), update the rest but leave them writable.
    public func syncRoots(_ vcpu: ShadowVCPU, becauseRootsWereBuilt: Bool) {
        let roots = vcpu.currentRootPages
        for v in slots.indices where v != vcpu.index {
            for i in slots[v].indices {
                guard let oos = slots[v][i], let page = vcpu.mmu.page(oos.page), page.unsync else { continue }
                if safeNotToSync(page, roots: roots, in: vcpu.mmu) { continue }
                slots[v][i] = update(oos, vcpu: vcpu)
            }
        }
    }

    /// One parent all the way up, to a top level that is not one of `roots`.
    private func safeNotToSync(_ page: ShadowPage, roots: [ShadowPage], in mmu: ShadowMMU) -> Bool {
        var current = page
        while true {
            if roots.contains(current) { return false }
            guard current.parents.count <= 1 else { return false }
            guard let up = current.parents.first, let parent = mmu.page(up.page) else { return true }
            current = parent
        }
    }

    /// `sh_invlpg`: blank the spte of an out-of-sync L1; no resync. The shadow entry is
    /// shared by every vCPU on that table, so blanking it takes the translation away from
    /// all of them: a present one costs a remote flush, as any spte Xen removes does.
    public func invalidateAddress(_ vcpu: ShadowVCPU, _ va: UInt64, roots: RootSelection) {
        let mmu = vcpu.mmu
        vcpu.flushHardwareAddress(va)
        guard let (page, index) = vcpu.leafTable(for: va), page.unsync, SPTE.isPresent(page.spte(index)) else { return }
        mmu.clearSPTE(page, index)
        mmu.flushRemoteTLBs()
    }

    public func invalidatePCID(_ vcpu: ShadowVCPU, _ pcid: UInt16) {
        resyncOwn(vcpu)
        vcpu.request(.syncRoots)
        vcpu.request(.flushCurrent)
    }

    /// A full guest flush resyncs everything, as a paging-mode change does in Xen
    /// (`sh_update_paging_modes` resyncs all out-of-sync pages).
    public func guestTLBFlush(_ vcpu: ShadowVCPU) {
        let mmu = vcpu.mmu
        for other in mmu.vcpus { resyncOwn(other) }
    }

    public func pagingModeChanged(_ vcpu: ShadowVCPU) {
        let mmu = vcpu.mmu
        for other in mmu.vcpus { resyncOwn(other) }
    }

    /// Xen propagates a guest's own fault as it is: the invalidation KVM does before
    /// injecting one is KVM's, not modelled for Xen.
    public func guestProtectionFaultInjected(_ vcpu: ShadowVCPU, _ va: UInt64) {}
}

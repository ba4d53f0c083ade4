import X86

/// What a policy offers a paravirtual guest kernel (see `SyncPolicy.pageTableHypercalls`).
public enum PageTableHypercalls: Sendable, Equatable {
    /// Nothing: the guest edits its tables with ordinary stores (the default).
    case none
    /// A paravirtual MMU: the guest sends batches of entry updates and TLB flushes; the
    /// engine writes each entry and re-derives every shadow of it at once, so shadow
    /// pages never fall behind the guest (nothing to sync at CR3 loads or INVLPG).
    case applyToEveryShadow
}

/// The paravirtual MMU's hypercalls (a PV MMU's `mmu_update` and flush calls): one exit
/// for a whole batch instead of one write-protection fault, or one unsync, per entry.
extension ShadowVCPU {
    public var offersPageTableHypercalls: Bool { mmu.policy.pageTableHypercalls != .none }

    public func hypercall(_ vcpu: VCPU, _ call: Hypercall) throws(MachineError) -> [VCPU] {
        guard mmu.policy.pageTableHypercalls == .applyToEveryShadow else {
            throw .unsupported("no paravirtual MMU here: policy \(mmu.policy.name) offers no page-table hypercalls")
        }
        if case .flushTLB(_, let targets) = call, let bad = targets.first(where: { !mmu.vcpus.indices.contains($0) }) {
            throw .invalidArgument("a flush hypercall names vcpu \(bad + 1), but the VM has \(mmu.vcpus.count)")
        }
        stats.exitsHypercall &+= 1
        return try exit { () throws(MachineError) -> [VCPU] in
            switch call {
            case .updatePageTables(let updates):
                if mmu.tracing { mmu.trace("shadowsim_pv_update", vcpu: self, "entries \(updates.count)") }
                mmu.applyGuestUpdates(updates, by: self)
                return []
            case .flushTLB(let scope, let targets):
                if mmu.tracing { mmu.trace("shadowsim_pv_flush", vcpu: self, "targets \(targets.count)") }
                return flushForGuest(scope, on: targets)
            }
        }
    }

    /// The flush hypercall: each target's hardware TLB flushed now (the hypervisor kicks
    /// running ones: an IPI each, as a remote flush), the caller's as it re-enters.
    private func flushForGuest(_ scope: FlushScope, on targets: [Int]) -> [VCPU] {
        var kicked: UInt64 = 0
        var reached: [VCPU] = []
        for t in Set(targets).sorted() {
            let target = mmu.vcpus[t]
            switch scope {
            case .addresses(let vas):
                for va in vas { target.flushHardwareAddress(va) }
            case .everything:
                target.request(.flushAll)
            }
            if target !== self && mmu.configuration.otherVCPUsRunning && target.running { kicked += 1 }
            reached.append(target.vcpu)
        }
        mmu.stats.remoteFlushTargets &+= kicked
        return reached
    }
}

extension ShadowMMU {
    /// Applies an update hypercall's operations, in order. A guest entry just written is
    /// applied to every shadow of its table: a leaf page's spte is re-derived from the
    /// new entry (dropped when it maps another frame or nothing), an upper level's is
    /// zapped (the next fault links the new table). A released table loses its shadows
    /// (KVM's kvm_mmu_unprotect_page). One remote flush covers the batch when some
    /// present spte lost rights.
    func applyGuestUpdates(_ updates: [PageTableUpdate], by vcpu: ShadowVCPU) {
        stats.pvUpdates &+= UInt64(updates.count)
        guard indirectShadowPages > 0 else { return }
        underLock()
        var flush = false
        for u in updates {
            guard case .write(let address, _) = u else {
                if case .release(let table) = u { _ = unprotect(gfn: table >> 12) }
                continue
            }
            var reached = 0
            forEachShadowPage(of: address >> 12) { sp in
                guard let (first, count) = writtenSPTEs(sp, gpa: address) else { return }
                reached += 1
                if reached > 1 && injected.omits(.paravirtualOtherShadows) { return }
                for i in first..<(first + count) {
                    if sp.level == 1 {
                        let r = syncSPTE(sp, i, vcpu: vcpu)
                        if r < 0 { zapSPTE(sp, i) }
                        if r != 0 { flush = true }
                    } else if SPTE.isPresent(sp.spt[i]) {
                        zapSPTE(sp, i)
                        flush = true
                    }
                }
            }
        }
        if flush { flushRemoteTLBs() }
    }
}

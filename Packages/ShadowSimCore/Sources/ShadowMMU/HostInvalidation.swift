/// What the host does to guest memory behind the guest's back: unmapping or migrating
/// the pages that back a gfn range. KVM hears of it through the MMU notifier.
extension ShadowMMU {
    /// KVM's `kvm_unmap_gfn_range`: every leaf spte that maps a frame of
    /// `first ..< first + count` (large ones covering it too) is zapped, and every vCPU
    /// flushes once if anything was. The EPT entries go too (nested paging, or frames
    /// nested walks mapped), so the next access there takes an EPT violation again.
    /// Returns the entries dropped.
    @discardableResult
    public func invalidateHostRange(gfn first: UInt64, count: UInt64) -> Int {
        var dropped = 0
        let end = first &+ count
        var refs: [(ShadowPage, Int)] = []
        for gfn in first..<end {
            refs.removeAll(keepingCapacity: true)
            forEachLeafSPTE(mapping: gfn) { sp, index in refs.append((sp, index)) }
            for (sp, index) in refs where SPTE.isPresent(sp.spt[index]) {
                zapSPTE(sp, index)
                dropped += 1
            }
        }
        // The EPT entries nested walks made.
        if !eptMapped.isEmpty {
            // Under nested paging the EPT's leaves are the pages_4k/2m gauges (mapInEPT).
            let gauged = rootWalk == .nested
            for gfn in first..<end {
                if eptMapped.remove(gfn) != nil {
                    dropped += 1
                    if gauged { stats.pages4K &-= 1 }
                }
                if eptMapped.remove(gfn >> 9 | 1 << 62) != nil {
                    dropped += 1
                    if gauged { stats.pages2M &-= 1 }
                }
            }
        }
        if dropped > 0 { flushRemoteTLBsFromHost() }
        if tracing { trace("shadowsim_host_invalidate", "gfn \(Self.hexDigits(first)) count \(count) dropped \(dropped)") }
        return dropped
    }

    /// `kvm_flush_remote_tlbs` from an ioctl or notifier: the host is no vCPU, so every
    /// vCPU is remote to it. A running one is interrupted and flushes now; a halted one
    /// flushes (again) on its next entry.
    func flushRemoteTLBsFromHost() {
        flushRemoteTLBs()
        for v in vcpus where v.pending.contains(.flushAll) {
            v.vcpu.tlb.flushAll()
            if configuration.otherVCPUsRunning && v.running {
                v.stats.tlbFlush &+= 1
                v.pending.remove(.flushAll)
            }
        }
    }
}

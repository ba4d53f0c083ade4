/// Dirty logging (KVM_MEM_LOG_DIRTY_PAGES with KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG):
/// what live migration asks of the MMU. While it is on, every spte is write-protected
/// and mapped at 4 KiB, and every writable spte made marks its frame dirty; collecting
/// the log write-protects the collected frames again. The EPT entries nested walks
/// made (NestedWalk.swift) lose write permission the same way.
extension ShadowMMU {
    /// Turns dirty logging on (write-protecting every leaf spte, dropping large ones so
    /// they come back as 4 KiB pages) or off (the log is kept until collected).
    public func setDirtyLogging(_ on: Bool) {
        guard on != dirtyLogging else { return }
        dirtyLogging = on
        guard on else { return }
        var changed = false
        for sp in livePages {
            for i in 0..<512 {
                let spte = sp.spt[i]
                guard SPTE.isPresent(spte), sp.level == 1 || spte & SPTE.large != 0 else { continue }
                if sp.level > 1 {
                    zapSPTE(sp, i)
                    changed = true
                } else if spte & SPTE.writable != 0 {
                    sp.spt[i] = spte & ~SPTE.writable
                    noteChange(sp.id)
                    changed = true
                }
            }
        }
        // Every EPT entry becomes read-only (what nested walks cached writable is in
        // no reverse map, hence the flush).
        eptWritable.removeAll()
        if !eptMapped.isEmpty { changed = true }
        nested.writable.removeAll()
        if changed { flushRemoteTLBsFromHost() }
        if tracing { trace("shadowsim_dirty_log", "enabled") }
    }

    /// The frames written since the last collection (ascending), cleared from the log
    /// and write-protected again (KVM_GET_DIRTY_LOG with manual protection off).
    public func collectDirtyLog() -> [UInt64] {
        let frames = dirtyFrames.sorted()
        dirtyFrames.removeAll()
        var changed = false
        for gfn in frames {
            forEachLeafSPTE(mapping: gfn) { sp, index in
                let spte = sp.spt[index]
                guard spte & SPTE.writable != 0 else { return }
                sp.spt[index] = spte & ~SPTE.writable
                noteChange(sp.id)
                changed = true
            }
            if dropNestedWritable(gfn) { changed = true }
            if eptWritable.remove(gfn) != nil { changed = true }
        }
        if changed { flushRemoteTLBsFromHost() }
        if tracing { trace("shadowsim_dirty_log", "collected \(frames.count)") }
        return frames
    }

    /// A writable spte (or EPT entry) was made for `gfn`.
    @inline(__always) func noteWritableMapping(_ gfn: UInt64) {
        if dirtyLogging { dirtyFrames.insert(gfn) }
    }
}

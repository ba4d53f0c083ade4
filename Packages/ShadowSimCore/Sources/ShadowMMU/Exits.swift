import X86

/// The exits a shadow-paging guest takes besides page faults: emulated stores, MOV to
/// CR3/CR0/CR4, WRMSR EFER, INVLPG and INVPCID (KVM's x86.c handling, with the
/// policy deciding what each means for the shadow pages). A vCPU whose walk begins
/// nested (`rootIsShadowed` false) takes none of them.
extension ShadowVCPU {
    public func emulatedWrite(_ vcpu: VCPU, physicalAddress: UInt64, size: Int) throws(MachineError) {
        try exit { () throws(MachineError) in
            if size > 8 {
                // A batch of REP STOSB iterations the hypervisor emulates (it could not
                // unprotect and retry): each a one-byte tracked store.
                for i in 0..<size { mmu.trackWrite(gpa: physicalAddress + UInt64(i), bytes: 1, vcpu: self) }
            } else {
                mmu.trackWrite(gpa: physicalAddress, bytes: size, vcpu: self)
            }
        }
    }

    /// KVM's kvm_mmu_unprotect_gfn_and_retry: every shadow page of the frame zapped,
    /// and the instruction retried when there was one.
    public func unprotectForRetry(_ vcpu: VCPU, va: UInt64, physicalAddress: UInt64) throws(MachineError) -> Bool {
        guard rootIsShadowed else { return false }
        if faultHitLastRetry {
            lastRetriedStore = va
            return false
        }
        var zapped = false
        try exit { () throws(MachineError) in zapped = mmu.unprotect(gfn: physicalAddress >> 12) }
        if zapped { lastRetriedStore = va }
        return zapped
    }

    /// One instruction run by the emulator: counted as such, and each store it made goes
    /// through write tracking (KVM's `emulator_write_phys` then `kvm_page_track_write`),
    /// zapping the sptes of a shadowed table it hits. Nested paging has no shadowed
    /// tables; the instruction still counts.
    public func emulatorRan(_ vcpu: VCPU, stores: [(physicalAddress: UInt64, size: Int)], newInstruction: Bool) throws(MachineError) {
        // KVM counts an emulated instruction once, however many iterations a REP runs.
        if newInstruction { stats.insnEmulation &+= 1 }
        guard rootIsShadowed, !stores.isEmpty else { return }
        try exit { () throws(MachineError) in
            for s in stores { mmu.trackWrite(gpa: s.physicalAddress, bytes: s.size, vcpu: self) }
        }
    }

    /// KVM traces the emulator's walk like the fault path's (`walk_addr_generic`).
    public func emulatorWalked(_ vcpu: VCPU, _ va: UInt64, isUser: Bool, fault: UInt32?) {
        guard mmu.traceSink != nil else { return }
        let access: UInt32 = PageFaultCode.write | (isUser ? PageFaultCode.user : 0)
        if mmu.tracing { mmu.trace("kvm_mmu_pagetable_walk", vcpu: self, "addr \(ShadowMMU.hexDigits(va)) " + ShadowMMU.traceErrorCode(access)) }
        if mmu.tracing, let fault { mmu.trace("kvm_mmu_walker_error", vcpu: self, ShadowMMU.traceErrorCode(fault)) }
    }

    public func cr3Loaded(_ vcpu: VCPU, previous: UInt64, pdptesChanged: Bool, noFlush: Bool) throws(MachineError) {
        guard rootIsShadowed else {
            return BareMetal.shared.cr3Loaded(vcpu, previous: previous, pdptesChanged: pdptesChanged, noFlush: noFlush)
        }
        stats.exitsCR3 &+= 1
        try exit { () throws(MachineError) in
            // PAE roots are four PDPTEs, not one page: not sampled.
            if vcpu.mode != .pae { mmu.sampleRootLoad(cr3: vcpu.cr3, role: rootRole) }
            if mmu.tracing { mmu.trace("shadowsim_cr3_load", vcpu: self, "cr3 \(ShadowMMU.hexDigits(vcpu.cr3)) noflush \(noFlush ? 1 : 0)") }
            let decision = mmu.policy.rootLoadDecision(self, previousCR3: previous, noFlush: noFlush)
            loadRoot(decision, previousCR3: previous, pdptesChanged: pdptesChanged, noFlush: noFlush)
        }
    }

    /// Carries out a policy's `RootLoadDecision` for a MOV to CR3.
    private func loadRoot(_ decision: RootLoadDecision, previousCR3: UInt64, pdptesChanged: Bool, noFlush: Bool) {
        let cr3 = vcpu.cr3
        switch decision {
        case .switchToCachedRoot, .switchWithoutSync:
            if pdptesChanged { freeRoots(.current) }
            if cr3 != previousCR3 { switchRoot(to: cr3) }
            guard !noFlush else { return }
            if decision == .switchToCachedRoot { invalidatePCIDRoots(vcpu.currentPCID) } else { request(.flushCurrent) }
        case .freeAllRoots:
            if cr3 != previousCR3 || pdptesChanged {
                freeRoots(.all)
            } else if !noFlush {
                request(.syncRoots)
            }
        case .policyHandles:
            mmu.policy.cr3Loaded(self, previousCR3: previousCR3, pdptesChanged: pdptesChanged, noFlush: noFlush)
        }
    }

    /// KVM's `kvm_set_cr4`: PDPTEs reloaded with other values make the PAE root stale
    /// (`load_pdptrs` frees it), then `kvm_post_set_cr4`.
    public func cr4Written(_ vcpu: VCPU, previous: UInt64, pdptesChanged: Bool) throws(MachineError) {
        guard rootIsShadowed else {
            return BareMetal.shared.cr4Written(vcpu, previous: previous, pdptesChanged: pdptesChanged)
        }
        stats.exitsCRWrite &+= 1
        try exit { () throws(MachineError) in
            if pdptesChanged { freeRoots(.current) }
            let now = vcpu.cr4
            let changed = previous ^ now
            let roleBits = CR4.pse | CR4.pae | CR4.la57 | CR4.smep | CR4.smap | (1 << 22)
            if changed & roleBits != 0 { resetContext() }
            if changed & CR4.pcide != 0 && now & CR4.pcide != 0 { freeRoots(.all) }
            if changed & CR4.pge != 0 || (changed & CR4.pcide != 0 && now & CR4.pcide == 0) {
                request(.flushGuest)
            } else if changed & CR4.smep != 0 && now & CR4.smep != 0 {
                request(.flushCurrent)
            }
        }
    }

    public func cr0Written(_ vcpu: VCPU, previous: UInt64) throws(MachineError) {
        guard rootIsShadowed else { return }
        stats.exitsCRWrite &+= 1
        try exit { () throws(MachineError) in
            if (previous ^ vcpu.cr0) & (CR0.wp | CR0.pg) != 0 { resetContext() }
        }
    }

    public func eferWritten(_ vcpu: VCPU, previous: UInt64) throws(MachineError) {
        guard rootIsShadowed else { return }
        stats.exitsCRWrite &+= 1
        try exit { () throws(MachineError) in
            if (previous ^ vcpu.efer) & (EFER.nxe | EFER.lme | EFER.lma) != 0 { resetContext() }
        }
    }

    /// KVM's `kvm_mmu_reset_context`: every root goes; new ones are built (with the
    /// new role) on entry. The policy hears of it (Xen resyncs on a paging-mode change).
    func resetContext() {
        freeRoots(.all)
        mmu.policy.pagingModeChanged(self)
    }

    public func invlpg(_ vcpu: VCPU, _ va: UInt64) throws(MachineError) {
        guard rootIsShadowed else { return BareMetal.shared.invlpg(vcpu, va) }
        stats.exitsInvlpg &+= 1
        try exit { () throws(MachineError) in
            if mmu.tracing { mmu.trace("shadowsim_invlpg", vcpu: self, "gva \(ShadowMMU.hexDigits(va))") }
            invalidate(va, roots: .all)
            stats.invlpg &+= 1
        }
    }

    /// KVM's `kvm_handle_invpcid`.
    public func invpcid(_ vcpu: VCPU, _ type: InvpcidType, pcid: UInt16, address: UInt64) throws(MachineError) {
        guard rootIsShadowed else {
            return BareMetal.shared.invpcid(vcpu, type, pcid: pcid, address: address)
        }
        stats.exitsInvpcid &+= 1
        try exit { () throws(MachineError) in
            if mmu.tracing { mmu.trace("shadowsim_invpcid", vcpu: self, "type \(type) pcid \(pcid) gva \(ShadowMMU.hexDigits(address))") }
            switch type {
            case .individualAddress:
                var roots: RootSelection = []
                if vcpu.currentPCID == pcid { roots.insert(.current) }
                for i in previousRoots.indices where previousRoots[i].isValid && self.pcid(of: previousRoots[i].pgd) == pcid {
                    roots.insert(.previous(i))
                }
                if !roots.isEmpty { invalidate(address, roots: roots) }
                stats.invlpg &+= 1
            case .singleContext:
                invalidate(pcid: pcid)
            case .allContexts, .allContextsIncludingGlobals:
                // Shadow pages do not mark global entries: "all but globals" is "all".
                request(.flushGuest)
            }
        }
    }
}

import X86

/// arch/x86/mm/tlb.c: ASIDs and PCIDs, switch_mm, lazy TLB, flush_tlb_mm_range and the
/// shootdown IPIs, and (KPTI) the CR3 switches at kernel entry and exit.
extension LinuxKernel {
    static let flushAll = UInt64.max
    static let dynamicASIDs = 6
    static let userPCIDBit: UInt64 = 1 << 11

    /// `build_cr3`: the PGD and the kernel PCID (ASID + 1).
    func kernelCR3(_ mm: LinuxMM, asid: Int) -> UInt64 {
        mm.pgd | (options.pcid ? UInt64(asid + 1) : 0)
    }

    /// KPTI's user CR3: the user PGD and the user PCID (the kernel one with bit 11).
    func userCR3(_ mm: LinuxMM, asid: Int) -> UInt64 {
        (mm.userPGD ?? mm.pgd) | (options.pcid ? UInt64(asid + 1) | Self.userPCIDBit : 0)
    }

    func loadCR3(_ cpu: Int, _ value: UInt64, noFlush: Bool) throws(MachineError) {
        let keep = noFlush && options.pcid
        stats.cr3Loads += 1
        if keep { stats.cr3LoadsNoFlush += 1 }
        try expectOK(vcpu(cpu).loadCR3(value | (keep ? CR3Bits.noFlush : 0)), "MOV to CR3")
    }

    func trace(_ cpu: Int, _ reason: TLBFlushReason, _ pages: Int64) {
        stats.flushes[LinuxStats.FlushKey(reason: reason.rawValue, pages: pages), default: 0] += 1
        sink?.tlbFlush(cpu: cpu, reason: reason, pages: pages)
    }

    // MARK: Kernel entry and exit

    /// A syscall, fault or interrupt from user mode. KPTI: the kernel CR3, no flush.
    func enterKernel(_ cpu: Int) throws(MachineError) {
        guard cpus[cpu].inUser else { return }
        cpus[cpu].inUser = false
        if options.kpti {
            let c = cpus[cpu]
            try loadCR3(cpu, kernelCR3(c.loadedMM, asid: c.loadedASID), noFlush: true)
        }
    }

    /// Back to the current task's user code. KPTI: the user CR3, flushing the user PCID
    /// when a kernel flush asked for it (`SWITCH_TO_USER_CR3`).
    func returnToUser(_ cpu: Int) throws(MachineError) {
        guard !cpus[cpu].inUser, let task = cpus[cpu].current, let mm = task.mm else { return }
        if cpus[cpu].loadedMM !== mm || cpus[cpu].lazy { try switchMM(cpu, to: mm) }
        cpus[cpu].inUser = true
        if options.kpti {
            let asid = cpus[cpu].loadedASID
            let bit: UInt8 = 1 << UInt8(asid)
            let flush = cpus[cpu].userFlushPending & bit != 0
            cpus[cpu].userFlushPending &= ~bit
            try loadCR3(cpu, userCR3(mm, asid: asid), noFlush: !flush)
        }
    }

    /// An interrupt on `cpu` (a flush IPI): whatever mode it was in, the handler runs in
    /// the kernel and returns there.
    func interrupt(_ cpu: Int, _ handler: () throws(MachineError) -> Void) throws(MachineError) {
        let wasUser = cpus[cpu].inUser
        try enterKernel(cpu)
        try handler()
        if wasUser { try returnToUser(cpu) }
    }

    /// `invalidate_user_asid`: the user PCID of `asid` is flushed at the next return to user.
    func invalidateUserASID(_ cpu: Int, _ asid: Int) {
        guard options.kpti else { return }
        cpus[cpu].userFlushPending |= 1 << UInt8(asid)
    }

    // MARK: Context switches

    /// `context_switch`: `next` (nil: idle) becomes current on `cpu`. A kernel thread or
    /// idle keeps the loaded tables (lazy TLB); a user task gets its mm loaded.
    public func schedule(_ next: LinuxTask?, on cpu: Int) throws(MachineError) {
        try checkCPU(cpu)
        try enterKernel(cpu)
        stats.contextSwitches += 1
        cpus[cpu].current = next
        next?.cpu = cpu
        if let mm = next?.mm {
            try switchMM(cpu, to: mm)
        } else {
            enterLazy(cpu)
        }
    }

    /// `enter_lazy_tlb`.
    func enterLazy(_ cpu: Int) {
        if cpus[cpu].loadedMM !== initMM { cpus[cpu].lazy = true }
    }

    /// `switch_mm_irqs_off`: load `next`'s tables on `cpu`, reusing its ASID when this
    /// CPU still has one for it (no flush unless the mm's tlb_gen moved on).
    func switchMM(_ cpu: Int, to next: LinuxMM) throws(MachineError) {
        let prev = cpus[cpu].loadedMM
        let wasLazy = cpus[cpu].lazy
        cpus[cpu].lazy = false
        var asid: Int
        var needFlush: Bool
        if prev === next {
            next.cpumask.insert(cpu)
            guard wasLazy else { return }
            asid = cpus[cpu].loadedASID
            guard next.tlbGeneration != cpus[cpu].contexts[asid].generation else { return }
            needFlush = true
        } else {
            // Since Linux 6.13 the bit of the mm left stays set: a later flush IPI that
            // finds the CPU elsewhere clears it (TLB_REMOTE_WRONG_CPU).
            if next !== initMM { next.cpumask.insert(cpu) }
            (asid, needFlush) = chooseASID(cpu, for: next)
            stats.mmSwitches += 1
        }
        if needFlush {
            cpus[cpu].contexts[asid] = (next.contextID, next.tlbGeneration)
            invalidateUserASID(cpu, asid)
            try loadCR3(cpu, kernelCR3(next, asid: asid), noFlush: false)
        } else {
            try loadCR3(cpu, kernelCR3(next, asid: asid), noFlush: true)
        }
        cpus[cpu].loadedMM = next
        cpus[cpu].loadedASID = asid
        trace(cpu, .taskSwitch, needFlush ? -1 : 0)
    }

    /// `choose_new_asid`: the ASID this CPU already gave `mm`, else the next one round
    /// robin (its previous owner loses it silently).
    func chooseASID(_ cpu: Int, for mm: LinuxMM) -> (Int, needFlush: Bool) {
        guard options.pcid else { return (0, true) }
        for i in 0..<Self.dynamicASIDs where cpus[cpu].contexts[i].id == mm.contextID {
            return (i, cpus[cpu].contexts[i].generation < mm.tlbGeneration)
        }
        var asid = cpus[cpu].nextASID
        cpus[cpu].nextASID += 1
        if asid >= Self.dynamicASIDs {
            asid = 0
            cpus[cpu].nextASID = 1
        }
        return (asid, true)
    }

    // MARK: Flushes

    /// What `flush_tlb_mm_range` hands each CPU (`struct flush_tlb_info`).
    struct FlushInfo {
        var mm: LinuxMM
        var start: UInt64
        var end: UInt64
        var strideShift: UInt64
        var freedTables: Bool
        var newGeneration: UInt64
        var initiator: Int
        var trimCPUMask: Bool
    }

    /// `flush_tlb_mm_range`, run on `cpu`: one page at a time up to the ceiling, else
    /// everything; IPIs to the other CPUs of the mm's cpumask.
    func flushRange(_ cpu: Int, _ mm: LinuxMM, start: UInt64, end: UInt64, strideShift: UInt64 = 12,
                    freedTables: Bool) throws(MachineError) {
        var start = start, end = end
        if end == Self.flushAll || (end - start) >> strideShift > UInt64(options.singlePageFlushCeiling) {
            start = 0
            end = Self.flushAll
        }
        mm.tlbGeneration += 1
        var info = FlushInfo(mm: mm, start: start, end: end, strideShift: strideShift, freedTables: freedTables,
                             newGeneration: mm.tlbGeneration, initiator: cpu, trimCPUMask: false)
        if mm.cpumask.containsOther(than: cpu) {
            info.trimCPUMask = shouldTrimCPUMask(mm)
            trace(cpu, .remoteSendIPI, end == Self.flushAll ? -1 : Int64((end - start) >> 12))
            for target in mm.cpumask where freedTables || shouldFlush(target, info) {
                if target == cpu {
                    try flushFunction(target, info)
                } else {
                    try interrupt(target) { () throws(MachineError) in try flushFunction(target, info) }
                }
            }
        } else if cpus[cpu].loadedMM === mm {
            try flushFunction(cpu, info)
        }
    }

    /// `should_trim_cpumask`: at most once a second per mm.
    func shouldTrimCPUMask(_ mm: LinuxMM) -> Bool {
        guard now >= mm.nextTrim else { return false }
        mm.nextTrim = now + 1_000_000
        return true
    }

    /// `should_flush_tlb`: lazy CPUs are spared (unless tables were freed).
    func shouldFlush(_ cpu: Int, _ info: FlushInfo) -> Bool {
        if cpus[cpu].lazy { return false }
        if cpus[cpu].loadedMM === info.mm { return true }
        return info.trimCPUMask
    }

    /// `flush_tlb_func` on `cpu`: catch up with the mm's tlb_gen, by pages when exactly
    /// one generation behind, else by a full flush of the current ASID.
    func flushFunction(_ cpu: Int, _ info: FlushInfo) throws(MachineError) {
        let local = cpu == info.initiator
        // `info.mm` is never NULL here: reason 2 (batched reclaim flushes) is not modelled.
        if cpus[cpu].loadedMM !== info.mm {
            // The CPU left the mm: it leaves the cpumask now (6.13+; the initiator too, 6.14+).
            info.mm.cpumask.remove(cpu)
            trace(cpu, .remoteWrongCPU, 0)
            return
        }
        if cpus[cpu].loadedMM === initMM { return }
        if cpus[cpu].lazy {
            try switchMM(cpu, to: initMM)
            return
        }
        let asid = cpus[cpu].loadedASID
        let localGeneration = cpus[cpu].contexts[asid].generation
        let mmGeneration = info.mm.tlbGeneration
        if info.newGeneration <= localGeneration { return }
        var pages: Int64
        if localGeneration == mmGeneration {
            pages = 0
        } else if info.end != Self.flushAll && info.newGeneration == localGeneration + 1 && info.newGeneration == mmGeneration {
            var address = info.start
            while address < info.end {
                try flushOneUser(cpu, address)
                address += 1 << info.strideShift
            }
            pages = Int64((info.end - info.start) >> info.strideShift)
        } else {
            try flushLocal(cpu)
            pages = -1
        }
        cpus[cpu].contexts[asid].generation = mmGeneration
        trace(cpu, local ? .localMMShootdown : .remoteShootdown, pages)
    }

    /// `flush_tlb_one_user`: INVLPG, and under KPTI an INVPCID of the user PCID.
    func flushOneUser(_ cpu: Int, _ address: UInt64) throws(MachineError) {
        stats.invlpg += 1
        try expectOK(vcpu(cpu).invlpg(address), "INVLPG")
        guard options.kpti else { return }
        if options.pcid {
            stats.invpcid += 1
            let pcid = UInt64(cpus[cpu].loadedASID + 1) | Self.userPCIDBit
            try expectOK(vcpu(cpu).invpcid(type: 0, pcid: pcid, address: address), "INVPCID")
        } else {
            invalidateUserASID(cpu, cpus[cpu].loadedASID)
        }
    }

    /// `flush_tlb_local`: CR3 rewritten with its own value (flushing the current PCID),
    /// and under KPTI the user PCID flushed at the next return to user.
    func flushLocal(_ cpu: Int) throws(MachineError) {
        let c = cpus[cpu]
        invalidateUserASID(cpu, c.loadedASID)
        try loadCR3(cpu, kernelCR3(c.loadedMM, asid: c.loadedASID), noFlush: false)
    }
}

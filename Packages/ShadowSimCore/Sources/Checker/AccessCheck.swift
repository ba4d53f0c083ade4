import X86
import ShadowMMU

/// Reads entries without setting A/D: the checker's own walks change nothing.
struct ReadOnlyStore: PagingStructureStore {
    let memory: GuestMemory
    let entrySize: Int
    var path: [(level: Int, address: UInt64, value: UInt64)]

    init(memory: GuestMemory, entrySize: Int) {
        self.memory = memory
        self.entrySize = entrySize
        // One allocation for the longest walk (5 levels), not one per doubling.
        path = []
        path.reserveCapacity(5)
    }

    mutating func loadEntry(at address: UInt64, level: Int) -> UInt64 {
        guard memory.contains(address, size: entrySize) else { return 0 }
        let value = memory.load(address, size: entrySize)
        path.append((level, address, value))
        return value
    }

    mutating func setEntryBits(_ bits: UInt64, at address: UInt64, level: Int) {}
}

extension ArchitecturalChecker {
    public func didAccess(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, isUser: Bool, result: AccessResult) throws(MachineError) {
        events &+= 1
        accessesChecked &+= 1
        let v = vcpu.index
        var store = ReadOnlyStore(memory: machine.memory, entrySize: vcpu.mode.entrySize)
        let context = AccessContext(cpl: isUser ? 3 : 0, rflagsAC: vcpu.rflagsAC)
        let current = PageWalker.walk(va, kind: kind, context: context, controls: vcpu.controls,
                                      permissions: vcpu.permissionTable,
                                      root: vcpu.pagingRoot, store: &store)
        // The stale translations the vCPU may use, looked up only when the current one
        // does not settle the access (most accesses match their current translation).
        var candidates: [Stale] { staleCandidates(v, va: va, pcid: vcpu.currentPCID) }
        var allowed = false
        switch (result.outcome, current) {
        case (.ok, .translated(let t)) where t.physicalAddress == result.physicalAddress:
            allowed = true
            // What the access must leave in the guest's tables: A on the path, D on the
            // leaf of a write (unless a translation cached before it may have been used).
            if let missing = missingFlags(store.path, leafLevel: t.leafLevel, write: kind == .write) {
                let stale = candidates
                if stale.isEmpty {
                    throw violation(vcpu, va, kind, isUser, result, current: current, candidates: stale, store.path,
                                    why: "the access succeeded but left \(missing)")
                }
            }
        case (.generalProtection, .generalProtection):
            allowed = true
        case (.pageFault, .pageFault(let code, _)) where code == result.errorCode:
            allowed = true
        default:
            allowed = candidates.contains { permits($0, result: result, va: va, kind: kind, isUser: isUser, vcpu: vcpu) }
            if allowed { staleAllowed[v] &+= 1 }
        }
        if !allowed, !hostWrittenFrames.isEmpty,
           store.path.contains(where: { hostWrittenFrames.contains($0.address >> 12) }) {
            hostStoreExemptions &+= 1
            allowed = true
        }
        if !allowed {
            throw violation(vcpu, va, kind, isUser, result, current: current, candidates: candidates, store.path,
                            why: "no translation the guest's tables gave since the last invalidation allows it")
        }
        if paranoid { try verifyMMU(after: "vcpu[\(v + 1)] \(kind) at \(hex(va))") }
    }

    /// Stale translations of `va` the vCPU may use now (its PCID's, and global ones).
    func staleCandidates(_ v: Int, va: UInt64, pcid: UInt16) -> [Stale] {
        var out: [Stale] = []
        for size in [PageSize.size4K, .size2M, .size4M, .size1G] {
            for s in stale[v][StructureIndex.key(va & ~size.offsetMask, size)] ?? []
                where s.tag == -1 || s.tag == Int32(pcid) { out.append(s) }
        }
        return out
    }

    /// Whether using stale translation `s` gives `result` for this access.
    func permits(_ s: Stale, result: AccessResult, va: UInt64, kind: AccessKind, isUser: Bool, vcpu: VCPU) -> Bool {
        var rights = s.rights
        if !vcpu.controls.executeDisableEnabled { rights.remove(.executeDisable) }
        let ok = PermissionTable.permits(kind: kind, isUser: isUser, rights: rights, controls: vcpu.controls,
                                         rflagsAC: vcpu.rflagsAC)
        switch result.outcome {
        case .ok:
            return ok && s.frame | (va & s.size.offsetMask) == result.physicalAddress
        case .pageFault:
            // A spurious fault on a stale translation with fewer rights.
            let code = PageFaultCode.accessBits(kind: kind, isUser: isUser, controls: vcpu.controls) | PageFaultCode.present
            return !ok && result.errorCode == code
        case .generalProtection:
            return false
        }
    }

    /// The A/D flags a completed access must have left, if any is missing.
    func missingFlags(_ path: [(level: Int, address: UInt64, value: UInt64)], leafLevel: Int, write: Bool) -> String? {
        for entry in path {
            let now = machine.memory.load(entry.address, size: machine.mode.entrySize)
            if machine.mode == .pae && entry.level == 3 { continue }   // PDPTE registers have no A bit
            if now & PTE.accessed == 0 { return "A clear in the level-\(entry.level) entry at gpa \(hex(entry.address))" }
            if write && entry.level == leafLevel && now & PTE.dirty == 0 {
                return "D clear in the leaf entry at gpa \(hex(entry.address)) after a write"
            }
        }
        return nil
    }

    // MARK: Reports

    func violation(_ vcpu: VCPU, _ va: UInt64, _ kind: AccessKind, _ isUser: Bool, _ result: AccessResult,
                   current: WalkOutcome, candidates: [Stale], _ path: [(level: Int, address: UInt64, value: UInt64)],
                   why: String) -> MachineError {
        var lines: [String] = []
        let got: String
        switch result.outcome {
        case .ok: got = "gpa \(hex(result.physicalAddress))"
        default: got = result.summary
        }
        lines.append("architectural violation at event \(events): vcpu[\(vcpu.index + 1)] \(kind) at \(hex(va)) (CPL \(isUser ? 3 : 0), CR3 \(hex(vcpu.cr3)), PCID \(vcpu.currentPCID)) got \(got); \(why)")
        switch current {
        case .translated(let t):
            lines.append("  the guest's tables give: gpa \(hex(t.physicalAddress)) (\(t.pageSize) page, \(rightsText(t.rights)))")
        case .pageFault(let code, let level):
            lines.append("  the guest's tables give: #PF(\(PageFaultCode.describe(code))) at level \(level)")
        case .generalProtection:
            lines.append("  the guest's tables give: #GP")
        }
        for entry in path {
            lines.append("    \(vcpu.mode.entryName(level: entry.level)) at gpa \(hex(entry.address)) = \(hex(entry.value))")
        }
        if candidates.isEmpty {
            lines.append("  allowed stale translations: none (nothing changed since this vCPU last invalidated \(hex(va)))")
        } else {
            for s in candidates {
                let tag = s.tag < 0 ? "global" : "PCID \(s.tag)"
                lines.append("  allowed stale translation: gpa \(hex(s.frame | (va & s.size.offsetMask))) (\(rightsText(s.rights)), \(tag)) since event \(s.since)")
            }
        }
        var frames = Set(path.map { $0.address >> 12 })
        if let mmu, let shadow = mmu.vcpus.first(where: { $0.vcpu === vcpu }) {
            let chain = shadow.shadowPath(for: va)
            if chain.isEmpty { lines.append("  shadow path: none (no root, or nothing present)") }
            for (sp, index, spte) in chain {
                lines.append("  shadow page \(sp.id): gfn \(hex(sp.gfn)) \(sp.role)\(sp.unsync ? " unsync" : "")\(sp.unsyncChildren > 0 ? " unsync-children \(sp.unsyncChildren)" : ""), spte[\(index)] = \(hex(spte))")
                frames.insert(sp.gfn)
            }
            lines.append("  policy \(mmu.policy.name)")
        }
        return .violation(lines.joined(separator: "\n") + recent.report(frames: frames, describe: describe))
    }

    func rightsText(_ r: PageRights) -> String {
        [r.contains(.writable) ? "W" : "RO", r.contains(.user) ? "U" : "S", r.contains(.executeDisable) ? "XD" : "X"]
            .joined(separator: " ")
    }
}

/// The last events, for violation reports. Kept as values and described only when a
/// report is made: every store passes through here.
struct RecentEvents {
    enum Happening {
        /// A store by vCPU `vcpu` (-1 = the host).
        case store(vcpu: Int, size: Int, physicalAddress: UInt64)
        case control(vcpu: Int, ControlEvent)
    }

    private var ring: [(event: UInt64, happening: Happening)] = []
    private var next = 0
    static let capacity = 64

    mutating func add(_ event: UInt64, _ happening: Happening) {
        let item = (event, happening)
        if ring.count < RecentEvents.capacity { ring.append(item) } else { ring[next] = item }
        next = (next + 1) % RecentEvents.capacity
    }

    private static func frame(_ h: Happening) -> UInt64? {
        if case .store(_, _, let pa) = h { return pa >> 12 }
        return nil
    }

    /// The last events touching `frames` (or the last few events of any kind).
    func report(frames: Set<UInt64>?, describe: (ControlEvent) -> String) -> String {
        let ordered = ring.count < RecentEvents.capacity ? ring : Array(ring[next...] + ring[..<next])
        let relevant = frames.map { f in ordered.filter { RecentEvents.frame($0.happening).map(f.contains) ?? false } } ?? ordered
        let shown = relevant.suffix(8)
        guard !shown.isEmpty else { return "\n  no recent event touched those frames" }
        func text(_ h: Happening) -> String {
            switch h {
            case .store(let v, let size, let pa):
                return "\(v < 0 ? "host" : "vcpu[\(v + 1)]") store of \(size) bytes to gpa \(hex(pa))"
            case .control(let v, let event):
                return "vcpu[\(v + 1)] \(describe(event))"
            }
        }
        return "\n  last events touching them:\n" + shown.map { "    #\($0.event) \(text($0.happening))" }.joined(separator: "\n")
    }
}

import X86
import GuestKernel
import ShadowMMU
import Checker
import ShadowSimPolicies

/// The VMs of one input under one policy, and the interpreter of its operations.
struct FuzzWorld {
    var reader: ByteReader
    let policy: String
    let operationLimit: Int
    var vms: [FuzzVM] = []
    var operations = 0
    var skipped = 0
    let host = SimulationHost()
    var trace: ((String) -> Void)?

    let plantedBug: PlantedBug?
    let checked: Bool

    init(bytes: [UInt8], policy: String, operations: Int, plantedBug: PlantedBug?, checked: Bool) {
        reader = ByteReader(bytes: bytes)
        self.policy = policy
        operationLimit = operations
        self.plantedBug = plantedBug
        self.checked = checked
    }

    var checkedAccesses: UInt64 { vms.reduce(0) { $0 + ($1.checker?.accessesChecked ?? 0) } }

    var coverage: SyncCoverage {
        var c = SyncCoverage()
        for vm in vms { if let mmu = vm.mmu { c += SyncCoverage(mmu.stats) } }
        return c
    }

    // MARK: Setup (the first bytes)

    /// 1–3 VMs (mostly one); per VM a paging mode (long mode more than half of the
    /// time, as real guests are), 1–3 vCPUs, SMEP/SMAP, PCIDs, host page size, prefetch
    /// and a shadow-page budget (small ones make recycling happen); three processes,
    /// twelve data frames, and the first pages of the working set mapped in every
    /// process.
    mutating func build() throws(FuzzFinding) {
        let count = [1, 1, 1, 2, 2, 3][reader.pick(6)]
        var factory: PolicyFactory?
        if policy != PolicyCatalog.bareMetalName {
            do { factory = try PolicyCatalog.factory(policy) } catch {
                throw FuzzFinding(policy: policy, operation: 0, message: error.description)
            }
        }
        let modes: [PagingMode] = [.long4, .long4, .long4, .long4, .long4, .long4, .long4, .long4,
                                   .long5, .long5, .pae, .pae, .pae, .legacy32, .legacy32, .legacy32]
        for _ in 0..<count {
            let a = reader.byte(), b = reader.byte()
            var config = MachineConfiguration(mode: modes[Int(a) & 15])
            config.vcpuCount = [1, 2, 2, 3][Int(a >> 4) & 3]
            // Long-mode guests get 1 GiB (sparse: only what is touched costs), so 1 GiB
            // pages fit.
            config.memoryBytes = config.mode.isLongMode ? 1 << 30 : 16 << 20
            config.cr4SMEP = a & 0x40 != 0
            config.cr4SMAP = a & 0x80 != 0
            config.tlbEntries = b & 0x80 != 0 ? 16 : 256
            var mmuConfig = ShadowMMUConfiguration()
            mmuConfig.hostPageSize = [PageSize.size4K, .size4K, .size2M, .size1G][Int(b) & 3]
            mmuConfig.prefetch = b & 4 == 0
            mmuConfig.maxShadowPages = [24, 64, 256, 1024][Int(b >> 3) & 3]
            mmuConfig.otherVCPUsRunning = b & 0x20 == 0
            if let plantedBug { mmuConfig.plantedBugs = [plantedBug] }
            do throws(MachineError) {
                let machine = try Machine(config)
                var mmu: ShadowMMU?
                if let factory, let made = try? factory.make() {
                    mmu = ShadowMMU(machine: machine, policy: made, configuration: mmuConfig, host: host)
                }
                let kernel = try GuestKernel(machine: machine)
                let vm = FuzzVM(machine: machine, mmu: mmu, kernel: kernel, checked: checked)
                let cpu = machine.vcpus[0]
                for _ in 0..<3 { vm.spaces.append(try kernel.newAddressSpace(by: cpu)) }
                // Data frames and the tables made from here on share a 2 MiB region that
                // starts with no page table in it, so the physmap may map it with a large
                // spte that later page tables fall under (as in a guest whose allocator
                // mixes them).
                while kernel.frames.next < 0x40_0000 { _ = try kernel.allocateFrame(zeroedBy: cpu) }
                for i in 0..<12 {
                    let frame = try kernel.allocateFrame(zeroedBy: cpu)
                    // A guest store gives the frame storage (zero frames have none), so
                    // accesses to it can take the vCPUs' fast path when unchecked.
                    _ = try cpu.write(kernel.physmapAddress(of: frame) + 8, value: UInt64(i) << 32 | 0x5a5a, cpl: 0)
                    vm.frames.append(frame)
                }
                var attributes = MappingAttributes()
                attributes.accessed = true
                for (s, space) in vm.spaces.enumerated() {
                    for i in 0..<4 {
                        // One global user page per process: INVLPG must reach it in every PCID.
                        attributes.global = i == 1
                        try space.map(vm.hot[i], to: vm.frames[(s + i) % 12], attributes: attributes, by: cpu)
                    }
                }
                // Half of the long-mode guests run with PCIDs, as Linux does on hardware that
                // has them: cached roots are then reused by no-flush CR3 loads.
                let pcids = config.mode.isLongMode && b & 0x40 != 0
                for v in machine.vcpus {
                    _ = try v.loadCR3(vm.spaces[v.index % 3].root)
                    if pcids { _ = try v.writeCR4(v.cr4 | CR4.pcide) }
                }
                vms.append(vm)
            } catch {
                throw FuzzFinding(policy: policy, operation: 0, message: "setting up: \(error)")
            }
        }
    }

    // MARK: Operations

    mutating func runOperations() throws(FuzzFinding) {
        while operations < operationLimit {
            operations += 1
            let opcode = reader.byte()
            let vm = vms[reader.pick(vms.count)]
            do throws(MachineError) {
                try perform(opcode % 34, on: vm)
                if let trace { trace("\(policy) #\(operations): \(describe(vm))") }
            } catch {
                if let trace { trace("\(policy) #\(operations): \(describe(vm)) -> \(error)") }
                switch error {
                case .violation(let m):
                    throw FuzzFinding(policy: policy, operation: operations, message: m)
                case .unsupported(let m) where !m.contains("budget") && !m.contains("paging mode"):
                    // The engine gave up on an access: a finding, not a refused argument.
                    throw FuzzFinding(policy: policy, operation: operations, message: m)
                default:
                    skipped += 1
                }
            }
        }
        // The final state must hold the MMU's invariants too.
        for vm in vms {
            if let mmu = vm.mmu, let problem = mmu.verify().first {
                throw FuzzFinding(policy: policy, operation: operations, message: "at the end: \(problem)")
            }
        }
    }

    /// What the last operation was, for the trace.
    var last = ""

    func describe(_ vm: FuzzVM) -> String {
        "vm\(vms.firstIndex { $0 === vm } ?? -1) (\(vm.mode)) \(last)"
    }

    /// Opcodes 0…33, weighted by how often a guest kernel does each: accesses to the
    /// working set, stores rewriting present entries of shadowed tables, context
    /// switches and invalidations come first.
    mutating func perform(_ opcode: UInt8, on vm: FuzzVM) throws(MachineError) {
        let cpu = vm.machine.vcpus[reader.pick(vm.machine.vcpus.count)]
        if trace != nil { last = "op \(opcode) on vcpu[\(cpu.index + 1)]" }
        switch opcode {
        case 0...3: try access(hotPage(vm) | offset(), on: cpu)
        case 4:
            // A burst over one table: the next pages of one region.
            let base = hotPage(vm)
            for i in 0..<4 { try access(base &+ UInt64(i) << 12, on: cpu) }
        case 5, 6: try mapHot(vm, by: cpu)
        case 7, 8: try remapRights(vm, space(vm), hotPage(vm), by: cpu)
        case 9: try remapFrame(vm, space(vm), hotPage(vm), by: cpu)
        case 10:
            let space = space(vm), va = hotPage(vm)
            note("unmap \(hex(va)) in space \(hex(space.root))")
            _ = try space.unmap(va, by: cpu)
        case 11: try batchUpdate(vm, by: cpu)
        case 12, 13: try loadCR3(vm, space(vm), on: cpu)
        case 14:
            let va = hotPage(vm) | offset()
            note("INVLPG \(hex(va))")
            _ = try cpu.invlpg(va)
        case 15:
            // A shootdown: every vCPU of the VM invalidates the page.
            let va = hotPage(vm)
            note("INVLPG \(hex(va)) on every vCPU")
            for v in vm.machine.vcpus { _ = try v.invlpg(va) }
        case 16:
            let b = reader.byte()
            let va = reader.chance(192) ? hotPage(vm) : address(vm)
            note("INVPCID type \(b & 3) PCID \(b >> 2 & 3) \(hex(va))")
            let r = try cpu.invpcid(type: Int(b & 3), pcid: UInt64(b >> 2 & 3), address: va)
            note(" = \(r.summary)")
        case 17:
            // Toggle one of CR4.PGE, SMEP, SMAP or PCIDE (PCIDE only with CR3[11:0] = 0).
            let bit = [CR4.pge, CR4.smep, CR4.smap, CR4.pcide][reader.pick(4)]
            note("MOV CR4 \(hex(cpu.cr4 ^ bit))")
            let r = try cpu.writeCR4(cpu.cr4 ^ bit)
            note(" = \(r.summary)")
        case 18:
            note("MOV CR0 \(hex(cpu.cr0 ^ CR0.wp))")
            let r = try cpu.writeCR0(cpu.cr0 ^ CR0.wp)
            note(" = \(r.summary)")
        case 19:
            let b = reader.byte()
            if b >= 0xF0, let mmu = vm.mmu {
                // Live migration: dirty logging switched, or its log collected.
                note(b & 1 == 0 ? "dirty logging \(!mmu.dirtyLogging)" : "collect the dirty log")
                if b & 1 == 0 { mmu.setDirtyLogging(!mmu.dirtyLogging) } else { _ = mmu.collectDirtyLog() }
                return
            }
            note(b & 1 == 0 ? "CPL \(b & 2 == 0 ? 0 : 3)" : "RFLAGS.AC \(b & 2 != 0)")
            if b & 1 == 0 { try cpu.setCPL(b & 2 == 0 ? 0 : 3) } else { cpu.setAlignmentCheck(b & 2 != 0) }
        case 20: try frameBecomesTable(vm, by: cpu, invalidatedFirst: false)
        case 21: try fork(vm, by: cpu)
        case 22: try shareTable(vm, by: cpu)
        case 23:
            note("every vCPU switches")
            for v in vm.machine.vcpus { try loadCR3(vm, space(vm), on: v) }
        case 24: try mapLarge(vm, by: cpu)
        case 25: try rawEntryStore(vm, va: address(vm, userHalf: true), level: 1 + reader.pick(vm.mode.levels), by: cpu)
        case 26: if reader.chance(128) { try shareTable(vm, by: cpu) } else { try access(address(vm), on: cpu) }
        case 27:
            note(vm.spaces.count < 6 ? "new address space" : "new frame")
            if vm.spaces.count < 6 {
                vm.spaces.append(try vm.kernel.newAddressSpace(by: cpu))
            } else {
                vm.frames.append(try vm.kernel.allocateFrame(zeroedBy: cpu))
            }
        case 28 where reader.chance(48):
            // The host unmaps guest frames behind the guest's back (the MMU notifier).
            let gfn = try frame(vm) >> 12, count = UInt64(1 + reader.pick(4))
            note("host invalidates gfns \(hex(gfn))+\(count)")
            _ = vm.mmu?.invalidateHostRange(gfn: gfn, count: min(count, (vm.machine.memory.capacity >> 12) - gfn))
        case 28:
            // A host store (a device) into one of the guest's frames.
            let gpa = try frame(vm) | UInt64(reader.byte()) << 3
            let value = reader.word()
            note("host store \(hex(value)) at gpa \(hex(gpa))")
            try vm.machine.writePhysical(gpa, value, size: 8)
        case 29: try frameBecomesTable(vm, by: cpu, invalidatedFirst: true)
        case 30:
            let va = hotPage(vm) | offset()
            for v in vm.machine.vcpus { try access(va, on: v) }
        case 31 where reader.chance(64): try emulatedStore(vm, by: cpu)
        case 31: try rawEntryStore(vm, va: hotPage(vm), level: 1, by: cpu)
        default: try roundTrip(vm, on: cpu)
        }
    }

    /// Adds to the trace line (only evaluated when tracing).
    mutating func note(_ text: @autoclosure () -> String) {
        if trace != nil { last += " " + text() }
    }

    // MARK: What guests do

    /// A read, write or fetch at CPL 3 (mostly) or 0, of 1–8 bytes.
    mutating func access(_ va: UInt64, on cpu: VCPU) throws(MachineError) {
        let kind = reader.pick(8)
        let cpl = reader.chance(64) ? 0 : 3
        if kind == 7 {
            note("fetch at \(hex(va)) CPL \(cpl)")
            let r = try cpu.fetch(va, cpl: cpl)
            note(" = \(r.summary)")
            return
        }
        let size = [1, 2, 4, 8][reader.pick(4)]
        if kind < 4 {
            note("read \(size) at \(hex(va)) CPL \(cpl)")
            let r = try cpu.read(va, size: size, cpl: cpl)
            note(" = \(r.summary) \(hex(r.physicalAddress)) \(hex(r.value))")
        } else {
            let value = reader.word()
            note("write \(size) at \(hex(va)) CPL \(cpl)")
            let r = try cpu.write(va, value: value, size: size, cpl: cpl)
            note(" = \(r.summary) \(hex(r.physicalAddress))")
        }
    }

    /// Maps a working-set page (user, mostly writable, A and D as often set as not).
    mutating func mapHot(_ vm: FuzzVM, by cpu: VCPU) throws(MachineError) {
        let space = space(vm), va = hotPage(vm)
        let b = reader.byte()
        var a = MappingAttributes()
        a.writable = b & 3 != 0
        a.user = b & 0x1C != 0
        a.executeDisable = b & 0x20 != 0 && vm.mode.hasWideEntries && cpu.efer & EFER.nxe != 0
        a.global = b & 0xC0 == 0xC0
        a.accessed = reader.chance(128)
        a.dirty = reader.chance(128)
        let gpa = try frame(vm)
        note("map \(hex(va)) -> \(hex(gpa)) in space \(hex(space.root)) \(a)")
        try space.map(va, to: gpa, attributes: a, by: cpu)
    }

    /// Rewrites a present leaf changing only its rights (R/W, U/S or NX), with A and D set:
    /// what mprotect does to pages already in use.
    mutating func remapRights(_ vm: FuzzVM, _ space: AddressSpace, _ va: UInt64, by cpu: VCPU) throws(MachineError) {
        guard let leaf = try space.leaf(va) else { return try mapHot(vm, by: cpu) }
        var bits = [PTE.writable, PTE.user]
        if vm.mode.hasWideEntries && cpu.efer & EFER.nxe != 0 { bits.append(PTE.executeDisable) }
        let value = (leaf.value ^ bits[reader.pick(bits.count)]) | PTE.accessed | PTE.dirty
        note("rights of \(hex(va)) in space \(hex(space.root)): \(hex(leaf.value)) -> \(hex(value))")
        try vm.kernel.storeEntry(leaf.address, value, by: cpu)
    }

    /// Rewrites a present 4 KiB leaf changing only its frame, with A and D set: a page
    /// migrated or swapped back in elsewhere.
    mutating func remapFrame(_ vm: FuzzVM, _ space: AddressSpace, _ va: UInt64, by cpu: VCPU) throws(MachineError) {
        guard let leaf = try space.leaf(va), leaf.level == 1 else { return try mapHot(vm, by: cpu) }
        let mask = vm.mode == .legacy32 ? UInt64(0xFFFF_F000) : PTE.bits(51, 12)
        let value = (leaf.value & ~mask) | (try frame(vm)) | PTE.accessed | PTE.dirty
        note("frame of \(hex(va)) in space \(hex(space.root)): \(hex(leaf.value)) -> \(hex(value))")
        try vm.kernel.storeEntry(leaf.address, value, by: cpu)
    }

    /// Several stores to one table (a munmap, mprotect or fault-around of a range), then
    /// what the kernel does after: nothing, INVLPG of each page here or on every vCPU
    /// (one flush hypercall under a paravirtual MMU), or a CR3 reload. An even count is
    /// one update hypercall under a paravirtual MMU (Linux's lazy MMU mode), an odd one
    /// a hypercall per store.
    mutating func batchUpdate(_ vm: FuzzVM, by cpu: VCPU) throws(MachineError) {
        let space = space(vm)
        let region = reader.pick(4) * 8
        let count = 2 + reader.pick(7)
        note("batch of \(count) in region \(region / 8)")
        var pages: [UInt64] = []
        var batched = count % 2 == 0
        if batched { vm.kernel.beginBatch(by: cpu) }
        // Only when a store threw: the run may go on, so the batch must not stay open.
        defer { if batched { try? vm.kernel.endBatch(by: cpu) } }
        for i in 0..<count {
            let va = vm.hot[region + (i + reader.pick(8)) % 8]
            pages.append(va)
            switch reader.pick(4) {
            case 0: try remapFrame(vm, space, va, by: cpu)
            case 1: _ = try space.unmap(va, by: cpu)
            default: try remapRights(vm, space, va, by: cpu)
            }
        }
        if batched {
            batched = false
            try vm.kernel.endBatch(by: cpu)
        }
        switch reader.pick(4) {
        case 0: break
        case 1: for va in pages { _ = try cpu.invlpg(va) }
        case 2 where cpu.offersPageTableHypercalls:
            _ = try cpu.hypercall(.flushTLB(.addresses(pages), vcpus: Array(vm.machine.vcpus.indices)), cpl: 0)
        case 2: for v in vm.machine.vcpus { for va in pages { _ = try v.invlpg(va) } }
        default: _ = try cpu.loadCR3(cpu.cr3 & ~CR3Bits.noFlush)
        }
    }

    /// MOV to CR3 of a space, with a PCID and the no-flush bit when PCIDs are on.
    mutating func loadCR3(_ vm: FuzzVM, _ space: AddressSpace, on cpu: VCPU) throws(MachineError) {
        let b = reader.byte()
        var value = space.root
        if cpu.cr4 & CR4.pcide != 0 {
            value |= UInt64(b & 3)
            if b & 4 != 0 { value |= CR3Bits.noFlush }
        }
        note("vcpu[\(cpu.index + 1)] MOV CR3 \(hex(value))")
        let r = try cpu.loadCR3(value)
        note(" = \(r.summary)")
    }

    /// A data frame that a vCPU has just written through becomes a page table, built and
    /// used by another vCPU, and the first vCPU writes through its old translation again.
    /// With `invalidatedFirst` the page was unmapped and invalidated on the second vCPU
    /// only before its frame was reused (the first may still cache it writable).
    mutating func frameBecomesTable(_ vm: FuzzVM, by a: VCPU, invalidatedFirst: Bool) throws(MachineError) {
        let vcpus = vm.machine.vcpus
        let b = vcpus[(a.index + 1 + reader.pick(max(vcpus.count - 1, 1))) % vcpus.count]
        let data = space(vm), x = hotPage(vm) | offset() & ~7
        let f = try frame(vm)
        var attributes = MappingAttributes()
        attributes.accessed = true
        attributes.dirty = true
        note("frame \(hex(f)) at \(hex(x)) becomes a table (invalidated first: \(invalidatedFirst))")
        if try data.leaf(x) == nil { try data.map(x & ~0xFFF, to: f, attributes: attributes, by: b) }
        guard let leaf = try data.leaf(x), leaf.level == 1 else { return }
        let frame = vm.mode == .legacy32 ? leaf.value & 0xFFFF_F000 : leaf.value & PTE.bits(51, 12)
        if a.cr3 & ~0xFFF != data.root & ~0xFFF { _ = try a.loadCR3(data.root) }
        _ = try a.write(x, value: reader.word(), size: 8, cpl: 3)
        if invalidatedFirst {
            _ = try data.unmap(x, by: b)
            _ = try b.invlpg(x)
        }
        // Another process gets a page directory entry naming the frame as its table.
        let table = space(vm)
        let y = vm.hot[16 + reader.pick(16)]
        let existing = try table.entry(y, level: 2)
        if existing == nil || existing!.value & PTE.present == 0 {
            let other = try self.frame(vm)
            try table.map(y, to: other, attributes: attributes, by: b)
        }
        guard let pde = try table.entry(y, level: 2) else { return }
        let flags = PTE.present | PTE.writable | PTE.user | PTE.accessed
        try vm.kernel.storeEntry(pde.address, frame | flags, by: b)
        if b.cr3 & ~0xFFF != table.root & ~0xFFF { _ = try b.loadCR3(table.root) }
        _ = try b.invlpg(y)
        _ = try b.read(y + (UInt64(reader.pick(8)) << 12), size: 8, cpl: 3)
        _ = try a.write(x, value: reader.word(), size: 8, cpl: 3)
        _ = try b.read(y + (UInt64(reader.pick(8)) << 12), size: 8, cpl: 3)
    }

    /// A process is switched out and back in: while another runs on this vCPU, one of
    /// its pages changes (sometimes) and is invalidated here (sometimes, by INVLPG or
    /// INVPCID), then it comes back (without a flush when PCIDs allow) and touches the page.
    mutating func roundTrip(_ vm: FuzzVM, on cpu: VCPU) throws(MachineError) {
        guard let home = vm.spaces.first(where: { $0.root == cpu.cr3 & ~0xFFF }) else { return }
        let away = space(vm), va = hotPage(vm)
        note("round trip from \(hex(home.root)) via \(hex(away.root)) touching \(hex(va))")
        let pcid = cpu.currentPCID
        try loadCR3(vm, away, on: cpu)
        switch reader.pick(4) {
        case 0: try remapRights(vm, home, va, by: vm.machine.vcpus[reader.pick(vm.machine.vcpus.count)])
        case 1: try remapFrame(vm, home, va, by: vm.machine.vcpus[reader.pick(vm.machine.vcpus.count)])
        default: break
        }
        switch reader.pick(3) {
        case 0: _ = try cpu.invlpg(va)
        case 1: _ = try cpu.invpcid(type: 0, pcid: UInt64(pcid), address: va)
        default: break
        }
        let flags = cpu.cr4 & CR4.pcide != 0 ? UInt64(pcid) | (reader.chance(160) ? CR3Bits.noFlush : 0) : 0
        note(" back with \(hex(home.root | flags))")
        _ = try cpu.loadCR3(home.root | flags)
        try access(va | offset(), on: cpu)
    }

    /// Fork: the child gets the parent's working-set mappings of one region, and every
    /// writable one becomes read-only in both (copy on write); the parent's vCPUs flush.
    mutating func fork(_ vm: FuzzVM, by cpu: VCPU) throws(MachineError) {
        let parent = space(vm), child = space(vm)
        guard parent !== child else { return }
        let region = reader.pick(4) * 8
        note("fork \(hex(parent.root)) -> \(hex(child.root)), region \(region / 8)")
        // Linux's copy_pte_range runs in lazy MMU mode: one update hypercall under a
        // paravirtual MMU.
        try vm.kernel.batchingUpdates(by: cpu) { () throws(MachineError) in try copyRegion(vm, parent, child, region, by: cpu) }
        for v in vm.machine.vcpus where v.cr3 & ~0xFFF & ~CR3Bits.noFlush == parent.root & ~0xFFF {
            _ = try v.loadCR3(v.cr3 & ~CR3Bits.noFlush)
        }
    }

    private func copyRegion(_ vm: FuzzVM, _ parent: AddressSpace, _ child: AddressSpace, _ region: Int,
                            by cpu: VCPU) throws(MachineError) {
        for va in vm.hot[region..<region + 8] {
            guard let leaf = try parent.leaf(va), leaf.level == 1 else { continue }
            let shared = leaf.value & ~PTE.writable
            if leaf.value != shared { try vm.kernel.storeEntry(leaf.address, shared, by: cpu) }
            if let mine = try child.leaf(va), mine.level == 1 {
                try vm.kernel.storeEntry(mine.address, shared & ~PTE.accessed, by: cpu)
            } else if try child.entry(va, level: 1) != nil {
                try child.setEntry(va, level: 1, value: shared & ~PTE.accessed, by: cpu)
            }
        }
    }

    /// A page table gets a second parent: its page directory entry is copied into
    /// another process's (or the same one's) directory at an alias of its region, an
    /// entry that was usually not present, so x86 needs no invalidation before the
    /// alias is used (and is used, here). What the shadow of that table holds must then
    /// be what the guest's table says: the MMU syncs an unsync table before linking it.
    mutating func shareTable(_ vm: FuzzVM, by cpu: VCPU) throws(MachineError) {
        let from = space(vm), to = space(vm)
        let va = vm.hot[reader.pick(4) * 8]
        guard let source = try from.entry(va, level: 2), source.value & PTE.present != 0,
              source.value & PTE.pageSize == 0 else { return }
        let alias = va ^ 0x100_0000
        if try to.entry(alias, level: 2) == nil {
            // Give the alias its upper tables: map a page one directory entry further.
            let span: UInt64 = vm.mode == .legacy32 ? 0x40_0000 : 0x20_0000
            try to.map(alias + span, to: try frame(vm), attributes: MappingAttributes(), by: cpu)
        }
        guard let target = try to.entry(alias, level: 2) else { return }
        // Often two entries of the table were just edited (they may be cached, or the
        // table unsync): the first access through the alias fills its own spte, the
        // second uses what the link brought along.
        let pages = [UInt64(reader.pick(8)) << 12, UInt64(reader.pick(8)) << 12]
        if reader.chance(128) { for page in pages { try remapFrame(vm, from, va | page, by: cpu) } }
        note("link the table of \(hex(va)) in \(hex(from.root)) at \(hex(alias)) in \(hex(to.root)) (was \(hex(target.value)))")
        try vm.kernel.storeEntry(target.address, source.value, by: cpu)
        if cpu.cr3 & ~0xFFF != to.root { _ = try cpu.loadCR3(to.root | (cpu.cr4 & CR4.pcide != 0 ? cpu.cr3 & 0xFFF : 0)) }
        for page in pages { try access(alias | page | offset(), on: cpu) }
    }

    /// Maps a large page over whatever is there (page tables included).
    mutating func mapLarge(_ vm: FuzzVM, by cpu: VCPU) throws(MachineError) {
        let space = space(vm)
        var attributes = MappingAttributes()
        let b = reader.byte()
        attributes.writable = b & 1 != 0
        attributes.user = b & 2 != 0
        attributes.executeDisable = b & 4 != 0 && vm.mode.hasWideEntries
        attributes.global = b & 8 != 0
        attributes.accessed = b & 16 != 0
        attributes.dirty = b & 32 != 0
        let sizes: [PageSize] = vm.mode == .legacy32 ? [.size4M] : vm.mode == .pae ? [.size2M] : [.size2M, .size1G]
        attributes.size = sizes[reader.pick(sizes.count)]
        let mask = attributes.size.offsetMask
        let gpa = UInt64(reader.pick(4)) << 22 & ~mask
        let va = (reader.chance(128) ? hotPage(vm) : address(vm, userHalf: true)) & ~mask
        note("map \(hex(va)) -> \(hex(gpa)) in space \(hex(space.root)) \(attributes)")
        try space.map(va, to: gpa, attributes: attributes, by: cpu)
    }

    /// A raw entry store at `level`: any flags, sometimes a reserved bit.
    mutating func rawEntryStore(_ vm: FuzzVM, va: UInt64, level: Int, by cpu: VCPU) throws(MachineError) {
        let space = space(vm)
        let flags = UInt64(reader.byte()) | UInt64(reader.byte() & 0x1) << 8
        var value = try frame(vm) | flags
        let extra = reader.byte()
        if extra & 0x3 == 0 { value |= 1 << (12 + UInt64(extra >> 2) % 52) }        // maybe reserved
        if extra & 0x80 != 0 && vm.mode.hasWideEntries { value |= PTE.executeDisable }
        if vm.mode == .legacy32 { value &= 0xFFFF_FFFF }
        note("set level-\(level) entry of \(hex(va)) in space \(hex(space.root)) to \(hex(value))")
        try space.setEntry(va, level: level, value: value, by: cpu)
    }

    /// A store by the hypervisor's instruction emulator (guest kernel code under PVM):
    /// mostly a rewrite of a hot page's PTE through the physmap, else a data store.
    mutating func emulatedStore(_ vm: FuzzVM, by cpu: VCPU) throws(MachineError) {
        let va = hotPage(vm)
        if reader.chance(192), let pte = try space(vm).entry(va, level: 1), pte.value & PTE.present != 0 {
            let value = (pte.value & ~PTE.bits(11, 0)) | (pte.value & PTE.bits(11, 0)) ^ (reader.chance(128) ? PTE.writable : PTE.user)
            note("emulated store \(hex(value)) to the PTE of \(hex(va))")
            let r = try cpu.emulatedWrite(vm.kernel.physmapAddress(of: pte.address), value: value,
                                          size: vm.mode.entrySize, cpl: 0)
            note(" = \(r.summary)")
        } else {
            note("emulated store to \(hex(va))")
            let r = try cpu.emulatedWrite(va | offset(), value: reader.word(), size: [1, 2, 4, 8][reader.pick(4)], cpl: 3)
            note(" = \(r.summary)")
        }
    }

    // MARK: Operands

    mutating func space(_ vm: FuzzVM) -> AddressSpace { vm.spaces[reader.pick(vm.spaces.count)] }

    /// A page of the working set: mostly the first region's first pages (a hot table),
    /// the rest spread over all four regions.
    mutating func hotPage(_ vm: FuzzVM) -> UInt64 {
        let b = reader.byte()
        return b < 96 ? vm.hot[Int(b) & 7] : vm.hot[Int(b) % vm.hot.count]
    }

    /// An offset in a page, sometimes near its end (an access may cross into the next).
    mutating func offset() -> UInt64 { [0, 0x8, 0x100, 0x800, 0xFF8, 0xFFC][reader.pick(6)] }

    /// A linear address from a few regions where mappings collide: low memory, the
    /// 4 MiB and 1 GiB lines, the top of the user half, the kernel's physmap (not for
    /// stores into tables: a broken physmap ends every later table store); a page
    /// index in the region, and an offset that sometimes crosses into the next page.
    mutating func address(_ vm: FuzzVM, userHalf: Bool = false) -> UInt64 {
        var regions: [UInt64] = vm.mode.isLongMode
            ? [0, 0x40_0000, 0x4000_0000, 0x7FFF_FFE0_0000, vm.kernel.physmapAddress(of: 0)]
            : [0, 0x40_0000, 0x4000_0000, 0xBFC0_0000, vm.kernel.physmapAddress(of: 0)]
        if userHalf { regions.removeLast() }
        let b = reader.byte()
        let base = regions[Int(b) % regions.count] &+ UInt64(b >> 3 & 0xF) << 12
        let offsets: [UInt64] = [0, 0x8, 0x800, 0xFFC, 0xFFF, 0x1F8]
        return base &+ offsets[reader.pick(offsets.count)]
    }

    /// A frame the VM owns, or one of its page tables (so entries can alias them).
    mutating func frame(_ vm: FuzzVM) throws(MachineError) -> UInt64 {
        let b = reader.byte()
        if b & 0xE0 == 0xE0 {
            let space = vm.spaces[Int(b) % vm.spaces.count]
            return space.root & ~0xFFF
        }
        return vm.frames[Int(b) % vm.frames.count]
    }
}

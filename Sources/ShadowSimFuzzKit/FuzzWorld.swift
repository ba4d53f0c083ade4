import X86
import GuestKernel
import ShadowMMU
import Checker
import ShadowSimPolicies

/// The VMs of one input under one policy, and the interpreter of its operations.
struct FuzzWorld {
    var reader: ByteReader
    let policy: String
    var vms: [FuzzVM] = []
    var outcome = FuzzProgram.Outcome()
    let host = SimulationHost()
    var trace: ((String) -> Void)?

    let plantedBug: PlantedBug?
    let checked: Bool

    init(bytes: [UInt8], policy: String, plantedBug: PlantedBug?, checked: Bool) {
        reader = ByteReader(bytes: bytes)
        self.policy = policy
        self.plantedBug = plantedBug
        self.checked = checked
    }

    var checkedAccesses: UInt64 { vms.reduce(0) { $0 + ($1.checker?.accessesChecked ?? 0) } }

    // MARK: Setup (the first bytes)

    /// 1–3 VMs; per VM a paging mode, 1–3 vCPUs, SMEP/SMAP, host page size, prefetch and
    /// a shadow-page budget (small ones make recycling happen).
    mutating func build() throws(FuzzFinding) {
        let count = 1 + reader.pick(3)
        var factory: PolicyFactory?
        if policy != PolicyCatalog.bareMetalName {
            do { factory = try PolicyCatalog.factory(policy) } catch {
                throw FuzzFinding(policy: policy, operation: 0, message: error.description)
            }
        }
        for _ in 0..<count {
            let a = reader.byte(), b = reader.byte()
            var config = MachineConfiguration(mode: PagingMode.allCases[Int(a) % PagingMode.allCases.count])
            config.vcpuCount = 1 + Int(a >> 2) % 3
            config.memoryBytes = 16 << 20
            config.cr4SMEP = a & 0x20 != 0
            config.cr4SMAP = a & 0x40 != 0
            config.tlbEntries = a & 0x80 != 0 ? 16 : 256
            var mmuConfig = ShadowMMUConfiguration()
            mmuConfig.hostPageSize = [PageSize.size4K, .size4K, .size2M, .size1G][Int(b) & 3]
            mmuConfig.prefetch = b & 4 == 0
            mmuConfig.maxShadowPages = [32, 64, 256, 1024][Int(b >> 3) & 3]
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
                for i in 0..<12 {
                    let frame = try kernel.allocateFrame(zeroedBy: cpu)
                    // A guest store gives the frame storage (zero frames have none), so
                    // accesses to it can take the vCPUs' fast path when unchecked.
                    _ = try cpu.write(kernel.physmapAddress(of: frame) + 8, value: UInt64(i) << 32 | 0x5a5a, cpl: 0)
                    vm.frames.append(frame)
                }
                for v in machine.vcpus { _ = try v.loadCR3(vm.spaces[0].root) }
                vms.append(vm)
            } catch {
                throw FuzzFinding(policy: policy, operation: 0, message: "setting up: \(error)")
            }
        }
    }

    // MARK: Operations

    mutating func runOperations() throws(FuzzFinding) {
        while !reader.isAtEnd && outcome.operations < FuzzProgram.maxOperations {
            outcome.operations += 1
            let opcode = reader.byte()
            let vm = vms[reader.pick(vms.count)]
            do throws(MachineError) {
                try perform(opcode % 16, on: vm)
                if let trace { trace("\(policy) #\(outcome.operations): \(describe(vm))") }
            } catch {
                if let trace { trace("\(policy) #\(outcome.operations): \(describe(vm)) -> \(error)") }
                switch error {
                case .violation(let m):
                    throw FuzzFinding(policy: policy, operation: outcome.operations, message: m)
                case .unsupported(let m) where !m.contains("budget") && !m.contains("paging mode"):
                    // The engine gave up on an access: a finding, not a refused argument.
                    throw FuzzFinding(policy: policy, operation: outcome.operations, message: m)
                default:
                    outcome.skipped += 1
                }
            }
        }
        // The final state must hold the MMU's invariants too.
        for vm in vms {
            if let mmu = vm.mmu, let problem = mmu.verify().first {
                throw FuzzFinding(policy: policy, operation: outcome.operations, message: "at the end: \(problem)")
            }
        }
    }

    /// What the last operation was, for the trace.
    var last = ""

    func describe(_ vm: FuzzVM) -> String {
        "vm\(vms.firstIndex { $0 === vm } ?? -1) (\(vm.mode)) \(last)"
    }

    mutating func perform(_ opcode: UInt8, on vm: FuzzVM) throws(MachineError) {
        let cpu = vm.machine.vcpus[reader.pick(vm.machine.vcpus.count)]
        if trace != nil { last = "op \(opcode) on vcpu[\(cpu.index + 1)]" }
        switch opcode {
        case 0, 1:
            // Map a 4 KiB page (twice as likely as anything else: it feeds the rest).
            let space = vm.spaces[reader.pick(vm.spaces.count)]
            let va = address(vm)
            var attributes = self.attributes(reader.byte(), mode: vm.mode)
            attributes.size = .size4K
            let gpa = try frame(vm)
            note("map \(hex(va & ~0xFFF)) -> \(hex(gpa)) in space \(hex(space.root)) \(attributes)")
            try space.map(va & ~0xFFF, to: gpa, attributes: attributes, by: cpu)
        case 2:
            // Map a large page over whatever is there (page tables included).
            let space = vm.spaces[reader.pick(vm.spaces.count)]
            var attributes = self.attributes(reader.byte(), mode: vm.mode)
            let sizes: [PageSize] = vm.mode == .legacy32 ? [.size4M] : vm.mode == .pae ? [.size2M] : [.size2M, .size1G]
            attributes.size = sizes[reader.pick(sizes.count)]
            let mask = attributes.size.offsetMask
            let gpa = UInt64(reader.pick(4)) << 22 & ~mask
            let va = address(vm) & ~mask
            note("map \(hex(va)) -> \(hex(gpa)) in space \(hex(space.root)) \(attributes)")
            try space.map(va, to: gpa, attributes: attributes, by: cpu)
        case 3:
            let space = vm.spaces[reader.pick(vm.spaces.count)]
            let va = address(vm)
            note("unmap \(hex(va)) in space \(hex(space.root))")
            _ = try space.unmap(va, by: cpu)
        case 4:
            // A raw entry store at any level: any flags, sometimes a reserved bit.
            let space = vm.spaces[reader.pick(vm.spaces.count)]
            let level = 1 + reader.pick(vm.mode.levels)
            let flags = UInt64(reader.byte()) | UInt64(reader.byte() & 0x1) << 8
            var value = try frame(vm) | flags
            let extra = reader.byte()
            if extra & 0x3 == 0 { value |= 1 << (12 + UInt64(extra >> 2) % 52) }        // maybe reserved
            if extra & 0x80 != 0 && vm.mode.hasWideEntries { value |= PTE.executeDisable }
            let va = address(vm)
            if vm.mode == .legacy32 { value &= 0xFFFF_FFFF }
            note("set level-\(level) entry of \(hex(va)) in space \(hex(space.root)) to \(hex(value))")
            try space.setEntry(va, level: level, value: value, by: cpu)
        case 5, 6:
            let va = address(vm)
            let size = [1, 2, 4, 8][reader.pick(4)]
            let cpl = reader.byte() & 1 == 0 ? 0 : 3
            if opcode == 5 {
                note("read \(size) at \(hex(va)) CPL \(cpl)")
                let r = try cpu.read(va, size: size, cpl: cpl)
                note(" = \(r.summary) \(hex(r.physicalAddress)) \(hex(r.value))")
            } else {
                let value = reader.word()
                note("write \(size) at \(hex(va)) CPL \(cpl)")
                let r = try cpu.write(va, value: value, size: size, cpl: cpl)
                note(" = \(r.summary) \(hex(r.physicalAddress))")
            }
        case 7:
            let va = address(vm)
            let cpl = reader.byte() & 1 == 0 ? 0 : 3
            note("fetch at \(hex(va)) CPL \(cpl)")
            let r = try cpu.fetch(va, cpl: cpl)
            note(" = \(r.summary)")
        case 8:
            // MOV to CR3: another space of this VM, with a PCID and no-flush when enabled.
            let space = vm.spaces[reader.pick(vm.spaces.count)]
            let b = reader.byte()
            var value = space.root
            if cpu.cr4 & CR4.pcide != 0 {
                value |= UInt64(b & 3)
                if b & 4 != 0 { value |= CR3Bits.noFlush }
            }
            note("MOV CR3 \(hex(value))")
            let r = try cpu.loadCR3(value)
            note(" = \(r.summary)")
        case 9:
            let va = address(vm)
            note("INVLPG \(hex(va))")
            _ = try cpu.invlpg(va)
        case 10:
            let b = reader.byte()
            let va = address(vm)
            note("INVPCID type \(b & 3) PCID \(b >> 2 & 3) \(hex(va))")
            let r = try cpu.invpcid(type: Int(b & 3), pcid: UInt64(b >> 2 & 3), address: va)
            note(" = \(r.summary)")
        case 11:
            // Toggle one of CR4.PGE, SMEP, SMAP or PCIDE (PCIDE only with CR3[11:0] = 0).
            let bit = [CR4.pge, CR4.smep, CR4.smap, CR4.pcide][reader.pick(4)]
            note("MOV CR4 \(hex(cpu.cr4 ^ bit))")
            let r = try cpu.writeCR4(cpu.cr4 ^ bit)
            note(" = \(r.summary)")
        case 12:
            note("MOV CR0 \(hex(cpu.cr0 ^ CR0.wp))")
            let r = try cpu.writeCR0(cpu.cr0 ^ CR0.wp)
            note(" = \(r.summary)")
        case 13:
            let b = reader.byte()
            note(b & 1 == 0 ? "CPL \(b & 2 == 0 ? 0 : 3)" : "RFLAGS.AC \(b & 2 != 0)")
            if b & 1 == 0 { try cpu.setCPL(b & 2 == 0 ? 0 : 3) } else { cpu.setAlignmentCheck(b & 2 != 0) }
        case 14:
            note(vm.spaces.count < 6 ? "new address space" : "new frame")
            if vm.spaces.count < 6 {
                vm.spaces.append(try vm.kernel.newAddressSpace(by: cpu))
            } else {
                vm.frames.append(try vm.kernel.allocateFrame(zeroedBy: cpu))
            }
        default:
            // A host store (a device) into one of the guest's frames.
            let gpa = try frame(vm) | UInt64(reader.byte()) << 3
            let value = reader.word()
            note("host store \(hex(value)) at gpa \(hex(gpa))")
            try vm.machine.writePhysical(gpa, value, size: 8)
        }
    }

    /// Adds to the trace line (only evaluated when tracing).
    mutating func note(_ text: @autoclosure () -> String) {
        if trace != nil { last += " " + text() }
    }

    // MARK: Operands

    /// A linear address from a few regions where mappings collide: low memory, the
    /// 4 MiB and 1 GiB lines, the top of the user half, the kernel's physmap; a page
    /// index in the region, and an offset that sometimes crosses into the next page.
    mutating func address(_ vm: FuzzVM) -> UInt64 {
        let regions: [UInt64] = vm.mode.isLongMode
            ? [0, 0x40_0000, 0x4000_0000, 0x7FFF_FFE0_0000, vm.kernel.physmapAddress(of: 0)]
            : [0, 0x40_0000, 0x4000_0000, 0xFFC0_0000, vm.kernel.physmapAddress(of: 0)]
        let b = reader.byte()
        let base = regions[Int(b) % regions.count] &+ UInt64(b >> 3 & 0xF) << 12
        let offsets: [UInt64] = [0, 0x8, 0x800, 0xFFC, 0xFFF, 0x1F8]
        return base &+ offsets[reader.pick(offsets.count)]
    }

    /// A frame the VM owns, or one of its page tables (so entries can alias them).
    mutating func frame(_ vm: FuzzVM) throws(MachineError) -> UInt64 {
        let b = reader.byte()
        if b & 0x80 != 0 {
            let space = vm.spaces[Int(b) % vm.spaces.count]
            return space.root & ~0xFFF
        }
        return vm.frames[Int(b) % vm.frames.count]
    }

    func attributes(_ b: UInt8, mode: PagingMode) -> MappingAttributes {
        var a = MappingAttributes()
        a.writable = b & 1 != 0
        a.user = b & 2 != 0
        a.executeDisable = b & 4 != 0 && mode.hasWideEntries
        a.global = b & 8 != 0
        a.accessed = b & 16 != 0
        a.dirty = b & 32 != 0
        return a
    }
}

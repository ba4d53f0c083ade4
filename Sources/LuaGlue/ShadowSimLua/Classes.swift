import CLua
import CLuaShim
import LuaKit
import X86
import GuestKernel
import ShadowMMU
import Checker

// MARK: Results

/// Pushes `nil, fault` for a faulting result: `{kind = "pf"|"gp", error_code, cr2, text}`.
func pushFault(_ call: inout LuaCall, _ r: AccessResult) -> Int32 {
    call.pushNil()
    call.newTable(fieldCount: 4)
    switch r.outcome {
    case .pageFault:
        call.push("pf"); call.setField("kind")
        call.push(Int64(r.errorCode)); call.setField("error_code")
        call.push(bits: r.faultAddress); call.setField("cr2")
    case .generalProtection:
        call.push("gp"); call.setField("kind")
    case .ok:
        break
    }
    call.push(r.summary); call.setField("text")
    return 2
}

/// The optional CPL argument: 0…3.
private func cplArgument(_ call: inout LuaCall, _ index: Int32) throws(LuaRaise) -> Int? {
    try call.optionalInteger(index).map { (v: Int64) throws(LuaRaise) -> Int in
        guard (0...3).contains(v) else { throw call.argumentError(index, "cpl must be 0…3, got \(v)") }
        return Int(v)
    }
}

private func sizeArgument(_ call: inout LuaCall, _ index: Int32) throws(LuaRaise) -> Int {
    guard let v = try call.optionalInteger(index) else { return 8 }
    guard v == 1 || v == 2 || v == 4 || v == 8 else { throw call.argumentError(index, "size must be 1, 2, 4 or 8, got \(v)") }
    return Int(v)
}

/// The value of a `size`-byte store: unsigned or two's-complement, so that `-1` fills
/// the bytes; anything wider is a mistake of the script, not something to truncate.
private func storeValue(_ call: inout LuaCall, _ index: Int32, size: Int) throws(LuaRaise) -> UInt64 {
    let v = try call.integer(index)
    guard size < 8 else { return UInt64(bitPattern: v) }
    let bits = Int64(size * 8)
    guard v >= -(1 << (bits - 1)) && v < (1 << bits) else {
        throw call.argumentError(index, "value \(v < 0 ? "-" + hex(v.magnitude) : hex(UInt64(v))) does not fit \(size) byte\(size == 1 ? "" : "s")")
    }
    return UInt64(bitPattern: v) & ((1 << UInt64(bits)) - 1)
}

// MARK: VM

/// A host-side MMU action a second backend cannot make (see `ScenarioVM.hostActionsRefused`).
private func refuseHostAction(_ vm: ScenarioVM, _ name: String) throws(LuaRaise) {
    if let why = vm.hostActionsRefused { throw LuaRaise("\(name): \(why)") }
}

func registerVMClass(_ lua: LuaState, session: Session) {
    func vm(_ call: inout LuaCall) throws(LuaRaise) -> ScenarioVM { try call.this(ScenarioVM.self, className: ClassName.vm) }
    /// The vCPU named by option `by`, or the VM's first.
    func storer(_ o: LuaOptions, _ vm: ScenarioVM) throws(LuaRaise) -> VCPU {
        try o.object("by", VCPU.self, metatableName: ClassName.vcpu, expected: "vcpu") ?? vm.machine.vcpus[0]
    }

    lua.registerClass(ClassName.vm, methods: [
        ("space", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            let o = try call.options(2, allowed: ["by", "kernel_half"])
            let by = try storer(o, vm)
            let kernelHalf = try o.boolean("kernel_half") ?? true
            let space = try core { () throws(MachineError) in try vm.kernel.newAddressSpace(by: by, kernelHalf: kernelHalf) }
            call.pushObject(space, className: ClassName.space)
            return 1
        }),
        ("alloc_frame", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            let o = try call.options(2, allowed: ["by"])
            let by = try storer(o, vm)
            call.push(bits: try core { () throws(MachineError) in try vm.kernel.allocateFrame(zeroedBy: by) })
            return 1
        }),
        ("free_frame", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            let gpa = try call.bits(2)
            try core { () throws(MachineError) in try vm.kernel.freeFrame(gpa) }
            return 0
        }),
        ("read_phys", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            let gpa = try call.bits(2)
            let size = try sizeArgument(&call, 3)
            call.push(bits: try core { () throws(MachineError) in try vm.machine.readPhysical(gpa, size: size) })
            return 1
        }),
        ("write_phys", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            let gpa = try call.bits(2)
            let size = try sizeArgument(&call, 4)
            let value = try storeValue(&call, 3, size: size)
            try core { () throws(MachineError) in try vm.machine.writePhysical(gpa, value, size: size) }
            return 0
        }),
        ("physmap", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            let gpa = try call.bits(2)
            guard vm.machine.memory.contains(gpa) else {
                throw call.argumentError(2, "gpa \(hex(gpa)) is beyond guest memory (\(hex(vm.machine.memory.capacity)) bytes)")
            }
            call.push(bits: vm.kernel.physmapAddress(of: gpa))
            return 1
        }),
        ("counters", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            pushCounters(&call, try vm(&call).counters)
            return 1
        }),
        ("verify", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let problems = try vm(&call).mmu?.verify() ?? []
            call.newTable(arrayCount: Int32(problems.count))
            for (i, p) in problems.enumerated() {
                call.push(p)
                call.setIndex(Int64(i + 1))
            }
            return 1
        }),
        ("invalidate_gfns", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            try refuseHostAction(vm, "vm:invalidate_gfns")
            let frames = vm.machine.memory.capacity >> 12
            let first = try call.bits(2)
            let count = UInt64(try call.integer(3, in: 1...Int64(frames), "count"))
            guard first < frames, count <= frames - first else {
                throw call.argumentError(2, "gfns \(hex(first))…+\(count) are beyond guest memory (\(frames) frames)")
            }
            call.push(vm.mmu?.invalidateHostRange(gfn: first, count: count) ?? 0)
            return 1
        }),
        ("dirty_log", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            try refuseHostAction(vm, "vm:dirty_log")
            vm.mmu?.setDirtyLogging(try call.boolean(2))
            return 0
        }),
        ("collect_dirty_log", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            try refuseHostAction(try vm(&call), "vm:collect_dirty_log")
            let frames = try vm(&call).mmu?.collectDirtyLog() ?? []
            call.newTable(arrayCount: Int32(frames.count))
            for (i, gfn) in frames.enumerated() {
                call.push(bits: gfn)
                call.setIndex(Int64(i + 1))
            }
            return 1
        }),
        ("shadow_pages", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let infos = try vm(&call).mmu?.shadowPageInfos() ?? []
            call.newTable(arrayCount: Int32(infos.count))
            for (i, p) in infos.enumerated() {
                call.newTable(fieldCount: 10)
                call.push(Int(p.handle)); call.setField("handle")
                call.push(bits: p.gfn); call.setField("gfn")
                call.push(p.role.level); call.setField("level")
                call.push(p.roleText); call.setField("role")
                call.push(p.role.direct); call.setField("direct")
                call.push(p.unsync ? "unsync" : "sync"); call.setField("sync")
                call.push(p.unsyncChildren); call.setField("unsync_children")
                call.push(p.rootCount); call.setField("root_count")
                if let age = p.age { call.push(age); call.setField("age") }
                call.newTable(arrayCount: Int32(p.parents.count))
                for (j, ref) in p.parents.enumerated() {
                    call.newTable(fieldCount: 2)
                    call.push(Int(ref.page)); call.setField("handle")
                    call.push(Int(ref.index)); call.setField("index")
                    call.setIndex(Int64(j + 1))
                }
                call.setField("parents")
                call.setIndex(Int64(i + 1))
            }
            return 1
        }),
        ("sptes", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            let gfn = try call.bits(2)
            guard gfn < vm.machine.memory.capacity >> 12 else {
                throw call.argumentError(2, "gfn \(hex(gfn)) is beyond guest memory (\(vm.machine.memory.capacity >> 12) frames)")
            }
            let sptes = vm.mmu?.sptes(mapping: gfn) ?? []
            call.newTable(arrayCount: Int32(sptes.count))
            for (i, e) in sptes.enumerated() {
                call.newTable(fieldCount: 8)
                call.push(Int(e.handle)); call.setField("handle")
                call.push(e.index); call.setField("index")
                call.push(e.level); call.setField("level")
                call.push(bits: e.value); call.setField("spte")
                call.push(e.writable); call.setField("writable")
                call.push(e.user); call.setField("user")
                call.push(e.executable); call.setField("executable")
                call.push(e.accessed); call.setField("accessed")
                call.setIndex(Int64(i + 1))
            }
            return 1
        }),
        ("cycles", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let estimate = try vm(&call).cycleBreakdown
            call.newTable(arrayCount: Int32(estimate.perVCPU.count), fieldCount: 2)
            call.push(estimate.vm.total); call.setField("total")
            call.newTable(fieldCount: Int32(estimate.vm.components.count))
            for (name, cycles) in estimate.vm.components {
                call.push(cycles)
                call.setField(name)
            }
            call.setField("breakdown")
            for (i, c) in estimate.perVCPU.enumerated() {
                call.push(c.total)
                call.setIndex(Int64(i + 1))
            }
            return 1
        }),
        ("memory_stats", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vm = try vm(&call)
            call.newTable(fieldCount: 4)
            call.push(bits: vm.machine.memory.capacity); call.setField("capacity")
            call.push(vm.machine.memory.residentFrames); call.setField("resident_frames")
            call.push(bits: vm.machine.memory.residentBytes); call.setField("resident_bytes")
            call.push(vm.kernel.frames.inUse); call.setField("frames_in_use")
            return 1
        }),
    ] + [batchMethod], index: { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        // __index(vm, key): methods, then vcpu/kernel from the user value, then fields.
        let L = call.L
        lua_pushvalue(L, 2)
        lua_rawget(L, luashim_upvalueindex(3))
        if lua_type(L, -1) != LUA_TNIL { return 1 }
        luashim_pop(L, 1)
        guard lua_type(L, 2) == LUA_TSTRING, let vm = call.object(1, ScenarioVM.self, metatableName: ClassName.vm) else {
            call.pushNil()
            return 1
        }
        switch String(cString: luashim_tostring(L, 2)!) {
        case "vcpu", "kernel":
            lua_getiuservalue(L, 1, 1)
            lua_pushvalue(L, 2)
            lua_rawget(L, -2)
        case "name": call.push(vm.name)
        case "mode": call.push(vm.machine.mode.description)
        case "memory": call.push(bits: vm.machine.memory.capacity)
        case "vcpus": call.push(vm.machine.vcpus.count)
        case "policy": call.push(vm.policyName)
        default: call.pushNil()
        }
        return 1
    }, toString: { object in
        guard let vm = object as? ScenarioVM else { return "shadowsim.VM" }
        return "shadowsim.VM \(vm.name) (\(vm.machine.mode), \(vm.machine.vcpus.count) vCPUs)"
    })
}

func pushCounters(_ call: inout LuaCall, _ fields: [(name: String, value: UInt64)]) {
    call.newTable(fieldCount: Int32(fields.count))
    for (name, value) in fields {
        call.push(bits: value)
        call.setField(name)
    }
}

// MARK: vCPU

private func cpu(_ call: inout LuaCall) throws(LuaRaise) -> VCPU { try call.this(VCPU.self, className: ClassName.vcpu) }

/// `vcpu:read(va, size, cpl)` with every argument checked (HotMethods.swift serves the
/// common case without the checks' overhead and falls back here).
func readMethod(_ call: inout LuaCall) throws(LuaRaise) -> Int32 {
    let vcpu = try cpu(&call)
    let va = try call.bits(2)
    let size = try sizeArgument(&call, 3)
    let cpl = try cplArgument(&call, 4)
    let r = try core { () throws(MachineError) in try vcpu.read(va, size: size, cpl: cpl) }
    guard r.isOK else { return pushFault(&call, r) }
    call.push(bits: r.value)
    call.push(bits: r.physicalAddress)
    return 2
}

/// `vcpu:write(va, value, size, cpl)`, every argument checked.
func writeMethod(_ call: inout LuaCall) throws(LuaRaise) -> Int32 {
    let vcpu = try cpu(&call)
    let va = try call.bits(2)
    let size = try sizeArgument(&call, 4)
    let value = try storeValue(&call, 3, size: size)
    let cpl = try cplArgument(&call, 5)
    let emulated = try call.options(6, allowed: ["emulated"]).boolean("emulated") ?? false
    let r = try core { () throws(MachineError) in
        emulated ? try vcpu.emulatedWrite(va, value: value, size: size, cpl: cpl) : try vcpu.write(va, value: value, size: size, cpl: cpl)
    }
    guard r.isOK else { return pushFault(&call, r) }
    call.push(bits: r.physicalAddress)
    return 1
}

func registerVCPUClass(_ lua: LuaState) {
    lua.registerClass(ClassName.vcpu, methods: [
        ("read", readMethod),
        ("write", writeMethod),
        ("fetch", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            let va = try call.bits(2)
            let cpl = try cplArgument(&call, 3)
            let r = try core { () throws(MachineError) in try vcpu.fetch(va, cpl: cpl) }
            guard r.isOK else { return pushFault(&call, r) }
            call.push(bits: r.physicalAddress)
            return 1
        }),
        ("translate", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            let va = try call.bits(2)
            var kind = AccessKind.read
            if !call.isNoneOrNil(3) {
                let name = try call.string(3)
                guard let k = AccessKind(name: name) else {
                    throw call.argumentError(3, "access must be \"read\", \"write\" or \"fetch\", got \"\(name)\"")
                }
                kind = k
            }
            let cpl = try cplArgument(&call, 4)
            let r = try core { () throws(MachineError) in try vcpu.translate(va, kind, cpl: cpl) }
            guard r.isOK else { return pushFault(&call, r) }
            call.push(bits: r.physicalAddress)
            return 1
        }),
        ("fill", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            let va = try call.bits(2)
            let count = Int(try call.integer(3, in: 0...(1 << 32), "count"))
            let byte = UInt8(try call.optionalInteger(4).map { (v: Int64) throws(LuaRaise) -> Int64 in
                guard (0...255).contains(v) else { throw call.argumentError(4, "byte must be 0…255, got \(v)") }
                return v
            } ?? 0)
            let cpl = try cplArgument(&call, 5)
            let emulated = try call.options(6, allowed: ["emulated"]).boolean("emulated") ?? false
            let r = try core { () throws(MachineError) in
                emulated ? try vcpu.emulatedFill(va, count: count, byte: byte, cpl: cpl)
                    : try vcpu.fill(va, count: count, byte: byte, cpl: cpl)
            }
            guard r.isOK else { return pushFault(&call, r) }
            call.push(true)
            return 1
        }),
        ("load_cr3", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            var value: UInt64
            if let space = call.object(2, AddressSpace.self, metatableName: ClassName.space) {
                guard space.kernel.machine.vcpus.contains(where: { $0 === vcpu }) else {
                    throw call.argumentError(2, "the address space belongs to another VM")
                }
                value = space.root
            } else if lua_type(call.L, 2) == LUA_TNUMBER {
                value = try call.bits(2)
            } else {
                throw call.argumentError(2, "address space or integer expected, got \(call.typeName(2))")
            }
            let o = try call.options(3, allowed: ["pcid", "noflush"])
            if let pcid = try o.integer("pcid", in: 0...4095) {
                guard value & 0xFFF == 0 else {
                    throw call.argumentError(3, "option 'pcid' given with a CR3 value whose bits 11:0 are already set")
                }
                value |= UInt64(pcid)
            }
            if try o.boolean("noflush") ?? false { value |= CR3Bits.noFlush }
            let r = try core { () throws(MachineError) in try vcpu.loadCR3(value) }
            guard r.isOK else { return pushFault(&call, r) }
            call.push(true)
            return 1
        }),
        ("invlpg", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            let va = try call.bits(2)
            let r = try core { () throws(MachineError) in try vcpu.invlpg(va) }
            guard r.isOK else { return pushFault(&call, r) }
            call.push(true)
            return 1
        }),
        ("invpcid", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            var type: Int
            if lua_type(call.L, 2) == LUA_TSTRING {
                let name = try call.string(2)
                guard let t = InvpcidType(name: name) else {
                    throw call.argumentError(2, "type must be 0…3 or one of \"address\", \"context\", \"all\", \"all_nonglobal\", got \"\(name)\"")
                }
                type = t.rawValue
            } else {
                // Any integer: the instruction itself raises #GP for a type above 3.
                type = Int(clamping: try call.integer(2))
            }
            let pcid = try call.optionalInteger(3).map { UInt64(bitPattern: $0) } ?? 0
            let va = try call.optionalInteger(4).map { UInt64(bitPattern: $0) } ?? 0
            let r = try core { () throws(MachineError) in try vcpu.invpcid(type: type, pcid: pcid, address: va) }
            guard r.isOK else { return pushFault(&call, r) }
            call.push(true)
            return 1
        }),
        ("set", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            try setControls(&call, try cpu(&call))
        }),
        ("regs", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            call.newTable(fieldCount: 8)
            call.push(bits: vcpu.cr0); call.setField("cr0")
            call.push(bits: vcpu.cr3); call.setField("cr3")
            call.push(bits: vcpu.cr4); call.setField("cr4")
            call.push(bits: vcpu.efer); call.setField("efer")
            call.push(vcpu.cpl); call.setField("cpl")
            call.push(vcpu.rflagsAC); call.setField("ac")
            call.push(Int(vcpu.currentPCID)); call.setField("pcid")
            call.push(vcpu.mode.description); call.setField("mode")
            return 1
        }),
        ("counters", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            // The same keys as the VM's counters: MMU statistics at zero on bare metal,
            // and the checker's count when one is attached.
            var fields = vcpu.counters.fields + ((vcpu.backend as? ShadowVCPU)?.stats ?? VCPUMMUStats()).fields
            if let checker = vcpu.observer as? ArchitecturalChecker { fields.append(("stale_allowed", checker.staleAllowed[vcpu.index])) }
            pushCounters(&call, fields)
            return 1
        }),
        ("tlb_entries", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let vcpu = try cpu(&call)
            let pcid = try call.optionalInteger(2).map { (v: Int64) throws(LuaRaise) -> UInt16 in
                guard (0...4095).contains(v) else { throw call.argumentError(2, "pcid must be 0…4095, got \(v)") }
                return UInt16(v)
            } ?? vcpu.currentPCID
            call.push(vcpu.tlb.liveEntries(pcid: pcid))
            return 1
        }),
        ("index", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            call.push(try cpu(&call).index + 1)
            return 1
        }),
    ] + paravirtualVCPUMethods + introspectionVCPUMethods, toString: { object in
        guard let vcpu = object as? VCPU else { return "shadowsim.VCPU" }
        return "shadowsim.VCPU vcpu[\(vcpu.index + 1)] (\(vcpu.mode), CR3 \(hex(vcpu.cr3)))"
    })
}

/// `vcpu:set{...}`: the control bits as the instructions that change them would:
/// WRMSR EFER, then MOV CR0, then MOV CR4, then STAC/CLAC and the CPL.
private func setControls(_ call: inout LuaCall, _ vcpu: VCPU) throws(LuaRaise) -> Int32 {
    let o = try call.options(2, allowed: ["wp", "pse", "pge", "smep", "smap", "pcide", "nxe", "ac", "cpl", "running"])
    func flag(_ value: UInt64, _ bit: UInt64, _ on: Bool?) -> UInt64 {
        guard let on else { return value }
        return on ? value | bit : value & ~bit
    }
    if let nxe = try o.boolean("nxe") {
        let r = try core { () throws(MachineError) in try vcpu.writeEFER(flag(vcpu.efer, EFER.nxe, nxe)) }
        guard r.isOK else { return pushFault(&call, r) }
    }
    if let wp = try o.boolean("wp") {
        let r = try core { () throws(MachineError) in try vcpu.writeCR0(flag(vcpu.cr0, CR0.wp, wp)) }
        guard r.isOK else { return pushFault(&call, r) }
    }
    var cr4 = vcpu.cr4
    cr4 = flag(cr4, CR4.pse, try o.boolean("pse"))
    cr4 = flag(cr4, CR4.pge, try o.boolean("pge"))
    cr4 = flag(cr4, CR4.smep, try o.boolean("smep"))
    cr4 = flag(cr4, CR4.smap, try o.boolean("smap"))
    cr4 = flag(cr4, CR4.pcide, try o.boolean("pcide"))
    if cr4 != vcpu.cr4 {
        let target = cr4
        let r = try core { () throws(MachineError) in try vcpu.writeCR4(target) }
        guard r.isOK else { return pushFault(&call, r) }
    }
    if let ac = try o.boolean("ac") { vcpu.setAlignmentCheck(ac) }
    if let cpl = try o.integer("cpl", in: 0...3) {
        try core { () throws(MachineError) in try vcpu.setCPL(Int(cpl)) }
    }
    // Not architectural: whether the vCPU is in guest mode when others ask it to flush.
    if let running = try o.boolean("running") { (vcpu.backend as? ShadowVCPU)?.running = running }
    call.push(true)
    return 1
}

// MARK: Address space

func registerSpaceClass(_ lua: LuaState) {
    func space(_ call: inout LuaCall) throws(LuaRaise) -> AddressSpace {
        try call.this(AddressSpace.self, className: ClassName.space)
    }
    func storer(_ o: LuaOptions, _ space: AddressSpace) throws(LuaRaise) -> VCPU {
        let by = try o.object("by", VCPU.self, metatableName: ClassName.vcpu, expected: "vcpu") ?? space.kernel.machine.vcpus[0]
        guard space.kernel.machine.vcpus.contains(where: { $0 === by }) else {
            throw LuaRaise("option 'by': that vCPU belongs to another VM")
        }
        return by
    }
    func level(_ call: inout LuaCall, _ index: Int32, _ space: AddressSpace) throws(LuaRaise) -> Int {
        Int(try call.integer(index, in: 1...Int64(space.mode.levels), "level"))
    }

    lua.registerClass(ClassName.space, methods: [
        ("map", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let space = try space(&call)
            let va = try call.bits(2)
            let gpa = try call.bits(3)
            let o = try call.options(4, allowed: ["write", "user", "nx", "global", "accessed", "dirty", "size", "by"])
            var a = MappingAttributes()
            a.writable = try o.boolean("write") ?? true
            a.user = try o.boolean("user") ?? true
            a.executeDisable = try o.boolean("nx") ?? false
            a.global = try o.boolean("global") ?? false
            a.accessed = try o.boolean("accessed") ?? false
            a.dirty = try o.boolean("dirty") ?? false
            if let size = try o.choice("size", ["4k", "2m", "4m", "1g"]) { a.size = PageSize(name: size)! }
            let by = try storer(o, space)
            let attributes = a
            try core { () throws(MachineError) in try space.map(va, to: gpa, attributes: attributes, by: by) }
            return 0
        }),
        ("unmap", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let space = try space(&call)
            let va = try call.bits(2)
            let by = try storer(try call.options(3, allowed: ["by"]), space)
            call.push(try core { () throws(MachineError) in try space.unmap(va, by: by) })
            return 1
        }),
        ("entry", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let space = try space(&call)
            let va = try call.bits(2)
            let lvl = try level(&call, 3, space)
            guard let e = try core({ () throws(MachineError) in try space.entry(va, level: lvl) }) else {
                call.pushNil()
                return 1
            }
            call.push(bits: e.value)
            call.push(bits: e.address)
            return 2
        }),
        ("leaf", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let space = try space(&call)
            let va = try call.bits(2)
            guard let e = try core({ () throws(MachineError) in try space.leaf(va) }) else {
                call.pushNil()
                return 1
            }
            call.push(bits: e.value)
            call.push(e.level)
            call.push(bits: e.address)
            return 3
        }),
        ("set_entry", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let space = try space(&call)
            let va = try call.bits(2)
            let lvl = try level(&call, 3, space)
            let value = try call.bits(4)
            let by = try storer(try call.options(5, allowed: ["by"]), space)
            try core { () throws(MachineError) in try space.setEntry(va, level: lvl, value: value, by: by) }
            return 0
        }),
    ], index: { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        let L = call.L
        lua_pushvalue(L, 2)
        lua_rawget(L, luashim_upvalueindex(3))
        if lua_type(L, -1) != LUA_TNIL { return 1 }
        luashim_pop(L, 1)
        guard lua_type(L, 2) == LUA_TSTRING,
              let space = call.object(1, AddressSpace.self, metatableName: ClassName.space) else {
            call.pushNil()
            return 1
        }
        switch String(cString: luashim_tostring(L, 2)!) {
        case "cr3", "root": call.push(bits: space.root)
        case "mode": call.push(space.mode.description)
        default: call.pushNil()
        }
        return 1
    }, toString: { object in
        guard let space = object as? AddressSpace else { return "shadowsim.AddressSpace" }
        return "shadowsim.AddressSpace (CR3 \(hex(space.root)))"
    })
}

import CLua
import CLuaShim
import LuaKit
import X86
#if canImport(Glibc)
import Glibc
#endif
import GuestKernel
import ShadowMMU
import Checker
import ShadowSimPolicies

/// Userdata class names (also what `tostring` and type errors show).
enum ClassName {
    static let vm = "shadowsim.VM"
    static let vcpu = "shadowsim.VCPU"
    static let space = "shadowsim.AddressSpace"
}

/// Runs a core operation, turning its error into a Lua error at the caller's line.
@inline(__always)
func core<T>(_ body: () throws(MachineError) -> T) throws(LuaRaise) -> T {
    do { return try body() } catch { throw LuaRaise(error.description) }
}

/// Installs the `shadowsim` module as a global and as `package.loaded.shadowsim`.
public func installShadowSimModule(_ lua: LuaState, session: Session) throws(LuaScriptError) {
    let L = lua.L
    registerVMClass(lua, session: session)
    registerVCPUClass(lua)
    installHotVCPUMethods(lua)
    registerSpaceClass(lua)
    registerLinuxClass(lua)

    lua_createtable(L, 0, 16)
    lua.pushFunction("vm") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        try newVM(&call, session: session)
    }
    lua_setfield(L, -2, "vm")
    lua.pushFunction("random") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        try random(&call, session: session)
    }
    lua_setfield(L, -2, "random")
    lua.pushFunction("record") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        let key = try call.string(1)
        session.record(key, try jsonValue(&call, 2, depth: 0))
        return 0
    }
    lua_setfield(L, -2, "record")
    lua.pushFunction("mark") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        session.mark(try call.string(1))
        return 0
    }
    lua_setfield(L, -2, "mark")
    lua.pushFunction("linux") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        try newLinux(&call)
    }
    lua_setfield(L, -2, "linux")
    lua.pushFunction("replay") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        try replayFromLua(&call, session: session)
    }
    lua_setfield(L, -2, "replay")
    lua.pushFunction("policies") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        call.newTable(arrayCount: Int32(PolicyCatalog.builtins.count))
        for (i, p) in PolicyCatalog.builtins.enumerated() {
            call.newTable(fieldCount: 2)
            call.push(p.name); call.setField("name")
            call.push(p.summary); call.setField("summary")
            call.setIndex(Int64(i + 1))
        }
        return 1
    }
    lua_setfield(L, -2, "policies")
    lua_pushstring(L, session.defaultPolicy)
    lua_setfield(L, -2, "default_policy")
    lua_pushinteger(L, Int64(bitPattern: session.seed))
    lua_setfield(L, -2, "seed")
    lua_pushstring(L, shadowSimVersion)
    lua_setfield(L, -2, "version")
    lua_createtable(L, Int32(session.scriptArguments.count), 0)
    for (i, a) in session.scriptArguments.enumerated() {
        lua_pushstring(L, a)
        lua_rawseti(L, -2, Int64(i + 1))
    }
    lua_setfield(L, -2, "args")
    lua_createtable(L, 0, Int32(session.parameters.count))
    for (name, value) in session.parameters {
        switch parameterValue(value) {
        case .integer(let i): lua_pushinteger(L, i)
        case .number(let d): lua_pushnumber(L, d)
        default: lua_pushstring(L, value)
        }
        lua_setfield(L, -2, name)
    }
    lua_setfield(L, -2, "params")

    lua_createtable(L, 0, 2)
    lua.pushFunction("walk") { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        try oneShotWalk(&call)
    }
    lua_setfield(L, -2, "walk")
    lua_setfield(L, -2, "x86")

    // The vCPU and address-space method tables, for shadowsim.interleave to wrap.
    lua_createtable(L, 0, 2)
    for (field, className) in [("vcpu", ClassName.vcpu), ("space", ClassName.space)] {
        lua_pushstring(L, className)
        lua_rawget(L, luashim_registryindex())
        lua_pushstring(L, "__methods")
        lua_rawget(L, -2)
        lua_setfield(L, -3, field)
        luashim_pop(L, 1)
    }
    lua_setfield(L, -2, "_methods")

    // package.loaded.shadowsim = module; shadowsim = module
    lua_getglobal(L, "package")
    if lua_type(L, -1) == LUA_TTABLE {
        lua_getfield(L, -1, "loaded")
        lua_pushvalue(L, -3)
        lua_setfield(L, -2, "shadowsim")
        luashim_pop(L, 2)
    } else {
        luashim_pop(L, 1)
    }
    lua_setglobal(L, "shadowsim")
    try lua.run(Array(preludeSource.utf8), chunkName: "=shadowsim.prelude")
}

// MARK: Module functions

private func newVM(_ call: inout LuaCall, session: Session) throws(LuaRaise) -> Int32 {
    let o = try call.options(1, allowed: ["mode", "vcpus", "memory", "maxphyaddr", "wp", "pse", "pge",
                                          "smep", "smap", "nxe", "tlb_entries", "name", "policy", "shadow_pages",
                                          "prefetch", "host_pages", "vcpus_running", "prev_roots", "costs", "check",
                                          "inject_bug", "boot"])
    let modeName = try o.choice("mode", PagingMode.allCases.map(\.description)) ?? "long4"
    var config = MachineConfiguration(mode: PagingMode(name: modeName)!)
    config.vcpuCount = Int(try o.integer("vcpus", in: 1...Int64(MachineConfiguration.maxVCPUs)) ?? 1)
    config.memoryBytes = try o.byteSize("memory") ?? config.memoryBytes
    config.maxPhysAddr = Int(try o.integer("maxphyaddr", in: 32...52) ?? 46)
    config.cr0WP = try o.boolean("wp") ?? true
    config.cr4PSE = try o.boolean("pse") ?? true
    config.cr4PGE = try o.boolean("pge") ?? true
    config.cr4SMEP = try o.boolean("smep") ?? false
    config.cr4SMAP = try o.boolean("smap") ?? false
    config.eferNXE = try o.boolean("nxe") ?? true
    config.tlbEntries = Int(try o.integer("tlb_entries", in: 4...(1 << 20)) ?? 1024)
    let name = try o.string("name") ?? "vm\(session.vms.count)"
    let policyName = try o.string("policy") ?? session.defaultPolicy
    var mmuConfig = ShadowMMUConfiguration()
    if let pages = try o.integer("shadow_pages", in: 8...(1 << 30)) { mmuConfig.maxShadowPages = Int(pages) }
    mmuConfig.prefetch = try o.boolean("prefetch") ?? true
    if let host = try o.choice("host_pages", ["4k", "2m", "1g"]) { mmuConfig.hostPageSize = PageSize(name: host)! }
    mmuConfig.otherVCPUsRunning = try o.boolean("vcpus_running") ?? true
    mmuConfig.previousRoots = Int(try o.integer("prev_roots", in: 0...Int64(ShadowMMUConfiguration.maxPreviousRoots)) ?? 3)
    mmuConfig.zapUnsyncChildren = try o.boolean("zap_unsync_children") ?? true
    if let name = try o.choice("inject_bug", PlantedBug.allCases.map(\.rawValue)) {
        let bug = PlantedBug(rawValue: name)!
        do { try PolicyCatalog.check(bug, under: policyName) } catch { throw call.argumentError(1, "option 'inject_bug': \(error.description)") }
        mmuConfig.plantedBugs = [bug]
    } else if let bug = session.plantedBug, (try? PolicyCatalog.check(bug, under: policyName)) != nil {
        // --inject-bug was checked against --policy; a VM that names another policy gets
        // the bug only if that policy's code can have it.
        mmuConfig.plantedBugs = [bug]
    }
    if let costs = try o.numberTable("costs") {
        for (key, value) in costs {
            guard value >= 0, mmuConfig.costs.set(key, value) else {
                throw call.argumentError(1, "option 'costs': unknown cost '\(key)' or negative value (costs: \(CostModel().fields.map(\.name).joined(separator: ", ")))")
            }
        }
    }
    let check = try o.boolean("check") ?? session.check
    let boot = try o.boolean("boot") ?? true
    let vm: ScenarioVM
    do {
        vm = try session.makeVM(config, name: name, policy: policyName, mmu: mmuConfig, check: check, boot: boot)
    } catch {
        throw LuaRaise(error.description)
    }

    pushVM(&call, vm)
    return 1
}

/// Pushes a VM object, with its user value `{ vcpu = { vcpu objects }, kernel = kernel space }`.
func pushVM(_ call: inout LuaCall, _ vm: ScenarioVM) {
    call.pushObject(vm, className: ClassName.vm, userValues: 1)
    call.newTable(fieldCount: 2)
    call.newTable(arrayCount: Int32(vm.machine.vcpus.count))
    for (i, vcpu) in vm.machine.vcpus.enumerated() {
        call.pushObject(vcpu, className: ClassName.vcpu)
        call.setIndex(Int64(i + 1))
    }
    call.setField("vcpu")
    call.pushObject(vm.kernel.kernelSpace, className: ClassName.space)
    call.setField("kernel")
    lua_setiuservalue(call.L, -2, 1)
}

private func random(_ call: inout LuaCall, session: Session) throws(LuaRaise) -> Int32 {
    switch call.count {
    case 0:
        call.push(Double(session.random.next() >> 11) * 0x1.0p-53)
    case 1, 2:
        let low = call.count == 2 ? try call.integer(1) : 1
        let high = try call.integer(call.count)
        guard low <= high else { throw call.argumentError(call.count, "interval is empty (\(low) > \(high))") }
        let span = UInt64(bitPattern: high &- low) &+ 1
        let offset = span == 0 ? session.random.next() : session.random.next(below: span)
        call.push(low &+ Int64(bitPattern: offset))
    default:
        throw LuaRaise("wrong number of arguments to 'random' (expected 0, 1 or 2)")
    }
    return 1
}

/// Converts a Lua value to JSON for `shadowsim.record` (tables become arrays or objects).
private func jsonValue(_ call: inout LuaCall, _ index: Int32, depth: Int) throws(LuaRaise) -> JSONValue {
    let L = call.L
    let index = lua_absindex(L, index)
    switch lua_type(L, index) {
    case LUA_TNIL, LUA_TNONE: return .null
    case LUA_TBOOLEAN: return .bool(lua_toboolean(L, index) != 0)
    case LUA_TNUMBER:
        if luashim_isinteger(L, index) != 0 { return .integer(lua_tointegerx(L, index, nil)) }
        return .number(lua_tonumberx(L, index, nil))
    case LUA_TSTRING: return .string(String(cString: luashim_tostring(L, index)!))
    case LUA_TTABLE:
        guard depth < 16 else { throw LuaRaise("record: table nested more than 16 deep") }
        let n = lua_rawlen(L, index)
        if n > 0 {
            var items: [JSONValue] = []
            for i in 1...Int64(n) {
                lua_rawgeti(L, index, i)
                defer { luashim_pop(L, 1) }
                items.append(try jsonValue(&call, -1, depth: depth + 1))
            }
            return .array(items)
        }
        var fields: [(String, JSONValue)] = []
        lua_pushnil(L)
        while lua_next(L, index) != 0 {
            guard lua_type(L, -2) == LUA_TSTRING else {
                luashim_pop(L, 2)
                throw LuaRaise("record: table keys must be strings (or the table a list)")
            }
            let key = String(cString: luashim_tostring(L, -2)!)
            do {
                fields.append((key, try jsonValue(&call, -1, depth: depth + 1)))
            } catch {
                luashim_pop(L, 2)
                throw error
            }
            luashim_pop(L, 1)
        }
        fields.sort { $0.0 < $1.0 }
        return .object(fields)
    default:
        throw LuaRaise("record: cannot record a \(call.typeName(index)) value")
    }
}

/// `shadowsim.x86.walk{...}`: the one-shot permission-matrix walk.
private func oneShotWalk(_ call: inout LuaCall) throws(LuaRaise) -> Int32 {
    let o = try call.options(1, allowed: ["mode", "va", "access", "cpl", "cr0_wp", "cr4_pse", "cr4_pge", "cr4_smep",
                                          "cr4_smap", "efer_nxe", "rflags_ac", "maxphyaddr", "entries"])
    guard let modeName = try o.choice("mode", PagingMode.allCases.map(\.description)) else {
        throw call.argumentError(1, "option 'mode' is required")
    }
    guard let va = try o.bits("va") else { throw call.argumentError(1, "option 'va' is required") }
    guard let accessName = try o.choice("access", ["read", "write", "fetch"]) else {
        throw call.argumentError(1, "option 'access' is required")
    }
    guard let entries = try o.integerList("entries") else { throw call.argumentError(1, "option 'entries' is required") }
    let cpl = Int(try o.integer("cpl") ?? 0)
    guard cpl == 0 || cpl == 3 else { throw call.argumentError(1, "option 'cpl' must be 0 or 3, got \(cpl)") }
    var controls = PagingControls(mode: PagingMode(name: modeName)!)
    controls.cr0WP = try o.boolean("cr0_wp") ?? false
    controls.cr4PSE = try o.boolean("cr4_pse") ?? false
    _ = try o.boolean("cr4_pge")   // accepted: CR4.PGE does not change a walk's outcome
    controls.cr4SMEP = try o.boolean("cr4_smep") ?? false
    controls.cr4SMAP = try o.boolean("cr4_smap") ?? false
    controls.eferNXE = try o.boolean("efer_nxe") ?? false
    controls.maxPhysAddr = Int(try o.integer("maxphyaddr", in: 32...52) ?? 46)
    let ac = try o.boolean("rflags_ac") ?? false
    let result = try core { () throws(MachineError) in
        try PathWalk.walk(va, kind: AccessKind(name: accessName)!, cpl: cpl, rflagsAC: ac,
                          controls: controls, entries: entries)
    }
    call.newTable(fieldCount: 5)
    switch result.outcome {
    case .translated(let t):
        call.push("ok"); call.setField("outcome")
        call.push(bits: t.physicalAddress); call.setField("gpa")
        call.push(t.pageSize.description); call.setField("page_size")
    case .pageFault(let code, let level):
        call.push("pf"); call.setField("outcome")
        call.push(Int64(code)); call.setField("error_code")
        call.push(bits: va); call.setField("cr2")
        call.push(level); call.setField("level")
    case .generalProtection:
        call.push("gp"); call.setField("outcome")
    }
    call.newTable(arrayCount: Int32(result.entries.count))
    for (i, e) in result.entries.enumerated() {
        call.push(bits: e)
        call.setIndex(Int64(i + 1))
    }
    call.setField("entries")
    return 1
}

// MARK: The Lua C module

/// The states that loaded the module, with their sessions: kept for the life of the
/// process (the functions pushed into a state point at objects held here, and the
/// library is never unloaded).
nonisolated(unsafe) private var moduleStates: [(LuaState, Session)] = []

/// `require "shadowsim"` from a stock Lua 5.4: installs the module in `L` (seed from
/// SHADOWSIM_SEED, default 0; policy from SHADOWSIM_POLICY, default kvm-unsync) and
/// returns 1 with the module table on the stack, or raises (through the C trampoline
/// of the caller) with the message on the stack and LUASHIM_RAISE.
public func openShadowSimModule(_ L: OpaquePointer) -> Int32 {
    let env = { (name: String) -> String? in getenv(name).map { String(cString: $0) } }
    let seed = env("SHADOWSIM_SEED").flatMap { UInt64($0) } ?? 0
    let session = Session(seed: seed, arguments: [], defaultPolicy: env("SHADOWSIM_POLICY") ?? "kvm-unsync")
    let lua = LuaState(borrowing: L)
    do {
        try installShadowSimModule(lua, session: session)
    } catch {
        lua_settop(L, 0)
        lua_pushstring(L, "shadowsim: " + error.message)
        return LUASHIM_RAISE
    }
    moduleStates.append((lua, session))
    lua_getglobal(L, "shadowsim")
    return 1
}

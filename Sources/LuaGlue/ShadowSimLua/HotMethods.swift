import CLua
import CLuaShim
import LuaKit
import X86

// `vcpu:read` and `vcpu:write` as plain C functions: the calls a scenario makes most.
// The common shape (a vCPU, integer arguments, in range) is handled here with bare Lua
// API calls; anything else goes to the checked method (`readMethod`, `writeMethod`),
// which gives the same result or the same `file:line: bad argument` message. Swift
// still never raises a Lua error itself: errors return LUASHIM_RAISE to the C
// trampoline. Upvalue 2 is the VCPU metatable.

/// The vCPU at stack index 1 when it is one (checked against the metatable upvalue).
@inline(__always)
private func hotSelf(_ L: OpaquePointer) -> VCPU? {
    guard let p = luashim_toobject_mt(L, 1, luashim_upvalueindex(2)) else { return nil }
    let o = Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue()
    return Swift.type(of: o) == VCPU.self ? unsafeDowncast(o, to: VCPU.self) : nil
}

/// `hotSelf` unretained: the userdata at index 1 keeps the vCPU alive during the call,
/// so the common read need not retain and release it.
@inline(__always)
private func hotSelfUnretained(_ L: OpaquePointer) -> Unmanaged<VCPU>? {
    guard let p = luashim_toobject_mt(L, 1, luashim_upvalueindex(2)),
          Swift.type(of: Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue()) == VCPU.self else { return nil }
    return Unmanaged<VCPU>.fromOpaque(p)
}

/// The integer at `index` when it is an integer-valued number.
@inline(__always)
private func hotInteger(_ L: OpaquePointer, _ index: Int32) -> Int64? {
    guard lua_type(L, index) == LUA_TNUMBER else { return nil }
    var isInteger: Int32 = 0
    let v = lua_tointegerx(L, index, &isInteger)
    return isInteger != 0 ? v : nil
}

/// An optional argument: `.some(nil)` when absent or nil, nil when it is not an integer.
@inline(__always)
private func hotOptional(_ L: OpaquePointer, _ index: Int32, top: Int32) -> Int64?? {
    if index > top || lua_type(L, index) == LUA_TNIL { return .some(nil) }
    return hotInteger(L, index).map { .some($0) } ?? nil
}

/// Runs a checked method as if Lua had called it.
private func checked(_ L: OpaquePointer, _ name: String, _ method: (inout LuaCall) throws(LuaRaise) -> Int32) -> Int32 {
    var call = LuaCall(L, name: name, isMethod: true)
    do throws(LuaRaise) { return try method(&call) } catch {
        lua_settop(L, 0)
        lua_pushstring(L, error.message)
        return LUASHIM_RAISE
    }
}

private func raise(_ L: OpaquePointer, _ error: MachineError) -> Int32 {
    lua_settop(L, 0)
    lua_pushstring(L, error.description)
    return LUASHIM_RAISE
}

let hotRead: luashim_Function = { L in
    let L = L!
    let top = lua_gettop(L)
    if top == 2, let vcpu = hotSelfUnretained(L), let va = hotInteger(L, 2) {
        // The call scenarios make most: default size and CPL.
        let r = vcpu._withUnsafeGuaranteedRef { v -> Result<AccessResult, MachineError> in
            do throws(MachineError) { return .success(try v.read(UInt64(bitPattern: va))) } catch { return .failure(error) }
        }
        switch r {
        case .success(let result) where result.isOK:
            lua_pushinteger(L, Int64(bitPattern: result.value))
            lua_pushinteger(L, Int64(bitPattern: result.physicalAddress))
            return 2
        case .success(let fault):
            var call = LuaCall(L, name: "read", isMethod: true)
            return pushFault(&call, fault)
        case .failure(let error):
            return raise(L, error)
        }
    }
    guard top >= 2, top <= 4, let vcpu = hotSelf(L), let va = hotInteger(L, 2),
          case .some(let size) = hotOptional(L, 3, top: top), case .some(let cpl) = hotOptional(L, 4, top: top),
          size.map({ $0 == 1 || $0 == 2 || $0 == 4 || $0 == 8 }) ?? true, cpl.map({ (0...3).contains($0) }) ?? true
    else { return checked(L, "read", readMethod) }
    let r: AccessResult
    do throws(MachineError) { r = try vcpu.read(UInt64(bitPattern: va), size: size.map { Int($0) } ?? 8, cpl: cpl.map { Int($0) }) } catch {
        return raise(L, error)
    }
    guard r.isOK else {
        var call = LuaCall(L, name: "read", isMethod: true)
        return pushFault(&call, r)
    }
    lua_pushinteger(L, Int64(bitPattern: r.value))
    lua_pushinteger(L, Int64(bitPattern: r.physicalAddress))
    return 2
}

let hotWrite: luashim_Function = { L in
    let L = L!
    let top = lua_gettop(L)
    guard top >= 3, top <= 5, let vcpu = hotSelf(L), let va = hotInteger(L, 2), let value = hotInteger(L, 3),
          case .some(let size) = hotOptional(L, 4, top: top), case .some(let cpl) = hotOptional(L, 5, top: top),
          size.map({ $0 == 1 || $0 == 2 || $0 == 4 || $0 == 8 }) ?? true, cpl.map({ (0...3).contains($0) }) ?? true
    else { return checked(L, "write", writeMethod) }
    let bytes = size.map { Int($0) } ?? 8
    // A value wider than the store is the checked method's error to report.
    if bytes < 8 {
        let bits = Int64(bytes * 8)
        guard value >= -(1 << (bits - 1)) && value < (1 << bits) else { return checked(L, "write", writeMethod) }
    }
    let r: AccessResult
    do throws(MachineError) { r = try vcpu.write(UInt64(bitPattern: va), value: UInt64(bitPattern: value), size: bytes, cpl: cpl.map { Int($0) }) } catch {
        return raise(L, error)
    }
    guard r.isOK else {
        var call = LuaCall(L, name: "write", isMethod: true)
        return pushFault(&call, r)
    }
    lua_pushinteger(L, Int64(bitPattern: r.physicalAddress))
    return 1
}

/// Replaces the VCPU class's `read` and `write` with the C versions.
func installHotVCPUMethods(_ lua: LuaState) {
    let L = lua.L
    lua_pushstring(L, ClassName.vcpu)
    lua_rawget(L, luashim_registryindex())          // the metatable
    lua_getfield(L, -1, "__methods")                // its methods table
    for (name, fn) in [("read", hotRead), ("write", hotWrite)] {
        lua_pushvalue(L, -2)
        luashim_pushfunction(L, fn, 1)
        lua_setfield(L, -2, name)
    }
    luashim_pop(L, 2)
}

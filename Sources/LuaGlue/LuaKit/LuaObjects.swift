import CLua
import CLuaShim

/// Swift objects as Lua userdata: a full userdata holds one retained reference, its
/// metatable is registered under a class name, and `__gc` releases the reference and
/// clears the slot (so a resurrected object fails the type check instead of dangling).
extension LuaState {
    /// Creates the metatable `name` with `methods` as `__index`, unless `index` supplies
    /// a custom `__index` function. Call once per class before pushing objects.
    public func registerClass(_ name: String, methods: [(String, LuaFunction)],
                              index: LuaFunction? = nil, toString: ((AnyObject) -> String)? = nil) {
        lua_createtable(L, 0, 4)
        lua_pushstring(L, name)
        lua_setfield(L, -2, "__name")
        lua_pushcclosure(L, releaseObject, 0)
        lua_setfield(L, -2, "__gc")
        // Methods table.
        lua_createtable(L, 0, Int32(methods.count))
        for (methodName, fn) in methods {
            // Upvalue 3 of a method is the class's metatable: `this` checks self against
            // it without looking the class name up.
            lua_pushvalue(L, -2)
            pushFunction(methodName, isMethod: true, upvalues: 1, fn)
            lua_setfield(L, -2, methodName)
        }
        // The methods table is also kept as __methods (for wrappers such as a scheduler).
        lua_pushvalue(L, -1)
        lua_setfield(L, -3, "__methods")
        if let index {
            // __index(self, key) gets the methods table as upvalue 3.
            pushFunction("__index", isMethod: false, upvalues: 1, index)
        }
        lua_setfield(L, -2, "__index")
        if let toString {
            pushFunction("__tostring", isMethod: false) { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
                guard let p = lua_touserdata(call.L, 1)?.assumingMemoryBound(to: UnsafeMutableRawPointer?.self).pointee else {
                    call.push("\(name) (released)")
                    return 1
                }
                call.push(toString(Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue()))
                return 1
            }
            lua_setfield(L, -2, "__tostring")
        }
        lua_pushstring(L, name)
        luashim_insert(L, -2)
        lua_rawset(L, luashim_registryindex())
    }

    /// Pushes `object` as a userdata of class `className` with `userValues` user values.
    public func pushObject(_ object: AnyObject, className: String, userValues: Int32 = 0) {
        let slot = lua_newuserdatauv(L, MemoryLayout<UnsafeMutableRawPointer?>.size, userValues)!
        slot.assumingMemoryBound(to: UnsafeMutableRawPointer?.self).pointee = Unmanaged.passRetained(object).toOpaque()
        lua_pushstring(L, className)
        lua_rawget(L, luashim_registryindex())
        lua_setmetatable(L, -2)
    }
}

extension LuaCall {
    /// Pushes `object` as a userdata of class `className` (see `LuaState.pushObject`).
    public func pushObject(_ object: AnyObject, className: String, userValues: Int32 = 0) {
        let slot = lua_newuserdatauv(L, MemoryLayout<UnsafeMutableRawPointer?>.size, userValues)!
        slot.assumingMemoryBound(to: UnsafeMutableRawPointer?.self).pointee = Unmanaged.passRetained(object).toOpaque()
        lua_pushstring(L, className)
        lua_rawget(L, luashim_registryindex())
        lua_setmetatable(L, -2)
    }

    /// `self` of a method call: the object in the userdata at 1 if it is of `className`.
    public func this<T: AnyObject>(_ type: T.Type, className: String) throws(LuaRaise) -> T {
        if isMethod, let p = luashim_toobject_mt(L, 1, luashim_upvalueindex(3)) {
            // The metatable identifies the class: no name lookup, and no dynamic cast
            // unless the object is not exactly a T.
            let o = Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue()
            if Swift.type(of: o) == T.self { return unsafeDowncast(o, to: T.self) }
            if let t = o as? T { return t }
        }
        guard let o = object(1, type, metatableName: className) else {
            throw LuaRaise("calling '\(name)' on a bad self (\(className) expected, got \(typeName(1))); use ':' to call methods")
        }
        return o
    }
}

private let releaseObject: LuaCFunction = { L in
    guard let slot = lua_touserdata(L, 1)?.assumingMemoryBound(to: UnsafeMutableRawPointer?.self),
          let p = slot.pointee else { return 0 }
    slot.pointee = nil
    Unmanaged<AnyObject>.fromOpaque(p).release()
    return 0
}

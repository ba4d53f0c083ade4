import CLua
import CLuaShim

/// A C function Lua can call (`lua_CFunction`).
public typealias LuaCFunction = @convention(c) (OpaquePointer?) -> Int32

/// A Swift function exposed to Lua. It reports a bad call by throwing `LuaRaise`;
/// the trampoline raises the Lua error after Swift has returned.
public typealias LuaFunction = (inout LuaCall) throws(LuaRaise) -> Int32

/// An error to raise in Lua, with the caller's `file:line:` prepended.
public struct LuaRaise: Error, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
}

/// A failure of a chunk run from Swift.
public struct LuaScriptError: Error, CustomStringConvertible, Sendable {
    /// The error message, usually `file:line: text`.
    public let message: String
    /// The Lua traceback at the point of failure, when there is one.
    public let traceback: String
    public var description: String { message }

    public init(message: String, traceback: String) {
        self.message = message
        self.traceback = traceback
    }
}

/// A Lua 5.4 state owned by Swift. Not thread-safe: use it from one thread.
public final class LuaState {
    public let L: OpaquePointer
    /// Boxes whose lifetime is tied to the state (closures pushed as functions).
    private var retained: [AnyObject] = []

    /// Whether this object created the state (and closes it when it goes).
    private let owned: Bool

    public init() {
        guard let state = luashim_newstate() else { fatalError("could not create a Lua state") }
        L = state
        owned = true
    }

    /// Wraps a state someone else owns (a Lua interpreter loading the C module); it is
    /// never closed from here.
    public init(borrowing state: OpaquePointer) {
        L = state
        owned = false
    }

    deinit {
        if owned { lua_close(L) }
    }

    /// Opens Lua's standard libraries.
    public func openStandardLibraries() {
        luaL_openlibs(L)
    }

    /// Bytes of memory the state holds.
    public var memoryInUse: Int { Int(luashim_memory_in_use(L)) }

    /// Pushes a Swift closure as a Lua function named `name` (for argument errors).
    /// `isMethod` makes argument numbers skip `self`. The values on top of the stack
    /// (`upvalues` of them) become the function's upvalues 3, 4, ….
    public func pushFunction(_ name: String, isMethod: Bool = false, upvalues: Int32 = 0, _ fn: @escaping LuaFunction) {
        let box = FunctionBox(name: name, isMethod: isMethod, fn: fn)
        retained.append(box)
        lua_pushlightuserdata(L, Unmanaged.passUnretained(box).toOpaque())
        if upvalues > 0 { luashim_insert(L, -(upvalues + 1)) }
        luashim_pushfunction(L, functionBoxDispatch, 1 + upvalues)
    }

    /// Loads and runs `source` as chunk `chunkName` (`@path` names a file).
    public func run(_ source: [UInt8], chunkName: String) throws(LuaScriptError) {
        lua_pushcclosure(L, luashim_traceback, 0)
        let handler = lua_gettop(L)
        defer { lua_settop(L, handler - 1) }
        let status = source.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { chars in
                luaL_loadbufferx(L, chars.baseAddress, chars.count, chunkName, "t")
            }
        }
        guard status == LUA_OK else { throw LuaScriptError(message: topString(), traceback: "") }
        guard luashim_pcall(L, 0, 0, handler) == LUA_OK else { throw splitTraceback(topString()) }
    }

    /// Runs a script file; its chunk name is `@path` so errors read `path:line:`.
    public func runFile(_ path: String, source: [UInt8]) throws(LuaScriptError) {
        try run(source, chunkName: "@" + path)
    }

    /// Calls the function on top of the stack with `nargs` arguments below it… protected.
    public func protectedCall(arguments nargs: Int32, results: Int32) throws(LuaScriptError) {
        lua_pushcclosure(L, luashim_traceback, 0)
        luashim_insert(L, -(nargs + 2))
        let handler = lua_gettop(L) - nargs - 1
        let status = luashim_pcall(L, nargs, results, handler)
        luashim_remove(L, handler)
        guard status == LUA_OK else {
            let message = topString()
            luashim_pop(L, 1)
            throw splitTraceback(message)
        }
    }

    private func topString() -> String {
        if let s = luashim_tostring(L, -1) { return String(cString: s) }
        return "(error object is a \(String(cString: lua_typename(L, lua_type(L, -1)))) value)"
    }

    private func splitTraceback(_ text: String) -> LuaScriptError {
        let marker = Array("\nstack traceback:".utf8)
        let bytes = Array(text.utf8)
        guard bytes.count >= marker.count,
              let start = (0...(bytes.count - marker.count)).first(where: { bytes[$0..<($0 + marker.count)].elementsEqual(marker) })
        else { return LuaScriptError(message: text, traceback: "") }
        return LuaScriptError(message: String(decoding: bytes[..<start], as: UTF8.self),
                              traceback: String(decoding: bytes[(start + 1)...], as: UTF8.self))
    }
}

final class FunctionBox {
    let name: String
    let isMethod: Bool
    let fn: LuaFunction
    init(name: String, isMethod: Bool, fn: @escaping LuaFunction) {
        self.name = name
        self.isMethod = isMethod
        self.fn = fn
    }
}

/// The one C entry point for boxed Swift closures (upvalue 2 is the box).
private let functionBoxDispatch: luashim_Function = { L in
    let L = L!
    // The box lives as long as the Lua state (LuaState.retained): use it without
    // retaining it on every call.
    let unmanaged = Unmanaged<FunctionBox>.fromOpaque(lua_touserdata(L, luashim_upvalueindex(2))!)
    let result: Result<Int32, LuaRaise> = unmanaged._withUnsafeGuaranteedRef { box in
        var call = LuaCall(L, box: unmanaged, isMethod: box.isMethod)
        do throws(LuaRaise) { return .success(try box.fn(&call)) } catch { return .failure(error) }
    }
    switch result {
    case .success(let results):
        return results
    case .failure(let error):
        lua_settop(L, 0)
        lua_pushstring(L, error.message)
        return LUASHIM_RAISE
    }
}

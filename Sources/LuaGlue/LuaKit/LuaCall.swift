import CLua
import CLuaShim

/// The arguments and results of one call from Lua into Swift. Every accessor uses only
/// Lua API functions that cannot raise, and reports a bad argument by throwing
/// `LuaRaise` with a message in Lua's own style:
/// `bad argument #2 to 'write' (integer expected, got string)`.
public struct LuaCall {
    public let L: OpaquePointer
    /// Methods number their arguments after `self`, as Lua's own messages do.
    public let isMethod: Bool
    /// Where the name comes from: a given string, or (on the hot path, with no
    /// reference counting) the box of the function being called.
    private let givenName: String?
    private let box: Unmanaged<FunctionBox>?

    /// Name of the function being called, for messages.
    public var name: String { givenName ?? box!.takeUnretainedValue().name }

    public init(_ L: OpaquePointer, name: String, isMethod: Bool) {
        self.L = L
        self.givenName = name
        self.box = nil
        self.isMethod = isMethod
    }

    init(_ L: OpaquePointer, box: Unmanaged<FunctionBox>, isMethod: Bool) {
        self.L = L
        self.givenName = nil
        self.box = box
        self.isMethod = isMethod
    }

    /// Number of arguments (including `self` for methods).
    public var count: Int32 { lua_gettop(L) }

    /// Lua's type name of the value at `index`.
    public func typeName(_ index: Int32) -> String {
        String(cString: lua_typename(L, lua_type(L, index)))
    }

    public func isNoneOrNil(_ index: Int32) -> Bool { lua_type(L, index) <= LUA_TNIL }

    /// A `bad argument` error for the argument at stack `index`.
    public func argumentError(_ index: Int32, _ message: String) -> LuaRaise {
        let shown = isMethod ? index - 1 : index
        if isMethod && shown == 0 { return LuaRaise("calling '\(name)' on a bad self (\(message)); use ':' to call methods") }
        return LuaRaise("bad argument #\(shown) to '\(name)' (\(message))")
    }

    // MARK: Arguments

    /// An integer argument (a float with an exact integer value is accepted).
    public func integer(_ index: Int32) throws(LuaRaise) -> Int64 {
        var isNumber: Int32 = 0
        let v = lua_tointegerx(L, index, &isNumber)
        if isNumber != 0 && lua_type(L, index) == LUA_TNUMBER { return v }
        if lua_type(L, index) == LUA_TNUMBER { throw argumentError(index, "number has no integer representation") }
        throw argumentError(index, "integer expected, got \(typeName(index))")
    }

    /// An integer argument, or nil when absent.
    public func optionalInteger(_ index: Int32) throws(LuaRaise) -> Int64? {
        isNoneOrNil(index) ? nil : try integer(index)
    }

    /// A 64-bit pattern: Lua integers are signed, so 0xFFFF800000000000 arrives negative.
    public func bits(_ index: Int32) throws(LuaRaise) -> UInt64 {
        UInt64(bitPattern: try integer(index))
    }

    /// An integer in `range`, named `what` in the message.
    public func integer(_ index: Int32, in range: ClosedRange<Int64>, _ what: String) throws(LuaRaise) -> Int64 {
        let v = try integer(index)
        guard range.contains(v) else { throw argumentError(index, "\(what) must be \(range.lowerBound)…\(range.upperBound), got \(v)") }
        return v
    }

    public func boolean(_ index: Int32) throws(LuaRaise) -> Bool {
        guard lua_type(L, index) == LUA_TBOOLEAN else { throw argumentError(index, "boolean expected, got \(typeName(index))") }
        return lua_toboolean(L, index) != 0
    }

    public func string(_ index: Int32) throws(LuaRaise) -> String {
        guard lua_type(L, index) == LUA_TSTRING, let s = luashim_tostring(L, index) else {
            throw argumentError(index, "string expected, got \(typeName(index))")
        }
        return String(cString: s)
    }

    /// Checks that the argument at `index` is a table.
    /// The integers (64-bit patterns) of the list at stack slot `stackIndex` (a table);
    /// one that is not an integer is a bad argument `argument`, described by `invalid`
    /// (given its 1-based position).
    public func integers(inTableAt stackIndex: Int32, argument: Int32,
                         _ invalid: (Int) -> String) throws(LuaRaise) -> [UInt64] {
        let table = lua_absindex(L, stackIndex)
        let n = lua_rawlen(L, table)
        var out: [UInt64] = []
        out.reserveCapacity(Int(n))
        for i in 0..<n {
            lua_rawgeti(L, table, Int64(i) + 1)
            var isNumber: Int32 = 0
            let v = lua_tointegerx(L, -1, &isNumber)
            let ok = isNumber != 0 && lua_type(L, -1) == LUA_TNUMBER
            luashim_pop(L, 1)
            guard ok else { throw argumentError(argument, invalid(Int(i) + 1)) }
            out.append(UInt64(bitPattern: v))
        }
        return out
    }

    public func table(_ index: Int32) throws(LuaRaise) {
        guard lua_type(L, index) == LUA_TTABLE else { throw argumentError(index, "table expected, got \(typeName(index))") }
    }

    /// The Swift object in a userdata of class `metatableName` at `index`, or nil.
    public func object<T: AnyObject>(_ index: Int32, _ type: T.Type, metatableName: String) -> T? {
        guard lua_type(L, index) == LUA_TUSERDATA else { return nil }
        let index = lua_absindex(L, index)
        lua_pushstring(L, metatableName)
        lua_rawget(L, luashim_registryindex())
        defer { luashim_pop(L, 1) }
        guard let p = luashim_toobject_mt(L, index, -1) else { return nil }
        return Unmanaged<AnyObject>.fromOpaque(p).takeUnretainedValue() as? T
    }

    /// Like `object`, but an error when the argument is something else.
    public func object<T: AnyObject>(_ index: Int32, _ type: T.Type, metatableName: String, expected: String) throws(LuaRaise) -> T {
        guard let o = object(index, type, metatableName: metatableName) else {
            throw argumentError(index, "\(expected) expected, got \(typeName(index))")
        }
        return o
    }

    // MARK: Option tables

    /// Reads the options table at `index` (absent means no options), rejecting keys
    /// outside `allowed` so a typo is an error rather than a silent default.
    public func options(_ index: Int32, allowed: [String]) throws(LuaRaise) -> LuaOptions {
        if isNoneOrNil(index) { return LuaOptions(call: self, index: 0) }
        try table(index)
        let absolute = lua_absindex(L, index)
        lua_pushnil(L)
        while lua_next(L, absolute) != 0 {
            let key = lua_type(L, -2) == LUA_TSTRING ? String(cString: luashim_tostring(L, -2)!) : nil
            luashim_pop(L, 1)
            guard let key, allowed.contains(key) else {
                let shown = key.map { "'\($0)'" } ?? "a non-string key"
                luashim_pop(L, 1)
                throw argumentError(index, "unknown option \(shown); expected one of: \(allowed.joined(separator: ", "))")
            }
        }
        return LuaOptions(call: self, index: absolute)
    }

    // MARK: Results

    public func push(_ v: Int64) { lua_pushinteger(L, v) }
    public func push(bits v: UInt64) { lua_pushinteger(L, Int64(bitPattern: v)) }
    public func push(_ v: Int) { lua_pushinteger(L, Int64(v)) }
    public func push(_ v: Bool) { lua_pushboolean(L, v ? 1 : 0) }
    public func push(_ v: Double) { lua_pushnumber(L, v) }
    public func push(_ v: String) { lua_pushstring(L, v) }
    public func pushNil() { lua_pushnil(L) }
    public func newTable(arrayCount: Int32 = 0, fieldCount: Int32 = 0) { lua_createtable(L, arrayCount, fieldCount) }

    /// `t[key] = value` for the table just below the value on top of the stack.
    public func setField(_ key: String) {
        lua_setfield(L, -2, key)
    }

    /// `t[i] = value` for the table just below the value on top of the stack.
    public func setIndex(_ i: Int64) {
        lua_rawseti(L, -2, i)
    }
}

/// An options table being read; every accessor checks the value's type.
public struct LuaOptions {
    let call: LuaCall
    /// Absolute stack index of the table, or 0 when there was none.
    let index: Int32

    private func withField<T>(_ key: String, _ body: () throws(LuaRaise) -> T?) throws(LuaRaise) -> T? {
        guard index != 0 else { return nil }
        lua_pushstring(call.L, key)
        lua_rawget(call.L, index)
        defer { luashim_pop(call.L, 1) }
        if call.isNoneOrNil(-1) { return nil }
        return try body()
    }

    private func fieldError(_ key: String, _ expected: String) -> LuaRaise {
        call.argumentError(index, "option '\(key)': \(expected) expected, got \(call.typeName(-1))")
    }

    public func integer(_ key: String) throws(LuaRaise) -> Int64? {
        try withField(key) { () throws(LuaRaise) -> Int64? in
            var isNumber: Int32 = 0
            let v = lua_tointegerx(call.L, -1, &isNumber)
            guard isNumber != 0, lua_type(call.L, -1) == LUA_TNUMBER else { throw fieldError(key, "integer") }
            return v
        }
    }

    public func integer(_ key: String, in range: ClosedRange<Int64>) throws(LuaRaise) -> Int64? {
        guard let v = try integer(key) else { return nil }
        guard range.contains(v) else {
            throw call.argumentError(index, "option '\(key)' must be \(range.lowerBound)…\(range.upperBound), got \(v)")
        }
        return v
    }

    public func bits(_ key: String) throws(LuaRaise) -> UInt64? {
        try integer(key).map { UInt64(bitPattern: $0) }
    }

    public func boolean(_ key: String) throws(LuaRaise) -> Bool? {
        try withField(key) { () throws(LuaRaise) -> Bool? in
            guard lua_type(call.L, -1) == LUA_TBOOLEAN else { throw fieldError(key, "boolean") }
            return lua_toboolean(call.L, -1) != 0
        }
    }

    public func string(_ key: String) throws(LuaRaise) -> String? {
        try withField(key) { () throws(LuaRaise) -> String? in
            guard lua_type(call.L, -1) == LUA_TSTRING, let s = luashim_tostring(call.L, -1) else {
                throw fieldError(key, "string")
            }
            return String(cString: s)
        }
    }

    /// A size in bytes: an integer, or a string such as "64M", "1G", "512K" (binary units).
    public func byteSize(_ key: String) throws(LuaRaise) -> UInt64? {
        try withField(key) { () throws(LuaRaise) -> UInt64? in
            if lua_type(call.L, -1) == LUA_TNUMBER {
                var isNumber: Int32 = 0
                let v = lua_tointegerx(call.L, -1, &isNumber)
                guard isNumber != 0, v > 0 else {
                    throw call.argumentError(index, "option '\(key)' must be a positive whole number of bytes")
                }
                return UInt64(v)
            }
            guard lua_type(call.L, -1) == LUA_TSTRING, let c = luashim_tostring(call.L, -1) else {
                throw fieldError(key, "size (bytes, or a string like \"64M\")")
            }
            let text = String(cString: c)
            guard let bytes = parseByteSize(text) else {
                throw call.argumentError(index, "option '\(key)': cannot read \"\(text)\" as a size (use bytes, or K, M, G, T suffixes)")
            }
            return bytes
        }
    }

    /// A table of string keys to numbers (e.g. cost overrides).
    public func numberTable(_ key: String) throws(LuaRaise) -> [(String, Double)]? {
        try withField(key) { () throws(LuaRaise) -> [(String, Double)]? in
            guard lua_type(call.L, -1) == LUA_TTABLE else { throw fieldError(key, "table of numbers") }
            var out: [(String, Double)] = []
            let t = lua_absindex(call.L, -1)
            lua_pushnil(call.L)
            while lua_next(call.L, t) != 0 {
                guard lua_type(call.L, -2) == LUA_TSTRING, lua_type(call.L, -1) == LUA_TNUMBER else {
                    luashim_pop(call.L, 2)
                    throw call.argumentError(index, "option '\(key)' must map names to numbers")
                }
                out.append((String(cString: luashim_tostring(call.L, -2)!), lua_tonumberx(call.L, -1, nil)))
                luashim_pop(call.L, 1)
            }
            return out.sorted { $0.0 < $1.0 }
        }
    }

    /// A string that must be one of `choices`.
    public func choice(_ key: String, _ choices: [String]) throws(LuaRaise) -> String? {
        guard let s = try string(key) else { return nil }
        guard choices.contains(s) else {
            throw call.argumentError(index, "option '\(key)' must be one of \(choices.map { "\"\($0)\"" }.joined(separator: ", ")), got \"\(s)\"")
        }
        return s
    }

    /// A list of integers (64-bit patterns).
    public func integerList(_ key: String) throws(LuaRaise) -> [UInt64]? {
        try withField(key) { () throws(LuaRaise) -> [UInt64]? in
            guard lua_type(call.L, -1) == LUA_TTABLE else { throw fieldError(key, "list of integers") }
            return try call.integers(inTableAt: -1, argument: index) { "option '\(key)': element \($0) is not an integer" }
        }
    }

    /// The userdata object stored under `key`, or nil when absent.
    public func object<T: AnyObject>(_ key: String, _ type: T.Type, metatableName: String, expected: String) throws(LuaRaise) -> T? {
        try withField(key) { () throws(LuaRaise) -> T? in
            guard let o = call.object(-1, type, metatableName: metatableName) else { throw fieldError(key, expected) }
            return o
        }
    }
}

/// "4096", "64K", "64M", "1G", "2T" (binary units, optional trailing "B"/"iB").
public func parseByteSize(_ text: String) -> UInt64? {
    var digits = text.uppercased()
    for suffix in ["IB", "B"] where digits.hasSuffix(suffix) && digits.count > suffix.count {
        digits.removeLast(suffix.count)
        break
    }
    var shift: UInt64 = 0
    switch digits.last {
    case "K": shift = 10
    case "M": shift = 20
    case "G": shift = 30
    case "T": shift = 40
    default: break
    }
    if shift > 0 { digits.removeLast() }
    guard let n = UInt64(digits), n > 0, n <= (UInt64.max >> shift) else { return nil }
    return n << shift
}

import CLua
import CLuaShim
import LuaKit
import ShadowMMU
#if canImport(Glibc)
import Glibc
#endif

/// Limits of one run.
public struct RunLimits: Sendable {
    /// Lua VM instructions (checked every 1000).
    public var maxSteps: Int64 = 0
    /// Bytes of Lua heap plus guest memory.
    public var maxMemory: UInt64 = 0
    /// Wall-clock seconds.
    public var timeout: Double = 0
    /// Let the script run commands, write files and load C modules.
    public var allowIO = false

    public init() {}
}

/// Which budget ended a run.
public enum ExhaustedBudget: String, Sendable {
    case steps, memory, time, interrupt
}

/// How a scenario run ended.
public struct ScenarioResult {
    /// Nil when the script ran to completion.
    public var error: LuaScriptError?
    /// Set when a budget (or Ctrl-C) ended the run.
    public var exhausted: ExhaustedBudget?
    /// Counters, records and status, as `--json` writes them.
    public var report: JSONValue
    public var passed: Bool { error == nil }
}

/// Runs one Lua scenario file with the `shadowsim` module installed.
public enum ScenarioRunner {
    /// Runs `path`. Errors of the script (including failed expectations) are in the
    /// result; the report is produced either way, so nothing gathered is lost.
    public static func run(path: String, seed: UInt64 = 0, arguments: [String] = [],
                           parameters: [(name: String, value: String)] = [],
                           policy: String = "kvm-unsync", check: Bool = false, paranoid: Bool = false,
                           plantedBug: PlantedBug? = nil, limits: RunLimits = RunLimits(),
                           trace: Bool = false, mmuTrace: MMUTraceSink? = nil,
                           prepare: (Session) -> Void = { _ in }) -> ScenarioResult {
        let session = Session(seed: seed, arguments: arguments, parameters: parameters, defaultPolicy: policy,
                              check: check, paranoid: paranoid,
                              plantedBug: plantedBug)
        session.mmuTrace = mmuTrace
        prepare(session)
        let lua = LuaState()
        lua.openStandardLibraries()
        let budgets = UnsafeMutablePointer<luashim_Budgets>.allocate(capacity: 1)
        defer { budgets.deallocate() }
        budgets.initialize(to: luashim_Budgets(max_steps: limits.maxSteps, steps: 0, max_memory: limits.maxMemory,
                                               timeout: limits.timeout, started: 0, extra_bytes: guestBytes,
                                               context: Unmanaged.passUnretained(session).toOpaque(), exceeded: 0,
                                               sample: trace ? sampleTimeline : nil))
        if trace { session.timeline = [] }
        var failure: LuaScriptError?
        do {
            let source = try readFile(path)
            try configure(lua, session: session, scriptPath: path, allowIO: limits.allowIO)
            luashim_set_budgets(lua.L, budgets)
            try lua.runFile(path, source: source)
        } catch {
            failure = error
        }
        let exhausted: ExhaustedBudget? = switch budgets.pointee.exceeded {
        case Int32(LUASHIM_BUDGET_STEPS): .steps
        case Int32(LUASHIM_BUDGET_MEMORY): .memory
        case Int32(LUASHIM_BUDGET_TIME): .time
        case Int32(LUASHIM_BUDGET_INTERRUPT): .interrupt
        default: nil
        }
        let status = exhausted.map { $0 == .interrupt ? "interrupted" : "budget exhausted (\($0.rawValue))" }
            ?? (failure == nil ? "passed" : "failed")
        let report = session.report(script: path, status: status, error: failure?.message)
        return ScenarioResult(error: failure, exhausted: exhausted, report: report)
    }

    static func configure(_ lua: LuaState, session: Session, scriptPath: String, allowIO: Bool = true) throws(LuaScriptError) {
        try installShadowSimModule(lua, session: session)
        // Same seed, same math.random stream; scripts and their lib/ folder are on the path.
        let directory = scriptPath.contains("/") ? String(scriptPath[..<scriptPath.lastIndex(of: "/")!]) : "."
        let setup = """
        math.randomseed(\(Int64(bitPattern: session.seed)))
        package.path = \(luaQuoted(directory + "/?.lua;" + directory + "/lib/?.lua;")) .. package.path
        """
        try lua.run(Array(setup.utf8), chunkName: "=shadowsim.setup")
        if !allowIO {
            try lua.run(Array(("local dir = " + luaQuoted(directory) + "\n" + sandboxSource).utf8), chunkName: "=shadowsim.sandbox")
        }
    }

    /// What a scenario may not do without --allow-io: run commands, write files, load C
    /// code, or read Lua files from outside its own directory.
    static let sandboxSource = """
    local function refuse(what)
      return function() error(what .. " is not allowed in a scenario (run with --allow-io)", 2) end
    end
    os.execute, os.exit, os.remove, os.rename, os.tmpname = refuse("os.execute"), refuse("os.exit"),
      refuse("os.remove"), refuse("os.rename"), refuse("os.tmpname")
    io.popen = refuse("io.popen")
    local open, output = io.open, io.output
    io.open = function(path, mode)
      if mode ~= nil and not tostring(mode):match("^r") then
        error("io.open: writing files is not allowed in a scenario (run with --allow-io)", 2)
      end
      return open(path, mode)
    end
    io.output = function(f)
      if f ~= nil then error("io.output: writing files is not allowed in a scenario (run with --allow-io)", 2) end
      return output()
    end
    package.loadlib = refuse("package.loadlib")
    package.cpath = ""
    table.remove(package.searchers, 4)
    table.remove(package.searchers, 3)
    package.path = dir .. "/?.lua;" .. dir .. "/lib/?.lua"
    debug.sethook = refuse("debug.sethook")
    -- dofile/loadfile: relative to the script's directory, never outside it.
    local function inside(path, who)
      if type(path) ~= "string" then error(who .. ": a file name is required in a scenario", 3) end
      if path:sub(1, 1) == "/" or path:find("%.%.") then
        error(who .. ": " .. path .. " is outside the script's directory (run with --allow-io)", 3)
      end
      return dir .. "/" .. path
    end
    local load_file = loadfile
    loadfile = function(path, ...) return load_file(inside(path, "loadfile"), ...) end
    dofile = function(path)
      local f, err = load_file(inside(path, "dofile"))
      if not f then error(err, 2) end
      return f()
    end
    """

    static func readFile(_ path: String) throws(LuaScriptError) -> [UInt8] {
        guard let f = fopen(path, "rb") else {
            throw LuaScriptError(message: "\(path): cannot open script: \(String(cString: strerror(errno)))", traceback: "")
        }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n > 0 { bytes.append(contentsOf: buffer[0..<n]) }
            if n < buffer.count {
                if ferror(f) != 0 { throw LuaScriptError(message: "\(path): cannot read script", traceback: "") }
                break
            }
        }
        return bytes
    }
}

/// Guest memory of every VM of the session, for the memory budget.
private let guestBytes: @convention(c) (UnsafeMutableRawPointer?) -> UInt64 = { context in
    guard let context else { return 0 }
    let session = Unmanaged<Session>.fromOpaque(context).takeUnretainedValue()
    return session.vms.reduce(0) { $0 + $1.machine.memory.residentBytes + UInt64($1.mmu?.usedShadowPages ?? 0) * 8192 }
}

/// A Lua string literal for `s`.
func luaQuoted(_ s: String) -> String {
    var out = "\""
    for c in s.unicodeScalars {
        switch c {
        case "\\": out += "\\\\"
        case "\"": out += "\\\""
        case "\n": out += "\\n"
        default: out.unicodeScalars.append(c)
        }
    }
    return out + "\""
}

/// The budget hook's sampler (every 1000 Lua instructions under `--trace`).
private let sampleTimeline: @convention(c) (UnsafeMutableRawPointer?) -> Void = { context in
    Unmanaged<Session>.fromOpaque(context!).takeUnretainedValue().sampleTimeline()
}

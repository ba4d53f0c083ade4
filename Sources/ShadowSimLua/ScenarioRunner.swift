import CLua
import CLuaShim
import LuaKit
import ShadowMMU
#if canImport(Glibc)
import Glibc
#endif

/// How a scenario run ended.
public struct ScenarioResult {
    /// Nil when the script ran to completion.
    public var error: LuaScriptError?
    /// Counters, records and status, as `--json` writes them.
    public var report: JSONValue
    public var passed: Bool { error == nil }
}

/// Runs one Lua scenario file with the `shadowsim` module installed.
public enum ScenarioRunner {
    /// Runs `path`. Errors of the script (including failed expectations) are in the
    /// result; the report is produced either way, so nothing gathered is lost.
    public static func run(path: String, seed: UInt64 = 0, arguments: [String] = [],
                           policy: String = "kvm-unsync", check: Bool = false, paranoid: Bool = false,
                           plantedBug: PlantedBug? = nil) -> ScenarioResult {
        let session = Session(seed: seed, arguments: arguments, defaultPolicy: policy, check: check, paranoid: paranoid,
                              plantedBug: plantedBug)
        let lua = LuaState()
        lua.openStandardLibraries()
        var failure: LuaScriptError?
        do {
            let source = try readFile(path)
            try configure(lua, session: session, scriptPath: path)
            try lua.runFile(path, source: source)
        } catch {
            failure = error
        }
        let report = session.report(script: path, status: failure == nil ? "passed" : "failed",
                                    error: failure?.message)
        return ScenarioResult(error: failure, report: report)
    }

    static func configure(_ lua: LuaState, session: Session, scriptPath: String) throws(LuaScriptError) {
        try installShadowSimModule(lua, session: session)
        // Same seed, same math.random stream; scripts and their lib/ folder are on the path.
        let directory = scriptPath.contains("/") ? String(scriptPath[..<scriptPath.lastIndex(of: "/")!]) : "."
        let setup = """
        math.randomseed(\(Int64(bitPattern: session.seed)))
        package.path = \(luaQuoted(directory + "/?.lua;" + directory + "/lib/?.lua;")) .. package.path
        """
        try lua.run(Array(setup.utf8), chunkName: "=shadowsim.setup")
    }

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

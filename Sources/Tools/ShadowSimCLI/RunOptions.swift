import ArgumentParser
import LuaKit
import ShadowSimLua
import ShadowSimPolicies
import ShadowMMU
import ShadowSimFiles
#if canImport(Glibc)
import Glibc
#endif

/// The budgets of every command that runs scenarios (`run`, `compare`, `sweep`, `test`):
/// a hung or runaway scenario ends with exit status 3 instead of hanging a CI job.
struct BudgetOptions: ParsableArguments {
    @Option(help: "Stop a scenario after this many Lua instructions (exit status 3).")
    var maxSteps: Int64?

    @Option(help: "Stop a scenario when Lua and guest memory exceed this many bytes, e.g. 512M (exit status 3).")
    var maxMemory: String?

    @Option(help: "Stop a scenario after this many seconds (exit status 3).")
    var timeout: Double?

    /// The limits, or a usage error (status 2) naming the bad value.
    func limits(allowIO: Bool = false) throws -> RunLimits {
        var limits = RunLimits()
        limits.allowIO = allowIO
        if let maxSteps {
            guard maxSteps > 0 else { throw usageError("--max-steps must be positive") }
            limits.maxSteps = maxSteps
        }
        if let maxMemory {
            guard let bytes = parseByteSize(maxMemory) else {
                throw usageError("--max-memory: cannot read \"\(maxMemory)\" as a size (bytes, or K, M, G, T suffixes)")
            }
            limits.maxMemory = bytes
        }
        if let timeout {
            guard timeout > 0, timeout.isFinite else { throw usageError("--timeout must be a positive number of seconds") }
            limits.timeout = timeout
        }
        return limits
    }

    /// The same budgets as arguments of `shadowsim run` (what a sweep passes its runs).
    var forwarded: [String] {
        (maxSteps.map { ["--max-steps", String($0)] } ?? []) + (maxMemory.map { ["--max-memory", $0] } ?? [])
            + (timeout.map { ["--timeout", String($0)] } ?? [])
    }
}

/// `--param NAME=VALUE` (repeatable): one value per script parameter.
struct ParameterOptions: ParsableArguments {
    @Option(name: .customLong("param"), help: "A script parameter NAME=VALUE (shadowsim.params.NAME); repeatable.")
    var parameters: [String] = []

    func parsed() throws -> [(name: String, value: String)] {
        try parameters.map { p in
            guard let (name, value) = parseParameter(p) else {
                throw usageError("--param takes NAME=VALUE with a Lua identifier as NAME, got \"\(p)\"")
            }
            return (name, value)
        }
    }
}

/// Prints `shadowsim: message` and gives the error that exits with status 2.
func usageError(_ message: String) -> ExitCode {
    printError("shadowsim: " + message)
    return ExitCode(2)
}

/// A scenario file that cannot be read is a bad command line (status 2), found out
/// before anything runs.
func requireReadableScript(_ path: String) throws {
    guard let f = fopen(path, "rb") else {
        throw usageError("\(path): cannot open script: \(String(cString: strerror(errno)))")
    }
    fclose(f)
}

/// The policies named on a command line (comma-separated), each checked now: an unknown
/// name or an unloadable plugin is a usage error. Bare metal needs no factory.
func resolvePolicies(_ list: String) throws -> [ResolvedPolicy] {
    let names = list.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
    guard !names.isEmpty else { throw usageError("--policies names no policy") }
    var resolved: [ResolvedPolicy] = []
    for name in names {
        if name == PolicyCatalog.bareMetalName {
            resolved.append(ResolvedPolicy(argument: name, name: name, shadowsGuestTables: false))
            continue
        }
        do {
            let factory = try PolicyCatalog.factory(name)
            resolved.append(ResolvedPolicy(argument: name, name: factory.name, shadowsGuestTables: factory.shadowsGuestTables))
        } catch {
            throw usageError(error.description)
        }
    }
    // Columns and labels use the policy's own name; a plugin whose name another of the
    // list also has (a built-in and its .so) is told apart by its path.
    for i in resolved.indices where resolved[i].argument != resolved[i].name
        && resolved.filter({ $0.name == resolved[i].name }).count > 1 {
        resolved[i].label = "\(resolved[i].name) (\(resolved[i].argument))"
    }
    return resolved
}

/// The one policy a command takes (`--policy`).
func resolvePolicy(_ name: String) throws -> ResolvedPolicy {
    let resolved = try resolvePolicies(name)
    guard resolved.count == 1 else { throw usageError("--policy takes one policy, got \"\(name)\"") }
    return resolved[0]
}

/// A policy as given (`argument`: a name or a .so path) and as it calls itself.
struct ResolvedPolicy {
    let argument: String
    let name: String
    let shadowsGuestTables: Bool
    /// What a table column or a test line calls it.
    var label: String

    init(argument: String, name: String, shadowsGuestTables: Bool) {
        self.argument = argument
        self.name = name
        self.shadowsGuestTables = shadowsGuestTables
        label = name
    }
}

/// A planted bug by name, refused (status 2) when unknown or when `policy` can never
/// reach the code it is planted in.
func plantedBug(_ name: String?, under policy: String) throws -> PlantedBug? {
    guard let name else { return nil }
    guard let bug = PlantedBug(rawValue: name) else {
        throw usageError("unknown bug '\(name)' (see `shadowsim bugs`)")
    }
    do { try PolicyCatalog.check(bug, under: policy) } catch { throw usageError(error.description) }
    return bug
}

/// `--mmu-trace FILE`: the shadow MMU's events as KVM's kvmmmu tracepoints print them.
struct MMUTraceOptions: ParsableArguments {
    @Option(name: .customLong("mmu-trace"),
            help: "Write the shadow MMU's events to this file as `trace-cmd report` prints KVM's kvmmmu tracepoints (several runs: one file each, named after the policy, e.g. mmu.kvm-unsync.txt).")
    var path: String?

    /// The file of one run of several: `mmu.txt` with `kvm-unsync` → `mmu.kvm-unsync.txt`.
    func path(for parts: [String]) -> String? {
        guard let path else { return nil }
        let tag = parts.map { $0.split(separator: "/").last.map(String.init) ?? $0 }.joined(separator: ".")
        guard !tag.isEmpty else { return path }
        let slash = path.lastIndex(of: "/").map { path.index(after: $0) } ?? path.startIndex
        if let dot = path[slash...].lastIndex(of: "."), dot > slash {
            return "\(path[..<dot]).\(tag)\(path[dot...])"
        }
        return "\(path).\(tag)"
    }

    /// A sink writing to `path` (nil for nil); a file that cannot be made is a usage error.
    func open(_ path: String?) throws -> MMUTraceSink? {
        guard let path else { return nil }
        guard let writer = LineWriter(path: path) else {
            throw usageError("--mmu-trace \(path): cannot write: \(String(cString: strerror(errno)))")
        }
        return MMUTraceSink({ writer.write($0) }, flush: { writer.flush() })
    }
}

/// `--format` of the commands that print a comparison (compare, replay).
func requireComparisonFormat(_ format: String) throws {
    guard ["table", "json", "csv", "markdown"].contains(format) else {
        throw usageError("--format must be table, json, csv or markdown, got \"\(format)\"")
    }
}

import ArgumentParser
import Logging
import CLuaShim
import LuaKit
import ShadowSimLua
import ShadowSimKVM
import ShadowSimPolicies
import ShadowMMU
#if canImport(Glibc)
import Glibc
#endif

/// `shadowsim`: a thin command line over the library.
public struct ShadowSimCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "shadowsim",
        abstract: "Simulate x86 guests under shadow paging, driven by Lua scenarios.",
        version: shadowSimVersion,
        subcommands: [Run.self, Compare.self, Replay.self, MMUDiff.self, Sweep.self, Merge.self, Report.self, Test.self, Policies.self, Bugs.self, Bench.self])

    public init() {}

    /// Like ArgumentParser's `main()`, but a command line it cannot parse exits with 2,
    /// the status of every other usage error here (ArgumentParser's own is 64).
    public static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                printError(fullMessage(for: error))
                Glibc.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// `shadowsim run SCRIPT.lua [--seed N] [--json FILE] [-- ARGS…]`
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a Lua scenario.",
        discussion: "Exit status: 0 when the scenario completes, 1 when it raises an error or an expectation fails, 2 for a bad command line, 3 when a budget is exhausted, 130 on Ctrl-C.")

    @Argument(help: "The scenario script.")
    var script: String

    @Option(help: "Seed for shadowsim.random and math.random.")
    var seed: UInt64 = 0

    @Option(help: "Write counters and records as JSON to this file (also when the scenario fails).")
    var json: String?

    @Flag(help: "Print the Lua traceback of a failure.")
    var traceback = false

    @Flag(inversion: .prefixedNo, help: "Check every access against what x86 allows, and the shadow MMU's invariants at every sync point.")
    var check = false

    @Flag(help: "With --check: verify the shadow MMU's invariants after every event.")
    var paranoid = false

    @Option(help: "Plant a known bug in every shadow MMU, to see the checker catch it (see `shadowsim bugs`).")
    var injectBug: String?

    @OptionGroup var budgets: BudgetOptions

    @Flag(help: "Let the script run commands, write files and load C modules.")
    var allowIO = false

    @Flag(help: "Record a timeline of faults, syncs and flushes in the --json report (for `shadowsim report`).")
    var trace = false

    @Option(help: "Sync policy of VMs that do not name one: a built-in name (see `shadowsim policies`), bare-metal, or the path of a policy .so.")
    var policy = "kvm-unsync"

    @OptionGroup var parameters: ParameterOptions

    @OptionGroup var mmuTrace: MMUTraceOptions

    @Option(help: "simulator, or kvm: also run the scenario's guest operations on the host's /dev/kvm and print both sides' counters per shadowsim.mark phase (see README, \"Side by side with the host's KVM\").")
    var backend = "simulator"

    @Flag(help: "With --backend kvm: exit 1 unless every compared counter and every operation's result agree.")
    var expectAgreement = false

    @Argument(parsing: .postTerminator, help: "Arguments for the script (shadowsim.args), after --.")
    var scriptArguments: [String] = []

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        guard backend == "simulator" || backend == "kvm" else {
            throw usageError("--backend must be simulator or kvm, got \(backend)")
        }
        if expectAgreement && backend != "kvm" { throw usageError("--expect-agreement needs --backend kvm") }
        try logging.bootstrap()
        let params = try parameters.parsed()
        _ = try resolvePolicy(policy)
        let bug = try plantedBug(injectBug, under: policy)
        let limits = try budgets.limits(allowIO: allowIO)
        try requireReadableScript(script)
        if let json {
            // Found out now, not after a long run whose results would then be lost.
            guard let f = fopen(json, "wb") else {
                throw usageError("--json \(json): cannot write: \(String(cString: strerror(errno)))")
            }
            fclose(f)
        }
        luashim_catch_interrupt()
        cliLog.debug("running scenario", metadata: ["script": "\(script)", "policy": "\(policy)", "seed": "\(seed)"])
        let started = monotonicSeconds()
        var sideBySide: KVMSideBySide?
        if backend == "kvm" {
            do { sideBySide = KVMSideBySide(host: try KVMHost.probe()) } catch {
                printError("\(script): kvm backend: \(error.description)")
                throw ExitCode(1)
            }
        }
        let traceSink = try mmuTrace.open(mmuTrace.path)
        // The kvm backend keeps the VM (and so the sink) alive to the end: write it out then.
        defer { traceSink?.flush() }
        let result = ScenarioRunner.run(path: script, seed: seed, arguments: scriptArguments, parameters: params, policy: policy,
                                        check: check || paranoid, paranoid: paranoid, plantedBug: bug, limits: limits,
                                        trace: trace, mmuTrace: traceSink, prepare: { sideBySide?.prepare($0) })
        var report = result.report
        var kvmFailed = false
        if let sideBySide, result.error == nil {
            do {
                let comparison = try sideBySide.runOnKVM()
                print("host: \(sideBySide.host.mmu)")
                print(comparison.table(), terminator: "")
                report = report.adding("kvm", comparison.json)
                kvmFailed = expectAgreement && !comparison.agrees
            } catch {
                report = report.adding("kvm", .object([("error", .string(error.description))]))
                if let json { try writeText(report.serialized() + "\n", to: json) }
                printError("\(script): kvm backend: \(error.description)")
                throw ExitCode(1)
            }
        }
        if let json {
            try writeText(report.serialized() + "\n", to: json)
        }
        cliLog.info("scenario finished", metadata: ["script": "\(script)", "passed": "\(result.passed)",
                                                   "seconds": "\(monotonicSeconds() - started)"])
        if let error = result.error {
            printError(error.message)
            if traceback && !error.traceback.isEmpty { printError(error.traceback) }
            if let exhausted = result.exhausted {
                // The counters gathered so far, when they were not asked for as JSON.
                if json == nil { printError(result.report.serialized(indent: nil)) }
                throw ExitCode(exhausted == .interrupt ? 130 : 3)
            }
            throw ExitCode(1)
        }
        if kvmFailed { throw ExitCode(1) }
    }
}

/// `shadowsim policies`: the built-in policies, one line each.
struct Policies: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the sync policies.")

    @Option(help: "Also load and describe this policy .so.")
    var plugin: String?

    func run() throws {
        var rows = [(PolicyCatalog.bareMetalName, "no hypervisor: vCPUs walk the guest's own tables (the x86 reference)")]
        rows += PolicyCatalog.builtins.map { ($0.name, $0.summary) }
        if let plugin {
            do {
                let f = try PolicyCatalog.factory(plugin)
                rows.append((f.name, f.summary + " (from \(f.origin))"))
            } catch {
                printError("shadowsim: \(error.description)")
                throw ExitCode(2)
            }
        }
        let width = rows.map(\.0.count).max() ?? 0
        for (name, summary) in rows {
            print(name + String(repeating: " ", count: width - name.count + 2) + summary)
        }
    }
}

/// `shadowsim bugs`: the bugs --inject-bug can plant.
struct Bugs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the bugs --inject-bug can plant in the shadow MMU.",
        discussion: "Each line ends with the policies whose code reaches the bug; --inject-bug refuses any other.")

    func run() throws {
        let width = PlantedBug.allCases.map(\.rawValue.count).max() ?? 0
        for bug in PlantedBug.allCases {
            print(bug.rawValue + String(repeating: " ", count: width - bug.rawValue.count + 2) + bug.summary
                  + " [" + bug.policies.joined(separator: ", ") + (bug.isInEngine ? "; plugins that shadow" : "") + "]")
        }
    }
}

func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
}

func writeText(_ text: String, to path: String) throws {
    guard let f = fopen(path, "wb") else {
        throw CLIError(description: "\(path): cannot write: \(String(cString: strerror(errno)))")
    }
    defer { fclose(f) }
    let bytes = Array(text.utf8)
    guard fwrite(bytes, 1, bytes.count, f) == bytes.count else {
        throw CLIError(description: "\(path): write failed")
    }
}

/// `NAME=VALUE` with NAME a Lua identifier.
func parseParameter(_ text: String) -> (String, String)? {
    guard let eq = text.firstIndex(of: "=") else { return nil }
    let name = String(text[..<eq]), value = String(text[text.index(after: eq)...])
    guard let first = name.unicodeScalars.first, first == "_" || (first.properties.isAlphabetic && first.isASCII),
          name.unicodeScalars.allSatisfy({ $0.isASCII && ($0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) })
    else { return nil }
    return (name, value)
}

/// Diagnostics (`--log-level`), on stderr through swift-log. Nothing on a hot path logs:
/// only policy loading, run boundaries and process management do.
struct LoggingOptions: ParsableArguments {
    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "warning"

    /// Sets up swift-log once; a bad level is a usage error.
    func bootstrap() throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            printError("shadowsim: --log-level must be one of trace, debug, info, notice, warning, error, critical, got \"\(logLevel)\"")
            throw ExitCode(2)
        }
        LoggingOptions.configure(level)
    }

    nonisolated(unsafe) static var configured = false
    static func configure(_ level: Logger.Level) {
        guard !configured else { return }
        configured = true
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

let cliLog = Logger(label: "shadowsim")

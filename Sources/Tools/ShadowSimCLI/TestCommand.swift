import ArgumentParser
import ShadowSimFiles
import Logging
import CLuaShim
import ShadowSimLua
import ShadowSimPolicies
#if canImport(Glibc)
import Glibc
#endif

/// `shadowsim test [PATH…] [--policy P,…] [--format text|tap|junit]`: scenario files as a test suite.
struct Test: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run scenario files as a test suite: a line per scenario run, a summary, TAP or JUnit XML.",
        discussion: """
            A directory stands for its .lua files (not those of its subdirectories, such as lib/). \
            A scenario whose first line is `-- runs under: every policy` runs once per policy: with --policy, under \
            each policy given (a plugin .so included); without, under bare metal and every built-in policy. Other \
            scenarios run under the first --policy (default kvm-unsync). Every line names the policy it ran under. \
            Scenarios run with the checker on unless --no-check. What they print goes to stderr. \
            Exit status: 0 when every scenario passes, 1 when one fails, 2 for a bad command line.
            """)

    @Argument(help: "Scenario files or directories (default: scripts).")
    var paths: [String] = []

    @Option(help: "text, tap or junit.")
    var format = "text"

    @Option(help: "Comma-separated policies (built-in names, bare-metal or .so paths) to validate: every-policy scenarios run under each, the others under the first.")
    var policy: String?

    @Option(help: "Seed for every run.")
    var seed: UInt64 = 0

    @Flag(inversion: .prefixedNo, help: "Check every access against what x86 allows.")
    var check = true

    @OptionGroup var parameters: ParameterOptions

    @OptionGroup var budgets: BudgetOptions

    struct Case {
        let name: String
        let path: String
        let policy: ResolvedPolicy
        var failure: String?
        var seconds = 0.0
    }

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try logging.bootstrap()
        guard ["text", "tap", "junit"].contains(format) else {
            throw usageError("--format must be text, tap or junit, got \"\(format)\"")
        }
        let chosen = try policy.map(resolvePolicies)
        let everyPolicy = try chosen ?? resolvePolicies(([PolicyCatalog.bareMetalName] + PolicyCatalog.builtins.map(\.name)).joined(separator: ","))
        let single = try chosen?[0] ?? resolvePolicy("kvm-unsync")
        let params = try parameters.parsed()
        let limits = try budgets.limits()
        var files: [String] = []
        for path in paths.isEmpty ? ["scripts"] : paths {
            guard let found = scenarioFiles(path) else { throw usageError("\(path): no such file or directory") }
            files += found
        }
        guard !files.isEmpty else { throw usageError("no scenario files in \(paths.joined(separator: " "))") }
        var cases: [Case] = []
        for file in files {
            let policies = firstLine(file).hasPrefix("-- runs under: every policy") ? everyPolicy : [single]
            for p in policies { cases.append(Case(name: "\(file) [\(p.label)]", path: file, policy: p)) }
        }
        luashim_catch_interrupt()
        if format == "tap" { print("TAP version 13\n1..\(cases.count)") }
        fflush(nil)
        for i in cases.indices {
            let saved = dup(1)
            dup2(2, 1)
            let t0 = monotonicSeconds()
            let result = ScenarioRunner.run(path: cases[i].path, seed: seed, parameters: params, policy: cases[i].policy.argument,
                                            check: check, limits: limits)
            cases[i].seconds = monotonicSeconds() - t0
            fflush(nil)
            dup2(saved, 1)
            close(saved)
            if let error = result.error { cases[i].failure = error.message }
            report(cases[i], number: i + 1)
            if result.exhausted == .interrupt { break }
        }
        let failed = cases.filter { $0.failure != nil }.count
        let policies = Set(cases.map(\.policy.label)).sorted()
        switch format {
        case "junit": print(junit(cases))
        case "tap": print("# \(cases.count - failed) passed, \(failed) failed")
        default: print("\(cases.count - failed) passed, \(failed) failed (\(cases.count) scenario runs under \(policies.joined(separator: ", ")))")
        }
        if failed > 0 { throw ExitCode(1) }
    }

    func report(_ c: Case, number: Int) {
        let time = "\(Int(c.seconds * 1000)) ms"
        switch format {
        case "tap":
            if let failure = c.failure {
                print("not ok \(number) - \(c.name)")
                print("  ---\n  message: \(yamlQuoted(failure))\n  ...")
            } else {
                print("ok \(number) - \(c.name) # \(time)")
            }
        case "junit":
            break
        default:
            print(c.failure.map { "FAIL  \(c.name): \($0.split(separator: "\n").first ?? "")" } ?? "ok    \(c.name) (\(time))")
        }
        fflush(nil)
    }

    func junit(_ cases: [Case]) -> String {
        let failed = cases.filter { $0.failure != nil }.count
        let total = cases.reduce(0) { $0 + $1.seconds }
        var lines = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
                     "<testsuites tests=\"\(cases.count)\" failures=\"\(failed)\" time=\"\(total)\">",
                     "  <testsuite name=\"shadowsim\" tests=\"\(cases.count)\" failures=\"\(failed)\" time=\"\(total)\">"]
        for c in cases {
            let open = "    <testcase classname=\"\(xmlEscaped(c.path))\" name=\"\(xmlEscaped(c.name))\" time=\"\(c.seconds)\""
            if let failure = c.failure {
                lines.append(open + ">")
                lines.append("      <failure message=\"\(xmlEscaped(String(failure.split(separator: "\n").first ?? "")))\">\(xmlEscaped(failure))</failure>")
                lines.append("    </testcase>")
            } else {
                lines.append(open + "/>")
            }
        }
        lines += ["  </testsuite>", "</testsuites>"]
        return lines.joined(separator: "\n")
    }
}

/// The file itself, or the .lua files directly in a directory, in name order.
func scenarioFiles(_ path: String) -> [String]? {
    Files.list(path) { $0.hasSuffix(".lua") }
}

func firstLine(_ path: String) -> String {
    guard let f = fopen(path, "r") else { return "" }
    defer { fclose(f) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let n = fread(&buffer, 1, 255, f)
    return String(decoding: buffer[..<n].prefix { $0 != 10 }, as: UTF8.self)
}

func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

func xmlEscaped(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.append(c)
        }
    }
    return out
}

func yamlQuoted(_ s: String) -> String {
    "\"" + s.replacingOccurrencesOfBackslashAndQuote.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\\n") + "\""
}

extension String {
    var replacingOccurrencesOfBackslashAndQuote: String {
        var out = ""
        for c in self {
            if c == "\\" || c == "\"" { out.append("\\") }
            out.append(c)
        }
        return out
    }
}

import ArgumentParser
import Logging
import CLuaShim
import ShadowSimLua
import ShadowSimPolicies
#if canImport(Glibc)
import Glibc
#endif

/// `shadowsim compare SCRIPT.lua --policies a,b,c [--format table|json|csv|markdown]`
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one scenario under several policies (same seed) and compare their counters.",
        discussion: """
            Every run has the architectural checker attached unless --no-check. Rows are each run's status, \
            the estimated cycles and their components (cycles:…), then every counter (summed over the scenario's VMs); \
            the best value of a row is marked (the lowest; the highest for hit counts), among the runs that passed only: \
            a run that failed (a checker violation, an error, an exhausted budget) is shown with the counters it had \
            gathered and never marked best. \
            Exit status: 0, 1 when a run fails (after the whole table), 2 for a bad command line.
            """)

    @Argument(help: "The scenario script.")
    var script: String

    @Option(help: "Comma-separated policies: built-in names, bare-metal, or .so paths.")
    var policies = PolicyCatalog.builtins.map(\.name).joined(separator: ",")

    @Option(help: "Seed for every run.")
    var seed: UInt64 = 0

    @Option(help: "table, json, csv or markdown.")
    var format = "table"

    @Flag(inversion: .prefixedNo, help: "Attach the architectural checker to every run (--no-check for speed).")
    var check = true

    @OptionGroup var parameters: ParameterOptions

    @OptionGroup var budgets: BudgetOptions

    @Argument(parsing: .postTerminator, help: "Arguments for the script (shadowsim.args), after --.")
    var scriptArguments: [String] = []

    @OptionGroup var mmuTrace: MMUTraceOptions

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try logging.bootstrap()
        try requireComparisonFormat(format)
        let resolved = try resolvePolicies(policies)
        let params = try parameters.parsed()
        let limits = try budgets.limits()
        try requireReadableScript(script)
        luashim_catch_interrupt()
        var columns: [Comparison.Column] = []
        // What the scenario prints goes to stderr, so that stdout is the comparison alone
        // (a CSV or JSON a tool can read).
        fflush(nil)
        let savedStdout = dup(1)
        dup2(2, 1)
        defer {
            fflush(nil)
            dup2(savedStdout, 1)
            close(savedStdout)
        }
        for policy in resolved {
            let result = ScenarioRunner.run(path: script, seed: seed, arguments: scriptArguments, parameters: params,
                                            policy: policy.argument, check: check, limits: limits,
                                            mmuTrace: try mmuTrace.open(mmuTrace.path(for: [policy.label])))
            columns.append(Comparison.Column(policy: policy.label, result: result))
            if result.exhausted == .interrupt { break }
        }
        fflush(nil)
        dup2(savedStdout, 1)
        let comparison = Comparison(script: script, seed: seed, checked: check, columns: columns)
        print(comparison.rendered(format))
        let failed = columns.filter { $0.failure != nil }
        for c in failed { printError("\(c.failure!) (under \(c.policy))") }
        if columns.contains(where: { $0.status == "interrupted" }) { throw ExitCode(130) }
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

/// Counters of one scenario under several policies, and their renderings.
struct Comparison {
    struct Column {
        let policy: String
        /// "passed", "failed", "budget exhausted (…)" or "interrupted".
        let status: String
        /// The first line of the failure, when the run did not pass.
        let failure: String?
        /// Row name → value, summed over the run's VMs (the root-load distribution is
        /// pooled over them instead).
        var values: [String: Double] = [:]
        var order: [String] = []

        init(policy: String, result: ScenarioResult) {
            self.policy = policy
            status = result.report.field("status")?.string ?? (result.passed ? "passed" : "failed")
            failure = result.error.map { String($0.message.split(separator: "\n").first ?? "") }
            let vms = result.report.field("vms")?.elements ?? []
            for vm in vms {
                for replay in vm.field("replays")?.elements ?? [] {
                    for (name, value) in replay.field("summary")?.fields ?? [] { add("replay:" + name, value.double ?? 0) }
                }
            }
            for vm in vms {
                add("estimated_cycles", vm.field("estimated_cycles")?.double ?? 0)
                for (name, value) in vm.field("estimated_cycles_breakdown")?.fields ?? [] { add("cycles:" + name, value.double ?? 0) }
            }
            if let loads = result.report.field("root_loads"), let n = loads.field("loads")?.double, n > 0 {
                add("root_loads", n)
                for (group, row) in [("unsync_lying_around", "unsync_at_root_load"), ("unsync_reached", "unsync_reached_at_root_load")] {
                    for (stat, value) in loads.field(group)?.fields ?? [] { add(row + ":" + stat, value.double ?? 0) }
                }
            }
            for vm in vms {
                for (name, value) in vm.field("counters")?.fields ?? [] { add(name, value.double ?? 0) }
            }
            // The sync work a root load costs, on average.
            if let loads = values["root_loads"], loads > 0, let synced = values["pages_synced"] {
                add("pages_synced_per_root_load", synced / loads)
            }
        }

        var passed: Bool { failure == nil }

        mutating func add(_ name: String, _ value: Double) {
            if values[name] == nil { order.append(name) }
            values[name, default: 0] += value
        }
    }

    /// A value as a cell: an integer without decimals, else two.
    static func format(_ v: Double) -> String {
        // No Foundation here: two decimals by hand.
        if v == v.rounded() && abs(v) < 9e15 { return String(Int64(v)) }
        let hundredths = Int64((abs(v) * 100).rounded())
        let fraction = hundredths % 100
        return (v < 0 ? "-" : "") + "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction)"
    }

    let script: String
    let seed: UInt64
    let checked: Bool
    let columns: [Column]
    /// Only these rows, in this order (`--rows`); nil: every row.
    var only: [String]? = nil

    var rows: [String] {
        var seen = Set<String>(), out: [String] = []
        for c in columns { for r in c.order where seen.insert(r).inserted { out.append(r) } }
        if let only { return only.filter(seen.contains) }
        return out
    }

    /// The policies holding the best value of `row` among the runs that passed, or none
    /// when those values are all equal (or fewer than two runs passed).
    func best(_ row: String) -> Set<String> {
        // What a replay did is the trace's, not a cost to rank.
        if row.hasPrefix("replay:") { return [] }
        let passed = columns.filter { $0.passed && $0.values[row] != nil }
        let values = passed.map { $0.values[row]! }
        guard let lo = values.min(), let hi = values.max(), lo != hi else { return [] }
        let target = row.contains("hit") ? hi : lo
        return Set(passed.filter { ($0.values[row] ?? 0) == target }.map(\.policy))
    }

    /// A cell: the value, or "-" for a row a run never reached.
    func cell(_ c: Column, _ row: String) -> String { c.values[row].map(Self.format) ?? "-" }

    func rendered(_ format: String) -> String {
        switch format {
        case "json": json.serialized()
        case "csv": csv
        case "markdown": markdown
        default: table
        }
    }

    var table: String {
        var grid = [["counter"] + columns.map(\.policy), ["status"] + columns.map { $0.passed ? "ok" : "FAILED" }]
        for row in rows {
            let b = best(row)
            grid.append([row] + columns.map { c in cell(c, row) + (b.contains(c.policy) ? " *" : "  ") })
        }
        let widths = grid[0].indices.map { i in grid.map { $0[i].count }.max() ?? 0 }
        var notes = ["(* best of the row among the runs that passed: the lowest, or the highest for hit counts)"]
        if !checked { notes.append("(checker off: a policy that breaks the architecture can look best)") }
        for c in columns where !c.passed { notes.append("\(c.policy) \(c.status): \(c.failure ?? "")") }
        return grid.map { line in
            line.enumerated().map { i, cell in
                i == 0 ? cell + String(repeating: " ", count: widths[i] - cell.count)
                       : String(repeating: " ", count: widths[i] - cell.count) + cell
            }.joined(separator: "  ").trailingSpacesRemoved
        }.joined(separator: "\n") + "\n" + notes.joined(separator: "\n")
    }

    var markdown: String {
        var lines = ["| counter | " + columns.map(\.policy).joined(separator: " | ") + " |",
                     "|---|" + String(repeating: "---:|", count: columns.count),
                     "| status | " + columns.map { $0.passed ? "ok" : "**FAILED**" }.joined(separator: " | ") + " |"]
        for row in rows {
            let b = best(row)
            lines.append("| \(row) | " + columns.map { c in
                let v = cell(c, row)
                return b.contains(c.policy) ? "**\(v)**" : v
            }.joined(separator: " | ") + " |")
        }
        return lines.joined(separator: "\n")
    }

    var csv: String {
        func quoted(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"" + s.replacingQuotes + "\"" : s }
        var lines = [(["counter"] + columns.map(\.policy)).map(quoted).joined(separator: ",")]
        lines.append((["status"] + columns.map(\.status)).map(quoted).joined(separator: ","))
        for row in rows { lines.append(([row] + columns.map { c in c.values[row].map(Self.format) ?? "" }).map(quoted).joined(separator: ",")) }
        return lines.joined(separator: "\n")
    }

    var json: JSONValue {
        .object([
            ("tool", .string("shadowsim \(shadowSimVersion)")),
            ("script", .string(script)),
            ("seed", .integer(Int64(bitPattern: seed))),
            ("checked", .bool(checked)),
            ("policies", .array(columns.map { .string($0.policy) })),
            ("runs", .array(columns.map { c in
                .object([("policy", .string(c.policy)), ("status", .string(c.status))]
                        + (c.failure.map { [("error", JSONValue.string($0))] } ?? []))
            })),
            ("rows", .array(rows.map { row in
                .object([
                    ("counter", .string(row)),
                    ("values", .object(columns.compactMap { c in
                        c.values[row].map { v in (c.policy, v == v.rounded() && abs(v) < 9e15 ? .integer(Int64(v)) : .number(v)) }
                    })),
                    ("best", .array(columns.map(\.policy).filter(best(row).contains).map { .string($0) })),
                ])
            })),
        ])
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
    var trailingSpacesRemoved: String { String(reversed().drop { $0 == " " }.reversed()) }
    var replacingQuotes: String { split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") }
}

extension JSONValue {
    func field(_ name: String) -> JSONValue? {
        if case .object(let fields) = self { return fields.first { $0.0 == name }?.1 }
        return nil
    }
    var fields: [(String, JSONValue)] {
        if case .object(let f) = self { return f }
        return []
    }
    var elements: [JSONValue] {
        if case .array(let a) = self { return a }
        return []
    }
    var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }
    var integer: Int64? {
        switch self {
        case .integer(let i): i
        case .number(let d): Int64(exactly: d.rounded())
        default: nil
        }
    }
    var double: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .number(let d): d
        default: nil
        }
    }
}

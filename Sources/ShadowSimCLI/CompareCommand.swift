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
            Rows are the estimated cycles, then every counter (summed over the scenario's VMs); \
            the best value of a row is marked (the lowest; the highest for hit counts). \
            Exit status: 0, 1 when a run fails (the table still shows the runs that completed), 2 for a bad command line.
            """)

    @Argument(help: "The scenario script.")
    var script: String

    @Option(help: "Comma-separated policies: built-in names, bare-metal, or .so paths.")
    var policies = PolicyCatalog.builtins.map(\.name).joined(separator: ",")

    @Option(help: "Seed for every run.")
    var seed: UInt64 = 0

    @Option(help: "table, json, csv or markdown.")
    var format = "table"

    @Flag(help: "Attach the architectural checker to every run.")
    var check = false

    @Argument(parsing: .postTerminator, help: "Arguments for the script (shadowsim.args), after --.")
    var scriptArguments: [String] = []

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try logging.bootstrap()
        let names = policies.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
        guard !names.isEmpty else { printError("shadowsim: --policies names no policy"); throw ExitCode(2) }
        guard ["table", "json", "csv", "markdown"].contains(format) else {
            printError("shadowsim: --format must be table, json, csv or markdown, got \"\(format)\"")
            throw ExitCode(2)
        }
        for name in names where name != PolicyCatalog.bareMetalName {
            do { _ = try PolicyCatalog.factory(name) } catch {
                printError("shadowsim: \(error.description)")
                throw ExitCode(2)
            }
        }
        luashim_catch_interrupt()
        var columns: [Comparison.Column] = []
        var failure: String?
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
        for name in names {
            let result = ScenarioRunner.run(path: script, seed: seed, arguments: scriptArguments, policy: name, check: check)
            if let error = result.error {
                failure = "\(error.message) (under \(name))"
                break
            }
            columns.append(Comparison.Column(policy: name, report: result.report))
        }
        fflush(nil)
        dup2(savedStdout, 1)
        let comparison = Comparison(script: script, seed: seed, columns: columns)
        if !columns.isEmpty { print(comparison.rendered(format)) }
        if let failure {
            printError(failure)
            throw ExitCode(1)
        }
    }
}

/// Counters of one scenario under several policies, and their renderings.
struct Comparison {
    struct Column {
        let policy: String
        /// Row name → value, summed over the run's VMs.
        var values: [String: Int64] = [:]
        var order: [String] = []

        init(policy: String, report: JSONValue) {
            self.policy = policy
            for vm in report.field("vms")?.elements ?? [] {
                add("estimated_cycles", vm.field("estimated_cycles")?.integer ?? 0)
                for (name, value) in vm.field("counters")?.fields ?? [] { add(name, value.integer ?? 0) }
            }
        }

        mutating func add(_ name: String, _ value: Int64) {
            if values[name] == nil { order.append(name) }
            values[name, default: 0] &+= value
        }
    }

    let script: String
    let seed: UInt64
    let columns: [Column]

    var rows: [String] {
        var seen = Set<String>(), out: [String] = []
        for c in columns { for r in c.order where seen.insert(r).inserted { out.append(r) } }
        return out
    }

    /// The policies holding the best value of `row`, or none when every value is equal.
    func best(_ row: String) -> Set<String> {
        let values = columns.map { $0.values[row] ?? 0 }
        guard let lo = values.min(), let hi = values.max(), lo != hi else { return [] }
        let target = row.contains("hit") ? hi : lo
        return Set(columns.filter { ($0.values[row] ?? 0) == target }.map(\.policy))
    }

    func rendered(_ format: String) -> String {
        switch format {
        case "json": json.serialized() 
        case "csv": csv
        case "markdown": markdown
        default: table
        }
    }

    var table: String {
        var grid = [["counter"] + columns.map(\.policy)]
        for row in rows {
            let b = best(row)
            grid.append([row] + columns.map { c in "\(c.values[row] ?? 0)" + (b.contains(c.policy) ? " *" : "  ") })
        }
        let widths = grid[0].indices.map { i in grid.map { $0[i].count }.max() ?? 0 }
        return grid.map { line in
            line.enumerated().map { i, cell in
                i == 0 ? cell + String(repeating: " ", count: widths[i] - cell.count)
                       : String(repeating: " ", count: widths[i] - cell.count) + cell
            }.joined(separator: "  ").trailingSpacesRemoved
        }.joined(separator: "\n") + "\n(* best of the row: the lowest, or the highest for hit counts)"
    }

    var markdown: String {
        var lines = ["| counter | " + columns.map(\.policy).joined(separator: " | ") + " |",
                     "|---|" + String(repeating: "---:|", count: columns.count)]
        for row in rows {
            let b = best(row)
            lines.append("| \(row) | " + columns.map { c in
                let v = "\(c.values[row] ?? 0)"
                return b.contains(c.policy) ? "**\(v)**" : v
            }.joined(separator: " | ") + " |")
        }
        return lines.joined(separator: "\n")
    }

    var csv: String {
        func quoted(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"" + s.replacingQuotes + "\"" : s }
        var lines = [(["counter"] + columns.map(\.policy)).map(quoted).joined(separator: ",")]
        for row in rows { lines.append(([row] + columns.map { "\($0.values[row] ?? 0)" }).map(quoted).joined(separator: ",")) }
        return lines.joined(separator: "\n")
    }

    var json: JSONValue {
        .object([
            ("tool", .string("shadowsim \(shadowSimVersion)")),
            ("script", .string(script)),
            ("seed", .integer(Int64(bitPattern: seed))),
            ("policies", .array(columns.map { .string($0.policy) })),
            ("rows", .array(rows.map { row in
                .object([
                    ("counter", .string(row)),
                    ("values", .object(columns.map { ($0.policy, .integer($0.values[row] ?? 0)) })),
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
    var integer: Int64? {
        switch self {
        case .integer(let i): i
        case .number(let d): Int64(exactly: d.rounded())
        default: nil
        }
    }
}

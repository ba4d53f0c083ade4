import ArgumentParser
import Logging
import ShadowSimBench
import ShadowSimLua
#if canImport(Glibc)
import Glibc
#endif

/// `shadowsim bench [--filter TEXT] [--repetitions N] [--json FILE]`
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the performance benchmarks (build with -c release).",
        discussion: "Each benchmark warms up once, then reports the median time per operation over the repetitions, with the target from issue 5 where there is one.")

    @Option(help: "Only benchmarks whose name contains this text.")
    var filter: String?

    @Option(help: "Timed repetitions per benchmark (after one warm-up).")
    var repetitions = 5

    @Option(help: "Also write the results as JSON to this file.")
    var json: String?

    @Option(help: "Where the shipped traces are (the trace-replay rows).")
    var traces = "traces"

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try logging.bootstrap()
        #if DEBUG
        printError("shadowsim bench: this is a debug build; the figures mean little (use swift run -c release shadowsim bench)")
        #endif
        let runner = BenchRunner(repetitions: repetitions, filter: filter) { printError("  running: \($0)") }
        do {
            try runner.runAll()
            try runner.luaCalls(scratchDirectory: "/tmp")
            try runner.traceReplays(directory: traces)
        } catch {
            printError("shadowsim bench: \(error)")
            throw ExitCode(1)
        }
        print(table(runner.results))
        if let json {
            let value = JSONValue.object([
                ("tool", .string("shadowsim \(shadowSimVersion)")),
                ("repetitions", .integer(Int64(repetitions))),
                ("results", .array(runner.results.map { r in
                    .object([
                        ("name", .string(r.name)),
                        ("median_ns", .number(r.medianNanoseconds)),
                        ("min_ns", .number(r.minNanoseconds)),
                        ("max_ns", .number(r.maxNanoseconds)),
                        ("operations", .integer(Int64(r.operationsPerRepetition))),
                        ("target_ns", r.targetNanoseconds.map { .number($0) } ?? .null),
                        ("meets_target", r.meetsTarget.map { .bool($0) } ?? .null),
                    ])
                })),
            ])
            try writeText(value.serialized() + "\n", to: json)
        }
    }

    func table(_ results: [BenchResult]) -> String {
        func oneDecimal(_ x: Double) -> String {
            let tenths = Int((x * 10).rounded())
            return "\(tenths / 10).\(tenths % 10)"
        }
        func figure(_ ns: Double, bytes: Bool, ratio: Bool = false) -> String {
            if bytes { return "\(Int(ns.rounded())) B" }
            if ratio { return oneDecimal(ns) + " ×" }
            return ns >= 10_000 ? oneDecimal(ns / 1000) + " µs" : oneDecimal(ns) + " ns"
        }
        var rows = [["benchmark", "median", "min … max", "target", ""]]
        for r in results {
            let bytes = r.name.hasPrefix("bytes"), ratio = r.name.hasPrefix("ratio")
            rows.append([r.name, figure(r.medianNanoseconds, bytes: bytes, ratio: ratio),
                         r.repetitions > 1 ? figure(r.minNanoseconds, bytes: bytes) + " … " + figure(r.maxNanoseconds, bytes: bytes) : "",
                         r.targetNanoseconds.map { "≤ " + figure($0, bytes: bytes, ratio: ratio) } ?? "",
                         r.meetsTarget.map { $0 ? "met" : "MISSED" } ?? ""])
        }
        let widths = (0..<5).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, cell in
                c == 0 ? cell + String(repeating: " ", count: widths[c] - cell.count)
                       : String(repeating: " ", count: widths[c] - cell.count) + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

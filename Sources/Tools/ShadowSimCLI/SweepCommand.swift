import ArgumentParser
import Logging
import Foundation
import ShadowSimLua
import ShadowSimPolicies

/// `shadowsim sweep SCRIPT --param procs=1,2,4 --param vms=1,2 --policies a,b [--jobs N]
/// [--shard i/n] [-o results.jsonl]`: the cross product of parameter values and policies,
/// each run a separate `shadowsim run` process, as JSON lines in run order.
struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario over the cross product of parameter values and policies, in parallel, as JSON lines.",
        discussion: """
            Each record: run, of, tool, scenario, policy (its name; policy_path too for a .so), seed, params, checked, \
            status, error (if any), estimated_cycles and counters (summed over the scenario's VMs), root_loads (the \
            unsync pages at root loads, pooled over them), and vms (each VM's report, with its trace replays). A trace \
            is swept as a parameter of scripts/replay.lua: --param trace=A.txt.gz,B.txt.gz. Every run has the architectural checker attached unless --no-check. \
            Records come in run order whatever --jobs is, so the same sweep gives the same file. \
            --shard i/n keeps the runs whose index is i modulo n (1-based i); `shadowsim merge` joins shards. \
            Exit status: 0 when every run passed, 1 when one failed, 2 for a bad command line.
            """)

    @Argument(help: "The scenario script.")
    var script: String

    @Option(name: .customLong("param"), help: "NAME=V1,V2,… : values of one script parameter (repeatable).")
    var parameters: [String] = []

    @Option(help: "Comma-separated policies.")
    var policies = "kvm-unsync"

    @Option(help: "Seed of every run.")
    var seed: UInt64 = 0

    @Option(help: "Runs at a time (default: the cores available).")
    var jobs: Int?

    @Option(help: "Only shard i of n (i from 1), e.g. 2/8.")
    var shard: String?

    @Flag(inversion: .prefixedNo, help: "Attach the architectural checker to every run (--no-check for speed).")
    var check = true

    @OptionGroup var budgets: BudgetOptions

    @Flag(help: "Record each run's timeline of faults, syncs and flushes (charted by `shadowsim report`).")
    var trace = false

    @Option(name: [.customShort("o"), .long], help: "Write the JSON lines here (default: stdout).")
    var output: String?

    struct Point {
        let index: Int
        let policy: ResolvedPolicy
        let params: [(String, String)]
    }

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try logging.bootstrap()
        var axes: [(String, [String])] = []
        for p in parameters {
            guard let (name, values) = parseParameter(p), !values.isEmpty else {
                printError("shadowsim: --param takes NAME=V1,V2,… with a Lua identifier as NAME, got \"\(p)\"")
                throw ExitCode(2)
            }
            axes.append((name, values.split(separator: ",").map(String.init)))
        }
        let resolved = try resolvePolicies(policies)
        _ = try budgets.limits()
        var (shardIndex, shardCount) = (1, 1)
        if let shard {
            let parts = shard.split(separator: "/").compactMap { Int($0) }
            guard parts.count == 2, parts[1] >= 1, (1...parts[1]).contains(parts[0]) else {
                printError("shadowsim: --shard takes i/n with 1 ≤ i ≤ n, got \"\(shard)\"")
                throw ExitCode(2)
            }
            (shardIndex, shardCount) = (parts[0], parts[1])
        }
        try requireReadableScript(script)
        // The cross product, parameters first (in the order given), then policy.
        var points: [[(String, String)]] = [[]]
        for (name, values) in axes { points = points.flatMap { p in values.map { p + [(name, $0)] } } }
        var all: [Point] = []
        for params in points { for policy in resolved { all.append(Point(index: all.count, policy: policy, params: params)) } }
        let mine = all.filter { $0.index % shardCount == shardIndex - 1 }
        let width = max(1, jobs ?? ProcessInfo.processInfo.activeProcessorCount)

        let sink: FileHandle
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: nil), let h = FileHandle(forWritingAtPath: output) else {
                printError("shadowsim: -o \(output): cannot write")
                throw ExitCode(2)
            }
            sink = h
        } else {
            sink = FileHandle.standardOutput
        }
        let progress = Progress(total: mine.count)
        var running: [(point: Point, process: Process, json: String)] = []
        var finished: [Int: [String: Any]] = [:]
        var nextToWrite = 0
        var failures = 0
        var queue = mine[...]
        let scratch = NSTemporaryDirectory() + "shadowsim-sweep-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }

        while !queue.isEmpty || !running.isEmpty {
            while running.count < width, let point = queue.popFirst() {
                let json = scratch + "/run-\(point.index).json"
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/proc/self/exe")
                p.arguments = ["run", script, "--policy", point.policy.argument, "--seed", String(seed), "--json", json]
                    + (check ? ["--check"] : []) + (trace ? ["--trace"] : []) + budgets.forwarded
                    + point.params.flatMap { ["--param", "\($0.0)=\($0.1)"] }
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                cliLog.debug("sweep run started", metadata: ["run": "\(point.index)", "policy": "\(point.policy.label)",
                                                            "pid": "\(p.processIdentifier)"])
                running.append((point, p, json))
            }
            if let i = running.firstIndex(where: { !$0.process.isRunning }) {
                let (point, process, json) = running.remove(at: i)
                let record = record(point, total: all.count, status: process.terminationStatus, json: json)
                if record["error"] != nil { failures += 1 }
                finished[point.index] = record
                progress.step(run: point.index, "\(point.policy.label) \(point.params.map { "\($0.0)=\($0.1)" }.joined(separator: " "))",
                              ok: record["error"] == nil)
                // Write in run order as soon as the next record is in.
                while nextToWrite < mine.count, let r = finished.removeValue(forKey: mine[nextToWrite].index) {
                    sink.write(try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys, .withoutEscapingSlashes]))
                    sink.write(Data("\n".utf8))
                    nextToWrite += 1
                }
            } else {
                usleep(2000)
            }
        }
        progress.finish()
        cliLog.info("sweep finished", metadata: ["runs": "\(mine.count)", "failed": "\(failures)", "jobs": "\(width)"])
        if failures > 0 {
            printError("shadowsim: \(failures) of \(mine.count) runs failed (their records carry the error)")
            throw ExitCode(1)
        }
    }

    /// The JSON-lines record of one finished run.
    func record(_ point: Point, total: Int, status: Int32, json: String) -> [String: Any] {
        var r: [String: Any] = [
            "run": point.index, "of": total, "tool": "shadowsim \(shadowSimVersion)", "scenario": script,
            "policy": point.policy.label, "seed": seed, "checked": check,
            "params": Dictionary(uniqueKeysWithValues: point.params.map { ($0.0, jsonValue(parameterValue($0.1))) }),
        ]
        if point.policy.argument != point.policy.name { r["policy_path"] = point.policy.argument }
        guard let data = FileManager.default.contents(atPath: json),
              let report = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            r["status"] = "failed"
            r["error"] = "the run wrote no report (exit status \(status))"
            return r
        }
        r["status"] = report["status"] ?? "unknown"
        if let error = report["error"] { r["error"] = error }
        let vms = report["vms"] as? [[String: Any]] ?? []
        r["vms"] = vms
        var counters: [String: Int] = [:]
        var cycles = 0
        for vm in vms {
            cycles += vm["estimated_cycles"] as? Int ?? 0
            for (k, v) in vm["counters"] as? [String: Int] ?? [:] { counters[k, default: 0] += v }
        }
        r["estimated_cycles"] = cycles
        r["counters"] = counters
        if let timeline = report["timeline"] { r["timeline"] = timeline }
        if let loads = report["root_loads"] { r["root_loads"] = loads }
        if status != 0 && r["error"] == nil { r["error"] = "exit status \(status)" }
        return r
    }

    func jsonValue(_ v: JSONValue) -> Any {
        switch v {
        case .integer(let i): i
        case .number(let d): d
        case .string(let s): s
        default: NSNull()
        }
    }
}

/// A progress bar on a terminal, a plain line per run otherwise (stderr).
final class Progress {
    let total: Int
    var done = 0
    let isTerminal = isatty(2) != 0

    init(total: Int) { self.total = total }

    /// Run `run` (the JSON records' `run` field) finished.
    func step(run: Int, _ what: String, ok: Bool) {
        done += 1
        if isTerminal {
            let width = 30, filled = total == 0 ? width : done * width / total
            FileHandle.standardError.write(Data("\r[\(String(repeating: "#", count: filled))\(String(repeating: " ", count: width - filled))] \(done)/\(total)".utf8))
        } else {
            FileHandle.standardError.write(Data("run \(run) (\(done)/\(total) done): \(what) \(ok ? "ok" : "FAILED")\n".utf8))
        }
    }

    func finish() {
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// `shadowsim merge SHARD.jsonl… [-o all.jsonl]`: sweep shards joined in run order.
struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Join the JSON lines of sweep shards in run order.",
        discussion: "Exit status: 0; 1 when a run is missing or appears twice (the merged file is still written); 2 for unreadable input.")

    @Argument(help: "Shard files written by `shadowsim sweep --shard i/n -o …`.")
    var files: [String]

    @Option(name: [.customShort("o"), .long], help: "Write here (default: stdout).")
    var output: String?

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try logging.bootstrap()
        var records: [(run: Int, of: Int, line: String)] = try readSweepRecords(files).map {
            ($0.object["run"] as! Int, $0.object["of"] as! Int, $0.line)
        }
        records.sort { $0.run < $1.run }
        let text = records.map(\.line).joined(separator: "\n") + (records.isEmpty ? "" : "\n")
        if let output { try writeText(text, to: output) } else { print(text, terminator: "") }
        let total = records.first?.of ?? 0
        let runs = records.map(\.run)
        let duplicates = Set(runs.filter { r in runs.filter { $0 == r }.count > 1 })
        let missing = (0..<total).filter { !runs.contains($0) }
        let inconsistent = records.filter { $0.of != total }.count
        if !duplicates.isEmpty || !missing.isEmpty || inconsistent > 0 {
            var problems: [String] = []
            if !missing.isEmpty {
                problems.append("missing runs: " + missing.prefix(10).map(String.init).joined(separator: ", ") + (missing.count > 10 ? "…" : ""))
            }
            if !duplicates.isEmpty { problems.append("repeated runs: " + duplicates.sorted().map(String.init).joined(separator: ", ")) }
            if inconsistent > 0 { problems.append("\(inconsistent) records are from a sweep of another size than \(total) runs") }
            printError("shadowsim: merged \(records.count) records; " + problems.joined(separator: "; "))
            throw ExitCode(1)
        }
    }
}

/// The records of sweep JSON-lines files, each with its line as written. An unreadable
/// file, or a line that is not a sweep record, is a usage error (status 2) naming it.
func readSweepRecords(_ files: [String]) throws -> [(object: [String: Any], line: String)] {
    var records: [(object: [String: Any], line: String)] = []
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else {
            printError("shadowsim: \(file): cannot read it")
            throw ExitCode(2)
        }
        for (n, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  object["run"] is Int, object["of"] is Int, object["policy"] is String else {
                printError("\(file):\(n + 1): not a sweep record")
                throw ExitCode(2)
            }
            records.append((object, String(line)))
        }
    }
    return records
}

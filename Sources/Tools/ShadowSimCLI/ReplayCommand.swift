import ArgumentParser
import CLuaShim
import LuaKit
import X86
import ShadowSimLua
import ShadowSimPolicies
import GuestKernel
#if canImport(Glibc)
import Glibc
#endif

/// `shadowsim replay TRACE… --policies a,b [--vcpus N] [--kpti] [--events N] [--no-check]`
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay recorded Linux traces through the Linux model under several policies and compare them.",
        discussion: """
            A trace is the text of tracefs (tools/record-linux-trace.sh), `trace-cmd report` or `perf script`, plain or \
            gzip. Each trace is replayed under each policy with the architectural checker on (unless --no-check): the \
            table is what `compare` prints, after the replay's own rows (replay:…); then how the replay agreed with the \
            trace: flushes by reason, faults the model handled, and events skipped, by reason (docs/linux-model.md). \
            Exit status: 0, 1 when a replay fails (a checker violation, a bad trace line), 2 for a bad command line.
            """)

    @Argument(help: "Trace files.")
    var traces: [String]

    @Option(help: "Comma-separated policies: built-in names, bare-metal, or .so paths.")
    var policies = PolicyCatalog.builtins.map(\.name).joined(separator: ",")

    @Option(help: "vCPUs of the guest (default: the trace's CPUs).")
    var vcpus: Int?

    @Option(help: "Guest memory, e.g. 4G.")
    var memory = "4G"

    @Flag(help: "Page-table isolation in the guest: two PGDs and two PCIDs per process, CR3 switched at every kernel entry.")
    var kpti = false

    @Flag(help: "No PCIDs in the guest: every switch of mm flushes.")
    var noPcid = false

    @Option(help: "Replay at most this many events of each trace.")
    var events: Int?

    @Option(help: "Shadow pages the VM may hold (default: KVM's, 20 per mille of guest memory).")
    var shadowPages: Int?

    @Option(help: "Describe the first N disagreements with the trace, by trace line (on stderr).")
    var explain = 0

    @Option(help: "Exit 1 unless at least this percentage of the traced faults agree or are explained by a documented rule.")
    var minFaultAgreement: Double?

    @Option(help: "Exit 1 unless at least this percentage of the traced flushes match the model's (CPU, reason and pages).")
    var minFlushAgreement: Double?

    @Flag(inversion: .prefixedNo, help: "Attach the architectural checker (--no-check for speed).")
    var check = true

    @Option(help: "table, json, csv or markdown.")
    var format = "table"

    @Option(help: "Only these rows of the comparison, in this order (comma-separated names, e.g. exits,pages_synced).")
    var rows: String?

    @Option(name: .shortAndLong, help: "Write the output to this file.")
    var output: String?

    @OptionGroup var mmuTrace: MMUTraceOptions

    @OptionGroup var logging: LoggingOptions

    func run() throws {
        try logging.bootstrap()
        try requireComparisonFormat(format)
        let resolved = try resolvePolicies(policies)
        guard let memoryBytes = parseByteSize(memory), memoryBytes >= 64 << 20 else {
            throw usageError("--memory: \"\(memory)\" is not a size of at least 64M")
        }
        if let vcpus, !(1...MachineConfiguration.maxVCPUs).contains(vcpus) {
            throw usageError("--vcpus must be 1…\(MachineConfiguration.maxVCPUs)")
        }
        if let events, events <= 0 { throw usageError("--events must be positive") }
        for (name, floor) in [("--min-fault-agreement", minFaultAgreement), ("--min-flush-agreement", minFlushAgreement)] {
            if let floor, !(0...100).contains(floor) { throw usageError("\(name) is a percentage, 0…100") }
        }
        for trace in traces {
            guard let f = fopen(trace, "rb") else {
                throw usageError("\(trace): cannot open the trace: \(String(cString: strerror(errno)))")
            }
            fclose(f)
        }
        luashim_catch_interrupt()
        let terminal = isatty(2) != 0
        var sections: [String] = []
        var documents: [JSONValue] = []
        var failed: [String] = []
        var interrupted = false
        for trace in traces where !interrupted {
            var columns: [Comparison.Column] = []
            var records: [(policy: String, report: JSONValue)] = []
            for policy in resolved {
                var request = ReplayRequest(trace: trace)
                request.policy = policy.argument
                request.check = check
                request.vcpus = vcpus
                request.memoryBytes = memoryBytes
                request.linux = LinuxOptions(kpti: kpti, pcid: !noPcid)
                request.maxEvents = events
                request.shadowPages = shadowPages
                request.explain = explain
                let label = policy.label
                request.shouldStop = { luashim_interrupted() != 0 }
                var traceName = Substring(trace.split(separator: "/").last ?? "")
                for suffix in [".gz", ".txt", ".dat"] where traceName.hasSuffix(suffix) { traceName = traceName.dropLast(suffix.count) }
                let sink = try mmuTrace.open(mmuTrace.path(for: traces.count > 1 ? [String(traceName), label] : [label]))
                let result = ReplayRunner.run(request, mmuTrace: sink, progress: terminal ? { p in
                    writeStderr("\r\(trace) under \(label): \(p.events) events (\(p.bytes >> 20) MiB read)")
                } : nil)
                if terminal { writeStderr("\r\u{1B}[K") }
                columns.append(Comparison.Column(policy: label, result: result))
                records.append((label, result.report))
                for vm in result.report.field("vms")?.elements ?? [] {
                    for e in vm.field("explanations")?.elements ?? [] { printError("[\(label)] " + (e.string ?? "")) }
                }
                if let e = result.error { failed.append("\(e.message) (under \(label))") }
                failed += agreementFailures(trace: trace, label: label, report: result.report)
                if result.exhausted == .interrupt { interrupted = true; break }
            }
            var comparison = Comparison(script: trace, seed: 0, checked: check, columns: columns)
            comparison.only = rows.map { $0.split(separator: ",").map { String($0).trimmingSpaces } }
            let agreement = ReplayAgreement(trace: trace, records: records)
            switch format {
            case "json":
                documents.append(.object([("trace", .string(trace)), ("comparison", comparison.json),
                                          ("replays", .array(records.map { r in
                                              .object([("policy", .string(r.policy)), ("run", r.report)])
                                          }))]))
            case "csv":
                sections.append(comparison.csv)
            case "markdown":
                sections.append("## \(trace)\n\n" + comparison.markdown + "\n\n" + agreement.markdown)
            default:
                sections.append("== \(trace)\n" + comparison.table + "\n\n" + agreement.table)
            }
        }
        let text = format == "json"
            ? JSONValue.object([("tool", .string("shadowsim \(shadowSimVersion)")), ("traces", .array(documents))]).serialized()
            : sections.joined(separator: "\n\n")
        if let output {
            guard let f = fopen(output, "w") else { throw usageError("-o: cannot write \(output)") }
            fputs(text + "\n", f)
            fclose(f)
        } else {
            print(text)
        }
        for f in failed { printError(f) }
        if interrupted { throw ExitCode(130) }
        if !failed.isEmpty { throw ExitCode(1) }
    }
}

extension Replay {
    /// The agreement floors a run misses (`--min-fault-agreement`, `--min-flush-agreement`).
    func agreementFailures(trace: String, label: String, report: JSONValue) -> [String] {
        guard let summary = report.field("vms")?.elements.first?.field("replays")?.elements.first?.field("summary") else { return [] }
        func value(_ name: String) -> Double { summary.field(name)?.double ?? 0 }
        var out: [String] = []
        if let floor = minFaultAgreement, value("faults_replayed") > 0 {
            let agreed = value("faults_agreed") + value("faults_raced") + value("faults_unknown_history") + value("faults_unknown_area")
            let percent = 100 * agreed / value("faults_replayed")
            if percent < floor {
                out.append("\(trace): \(Comparison.format(percent))% of the traced faults agree or are explained, below --min-fault-agreement \(Comparison.format(floor)) (under \(label))")
            }
        }
        if let floor = minFlushAgreement, value("flushes_traced") > 0 {
            let percent = 100 * value("flushes_matched") / value("flushes_traced")
            if percent < floor {
                out.append("\(trace): \(Comparison.format(percent))% of the traced flushes match the model's, below --min-flush-agreement \(Comparison.format(floor)) (under \(label))")
            }
        }
        return out
    }
}

/// Text on stderr without a newline (progress on a terminal).
func writeStderr(_ text: String) {
    var t = text
    t.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// How each replay agreed with its trace: flushes by reason (traced, replayed,
/// matched, …), the model's faults by kind, faults with other bits, skipped events.
struct ReplayAgreement {
    let trace: String
    let records: [(policy: String, report: JSONValue)]

    /// The first run's replay object (the model is the same under every policy: the
    /// policy changes the host's work, not what the guest kernel does).
    var replay: JSONValue? {
        records.lazy.compactMap { $0.report.field("vms")?.elements.first?.field("replays")?.elements.first }.first
    }

    var linux: JSONValue? {
        records.lazy.compactMap { $0.report.field("vms")?.elements.first?.field("linux") }.first
    }

    /// Rows of (label, values) for the tables.
    var flushRows: [[String]] {
        (replay?.field("flushes_by_reason")?.elements ?? []).map { r in
            [r.field("reason")?.string ?? "?"] + ["traced", "replayed", "matched", "other_pages", "trace_only", "replay_only"]
                .map { "\(r.field($0)?.integer ?? 0)" }
        }
    }

    func grid(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
        return all.map { line in
            line.enumerated().map { i, c in
                i == 0 ? c + String(repeating: " ", count: widths[i] - c.count) : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ").trailingSpacesRemoved
        }.joined(separator: "\n")
    }

    var keyValueSections: [(String, [(String, JSONValue)])] {
        [("faults the model handled, by kind", linux?.field("faults")?.fields ?? []),
         ("faults that faulted with other bits (trace → model)", replay?.field("faults_other_code")?.fields ?? []),
         ("events skipped, by reason", replay?.field("skipped")?.fields ?? [])]
    }

    var table: String {
        var out = "flushes by reason (matched: same CPU, reason and pages; other_pages: same reason, other pages)\n"
        out += grid(["reason", "traced", "replayed", "matched", "other_pages", "trace_only", "replay_only"], flushRows)
        for (title, fields) in keyValueSections {
            out += "\n\n" + title + (fields.isEmpty ? ": none" : "\n" + grid(["", "count"], fields.map { [$0.0, "\($0.1.integer ?? 0)"] }))
        }
        return out
    }

    var markdown: String {
        var out = "| reason | traced | replayed | matched | other pages | trace only | replay only |\n|---|---:|---:|---:|---:|---:|---:|\n"
        out += flushRows.map { "| " + $0.joined(separator: " | ") + " |" }.joined(separator: "\n")
        for (title, fields) in keyValueSections where !fields.isEmpty {
            out += "\n\n| \(title) | count |\n|---|---:|\n" + fields.map { "| \($0.0) | \($0.1.integer ?? 0) |" }.joined(separator: "\n")
        }
        return out
    }
}

#if canImport(Glibc)
import Glibc
#endif
import ShadowSimLua
import ShadowSimFiles

extension BenchRunner {
    /// Issue 13's speed target: the shipped traces replayed end to end (reading the gzip
    /// stream, parsing, the Linux model, the shadow MMU) with the checker off, per trace
    /// event: at least 300 000 events a second (≤ 3.33 µs an event), under kvm-unsync.
    /// The traces are read from `directory` (the repository's `traces/`); none there, no row.
    public func traceReplays(directory: String) throws {
        let names = (Files.names(in: directory) { $0.hasSuffix(".txt.gz") } ?? []).sorted()
        var total: (ns: Double, events: Int) = (0, 0)
        for name in names {
            let path = directory + "/" + name
            var request = ReplayRequest(trace: path)
            request.check = false
            var events = 0
            let row = "trace replay per event, \(name.replacingSuffix(".txt.gz")) (kvm-unsync, checker off)"
            guard wants(row) || wants("trace replay per event, all") else { continue }
            // One replay counts the events; the timed ones divide by it.
            let first = ReplayRunner.run(request)
            if let error = first.error { throw BenchError(description: "\(path): \(error.message)") }
            events = Int(first.report.replayEvents)
            guard events > 0 else { continue }
            measureSelfTimed(row, target: 1e9 / 300_000, operations: events, repetitions: min(repetitions, 3), setup: { () }) { _ in
                measuredWork { _ = ReplayRunner.run(request) }.nanoseconds
            }
            if let r = results.last(where: { $0.name == row }) {
                total.ns += r.medianNanoseconds * Double(events)
                total.events += events
            }
        }
        if total.events > 0 {
            record(value: "trace replay per event, all shipped traces (kvm-unsync, checker off)", total.ns / Double(total.events),
                   target: 1e9 / 300_000)
        }
    }
}

extension String {
    func replacingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

extension JSONValue {
    /// The events a replay report's first VM replayed.
    var replayEvents: Int64 {
        guard case .object(let fields) = self, case .array(let vms)? = fields.first(where: { $0.0 == "vms" })?.1,
              case .object(let vm)? = vms.first, case .array(let replays)? = vm.first(where: { $0.0 == "replays" })?.1,
              case .object(let replay)? = replays.first, case .object(let summary)? = replay.first(where: { $0.0 == "summary" })?.1,
              case .integer(let n)? = summary.first(where: { $0.0 == "events" })?.1 else { return 0 }
        return n
    }
}

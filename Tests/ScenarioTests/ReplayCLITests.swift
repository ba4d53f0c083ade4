import Testing
import Foundation

/// `shadowsim replay`: the comparison and the agreement tables, every format, and bad
/// traces and arguments reported with their status.
@Suite struct ReplayCLITests {
    static let tiny = ScenarioSuiteTests.repositoryRoot + "/traces/formats/tiny."

    func run(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        var r: (status: Int32, out: String, err: String)?
        try CLIProcess.withDirectory([:]) { dir in r = try CLIProcess.run(arguments, in: dir) }
        return r!
    }

    @Test(arguments: ["tracefs", "trace-cmd", "perf"])
    func eachFormatReplaysUnderTheGivenPolicies(_ format: String) throws {
        let r = try run(["replay", Self.tiny + format + ".txt", "--policies", "kvm-unsync,bare-metal,xen-oos"])
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.first == "== " + Self.tiny + format + ".txt")
        #expect(lines.contains { $0.hasPrefix("counter") && $0.contains("kvm-unsync") && $0.contains("bare-metal") && $0.contains("xen-oos") })
        for row in ["replay:events", "replay:faults_agreed", "replay:flushes_matched", "unsync_at_root_load:p90",
                    "unsync_reached_at_root_load:mean", "estimated_cycles", "exits_cr3"] {
            #expect(lines.contains { $0.hasPrefix(row + " ") }, "no row \(row)")
        }
        #expect(r.out.contains("flushes by reason"))
        #expect(r.out.contains("faults the model handled, by kind"))
        // The replay's rows are the trace's, the same under every policy.
        let agreed = lines.first { $0.hasPrefix("replay:faults_agreed ") }!.split(separator: " ").dropFirst()
        #expect(Set(agreed).count == 1, "\(agreed)")
    }

    @Test func jsonCsvMarkdownAndOutputFile() throws {
        try CLIProcess.withDirectory([:]) { dir in
            let json = try CLIProcess.run(["replay", Self.tiny + "tracefs.txt", "--policies", "kvm-unsync", "--format", "json",
                                           "-o", "out.json"], in: dir)
            #expect(json.status == 0 && json.out.isEmpty, "\(json.err)")
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/out.json"))
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            let traces = object?["traces"] as? [[String: Any]]
            #expect(traces?.count == 1)
            let replays = traces?.first?["replays"] as? [[String: Any]]
            #expect((replays?.first?["run"] as? [String: Any])?["status"] as? String == "passed")
            let csv = try CLIProcess.run(["replay", Self.tiny + "tracefs.txt", "--policies", "kvm-unsync", "--format", "csv"], in: dir)
            #expect(csv.out.hasPrefix("counter,kvm-unsync\nstatus,passed\nreplay:events,"), "\(csv.out.prefix(80))")
            let md = try CLIProcess.run(["replay", Self.tiny + "tracefs.txt", "--policies", "kvm-unsync", "--format", "markdown"], in: dir)
            #expect(md.out.contains("| replay:faults_agreed | ") && md.out.contains("| reason | traced | replayed |"))
        }
    }

    @Test func explainAndAgreementFloors() throws {
        let r = try run(["replay", Self.tiny + "tracefs.txt", "--policies", "kvm-unsync", "--no-check", "--explain", "3",
                         "--min-fault-agreement", "100"])
        #expect(r.status == 1)
        #expect(r.err.contains("[kvm-unsync] " + Self.tiny + "tracefs.txt:"), "\(r.err)")
        #expect(r.err.contains("of the traced faults agree or are explained, below --min-fault-agreement 100"), "\(r.err)")
        let ok = try run(["replay", Self.tiny + "tracefs.txt", "--policies", "kvm-unsync", "--no-check",
                          "--min-fault-agreement", "95", "--min-flush-agreement", "80", "--events", "200"])
        #expect(ok.status == 0, "\(ok.err)")
        let events = ok.out.split(separator: "\n").first { $0.hasPrefix("replay:events ") }
        #expect(events?.hasSuffix(" 200") == true, "\(ok.out.prefix(300))")
    }

    @Test func badTracesAndArguments() throws {
        try CLIProcess.withDirectory(["notes.txt": "just some notes\n", "cut.txt": "  sh-5  [000] .....   1.000001: sys_brk(brk: 0)\n  sh-5  [000] ..... 1.0x\n  sh-5  [000] .....   1.000002: sys_brk -> 0x1000\n"]) { dir in
            let notATrace = try CLIProcess.run(["replay", "notes.txt", "--policies", "kvm-unsync"], in: dir)
            #expect(notATrace.status == 1)
            #expect(notATrace.err.contains("notes.txt:1: not a trace of tracefs, trace-cmd report or perf script"), "\(notATrace.err)")
            let bad = try CLIProcess.run(["replay", "cut.txt", "--policies", "kvm-unsync", "--vcpus", "1"], in: dir)
            #expect(bad.status == 1 && bad.err.contains("cut.txt:2: unreadable trace line"), "\(bad.err)")
            let missing = try CLIProcess.run(["replay", "nope.txt.gz"], in: dir)
            #expect(missing.status == 2 && missing.err.contains("nope.txt.gz: cannot open"), "\(missing.err)")
            for args in [["--memory", "1K"], ["--vcpus", "0"], ["--events", "0"], ["--format", "xml"], ["--policies", "kvm"],
                         ["--min-fault-agreement", "120"]] {
                let r = try CLIProcess.run(["replay", Self.tiny + "tracefs.txt"] + args, in: dir)
                #expect(r.status == 2, "\(args): \(r.err)")
            }
        }
    }
}

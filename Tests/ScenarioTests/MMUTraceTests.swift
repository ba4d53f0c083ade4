import Foundation
import Testing

/// `--mmu-trace` (KVM's kvmmmu events as `trace-cmd report` prints them) and `mmu-diff`.
@Suite struct MMUTraceTests {
    static let root = ScenarioSuiteTests.repositoryRoot
    static let quickstart = root + "/examples/quickstart.lua"
    static let introspection = root + "/scripts/suite_introspection.lua"

    func lines(_ path: String) throws -> [String] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// `task [cpu] seq: name: body`, with the event name and body apart.
    func parsed(_ line: String) -> (task: String, seq: Int, name: String, body: String)? {
        let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
        guard parts.count == 4, parts[1].hasPrefix("["), parts[2].hasSuffix(":"), let seq = Int(parts[2].dropLast()),
              let colon = parts[3].firstIndex(of: ":") else { return nil }
        return (parts[0], seq, String(parts[3][..<colon]), String(parts[3][parts[3].index(colon, offsetBy: 2)...]))
    }

    @Test func runWritesKVMsEventsInOrder() throws {
        try CLIProcess.withDirectory([:]) { dir in
            let r = try CLIProcess.run(["run", Self.introspection, "--check", "--mmu-trace", "t.txt"], in: dir)
            #expect(r.status == 0, "\(r.err)")
            let events = try lines(dir + "/t.txt").map { line -> (task: String, seq: Int, name: String, body: String) in
                let e = parsed(line)
                #expect(e != nil, "not a trace line: \(line)")
                return e ?? ("", 0, "", "")
            }
            #expect(events.map(\.seq) == Array(1...events.count), "sequence numbers count the events")
            let names = Set(events.map(\.name))
            for name in ["kvm_mmu_get_page", "kvm_mmu_sync_page", "kvm_mmu_unsync_page", "kvm_mmu_set_spte",
                         "kvm_mmu_spte_requested", "kvm_mmu_pagetable_walk", "shadowsim_cr3_load", "shadowsim_mark"] {
                #expect(names.contains(name), "no \(name) event")
            }
            // KVM's notation: the page's role, root count and state; the spte's rights.
            let getPage = events.first { $0.name == "kvm_mmu_get_page" }!
            #expect(getPage.task == "vm0.vcpu0")
            #expect(getPage.body.hasPrefix("sp gen 0 gfn ") && getPage.body.contains(" 8-byte q0 ")
                    && getPage.body.contains(" nxe ad root ") && getPage.body.hasSuffix(" sync new"), "\(getPage.body)")
            let unsync = events.first { $0.name == "kvm_mmu_unsync_page" }!
            #expect(unsync.body.contains(" l1 ") && unsync.body.hasSuffix(" sync"), "traced before it goes unsync: \(unsync.body)")
            let sync = events.first { $0.name == "kvm_mmu_sync_page" }!
            #expect(sync.body.hasSuffix(" unsync"), "traced while still unsync: \(sync.body)")
            let spte = events.first { $0.name == "kvm_mmu_set_spte" }!
            #expect(spte.body.range(of: #"^gfn [0-9a-f]+ spte [0-9a-f]+ \(r[w-][x-][u-]\) level [1-3] at [0-9a-f]+$"#,
                                    options: .regularExpression) != nil, "\(spte.body)")
            let walk = events.first { $0.name == "kvm_mmu_pagetable_walk" }!
            #expect(walk.body.range(of: #"^addr [0-9a-f]+ pferr [0-9a-f]+ [PWURSVDF|]*$"#, options: .regularExpression) != nil,
                    "\(walk.body)")
            let marks = events.filter { $0.name == "shadowsim_mark" }.map(\.body)
            #expect(marks == ["map and read", "write", "unsync"])
            // Same run, same trace.
            let again = try CLIProcess.run(["run", Self.introspection, "--check", "--mmu-trace", "u.txt"], in: dir)
            #expect(again.status == 0)
            #expect(try lines(dir + "/t.txt") == lines(dir + "/u.txt"))
        }
    }

    @Test func tracingChangesNoCounter() throws {
        try CLIProcess.withDirectory([:]) { dir in
            let plain = try CLIProcess.run(["run", Self.quickstart, "--json", "a.json"], in: dir)
            let traced = try CLIProcess.run(["run", Self.quickstart, "--json", "b.json", "--mmu-trace", "t.txt"], in: dir)
            #expect(plain.status == 0 && traced.status == 0)
            #expect(plain.out == traced.out)
            #expect(try String(contentsOfFile: dir + "/a.json", encoding: .utf8) == String(contentsOfFile: dir + "/b.json", encoding: .utf8))
        }
    }

    @Test func compareWritesOneTracePerPolicy() throws {
        try CLIProcess.withDirectory([:]) { dir in
            let r = try CLIProcess.run(["compare", Self.introspection, "--policies", "kvm-unsync,xen-oos", "--mmu-trace", "mmu.txt"], in: dir)
            #expect(r.status == 0, "\(r.err)")
            let a = try lines(dir + "/mmu.kvm-unsync.txt"), b = try lines(dir + "/mmu.xen-oos.txt")
            #expect(a.contains { $0.contains(": kvm_mmu_unsync_page: ") })
            #expect(!b.isEmpty && a != b)
        }
    }

    /// The simulated trace rewritten as a real host's `trace-cmd report` would print it:
    /// another task and CPU column, timestamps, padding after the event name, and other
    /// generations, spte values, addresses and pfns (none of which are compared).
    func asHostReport(_ lines: [String]) -> [String] {
        lines.enumerated().compactMap { i, line in
            guard let e = parsed(line), e.name.hasPrefix("kvm_") else { return nil }
            var body = e.body.replacingOccurrences(of: "sp gen 0 ", with: "sp gen 7 ")
            if e.name == "kvm_mmu_set_spte" {
                var words = body.split(separator: " ").map(String.init)
                words[3] = "8000000123456e77"
                words[words.count - 1] = "1a2b3c000"
                body = words.joined(separator: " ")
            }
            if e.name == "kvm_mmu_spte_requested" { body = body.replacingOccurrences(of: " pfn ", with: " pfn 99") }
            return "  qemu-system-x86-4242  [001]  \(1000 + i).000017: \(e.name):     \(body)"
        }
    }

    @Test func mmuDiffAgreesAcrossFormatsAndFindsAPlantedDivergence() throws {
        try CLIProcess.withDirectory([:]) { dir in
            #expect(try CLIProcess.run(["run", Self.introspection, "--mmu-trace", "sim.txt"], in: dir).status == 0)
            let sim = try lines(dir + "/sim.txt")
            let host = asHostReport(sim)
            try (host.joined(separator: "\n") + "\n").write(toFile: dir + "/host.txt", atomically: true, encoding: .utf8)
            let same = try CLIProcess.run(["mmu-diff", "sim.txt", "host.txt"], in: dir)
            #expect(same.status == 0, "\(same.out)\(same.err)")
            #expect(same.out.hasPrefix("the traces agree: "))

            // Plant one divergence: a write-protected spte where the simulation made it writable.
            let target = host.lastIndex { $0.contains("kvm_mmu_set_spte:") && $0.contains("(rw") }!
            var planted = host
            planted[target] = planted[target].replacingOccurrences(of: "(rw", with: "(r-")
            try (planted.joined(separator: "\n") + "\n").write(toFile: dir + "/planted.txt", atomically: true, encoding: .utf8)
            let diff = try CLIProcess.run(["mmu-diff", "sim.txt", "planted.txt", "--context", "2"], in: dir)
            #expect(diff.status == 1)
            #expect(diff.out.contains("+ planted.txt:\(target + 1): "), "\(diff.out)")
            #expect(diff.out.contains("(r-"), "\(diff.out)")
            let agreed = host[..<target].count
            #expect(diff.out.hasPrefix("the traces agree on \(agreed) events, then part:"), "\(diff.out)")

            // One side ends early.
            try (host.prefix(10).joined(separator: "\n") + "\n").write(toFile: dir + "/short.txt", atomically: true, encoding: .utf8)
            let short = try CLIProcess.run(["mmu-diff", "sim.txt", "short.txt"], in: dir)
            #expect(short.status == 1 && short.out.contains("short.txt: (ends after 10 events)"), "\(short.out)")
            // Ignoring an event, and bad input.
            let ignoring = try CLIProcess.run(["mmu-diff", "sim.txt", "planted.txt", "--ignore", "kvm_mmu_set_spte"], in: dir)
            #expect(ignoring.status == 0, "\(ignoring.out)")
            let bad = try CLIProcess.run(["mmu-diff", "sim.txt", "missing.txt"], in: dir)
            #expect(bad.status == 2 && bad.err.contains("missing.txt: cannot open the trace"), "\(bad.err)")
            let badIgnore = try CLIProcess.run(["mmu-diff", "sim.txt", "host.txt", "--ignore", "kvm_exit"], in: dir)
            #expect(badIgnore.status == 2 && badIgnore.err.contains("not a compared event"), "\(badIgnore.err)")
        }
    }

    /// A real host's trace (traces/formats/kvmmmu.*, one ring buffer rendered by the
    /// kernel and by trace-cmd's kvm plugin) reads the same in both renderings, and a
    /// change to one of its shadow pages is found.
    @Test func realKVMTracesInBothRenderingsAgree() throws {
        let formats = Self.root + "/traces/formats/"
        try CLIProcess.withDirectory([:]) { dir in
            let same = try CLIProcess.run(["mmu-diff", formats + "kvmmmu.tracefs.txt", formats + "kvmmmu.trace-cmd.txt"], in: dir)
            #expect(same.status == 0, "\(same.out)\(same.err)")
            #expect(same.out == "the traces agree: 56 events compared\n", "\(same.out)")
            // The kernel's rendering matches ShadowSim's own notation field for field.
            let raw = try lines(formats + "kvmmmu.tracefs.txt")
            #expect(raw.contains { $0.hasSuffix("kvm_mmu_get_page: sp gen 0 gfn 4 l4 8-byte q0 wux nxe ad root 0 sync new") })
            // Plant a difference in the plugin's rendering: the level-1 table found, not made.
            var planted = try lines(formats + "kvmmmu.trace-cmd.txt")
            let i = planted.firstIndex { $0.contains("kvm_mmu_get_page:") && $0.contains("new sp gfn 7 1 ") }!
            planted[i] = planted[i].replacingOccurrences(of: "new sp gfn 7 1 ", with: "existing sp gfn 7 1 ")
            try (planted.joined(separator: "\n") + "\n").write(toFile: dir + "/planted.txt", atomically: true, encoding: .utf8)
            let diff = try CLIProcess.run(["mmu-diff", formats + "kvmmmu.tracefs.txt", "planted.txt"], in: dir)
            #expect(diff.status == 1 && diff.out.contains("+ planted.txt:\(i + 1): "), "\(diff.out)")
            #expect(diff.out.contains("created=1") && diff.out.contains("created=0"), "\(diff.out)")
        }
    }
}

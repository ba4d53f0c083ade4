import Testing
import Foundation

/// `shadowsim compare` through the CLI: the table is on stdout in each format, the
/// scenario's own output goes to stderr, and usage errors and failing runs get their
/// message and status.
@Suite struct CompareTests {
    static let script = """
        local S = shadowsim
        local vm = S.vm{ vcpus = 1 }
        local a, b = vm:space{}, vm:space{}
        for i = 0, 31 do a:map(0x400000 + i * 4096, vm:alloc_frame{}); b:map(0x400000 + i * 4096, vm:alloc_frame{}) end
        local cpu = vm.vcpu[1]
        for round = 1, 8 do
          S.expect_ok(cpu:load_cr3(round % 2 == 0 and a or b))
          for i = 0, 31 do S.expect_ok(cpu:write(0x400000 + i * 4096, round)) end
        end
        print("scenario output")
        """

    func compare(_ arguments: [String], script: String = CompareTests.script) throws -> (status: Int32, out: String, err: String) {
        var result: (status: Int32, out: String, err: String)?
        try CLIProcess.withDirectory(["s.lua": script]) { dir in result = try CLIProcess.run(["compare", "s.lua"] + arguments, in: dir) }
        return result!
    }

    @Test func csvHasARowPerCounterAndAColumnPerPolicy() throws {
        let r = try compare(["--policies", "kvm-unsync,wp-emulate,bare-metal", "--format", "csv"])
        #expect(r.status == 0)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.first == "counter,kvm-unsync,wp-emulate,bare-metal")
        let exits = try #require(lines.first { $0.hasPrefix("exits,") }).split(separator: ",").map(String.init)
        #expect(Int(exits[1])! > 0 && Int(exits[2])! > 0 && exits[3] == "0", "bare metal takes no exits: \(exits)")
        let writes = try #require(lines.first { $0.hasPrefix("writes,") }).split(separator: ",")
        #expect(Set(writes.dropFirst()).count == 1, "every policy ran the same guest operations")
        #expect(!r.out.contains("scenario output") && r.err.contains("scenario output"))
    }

    @Test func tableMarkdownAndJSONMarkTheBest() throws {
        let table = try compare(["--policies", "kvm-unsync,bare-metal"])
        #expect(table.status == 0 && table.out.contains("(* best of the row"))
        let markdown = try compare(["--policies", "kvm-unsync,bare-metal", "--format", "markdown"])
        #expect(markdown.out.hasPrefix("| counter | kvm-unsync | bare-metal |\n|---|---:|---:|"))
        #expect(markdown.out.contains("**0**"))
        let json = try compare(["--policies", "kvm-unsync,bare-metal", "--format", "json", "--seed", "7"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [String: Any])
        #expect(object["policies"] as? [String] == ["kvm-unsync", "bare-metal"])
        #expect(object["seed"] as? Int == 7)
        let rows = try #require(object["rows"] as? [[String: Any]])
        let exits = try #require(rows.first { $0["counter"] as? String == "exits" })
        #expect(exits["best"] as? [String] == ["bare-metal"])
    }

    @Test func usageErrorsAndFailingRuns() throws {
        let format = try compare(["--format", "xml"])
        #expect(format.status == 2 && format.err == "shadowsim: --format must be table, json, csv or markdown, got \"xml\"\n")
        let policy = try compare(["--policies", "kvm-unsync,nope"])
        #expect(policy.status == 2 && policy.err.hasPrefix("shadowsim: unknown policy 'nope'"))
        let failing = try compare(["--policies", "bare-metal,kvm-unsync"], script: "local S = shadowsim\nS.expect_eq(1, 2, \"one\")\n")
        #expect(failing.status == 1 && failing.err.hasPrefix("s.lua:2: one: expected 2, got 1 (under bare-metal)"))
        #expect(failing.err.contains("s.lua:2: one: expected 2, got 1 (under kvm-unsync)"), "every policy runs: \(failing.err)")
        let missing = try compare(["--policies", "kvm-unsync"], script: "")
        #expect(missing.status == 0)
        var absent: (status: Int32, out: String, err: String)?
        try CLIProcess.withDirectory([:]) { dir in absent = try CLIProcess.run(["compare", "none.lua"], in: dir) }
        #expect(absent!.status == 2 && absent!.err.hasPrefix("shadowsim: none.lua: cannot open script"))
    }

    /// A run that fails is shown, with what it had gathered, and is never best; the
    /// checker is on unless --no-check, and the output says so.
    @Test func failedRunsAreShownButNeverBest() throws {
        // Under wp-emulate the scenario stops early: lower counters than any other run.
        let script = CompareTests.script + "\nif shadowsim.default_policy == 'wp-emulate' then error('stopped early') end\n"
        let stopEarly = "local S = shadowsim\nS.vm{}\nif S.default_policy == 'wp-emulate' then error('stopped early') end\n" + CompareTests.script
        let r = try compare(["--policies", "kvm-unsync,wp-emulate,vm-list", "--format", "json"], script: stopEarly)
        #expect(r.status == 1 && r.err.contains("stopped early (under wp-emulate)"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        #expect(object["checked"] as? Bool == true)
        let runs = try #require(object["runs"] as? [[String: Any]])
        #expect(runs.map { $0["status"] as? String } == ["passed", "failed", "passed"])
        let rows = try #require(object["rows"] as? [[String: Any]])
        #expect(!rows.isEmpty)
        for row in rows { #expect(!((row["best"] as? [String]) ?? []).contains("wp-emulate"), "\(row)") }
        let writes = try #require(rows.first { $0["counter"] as? String == "writes" }?["values"] as? [String: Int])
        #expect(writes["wp-emulate"] == 0 && writes["kvm-unsync"]! > 0, "the failed run's counters are shown as gathered")
        let table = try compare(["--policies", "kvm-unsync,wp-emulate", "--no-check"], script: script)
        #expect(table.status == 1)
        let status = table.out.split(separator: "\n")[1].split(separator: " ").map(String.init)
        #expect(status == ["status", "ok", "FAILED"], "\(table.out)")
        #expect(table.out.contains("(checker off: a policy that breaks the architecture can look best)"))
        #expect(table.out.contains("wp-emulate failed: "))
    }

    /// `stale_allowed` counts accesses only a stale translation explains: a guest that
    /// rewrites a PTE and reads before invalidating gets the old page on bare metal and
    /// under kvm-unsync (the table goes unsync, nothing is flushed), but not under
    /// wp-emulate, whose emulated store flushes what the guest forgot to.
    @Test func staleAllowedShowsAMissingInvalidation() throws {
        let script = """
            local S = shadowsim
            local vm = S.vm{}
            local p = vm:space()
            local old, new = vm:alloc_frame(), vm:alloc_frame()
            p:map(0x400000, old, { accessed = true, dirty = true })
            local cpu = vm.vcpu[1]
            S.expect_ok(cpu:load_cr3(p))
            S.expect_ok(cpu:read(0x400000, 8, 3))
            p:map(0x400000, new, { accessed = true, dirty = true })
            local _, gpa = S.expect_ok(cpu:read(0x400000, 8, 3))
            S.record("stale", gpa == old)
            """
        let r = try compare(["--policies", "bare-metal,kvm-unsync,wp-emulate", "--format", "json"], script: script)
        #expect(r.status == 0, "\(r.err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let rows = try #require(object["rows"] as? [[String: Any]])
        let stale = try #require(rows.first { $0["counter"] as? String == "stale_allowed" }?["values"] as? [String: Int])
        #expect(stale == ["bare-metal": 1, "kvm-unsync": 1, "wp-emulate": 0])
        let unchecked = try compare(["--policies", "kvm-unsync", "--no-check", "--format", "csv"], script: script)
        #expect(!unchecked.out.contains("stale_allowed"), "without the checker nothing judges staleness")
    }

    /// The cycle estimate comes with its components, which add up to it.
    @Test func cyclesComeWithTheirComponents() throws {
        let r = try compare(["--policies", "kvm-unsync,tdp,bare-metal", "--format", "json"])
        #expect(r.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let rows = try #require(object["rows"] as? [[String: Any]])
        for policy in ["kvm-unsync", "tdp", "bare-metal"] {
            func value(_ row: [String: Any]) -> Int { (row["values"] as? [String: Int])?[policy] ?? -1 }
            let total = try #require(rows.first { $0["counter"] as? String == "estimated_cycles" }).map(value)!
            let parts = rows.filter { ($0["counter"] as? String)?.hasPrefix("cycles:") == true }.map(value)
            #expect(parts.count == 14 && parts.allSatisfy { $0 >= 0 }, "\(policy): every component, bare metal included")
            #expect(abs(parts.reduce(0, +) - total) <= parts.count, "\(policy): \(parts) add up to \(total)")
        }
        // Nested paging pays each EPT violation's exit once, and its 2-D walks are not
        // also counted as software walks of the guest's tables: each reads the 4 guest
        // levels and makes 20 EPT references (24 in all, as agile's nested parts count).
        func tdp(_ row: String) throws -> Int { try #require((rows.first { $0["counter"] as? String == row }?["values"] as? [String: Int])?["tdp"]) }
        #expect(try tdp("ept_violations") > 0 && tdp("guest_walk_levels") == 0 && tdp("cycles:guest_walks") == 0)
        #expect(try tdp("cycles:exits") == 2000 * tdp("exits"))
        #expect(try tdp("cycles:ept_violations") == 1000 * tdp("ept_violations"))
        #expect(try tdp("tdp_walks") > 0 && tdp("nested_walks") == tdp("tdp_walks") && tdp("shadow_walks") == 0)
        #expect(try tdp("cycles:hardware_walks") == 4 * 25 * tdp("tdp_walks"))
        #expect(try tdp("cycles:nested_walk_host_refs") == 20 * 25 * tdp("tdp_walks"))
    }
}

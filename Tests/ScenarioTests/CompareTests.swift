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
    }
}

import Testing
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// `shadowsim test`: a line per scenario and a summary, TAP, or JUnit XML that parses;
/// status 1 when a scenario fails, 2 for a bad command line.
@Suite struct TestCommandTests {
    func test(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        var result: (status: Int32, out: String, err: String)?
        try CLIProcess.withDirectory([
            "suite/a_pass.lua": "local S = shadowsim\nprint('chatter')\nS.expect_eq(1 + 1, 2)\n",
            "suite/b_fail.lua": "local S = shadowsim\nS.expect_eq(1 + 1, 3, \"sum\")\n",
            "suite/lib/helper.lua": "error('a library is not a scenario')\n",
            "every/e.lua": "-- runs under: every policy\nshadowsim.record('default', shadowsim.default_policy)\n",
        ]) { dir in result = try CLIProcess.run(["test"] + arguments, in: dir) }
        return result!
    }

    @Test func textLinesAndSummary() throws {
        let r = try test(["suite"])
        #expect(r.status == 1)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("ok    suite/a_pass.lua [kvm-unsync] ("))
        #expect(lines[1] == "FAIL  suite/b_fail.lua [kvm-unsync]: suite/b_fail.lua:2: sum: expected 3, got 2")
        #expect(lines[2] == "1 passed, 1 failed (2 scenario runs under kvm-unsync)")
        #expect(r.err.contains("chatter"), "scenario output goes to stderr")
    }

    @Test func tap() throws {
        let r = try test(["--format", "tap", "suite/a_pass.lua", "suite/b_fail.lua"])
        #expect(r.status == 1)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(Array(lines.prefix(2)) == ["TAP version 13", "1..2"])
        #expect(lines[2].hasPrefix("ok 1 - suite/a_pass.lua [kvm-unsync] # "))
        #expect(lines[3] == "not ok 2 - suite/b_fail.lua [kvm-unsync]")
        #expect(lines.contains("  message: \"suite/b_fail.lua:2: sum: expected 3, got 2\""))
    }

    @Test func junitParses() throws {
        let r = try test(["--format", "junit", "suite"])
        #expect(r.status == 1)
        let parser = XMLParser(data: Data(r.out.utf8))
        #expect(parser.parse(), "well-formed XML")
        #expect(r.out.contains("<testsuites tests=\"2\" failures=\"1\""))
        #expect(r.out.contains("<failure message=\"suite/b_fail.lua:2: sum: expected 3, got 2\">"))
    }

    @Test func passingSuiteAndUsageErrors() throws {
        #expect(try test(["suite/a_pass.lua"]).status == 0)
        let format = try test(["--format", "xml", "suite"])
        #expect(format.status == 2 && format.err == "shadowsim: --format must be text, tap or junit, got \"xml\"\n")
        let missing = try test(["nowhere"])
        #expect(missing.status == 2 && missing.err == "shadowsim: nowhere: no such file or directory\n")
        let policy = try test(["--policy", "kvm-unsync,no-such", "suite"])
        #expect(policy.status == 2 && policy.err.hasPrefix("shadowsim: unknown policy 'no-such'"))
        let steps = try test(["--max-steps", "0", "suite"])
        #expect(steps.status == 2 && steps.err == "shadowsim: --max-steps must be positive\n")
    }

    /// Without --policy an every-policy scenario runs under bare metal and each built-in
    /// policy; with --policy, under exactly the policies given, and every line says which.
    @Test func everyPolicyScenariosRunUnderTheGivenPolicies() throws {
        let all = try test(["every"])
        #expect(all.status == 0)
        let names = ["bare-metal", "kvm-unsync", "wp-emulate", "global-list", "vm-list", "xen-oos", "tdp", "pv-mmu"]
        for name in names { #expect(all.out.contains("ok    every/e.lua [\(name)] ("), "\(name): \(all.out)") }
        let given = try test(["every", "--policy", "xen-oos,wp-emulate"])
        #expect(given.status == 0)
        let lines = given.out.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("ok    every/e.lua [xen-oos] ("))
        #expect(lines[1].hasPrefix("ok    every/e.lua [wp-emulate] ("))
        #expect(lines[2] == "2 passed, 0 failed (2 scenario runs under wp-emulate, xen-oos)")
    }

    /// Budgets and parameters reach every scenario run: a hung scenario stops.
    @Test func budgetsAndParametersApply() throws {
        var r: (status: Int32, out: String, err: String)?
        try CLIProcess.withDirectory([
            "hang.lua": "while true do end\n",
            "param.lua": "shadowsim.expect_eq(shadowsim.params.n, 7)\n",
        ]) { dir in
            r = try CLIProcess.run(["test", "hang.lua", "--max-steps", "100000"], in: dir)
            #expect(r!.status == 1)
            #expect(r!.out.contains("FAIL  hang.lua [kvm-unsync]: hang.lua:1: the step budget is exhausted"), "\(r!.out)")
            r = try CLIProcess.run(["test", "hang.lua", "--timeout", "0.5"], in: dir)
            #expect(r!.status == 1 && r!.out.contains("the time budget is exhausted"))
            r = try CLIProcess.run(["test", "param.lua", "--param", "n=7"], in: dir)
            #expect(r!.status == 0, "\(r!.out)")
        }
    }
}

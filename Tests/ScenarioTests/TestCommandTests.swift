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
        ]) { dir in result = try CLIProcess.run(["test"] + arguments, in: dir) }
        return result!
    }

    @Test func textLinesAndSummary() throws {
        let r = try test(["suite"])
        #expect(r.status == 1)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("ok    suite/a_pass.lua ("))
        #expect(lines[1] == "FAIL  suite/b_fail.lua: suite/b_fail.lua:2: sum: expected 3, got 2")
        #expect(lines[2] == "1 passed, 1 failed (2 scenario runs)")
        #expect(r.err.contains("chatter"), "scenario output goes to stderr")
    }

    @Test func tap() throws {
        let r = try test(["--format", "tap", "suite/a_pass.lua", "suite/b_fail.lua"])
        #expect(r.status == 1)
        let lines = r.out.split(separator: "\n").map(String.init)
        #expect(Array(lines.prefix(2)) == ["TAP version 13", "1..2"])
        #expect(lines[2].hasPrefix("ok 1 - suite/a_pass.lua # "))
        #expect(lines[3] == "not ok 2 - suite/b_fail.lua")
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
    }
}

import Testing
import ShadowSimLua
#if canImport(Glibc)
import Glibc
#endif

/// Bad scripts end with `file:line: message`, and the report is still produced.
@Suite struct ErrorReportingTests {
    func run(_ source: String, seed: UInt64 = 0, args: [String] = []) -> ScenarioResult {
        let path = "/tmp/shadowsim-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).lua"
        let f = fopen(path, "w")!
        fputs(source, f)
        fclose(f)
        defer { unlink(path) }
        var result = ScenarioRunner.run(path: path, seed: seed, arguments: args)
        if let e = result.error {
            // Make messages independent of the temporary path.
            result.error = .init(message: e.message.replacingAll(path, with: "s.lua"), traceback: e.traceback)
        }
        return result
    }

    @Test(arguments: [
        ("local vm = shadowsim.vm{ mode = 'long3' }",
         "s.lua:1: bad argument #1 to 'vm' (option 'mode' must be one of \"legacy32\", \"pae\", \"long4\", \"long5\", got \"long3\")"),
        ("local vm = shadowsim.vm{ vcpu = 2 }",
         "s.lua:1: bad argument #1 to 'vm' (unknown option 'vcpu'; expected one of: mode, vcpus, memory, maxphyaddr, wp, pse, pge, smep, smap, nxe, tlb_entries, name, policy, shadow_pages, prefetch, host_pages, vcpus_running, prev_roots, costs, check, inject_bug, boot)"),
        ("local vm = shadowsim.vm{}\n\nvm.vcpu[1]:read('x')",
         "s.lua:3: bad argument #1 to 'read' (integer expected, got string)"),
        ("local vm = shadowsim.vm{}\nvm.vcpu[1]:read(0, 3)",
         "s.lua:2: bad argument #2 to 'read' (size must be 1, 2, 4 or 8, got 3)"),
        ("local vm = shadowsim.vm{}\nvm.vcpu[1].read(0)",
         "s.lua:2: calling 'read' on a bad self (shadowsim.VCPU expected, got number); use ':' to call methods"),
        ("local vm = shadowsim.vm{ mode = 'legacy32' }\nvm.vcpu[1]:read(0x100000000)",
         "s.lua:2: linear address 0x100000000 does not fit the 32 bits of legacy32 paging"),
        ("local vm = shadowsim.vm{ memory = '16M' }\nvm:read_phys(16 << 20)",
         "s.lua:2: physical access at guest-physical 0x1000000 is beyond guest memory (0x1000000 bytes)"),
        ("shadowsim.expect_eq(1 + 1, 3, 'sum')", "s.lua:1: sum: expected 3, got 2"),
        ("local x = nil\nx.y = 1", "s.lua:2: attempt to index a nil value (local 'x')"),
        ("local vm = shadowsim.vm{}\nlocal s = vm:space()\nshadowsim.expect_ok(vm.vcpu[1]:load_cr3(s))\nshadowsim.expect_ok(vm.vcpu[1]:read(0x1000))",
         "s.lua:4: expected success, got #PF(NP) at 0x1000, error code 0x0"),
    ])
    func badScriptsReportFileAndLine(_ source: String, _ expected: String) {
        let result = run(source)
        #expect(result.error?.message == expected)
        #expect(!result.passed)
    }

    @Test func reportSurvivesFailureAndCountsWork() {
        let result = run("local vm = shadowsim.vm{ name = 'a' }\nvm.vcpu[1]:read(0xFFFF888000001000)\nerror('boom')")
        #expect(result.error?.message == "s.lua:3: boom")
        let text = result.report.serialized()
        #expect(text.contains("\"status\": \"failed\""))
        #expect(text.contains("\"name\": \"a\""))
        #expect(text.contains("\"reads\": 1"))
    }

    @Test func sameSeedSameNumbers() {
        let script = "local t = {} for i = 1, 20 do t[i] = shadowsim.random(1, 1000) .. ':' .. math.random(1, 1000) end shadowsim.record('draws', t)"
        func draws(_ seed: UInt64) -> String {
            let text = run(script, seed: seed).report.serialized()
            return String(text[text.firstRange(of: "\"records\"")!.lowerBound...])
        }
        #expect(draws(42) == draws(42))
        #expect(draws(42) != draws(43))
        #expect(draws(42).contains("\"draws\": ["))
    }

    @Test func scriptArgumentsReachLua() {
        let result = run("shadowsim.expect_eq(#shadowsim.args, 2) shadowsim.expect_eq(shadowsim.args[2], 'b')", args: ["a", "b"])
        #expect(result.passed, "\(result.error?.message ?? "")")
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound] + replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

/// Same script, seed and policy: the same counters and records, bit for bit.
@Suite struct DeterminismTests {
    @Test(arguments: ["kvm-unsync", "global-list", "xen-oos"])
    func identicalRunsGiveIdenticalReports(_ policy: String) {
        let path = ScenarioSuiteTests.repositoryRoot + "/scripts/policy_equivalence.lua"
        let a = ScenarioRunner.run(path: path, seed: 7, arguments: ["ops=400"], policy: policy, check: true)
        let b = ScenarioRunner.run(path: path, seed: 7, arguments: ["ops=400"], policy: policy, check: true)
        let c = ScenarioRunner.run(path: path, seed: 8, arguments: ["ops=400"], policy: policy, check: true)
        #expect(a.passed && b.passed && c.passed)
        #expect(a.report.serialized() == b.report.serialized())
        #expect(a.report.serialized() != c.report.serialized(), "another seed, another run")
    }
}

import Testing
import Foundation

/// `shadowsim sweep` and `merge` through the CLI: the cross product in run order, the
/// same bytes whatever the parallelism, shards that merge back into the whole sweep,
/// and parameters reaching Lua as `shadowsim.params`.
@Suite struct SweepTests {
    static let script = """
        local S = shadowsim
        local vm = S.vm{}
        local p = vm:space{}
        local pages = S.params.pages or 4
        for i = 0, pages - 1 do p:map(0x400000 + i * 4096, vm:alloc_frame{}) end
        local cpu = vm.vcpu[1]
        S.expect_ok(cpu:load_cr3(p))
        for round = 1, S.params.rounds or 1 do
          for i = 0, pages - 1 do S.expect_ok(cpu:write(0x400000 + i * 4096, round)) end
          S.expect_ok(cpu:load_cr3(p))
        end
        S.record("label", S.params.label or "none")
        S.expect(S.params.fail ~= 1, "asked to fail")
        """

    func shadowsim(_ arguments: [String], in dir: String) throws -> (status: Int32, out: String, err: String) {
        try CLIProcess.run(arguments, in: dir)
    }

    func withDirectory(_ body: (String) throws -> Void) throws {
        try CLIProcess.withDirectory(["s.lua": SweepTests.script], body)
    }

    @Test func sameBytesWhateverTheParallelismAndShardsMergeBack() throws {
        try withDirectory { dir in
            let sweep = ["sweep", "s.lua", "--param", "pages=2,8", "--param", "rounds=1,3", "--policies", "kvm-unsync,vm-list,bare-metal", "--seed", "5"]
            let one = try shadowsim(sweep + ["--jobs", "1", "-o", "one.jsonl"], in: dir)
            let four = try shadowsim(sweep + ["--jobs", "4", "-o", "four.jsonl"], in: dir)
            #expect(one.status == 0 && four.status == 0)
            let a = try String(contentsOfFile: dir + "/one.jsonl", encoding: .utf8)
            let b = try String(contentsOfFile: dir + "/four.jsonl", encoding: .utf8)
            #expect(a == b, "the same records in the same order")
            let lines = a.split(separator: "\n")
            #expect(lines.count == 12)
            let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
            #expect(first["run"] as? Int == 0 && first["of"] as? Int == 12 && first["policy"] as? String == "kvm-unsync")
            #expect(first["params"] as? [String: Int] == ["pages": 2, "rounds": 1])
            #expect(first["seed"] as? Int == 5 && (first["tool"] as? String)?.hasPrefix("shadowsim ") == true)
            // Each page costs a PTE store (the mapping) and a store per round: the counters follow the parameters.
            let writes = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .filter { $0["policy"] as? String == "kvm-unsync" && ($0["params"] as? [String: Int])?["rounds"] == 1 }
                .compactMap { ($0["counters"] as? [String: Int])?["writes"] }
            #expect(writes.count == 2 && writes[1] - writes[0] == 12, "pages 2 vs 8, one round: \(writes)")
            for i in 1...3 { _ = try shadowsim(sweep + ["--shard", "\(i)/3", "-o", "s\(i).jsonl"], in: dir) }
            let merged = try shadowsim(["merge", "s3.jsonl", "s1.jsonl", "s2.jsonl"], in: dir)
            #expect(merged.status == 0 && merged.out == a)
            let partial = try shadowsim(["merge", "s1.jsonl", "s2.jsonl"], in: dir)
            #expect(partial.status == 1 && partial.err.contains("missing runs: 2, 5, 8, 11"))
            #expect(!partial.err.contains("repeated"), "nothing is repeated: \(partial.err)")
            let repeated = try shadowsim(["merge", "s1.jsonl", "s1.jsonl", "s2.jsonl", "s3.jsonl"], in: dir)
            #expect(repeated.status == 1 && repeated.err.contains("repeated runs: 0, 3, 6, 9") && !repeated.err.contains("missing"))
            // Progress lines number runs as the records do.
            #expect(one.err.contains("run 0 (1/12 done): kvm-unsync pages=2 rounds=1 ok"), "\(one.err)")
            #expect(first["checked"] as? Bool == true, "sweeps run with the checker by default")
        }
    }

    @Test func failedRunsAreRecordedAndParamsReachLua() throws {
        try withDirectory { dir in
            let r = try shadowsim(["sweep", "s.lua", "--param", "fail=0,1", "--param", "label=x", "--policies", "kvm-unsync"], in: dir)
            #expect(r.status == 1)
            let lines = r.out.split(separator: "\n")
            let failed = try #require(try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
            #expect((failed["error"] as? String)?.hasPrefix("s.lua:13: asked to fail") == true)
            let run = try shadowsim(["run", "s.lua", "--param", "label=hello", "--param", "pages=3", "--json", "r.json"], in: dir)
            #expect(run.status == 0)
            let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/r.json"))) as? [String: Any])
            #expect((report["records"] as? [String: Any])?["label"] as? String == "hello")
            let params = try #require(report["params"] as? [String: Any])
            #expect(params["label"] as? String == "hello" && params["pages"] as? Int == 3)
            let bad = try shadowsim(["run", "s.lua", "--param", "9x=1"], in: dir)
            #expect(bad.status == 2 && bad.err == "shadowsim: --param takes NAME=VALUE with a Lua identifier as NAME, got \"9x=1\"\n")
            let shard = try shadowsim(["sweep", "s.lua", "--shard", "4/3"], in: dir)
            #expect(shard.status == 2 && shard.err == "shadowsim: --shard takes i/n with 1 ≤ i ≤ n, got \"4/3\"\n")
        }
    }
}

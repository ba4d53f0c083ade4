import Foundation
import Testing
import ShadowSimLua
import ShadowSimKVM
import ShadowMMU

/// `shadowsim run --backend kvm`: the scenario's guest operations recorded from the
/// simulator and run again on the host's /dev/kvm, both sides' counters compared per
/// `shadowsim.mark` phase. The tests that need /dev/kvm are skipped where it is absent.
@Suite struct KVMBackendTests {
    static let root = ScenarioSuiteTests.repositoryRoot
    /// The scenarios that must agree with the real KVM phase by phase, counter by counter.
    static let agreeing = ["scripts/kvm/unsync_and_sync.lua", "scripts/kvm/two_vcpus.lua", "scripts/kvm/string_stores.lua",
                           "scripts/kvm/recycling.lua",
                           "scripts/kvm/linux_processes.lua", "examples/quickstart.lua"]

    /// Why the host's KVM cannot be used here, or nil when it can.
    static let unavailable: String? = {
        do { _ = try KVMHost.probe(); return nil } catch { return "\(error)" }
    }()
    static var available: Bool { unavailable == nil }

    /// Runs `script` on both backends: the simulator's result and the comparison.
    func sideBySide(_ script: String, policy: String = "kvm-unsync", bug: String? = nil,
                    parameters: [(String, String)] = []) throws -> (ScenarioResult, KVMComparison) {
        let side = KVMSideBySide(host: try KVMHost.probe())
        let result = ScenarioRunner.run(path: Self.root + "/" + script, parameters: parameters, policy: policy,
                                        plantedBug: bug.map { PlantedBug(rawValue: $0)! }, prepare: side.prepare)
        #expect(result.error == nil, "\(script): \(result.error?.message ?? "")")
        return (result, try side.runOnKVM())
    }

    @Test(.enabled(if: KVMBackendTests.available, "needs the host's /dev/kvm (\(KVMBackendTests.unavailable ?? ""))"),
          arguments: KVMBackendTests.agreeing)
    func everyComparedCounterAgreesInEveryPhase(_ script: String) throws {
        let (_, comparison) = try sideBySide(script)
        #expect(comparison.agrees, "\(script):\n\(comparison.table())")
        #expect(comparison.operations > 0)
        #expect(comparison.phases.count >= 2 || script.hasPrefix("examples/"), "the scenario marks its phases")
        // The phases really moved the counters both sides count.
        let moved = comparison.phases.flatMap(\.rows).filter { $0.compared && $0.kvm != 0 }
        #expect(!moved.isEmpty)
    }

    /// Seeded random operation lists (accesses, page-table stores, INVLPG, MOV CR3 among
    /// three spaces; one or two vCPUs) agree with the real KVM phase by phase.
    @Test(.enabled(if: KVMBackendTests.available, "needs the host's /dev/kvm"), arguments: 1...6)
    func randomOperationListsAgree(_ seed: Int) throws {
        let (_, comparison) = try sideBySide("scripts/kvm/random_ops.lua",
                                             parameters: [("seed", "\(seed)"), ("vcpus", "\(seed % 2 + 1)"), ("ops", "600")])
        #expect(comparison.agrees, "seed \(seed):\n\(comparison.table())")
        #expect(comparison.operations >= 600)
    }

    /// The comparison can fail: a planted bug, or a policy that is not KVM's, makes the
    /// simulator count what the real KVM does not.
    @Test(.enabled(if: KVMBackendTests.available, "needs the host's /dev/kvm"))
    func aPlantedBugOrAnotherPolicyIsCaughtByTheRealKVM() throws {
        let (_, bugged) = try sideBySide("scripts/kvm/unsync_and_sync.lua", bug: "miscount-unsync")
        #expect(!bugged.agrees)
        let first = try #require(bugged.phases.first { !$0.agrees })
        #expect(first.label == "store unsyncs the leaf table")
        #expect(first.rows.contains { $0.name == "mmu_unsync" && $0.sim != $0.kvm }, "\(bugged.table())")
        let op = try #require(first.firstDifference, "the first operation that differs is named")
        #expect(op.summary.hasPrefix("mmu_unsync "), "\(op.summary)")
        let (_, emulating) = try sideBySide("scripts/kvm/unsync_and_sync.lua", policy: "wp-emulate")
        #expect(emulating.phases.contains { p in p.rows.contains { $0.name == "mmu_unsync" && $0.sim != $0.kvm } })
    }

    /// The CLI prints both columns per phase and records both in --json.
    @Test(.enabled(if: KVMBackendTests.available, "needs the host's /dev/kvm"))
    func runPrintsBothColumnsAndRecordsThem() throws {
        try CLIProcess.withDirectory([:]) { dir in
            let r = try CLIProcess.run(["run", Self.root + "/examples/quickstart.lua", "--backend", "kvm", "--json", "r.json",
                                        "--expect-agreement"], in: dir)
            #expect(r.status == 0, "\(r.err)")
            #expect(r.out.contains("host: "))
            #expect(r.out.contains("counter                         simulator          kvm"))
            #expect(r.out.contains("every compared counter agrees in every phase"))
            let json = try String(contentsOfFile: dir + "/r.json", encoding: .utf8)
            #expect(json.contains("\"kvm\": {") && json.contains("\"agrees\": true") && json.contains("\"pf_taken\""))
            // A disagreement is an exit status with --expect-agreement.
            let bad = try CLIProcess.run(["run", Self.root + "/scripts/kvm/unsync_and_sync.lua", "--backend", "kvm",
                                          "--policy", "wp-emulate", "--expect-agreement"], in: dir)
            #expect(bad.status == 1)
            #expect(bad.out.contains("≠"))
        }
    }

    /// What the backend cannot run is refused with the reason, never half-run.
    @Test(.enabled(if: KVMBackendTests.available, "needs the host's /dev/kvm"))
    func outOfScopeScenariosAreRefusedWithTheReason() throws {
        try CLIProcess.withDirectory([
            "five.lua": "shadowsim.vm{ mode = 'long5' }\n",
            "two.lua": "shadowsim.vm{}\nshadowsim.vm{}\n",
            "smep.lua": "shadowsim.vm{ smep = true }\n",
        ]) { dir in
            for (script, reason) in [("five.lua", "runs long4 guests"), ("two.lua", "runs one VM"), ("smep.lua", "without SMEP")] {
                let r = try CLIProcess.run(["run", script, "--backend", "kvm"], in: dir)
                #expect(r.status == 1, "\(script)")
                #expect(r.err.contains(reason), "\(script): \(r.err)")
                #expect(r.err.contains("\(script):"), "file:line first: \(r.err)")
            }
            let bad = try CLIProcess.run(["run", "five.lua", "--backend", "qemu"], in: dir)
            #expect(bad.status == 2)
        }
    }

    /// The recording itself needs no KVM: the operations and what each did.
    @Test func theRecorderSeesEveryGuestOperationWithItsOutcome() throws {
        try CLIProcess.withDirectory(["s.lua": """
            local S = shadowsim
            local vm = S.vm{ memory = "16M" }
            local cpu = vm.vcpu[1]
            local A = vm:space()
            local f = vm:alloc_frame()
            A:map(0x400000, f, { write = false })
            cpu:set{ cpl = 0 }; cpu:load_cr3(A); cpu:set{ cpl = 3 }
            S.mark("accesses")
            cpu:read(0x400000)
            cpu:write(0x400000, 1)
            cpu:invlpg(0x400000)
            """]) { dir in
            let host = KVMHost(pcid: false, invpcid: false, smep: false, smap: false, gbpages: false, mmu: "test", zapsUnsyncChildren: true)
            let side = KVMSideBySide(host: host)
            let result = ScenarioRunner.run(path: dir + "/s.lua", prepare: side.prepare)
            #expect(result.error == nil, "\(result.error?.message ?? "")")
            let ops = side.recordedOperations.filter { $0.operation.vcpu != nil || $0.operation.isMark }
            let text = ops.map { "\($0.operation.description) -> \($0.outcome?.summary ?? "?")" }
            let afterMark = Array(text.drop { !$0.hasPrefix("mark") })
            #expect(afterMark == [
                "mark \"accesses\" -> ?",
                "vcpu 1: read 0x400000 (8 bytes, CPL 3) -> ok, read 0x0",
                "vcpu 1: write 0x400000 = 0x1 (8 bytes, CPL 3) -> #PF error code 0x7 at 0x400000",
                "vcpu 1: INVLPG 0x400000 (CPL 3) -> #GP",
            ], "\(text)")
            // Page-table stores are CPL 3 stores through the user-mode physmap.
            #expect(text.contains { $0.contains("write 0x40000") && $0.contains("CPL 3") && $0.hasSuffix("ok") })
        }
    }
}

import Testing
import Foundation
import ShadowMMU
import ShadowSimFuzzKit
import ShadowSimFiles

/// The fuzz corpus (Tests/FuzzCorpus: coverage-merged seeds and every input that once
/// found a bug) runs clean under every policy; with a bug planted, the same inputs find
/// it.
@Suite struct FuzzCorpusTests {
    static let corpus: [(name: String, bytes: [UInt8])] = {
        let dir = ScenarioSuiteTests.repositoryRoot + "/Tests/FuzzCorpus"
        return (Files.names(in: dir) ?? []).compactMap { name in Files.read(dir + "/" + name).map { (name, $0) } }
    }()

    @Test func corpusIsThere() {
        #expect(FuzzCorpusTests.corpus.count >= 4)
    }

    @Test(arguments: FuzzCorpusTests.corpus.map(\.name))
    func corpusInputRunsClean(_ name: String) throws {
        let bytes = FuzzCorpusTests.corpus.first { $0.name == name }!.bytes
        let outcome = try FuzzProgram(bytes).run()
        #expect(outcome.operations > 0)
        #expect(outcome.checkedAccesses > 0)
    }

    /// Every bug `shadowsim bugs` lists is found by some corpus input, under the policy
    /// the bug was modelled on.
    @Test(arguments: PlantedBug.allCases)
    func aPlantedBugIsFound(_ bug: PlantedBug) {
        let found = FuzzCorpusTests.corpus.contains { input in
            (try? FuzzProgram(input.bytes, plantedBug: bug).run(policies: [bug.policy])) == nil
        }
        #expect(found, "no corpus input finds \(bug.rawValue)")
    }

    /// The corpus exercises the sync machinery, not just accesses: tables go unsync and
    /// are synced, INVLPG resyncs entries, syncs drop entries, pages are recycled and
    /// flooded, remote flushes are asked for (floors well below what it does today).
    @Test func corpusExercisesSynchronisation() throws {
        var kvm = SyncCoverage(), xen = SyncCoverage()
        for input in FuzzCorpusTests.corpus {
            let outcome = try FuzzProgram(input.bytes).run(policies: ["kvm-unsync", "xen-oos"])
            kvm += outcome.coverage["kvm-unsync"]!
            xen += outcome.coverage["xen-oos"]!
        }
        let floors: [(String, UInt64, UInt64)] = [("unsync_events", 300, kvm.unsyncEvents), ("pages_synced", 150, kvm.pagesSynced),
                                                  ("invlpg_resyncs", 40, kvm.invlpgResyncs), ("sync_sptes_dropped", 80, kvm.syncSPTEsDropped),
                                                  ("recycled", 2000, kvm.recycled), ("flood_zaps", 40, kvm.floodZaps),
                                                  ("remote_flush_requests", 2000, kvm.remoteFlushRequests),
                                                  ("xen-oos pages_synced", 300, xen.pagesSynced)]
        for (name, floor, value) in floors { #expect(value >= floor, "\(name): \(value) < \(floor)") }
    }
}

/// The replay tool prints the sync coverage per policy and holds it to the floors of
/// SHADOWSIM_FUZZ_FLOORS, as the CI fuzz pass does (a floor missed, or a floors file
/// that does not parse, is exit status 1 with the line named).
@Suite struct FuzzFloorTests {
    static let tool = (BadInputTests.executable as NSString).deletingLastPathComponent + "/shadowsim-fuzz"

    func replay(floors: String) throws -> (status: Int32, out: String, err: String) {
        var r: (status: Int32, out: String, err: String)?
        let input = ScenarioSuiteTests.repositoryRoot + "/Tests/FuzzCorpus/xen-oos-resync-self-map"
        try CLIProcess.withDirectory(["floors.txt": floors]) { dir in
            setenv("SHADOWSIM_FUZZ_FLOORS", dir + "/floors.txt", 1)
            defer { unsetenv("SHADOWSIM_FUZZ_FLOORS") }
            r = try CLIProcess.run(["--policy", "kvm-unsync", input], in: dir, executable: Self.tool)
        }
        return r!
    }

    @Test func coverageIsPrintedAndHeldToItsFloors() throws {
        let met = try replay(floors: "# comment\nkvm-unsync unsync_events 1\n\nkvm-unsync recycled 1 # inline\n")
        #expect(met.status == 0, "\(met.err)")
        #expect(met.out.contains("sync coverage unsync_events pages_synced invlpg_resyncs"))
        let missed = try replay(floors: "kvm-unsync unsync_events 1\nkvm-unsync invlpg_resyncs 1000000\n")
        #expect(missed.status == 1)
        #expect(missed.err.contains("coverage floor missed: kvm-unsync invlpg_resyncs = "), "\(missed.err)")
        #expect(missed.err.contains("the floor is 1000000 ("), "\(missed.err)")
        let bad = try replay(floors: "kvm-unsync unsync_events\n")
        #expect(bad.status == 1 && bad.err.contains("floors.txt:1: expected `POLICY COUNTER MINIMUM`"), "\(bad.err)")
    }
}

/// `--generate N --seed S` runs the same inputs on every run (the CI pass depends on
/// it), and a finding saves the generated input, which then replays to the same finding.
@Suite struct GeneratedInputTests {
    @Test func generatedInputsAreTheSameEveryRun() throws {
        try CLIProcess.withDirectory([:]) { dir in
            let args = ["--policy", "kvm-unsync", "--generate", "3", "--seed", "7"]
            let first = try CLIProcess.run(args, in: dir, executable: FuzzFloorTests.tool)
            let second = try CLIProcess.run(args, in: dir, executable: FuzzFloorTests.tool)
            #expect(first.status == 0, "\(first.err)")
            #expect(first.out.contains("shadowsim-fuzz: 3 inputs, "), "\(first.out)")
            #expect(first.out == second.out)
            let other = try CLIProcess.run(["--policy", "kvm-unsync", "--generate", "3", "--seed", "8"], in: dir,
                                           executable: FuzzFloorTests.tool)
            #expect(other.out != first.out)
        }
    }

    @Test func aFindingSavesTheGeneratedInput() throws {
        try CLIProcess.withDirectory([:]) { dir in
            let found = try CLIProcess.run(["--inject-bug", "forget-mark-parents-unsync", "--generate", "20"], in: dir,
                                           executable: FuzzFloorTests.tool)
            #expect(found.status != 0)
            #expect(found.err.contains("finding in input 0 of seed 1 (saved as .build-fuzz/findings/generated-1-0)"), "\(found.err)")
            let saved = dir + "/.build-fuzz/findings/generated-1-0"
            #expect(FileManager.default.fileExists(atPath: saved))
            let again = try CLIProcess.run(["--inject-bug", "forget-mark-parents-unsync", saved], in: dir,
                                           executable: FuzzFloorTests.tool)
            #expect(again.status != 0 && again.err.contains("finding in \(saved)"), "\(again.err)")
        }
    }
}

/// The vCPUs' fast path (taken when no checker watches) gives exactly the results of
/// the checked slow path: every operation's outcome, address and value, for corpus
/// inputs under every policy.
@Suite struct FastPathEquivalenceTests {
    @Test(arguments: FuzzCorpusTests.corpus.map(\.name))
    func fastPathChangesNoResult(_ name: String) throws {
        let bytes = FuzzCorpusTests.corpus.first { $0.name == name }!.bytes
        for policy in FuzzProgram.policies {
            var checked: [String] = [], unchecked: [String] = []
            _ = try FuzzProgram(bytes).run(policies: [policy]) { checked.append($0) }
            _ = try FuzzProgram(bytes, checked: false).run(policies: [policy]) { unchecked.append($0) }
            let firstDifference = zip(checked, unchecked).first { $0 != $1 }
            #expect(checked == unchecked, "\(policy): \(firstDifference.map { "\($0) vs \($1)" } ?? "lengths differ")")
        }
    }
}

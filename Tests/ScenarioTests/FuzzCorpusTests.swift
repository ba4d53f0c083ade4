import Testing
import ShadowMMU
import ShadowSimFuzzKit
import ShadowSimFiles

/// The fuzz corpus (Tests/FuzzCorpus: seeds and every input that once found a bug) runs
/// clean under every policy; with a bug planted, the same inputs find it.
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

    @Test(arguments: [PlantedBug.emulatedWriteKeepsSPTE, .writableSPTEToNewTable, .zapKeepsUnsync, .skipRemoteFlushAfterWriteProtect])
    func aPlantedBugIsFound(_ bug: PlantedBug) {
        let found = FuzzCorpusTests.corpus.contains { input in
            (try? FuzzProgram(input.bytes, plantedBug: bug).run(policies: ["kvm-unsync"])) == nil
        }
        #expect(found, "no corpus input finds \(bug.rawValue)")
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

import Testing
import ShadowSimLua
import ShadowMMU

/// Every planted bug is caught by the checker (a violation report, not a scenario's own
/// expectation) on the scenario suite, and the catch table is printed.
@Suite struct PlantedBugTests {
    /// Scenarios that walk the sync paths, tried in order until one catches the bug.
    static let suite: [(String, [String])] = [
        ("scripts/sync_paths.lua", []),
        ("scripts/policy_equivalence.lua", ["ops=600"]),
        ("scripts/policy_global_list.lua", []),
        ("scripts/policy_kvm_unsync.lua", []),
        ("examples/quickstart.lua", []),
        ("scripts/suite_rights_unsync.lua", []),
        ("scripts/suite_frame_reuse.lua", []),
        ("scripts/suite_large_pages.lua", []),
        ("scripts/policy_pv_mmu.lua", []),
        ("scripts/policy_agile.lua", []),
    ]

    static func caughtByChecker(_ result: ScenarioResult) -> Bool {
        guard let message = result.error?.message else { return false }
        return message.contains("architectural violation") || message.contains("shadow MMU invariant broken")
    }

    @Test func everyPlantedBugIsCaughtByTheChecker() {
        var rows: [(PlantedBug, String)] = []
        for bug in PlantedBug.allCases {
            var caughtBy = ""
            for (path, args) in Self.suite {
                let result = ScenarioRunner.run(path: ScenarioSuiteTests.repositoryRoot + "/" + path, seed: 1,
                                                arguments: args, policy: bug.policy, check: true, plantedBug: bug)
                if Self.caughtByChecker(result) {
                    let line = result.error!.message.split(separator: "\n").first.map(String.init) ?? ""
                    caughtBy = path + " — " + (line.contains("invariant") ? "invariant" : "access check")
                    break
                }
            }
            rows.append((bug, caughtBy))
            #expect(!caughtBy.isEmpty, "planted bug \(bug.rawValue) (\(bug.summary)) was not caught")
        }
        let width = rows.map(\.0.rawValue.count).max() ?? 0
        print("planted bug" + String(repeating: " ", count: width - 9) + "caught by")
        for (bug, by) in rows {
            print(bug.rawValue + String(repeating: " ", count: width - bug.rawValue.count + 2) + (by.isEmpty ? "NOT CAUGHT" : by))
        }
    }
}

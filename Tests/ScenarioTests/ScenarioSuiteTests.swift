import Testing
import ShadowSimLua
import ShadowSimFiles
#if canImport(Glibc)
import Glibc
#endif

/// Every scenario in scripts/ and examples/ runs as a test and must pass; a failed
/// expectation in a script fails the test with the script's `file:line: message`.
@Suite struct ScenarioSuiteTests {
    static let repositoryRoot: String = {
        // Tests/ScenarioTests/ScenarioSuiteTests.swift → repository root.
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()

    static func luaFiles(in folder: String) -> [String] {
        (Files.names(in: repositoryRoot + "/" + folder) { $0.hasSuffix(".lua") } ?? []).map { folder + "/" + $0 }
    }

    static let scenarios = luaFiles(in: "scripts") + luaFiles(in: "scripts/kvm") + luaFiles(in: "examples")

    /// The policies of the built-in catalogue (kept in step with PolicyCatalog by
    /// `everyPolicyIsCovered`).
    static let policies = ["kvm-unsync", "wp-emulate", "global-list", "vm-list", "xen-oos", "tdp", "pv-mmu"]

    /// Scenarios whose first line says `-- runs under: every policy`, paired with each policy;
    /// the others run once under the default policy (or the one they pin).
    static let runs: [(String, String)] = scenarios.flatMap { path -> [(String, String)] in
        runsUnderEveryPolicy(path) ? policies.map { (path, $0) } : [(path, "kvm-unsync")]
    }

    static func runsUnderEveryPolicy(_ path: String) -> Bool {
        guard let f = fopen(repositoryRoot + "/" + path, "r") else { return false }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        guard fgets(&line, 256, f) != nil else { return false }
        let bytes = line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).hasPrefix("-- runs under: every policy")
    }

    @Test func suiteIsNotEmpty() {
        #expect(Self.scenarios.count >= 3, "scenarios found: \(Self.scenarios)")
        #expect(Self.runs.count > Self.scenarios.count, "some scenario runs under every policy")
    }

    @Test(arguments: runs)
    func scenarioPasses(_ path: String, _ policy: String) {
        let result = ScenarioRunner.run(path: Self.repositoryRoot + "/" + path, seed: 1, policy: policy, check: true)
        if let error = result.error {
            Issue.record("[\(policy)] \(error.message)\n\(error.traceback)")
        }
    }
}

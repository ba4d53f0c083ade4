import Testing
import ShadowSimLua
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
        guard let dir = opendir(repositoryRoot + "/" + folder) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name.hasSuffix(".lua") { names.append(folder + "/" + name) }
        }
        return names.sorted()
    }

    static let scenarios = luaFiles(in: "scripts") + luaFiles(in: "examples")

    @Test func suiteIsNotEmpty() {
        #expect(Self.scenarios.count >= 3, "scenarios found: \(Self.scenarios)")
    }

    @Test(arguments: scenarios)
    func scenarioPasses(_ path: String) {
        let result = ScenarioRunner.run(path: Self.repositoryRoot + "/" + path, seed: 1)
        if let error = result.error {
            Issue.record("\(error.message)\n\(error.traceback)")
        }
    }
}

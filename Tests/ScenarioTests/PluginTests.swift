import Testing
import Foundation
import ShadowSimLua
import ShadowSimPolicies
import ShadowSimCLI
import ArgumentParser
import ShadowMMU

/// Policies from .so files: the out-of-tree example builds and runs, and every kind of
/// bad plugin is refused with a message that says what is wrong.
@Suite(.serialized) struct PluginTests {
    static let root = ScenarioSuiteTests.repositoryRoot
    static let work = NSTemporaryDirectory() + "shadowsim-plugin-tests-\(getpid())"

    /// Runs a command, returning its exit status and combined output.
    @discardableResult
    static func run(_ arguments: [String], in directory: String = root) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// A C shared object with the given source, for the refusal cases.
    static func cPlugin(_ name: String, _ source: String) throws -> String {
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let c = work + "/\(name).c", so = work + "/lib\(name).so"
        try source.write(toFile: c, atomically: true, encoding: .utf8)
        let (status, output) = try run(["cc", "-shared", "-fPIC", "-o", so, c])
        #expect(status == 0, "cc failed: \(output)")
        return so
    }

    @Test func outOfTreePolicyBuildsLoadsAndRuns() throws {
        let package = Self.root + "/examples/policy-plugin"
        let (status, output) = try Self.run(["swift", "build", "--disable-build-manifest-caching", "--package-path", package])
        try #require(status == 0, "building examples/policy-plugin failed:\n\(output)")
        let so = package + "/.build/debug/libFlushOnReuse.so"
        let factory = try PolicyCatalog.factory(so)
        #expect(factory.name == "kvm-flush-on-reuse")
        #expect(factory.origin == so)
        // The equivalence scenario passes under the plugin: results match bare metal.
        let result = ScenarioRunner.run(path: Self.root + "/scripts/policy_equivalence.lua", seed: 3,
                                        arguments: ["ops=400"], policy: so)
        #expect(result.passed, "\(result.error?.message ?? "")")
        #expect(result.report.serialized().contains("\"policy\": \"kvm-flush-on-reuse\""))
    }

    /// Validating a plugin: `shadowsim test --policy X.so` runs every every-policy
    /// scenario under the plugin and names it on each line; the good example passes, the
    /// one that neither syncs nor flushes on a flushing CR3 load fails under the checker.
    @Test func testCommandValidatesAPluginUnderEveryPolicyScenario() throws {
        let package = Self.root + "/examples/policy-plugin"
        let (status, output) = try Self.run(["swift", "build", "--disable-build-manifest-caching", "--package-path", package])
        try #require(status == 0, "building examples/policy-plugin failed:\n\(output)")
        let scenarios = ["scripts/policy_equivalence.lua", "scripts/sync_paths.lua", "scripts/suite_task_switch.lua"]
        let good = try CLIProcess.run(["test"] + scenarios + ["--policy", package + "/.build/debug/libFlushOnReuse.so"], in: Self.root)
        #expect(good.status == 0, "\(good.out)")
        #expect(good.out.contains("ok    scripts/policy_equivalence.lua [kvm-flush-on-reuse] ("), "\(good.out)")
        #expect(good.out.contains("3 passed, 0 failed (3 scenario runs under kvm-flush-on-reuse)"), "\(good.out)")
        let broken = try CLIProcess.run(["test"] + scenarios + ["--policy", package + "/.build/debug/libNoSyncOnFlush.so"], in: Self.root)
        #expect(broken.status == 1, "\(broken.out)")
        #expect(broken.out.contains("FAIL  scripts/policy_equivalence.lua [no-sync-on-flush]: "), "\(broken.out)")
        #expect(broken.out.contains("architectural violation"), "caught by the checker: \(broken.out)")
        // compare heads a plugin's column with its policy's name; when a built-in and its
        // .so would share one, the argument tells them apart.
        let builtinSO = (BadInputTests.executable as NSString).deletingLastPathComponent + "/libKVMUnsyncPolicy.so"
        let so = package + "/.build/debug/libFlushOnReuse.so"
        let table = try CLIProcess.run(["compare", "examples/quickstart.lua", "--policies", "kvm-unsync,\(builtinSO),\(so)",
                                        "--format", "csv"], in: Self.root)
        #expect(table.status == 0, "\(table.err)")
        #expect(table.out.hasPrefix("counter,kvm-unsync,kvm-unsync (\(builtinSO)),kvm-flush-on-reuse\n"), "\(table.out.prefix(200))")
    }

    /// examples/embedding: a separate package that embeds the core library, plugs in two
    /// policies of its own, drives a guest from Swift with the checker on and prints
    /// the counters. It builds, runs, and its policies differ as they should.
    @Test func embeddingExampleBuildsAndRuns() throws {
        let package = Self.root + "/examples/embedding"
        let (status, output) = try Self.run(["swift", "build", "--disable-build-manifest-caching", "--package-path", package])
        try #require(status == 0, "building examples/embedding failed:\n\(output)")
        let (runStatus, table) = try Self.run([package + "/.build/debug/PolicyExperiment", "10"])
        #expect(runStatus == 0, "\(table)")
        let rows = table.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        let eager = try #require(rows.first { $0.first == "experiment-eager" })
        let lazy = try #require(rows.first { $0.first == "experiment-lazy" })
        #expect(Int(eager[2])! > 0 && lazy[2] == "0", "only the eager policy emulates table stores: \(table)")
        #expect(Int(lazy[3])! > 0, "the lazy policy unsyncs")
        #expect(eager[6] == lazy[6] && Int(eager[6])! > 0, "the same accesses were checked under both")
    }

    @Test func pluginWithoutEntryPointsIsRefused() throws {
        let so = try Self.cPlugin("noabi", "int unrelated(void) { return 1; }\n")
        #expect(throws: PolicyLoadError(description: "\(so) is not a ShadowSim policy plugin: it has no shadowsim_policy_abi entry point")) {
            try PolicyCatalog.factory(so)
        }
    }

    @Test func pluginForAnotherABIIsRefused() throws {
        let so = try Self.cPlugin("oldabi", "int shadowsim_policy_abi(void) { return 999; }\nvoid *shadowsim_policy_create(void) { return 0; }\n")
        #expect(throws: PolicyLoadError(description: "\(so) was built for policy ABI 999, this shadowsim has ABI \(PluginABI.version): rebuild the plugin against this ShadowSimCore")) {
            try PolicyCatalog.factory(so)
        }
    }

    @Test func pluginWithoutCreateIsRefused() throws {
        let so = try Self.cPlugin("nocreate", "int shadowsim_policy_abi(void) { return \(PluginABI.version); }\n")
        #expect(throws: PolicyLoadError(description: "\(so) has no shadowsim_policy_create entry point")) {
            try PolicyCatalog.factory(so)
        }
    }

    @Test func pluginReturningNothingIsRefused() throws {
        let so = try Self.cPlugin("nothing", "int shadowsim_policy_abi(void) { return \(PluginABI.version); }\nvoid *shadowsim_policy_create(void) { return 0; }\n")
        #expect(throws: PolicyLoadError(description: "\(so): shadowsim_policy_create returned no policy")) {
            try PolicyCatalog.factory(so)
        }
    }

    @Test func notASharedObjectIsRefused() throws {
        try FileManager.default.createDirectory(atPath: Self.work, withIntermediateDirectories: true)
        let bogus = Self.work + "/bogus.so"
        try "not an ELF file".write(toFile: bogus, atomically: true, encoding: .utf8)
        do {
            _ = try PolicyCatalog.factory(bogus)
            Issue.record("a text file loaded as a plugin")
        } catch {
            #expect(error.description.hasPrefix("cannot load policy plugin \(bogus): "))
        }
    }

    @Test func unknownPolicyNameStopsTheRunWithStatus2() throws {
        var command = try ShadowSimCommand.parseAsRoot(["run", Self.root + "/examples/quickstart.lua", "--policy", "kvm"])
        do {
            try command.run()
            Issue.record("an unknown policy ran")
        } catch let code as ExitCode {
            #expect(code == ExitCode(2))
        }
    }

    @Test func aScriptNamingABadPolicyFailsAtItsLine() throws {
        let script = Self.work + "/badpolicy.lua"
        try FileManager.default.createDirectory(atPath: Self.work, withIntermediateDirectories: true)
        try "local a = 1\nlocal vm = shadowsim.vm{ policy = 'nope' }\n".write(toFile: script, atomically: true, encoding: .utf8)
        let result = ScenarioRunner.run(path: script)
        #expect(result.error?.message == "\(script):2: unknown policy 'nope' (built-in: bare-metal, kvm-unsync, wp-emulate, global-list, vm-list, xen-oos, tdp, pv-mmu, agile; or the path of a policy .so)")
    }
}


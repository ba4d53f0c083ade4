import Testing
import Foundation
import ShadowSimLua

/// docs/lua-api.md cannot drift from the bindings: every function the `shadowsim` module
/// and its classes expose is documented there, and every function documented exists.
@Suite struct LuaAPIReferenceTests {
    /// What the module exposes, asked of the module itself.
    static func exposed() throws -> [String: Set<String>] {
        let script = NSTemporaryDirectory() + "shadowsim-api-\(getpid()).lua"
        try """
            local S = shadowsim
            local function names(t)
              local out = {}
              for k, v in pairs(t) do if type(v) == "function" and k:sub(1, 1) ~= "_" then out[#out + 1] = k end end
              table.sort(out)
              return out
            end
            S.record("shadowsim", names(S))
            S.record("vcpu", names(S._methods.vcpu))
            S.record("space", names(S._methods.space))
            S.record("vm", names(getmetatable(S.vm{}).__methods))
            S.record("linux", names(getmetatable(S.linux(S.vm{})).__methods))
            """.write(toFile: script, atomically: true, encoding: .utf8)
        defer { unlink(script) }
        let result = ScenarioRunner.run(path: script)
        guard result.passed else { throw CancellationError() }
        var out: [String: Set<String>] = [:]
        guard case .object(let fields) = result.report else { return out }
        for case let ("records", .object(records)) in fields {
            for (class_, list) in records {
                if case .array(let names) = list {
                    out[class_] = Set(names.compactMap { if case .string(let s) = $0 { s } else { nil } })
                }
            }
        }
        return out
    }

    /// The functions the reference documents: names written with call syntax in the
    /// first column of its tables (`shadowsim.f(…)`, `f{…}` after one, `vm:m(…)`).
    static func documented() throws -> [String: Set<String>] {
        let text = try String(contentsOfFile: ScenarioSuiteTests.repositoryRoot + "/docs/lua-api.md", encoding: .utf8)
        var out: [String: Set<String>] = ["shadowsim": [], "vm": [], "vcpu": [], "space": [], "linux": []]
        for line in text.split(separator: "\n") where line.hasPrefix("| `") {
            let cell = line.dropFirst(2).components(separatedBy: " | ").first ?? ""
            let spans = cell.components(separatedBy: "`").enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
            let moduleRow = spans.first?.hasPrefix("shadowsim.") ?? false
            for span in spans {
                var owner: String?, rest = Substring(span)
                for prefix in ["shadowsim.", "vm:", "vcpu:", "space:", "linux:"] where span.hasPrefix(prefix) {
                    owner = prefix == "shadowsim." ? "shadowsim" : String(prefix.dropLast())
                    rest = span.dropFirst(prefix.count)
                }
                if owner == nil && moduleRow { owner = "shadowsim" }
                guard let owner else { continue }
                let name = rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
                let after = rest.dropFirst(name.count).first
                if !name.isEmpty && (after == "(" || after == "{") { out[owner]!.insert(String(name)) }
            }
        }
        return out
    }

    @Test func everyExposedFunctionIsDocumentedAndEveryDocumentedOneExists() throws {
        let exposed = try Self.exposed(), documented = try Self.documented()
        for owner in ["shadowsim", "vm", "vcpu", "space", "linux"] {
            let e = exposed[owner] ?? [], d = documented[owner] ?? []
            #expect(!e.isEmpty, "\(owner) exposes functions")
            #expect(e.subtracting(d).isEmpty, "\(owner): exposed but not in docs/lua-api.md: \(e.subtracting(d).sorted())")
            #expect(d.subtracting(e).isEmpty, "\(owner): documented but not exposed: \(d.subtracting(e).sorted())")
        }
    }
}

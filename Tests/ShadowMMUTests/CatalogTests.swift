import Testing
import ShadowSimPolicies

@Suite struct CatalogTests {
    @Test func builtinPoliciesHaveDistinctNames() {
        let names = PolicyCatalog.builtins.map(\.name)
        #expect(names == ["kvm-unsync", "wp-emulate", "global-list", "vm-list", "xen-oos", "tdp", "pv-mmu", "agile"])
        #expect(Set(names).count == names.count)
    }

    @Test func unknownPoliciesAndBadPathsAreRefused() {
        #expect(throws: PolicyLoadError.self) { try PolicyCatalog.factory("kvm") }
        do {
            _ = try PolicyCatalog.factory("/nonexistent/libNope.so")
            Issue.record("loading a missing .so succeeded")
        } catch {
            #expect(error.description.hasPrefix("cannot load policy plugin /nonexistent/libNope.so: "))
        }
    }
}

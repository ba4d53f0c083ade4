import Testing
import Foundation
@testable import ShadowSimCLI

/// The report's charts, checked on their SVG: legends that fit however many policies
/// there are, bars that never average over different parameter values, and runs that
/// failed listed and left out of every chart.
@Suite struct ReportPageTests {
    static let policies = ["kvm-unsync", "wp-emulate", "global-list", "vm-list", "xen-oos", "tdp", "my-long-policy-name"]

    static func record(_ run: Int, _ policy: String, pages: Int, cycles: Int, status: String = "passed") -> [String: Any] {
        var r: [String: Any] = ["run": run, "of": 100, "policy": policy, "params": ["pages": pages], "status": status,
                                "estimated_cycles": cycles, "counters": ["exits": cycles / 100], "scenario": "s.lua",
                                "tool": "shadowsim test"]
        if status != "passed" { r["error"] = "s.lua:3: broken" }
        return r
    }

    static var records: [[String: Any]] {
        var out: [[String: Any]] = []
        for pages in [4, 16] {
            for policy in policies { out.append(record(out.count, policy, pages: pages, cycles: 1000 * pages + out.count)) }
        }
        out.append(record(out.count, "kvm-unsync", pages: 64, cycles: 5, status: "failed"))
        return out
    }

    /// The x positions and texts of the legend entries of an SVG chart.
    func legend(_ svg: String) -> [(x: Double, text: String)] {
        let pattern = try! NSRegularExpression(pattern: "<text x=\"([0-9.]+)\"[^>]*>■ ([^<]*)</text>")
        return pattern.matches(in: svg, range: NSRange(svg.startIndex..., in: svg)).map { m in
            (Double(svg[Range(m.range(at: 1), in: svg)!])!, String(svg[Range(m.range(at: 2), in: svg)!]))
        }
    }

    func width(_ svg: String) -> Double {
        let m = try! NSRegularExpression(pattern: "width=\"([0-9]+)\"").firstMatch(in: svg, range: NSRange(svg.startIndex..., in: svg))!
        return Double(svg[Range(m.range(at: 1), in: svg)!])!
    }

    @Test func legendsFitTheChartWithManyPolicies() {
        let page = ReportPage(title: "t", records: Self.records)
        let line = page.charts.first { $0.contains("against pages") }!
        let entries = legend(line)
        #expect(entries.map(\.text) == Self.policies, "every policy has a legend entry")
        for e in entries {
            #expect(e.x + 22 + 6.5 * Double(e.text.count) <= width(line), "\(e.text) at x = \(e.x) runs off the chart")
        }
        let rows = Set(entries.map(\.x)).count < entries.count
        #expect(rows, "seven policies need more than one legend row")
    }

    @Test func barsArePerParameterPointNeverAveragedAcrossThem() {
        let page = ReportPage(title: "t", records: Self.records)
        let bars = page.charts[0]
        #expect(bars.contains("Estimated cycles per policy at each parameter point"))
        #expect(!bars.contains("mean over"))
        #expect(bars.contains(">pages=4</tspan>") && bars.contains(">pages=16</tspan>"), "each group is labelled by its point")
        // A bar per policy per point, with the exact value of that run.
        #expect(bars.components(separatedBy: "<rect").count - 1 == 2 * Self.policies.count)
        #expect(bars.contains("kvm-unsync pages=16: 16k"))
        // One point only: plain bars, labelled by policy.
        let single = ReportPage(title: "t", records: Array(Self.records.prefix(Self.policies.count)))
        #expect(single.charts[0].contains("Estimated cycles per policy<") && single.charts[0].contains(">tdp</text>"))
    }

    @Test func failedRunsAreListedAndLeftOutOfTheCharts() {
        let page = ReportPage(title: "t", records: Self.records)
        #expect(page.html.contains("Runs that failed (left out of every chart)"))
        #expect(page.html.contains("s.lua:3: broken"))
        #expect(!page.charts.joined().contains("pages=64"), "the failed point is charted nowhere")
    }
}

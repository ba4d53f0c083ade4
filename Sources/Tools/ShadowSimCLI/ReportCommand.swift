import ArgumentParser
import Foundation
import Logging

/// `shadowsim report RESULTS.jsonl -o report.html`: a self-contained HTML page (inline
/// SVG, no network) with charts of a sweep's (or several sweeps') JSON lines.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a self-contained HTML report with SVG charts from sweep JSON lines.",
        discussion: """
            Charts: estimated cycles per policy; chosen counters per policy; the unsync pages lying around at root \
            loads and those the new root reaches (mean, p90); cost against each swept numeric parameter, a line per policy; and, for sweeps made with `--trace`, the timeline of faults, syncs and \
            flushes of each policy's last run. Exit status: 0, 2 for unreadable input.
            """)

    @OptionGroup var logging: LoggingOptions

    @Argument(help: "JSON-lines files written by `shadowsim sweep` (or merged shards).")
    var files: [String]

    @Option(name: [.customShort("o"), .long], help: "The HTML file to write.")
    var output = "report.html"

    @Option(help: "The page's title.")
    var title = "ShadowSim report"

    func run() throws {
        try logging.bootstrap()
        let records = try readSweepRecords(files).map(\.object)
        guard !records.isEmpty else {
            printError("shadowsim: no records in \(files.joined(separator: ", "))")
            throw ExitCode(2)
        }
        let html = ReportPage(title: title, records: records).html
        try writeText(html, to: output)
        cliLog.info("report written", metadata: ["path": "\(output)", "records": "\(records.count)"])
        print("\(output): \(records.count) runs, \(ReportPage(title: title, records: records).chartCount) charts")
    }
}

/// The page: its charts are SVG drawn here, so it needs nothing but a browser.
struct ReportPage {
    let title: String
    /// Every record read; charts use the runs that passed (`passed`), failures are listed.
    let records: [[String: Any]]

    init(title: String, records: [[String: Any]]) {
        self.title = title
        self.records = records
    }

    var passed: [[String: Any]] { records.filter { ($0["status"] as? String) == "passed" && $0["error"] == nil } }
    var failed: [[String: Any]] { records.filter { ($0["status"] as? String) != "passed" || $0["error"] != nil } }

    var policies: [String] {
        var seen: [String] = []
        for r in records { if let p = r["policy"] as? String, !seen.contains(p) { seen.append(p) } }
        return seen
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
    func color(_ policy: String) -> String { Self.palette[(policies.firstIndex(of: policy) ?? 0) % Self.palette.count] }

    static let keyCounters = ["exits", "insn_emulation", "tlb_flush", "remote_tlb_flush", "pages_synced",
                              "sptes_resynced", "mmu_unsync_events", "lock_work"]

    func counter(_ name: String) -> ([String: Any]) -> Double? {
        { r in (r["counters"] as? [String: Any])?[name].flatMap { ($0 as? NSNumber)?.doubleValue } }
    }

    var cycles: ([String: Any]) -> Double? { { ($0["estimated_cycles"] as? NSNumber)?.doubleValue } }

    /// A statistic (`mean`, `p50`, `p90`, `max`) of a root-load distribution of a run.
    func rootLoads(_ group: String, _ stat: String) -> ([String: Any]) -> Double? {
        { r in ((r["root_loads"] as? [String: Any])?[group] as? [String: Any])?[stat].flatMap { ($0 as? NSNumber)?.doubleValue } }
    }

    /// A run's parameter point, as "name=value …" (sorted by name).
    func point(_ r: [String: Any]) -> String {
        (r["params"] as? [String: Any] ?? [:]).map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")
    }

    /// The parameter points of the runs that passed, in the order first met.
    var points: [String] {
        var seen: [String] = []
        for r in passed where !seen.contains(point(r)) { seen.append(point(r)) }
        return seen
    }

    /// The mean of `value` over the passed runs of `policy` at `point` (repeats of one
    /// point, from merged sweeps, are averaged; different points never are), nil if none.
    func value(_ policy: String, at point: String, _ value: ([String: Any]) -> Double?) -> Double? {
        let values = passed.filter { $0["policy"] as? String == policy && self.point($0) == point }.compactMap(value)
        return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }

    /// Swept numeric parameters with more than one value.
    var sweptParameters: [String] {
        var values: [String: Set<Double>] = [:]
        for r in passed {
            for (k, v) in r["params"] as? [String: Any] ?? [:] {
                if let n = (v as? NSNumber)?.doubleValue { values[k, default: []].insert(n) }
            }
        }
        return values.filter { $0.value.count > 1 }.keys.sorted()
    }

    /// Bars of `value` per policy, grouped by parameter point (one group when nothing
    /// was swept).
    func groupedBars(_ value: ([String: Any]) -> Double?) -> [(group: String, bars: [(String, Double)])] {
        points.map { p in (p, policies.compactMap { policy in self.value(policy, at: p, value).map { (policy, $0) } }) }
    }

    var charts: [String] {
        var out: [String] = []
        let grouped = points.count > 1
        let at = grouped ? " at each parameter point" : ""
        out.append(barChart(title: "Estimated cycles per policy\(at)", groups: groupedBars(cycles)))
        for name in Self.keyCounters {
            let groups = groupedBars(counter(name))
            if groups.contains(where: { $0.bars.contains { $0.1 > 0 } }) {
                out.append(barChart(title: "\(name) per policy\(at)", groups: groups))
            }
        }
        // The 2010 review's question: unsync pages lying around at root loads, and how
        // many the new root reaches.
        for (group, what) in [("unsync_lying_around", "Unsync pages lying around at each root load"),
                              ("unsync_reached", "Unsync pages the new root reaches at each load")] {
            for stat in ["mean", "p90"] {
                let groups = groupedBars(rootLoads(group, stat))
                if groups.contains(where: { $0.bars.contains { $0.1 > 0 } }) {
                    out.append(barChart(title: "\(what): \(stat)\(at)", groups: groups))
                }
            }
        }
        for p in sweptParameters {
            var series: [(String, [(Double, Double)])] = []
            for policy in policies {
                var byValue: [Double: [Double]] = [:]
                for r in passed where r["policy"] as? String == policy {
                    guard let x = ((r["params"] as? [String: Any])?[p] as? NSNumber)?.doubleValue, let y = cycles(r) else { continue }
                    byValue[x, default: []].append(y)
                }
                series.append((policy, byValue.keys.sorted().map { ($0, byValue[$0]!.reduce(0, +) / Double(byValue[$0]!.count)) }))
            }
            let others = sweptParameters.count > 1 ? " (mean of the others)" : ""
            out.append(lineChart(title: "Estimated cycles against \(p)\(others)", xLabel: p, series: series))
        }
        // Timelines: the last traced run of each policy (the sweep's largest point).
        let traced = policies.compactMap { p in passed.last { $0["policy"] as? String == p && $0["timeline"] != nil } }
        for r in traced {
            guard let timeline = r["timeline"] as? [[String: Any]], timeline.count > 1 else { continue }
            let names = ["pf_taken", "sync", "tlb_flush"]
            let series = names.map { name in
                (name, timeline.compactMap { s -> (Double, Double)? in
                    guard let x = (s["ops"] as? NSNumber)?.doubleValue, let y = (s[name] as? NSNumber)?.doubleValue else { return nil }
                    return (x, y)
                })
            }
            out.append(lineChart(title: "Run \(r["run"] ?? "?") timeline: \(r["policy"] ?? "") \(point(r))",
                                 xLabel: "operations", series: series, colors: ["#d62728", "#2ca02c", "#1f77b4"]))
        }
        return out
    }

    var chartCount: Int { charts.count }

    var html: String {
        let rows = policies.map { p in
            let runs = records.filter { $0["policy"] as? String == p }
            let ok = runs.filter { r in passed.contains { ($0["run"] as? Int) == (r["run"] as? Int) } }.count
            return "<tr><td><span class=\"swatch\" style=\"background:\(color(p))\"></span>\(escape(p))</td><td>\(runs.count)</td><td>\(runs.count - ok)</td></tr>"
        }.joined()
        let failures = failed.map { r in
            "<tr><td>\(r["run"] ?? "?")</td><td>\(escape(r["policy"] as? String ?? ""))</td><td>\(escape(point(r)))</td><td>\(escape(r["status"] as? String ?? ""))</td><td>\(escape(r["error"] as? String ?? ""))</td></tr>"
        }.joined()
        let failedTable = failures.isEmpty ? "" : "<h2>Runs that failed (left out of every chart)</h2><table><tr><th>run</th><th>policy</th><th>parameters</th><th>status</th><th>error</th></tr>\(failures)</table>"
        let scenario = escape(records.first?["scenario"] as? String ?? "")
        let tool = escape(records.first?["tool"] as? String ?? "")
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(escape(title))</title>
        <style>
        body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
        h1 { font-size: 20px; } h2 { font-size: 16px; } table { border-collapse: collapse; margin: 12px 0; }
        td, th { border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: right; } td:first-child, th:first-child { text-align: left; }
        .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; }
        .charts { display: flex; flex-wrap: wrap; gap: 16px; } svg.chart { background: #fafafa; border: 1px solid #e5e5e5; }
        </style></head>
        <body>
        <h1>\(escape(title))</h1>
        <p>Scenario <code>\(scenario)</code>, \(records.count) runs, \(tool).</p>
        <table><tr><th>policy</th><th>runs</th><th>failed</th></tr>\(rows)</table>
        \(failedTable)
        <div class="charts">
        \(charts.joined(separator: "\n"))
        </div>
        <script>
        // Marks how many charts the browser laid out with a real size (checked by the tests).
        window.addEventListener("load", function () {
          var n = 0;
          document.querySelectorAll("svg.chart").forEach(function (s) { var b = s.getBoundingClientRect(); if (b.width > 100 && b.height > 100) n++; });
          document.body.setAttribute("data-charts-rendered", String(n));
        });
        </script>
        </body></html>

        """
    }

    // MARK: Charts

    static let width = 500.0, plotHeight = 204.0, left = 70.0, bottom = 50.0, titleHeight = 28.0, right = 16.0

    /// A legend laid out in rows that fit the chart's width (entries never run off it):
    /// the SVG, and the height it takes.
    func legend(_ entries: [(name: String, color: String)], y: Double) -> (svg: String, height: Double) {
        var svg = "", x = 10.0, row = 0.0
        for (name, c) in entries {
            let w = 22 + 6.5 * Double(name.count)
            if x + w > Self.width - Self.right && x > 10 { x = 10; row += 1 }
            svg += "<text x=\"\(f(x))\" y=\"\(f(y + row * 15 + 11))\" font-size=\"11\" fill=\"\(c)\">■ \(escape(name))</text>"
            x += w
        }
        return (svg, entries.isEmpty ? 0 : (row + 1) * 15 + 4)
    }

    /// Bars per policy; with several groups (parameter points), one cluster per group,
    /// labelled by it, and a legend of the policies.
    func barChart(title: String, groups: [(group: String, bars: [(String, Double)])]) -> String {
        let grouped = groups.count > 1
        let present = policies.filter { p in groups.contains { $0.bars.contains { $0.0 == p } } }
        let (legendSVG, legendHeight) = grouped ? legend(present.map { ($0, color($0)) }, y: Self.titleHeight - 6) : ("", 0)
        let top = Self.titleHeight + legendHeight
        let barCount = groups.reduce(0) { $0 + $1.bars.count }
        let w = max(Self.width, Self.left + Self.right + Double(barCount) * 14 + Double(groups.count) * 12)
        let h = top + Self.plotHeight + Self.bottom
        let plotW = w - Self.left - Self.right
        let maxY = niceMax(groups.flatMap { $0.bars.map(\.1) }.max() ?? 1)
        let groupSlot = plotW / Double(max(groups.count, 1))
        var svg = header(title, width: w, height: h) + legendSVG + axes(maxY: maxY, top: top, width: w)
        for (g, group) in groups.enumerated() {
            let slot = groupSlot / Double(max(group.bars.count, 1))
            for (i, (name, v)) in group.bars.enumerated() {
                let bh = maxY > 0 ? v / maxY * Self.plotHeight : 0
                let x = Self.left + Double(g) * groupSlot + Double(i) * slot + slot * 0.15
                svg += "<rect x=\"\(f(x))\" y=\"\(f(top + Self.plotHeight - bh))\" width=\"\(f(slot * 0.7))\" height=\"\(f(bh))\" fill=\"\(color(name))\"><title>\(escape(name))\(grouped ? " " + escape(group.group) : ""): \(format(v))</title></rect>"
                if !grouped {
                    svg += "<text x=\"\(f(x + slot * 0.35))\" y=\"\(f(h - Self.bottom + 16))\" font-size=\"11\" text-anchor=\"middle\">\(escape(name))</text>"
                }
            }
            if grouped {
                // One line per parameter, so the labels of neighbouring groups never overlap.
                let x = f(Self.left + (Double(g) + 0.5) * groupSlot)
                let lines = group.group.split(separator: " ").map { "<tspan x=\"\(x)\" dy=\"12\">\(escape(String($0)))</tspan>" }
                svg += "<text x=\"\(x)\" y=\"\(f(h - Self.bottom + 4))\" font-size=\"10\" text-anchor=\"middle\">\(lines.joined())</text>"
            }
        }
        return svg + "</svg>"
    }

    func lineChart(title: String, xLabel: String, series: [(String, [(Double, Double)])], colors: [String]? = nil) -> String {
        let drawn = series.enumerated().filter { !$0.element.1.isEmpty }.map { (i, s) in (s.0, s.1, colors?[i % colors!.count] ?? color(s.0)) }
        let (legendSVG, legendHeight) = legend(drawn.map { ($0.0, $0.2) }, y: Self.titleHeight - 6)
        let top = Self.titleHeight + legendHeight
        let w = Self.width, h = top + Self.plotHeight + Self.bottom
        let plotW = w - Self.left - Self.right, plotH = Self.plotHeight
        let xs = series.flatMap { $0.1.map(\.0) }, ys = series.flatMap { $0.1.map(\.1) }
        let minX = xs.min() ?? 0, maxX = max(xs.max() ?? 1, minX + 1)
        let maxY = niceMax(ys.max() ?? 1)
        func px(_ x: Double) -> Double { Self.left + (x - minX) / (maxX - minX) * plotW }
        func py(_ y: Double) -> Double { top + plotH - (maxY > 0 ? y / maxY * plotH : 0) }
        var svg = header(title, width: w, height: h) + legendSVG + axes(maxY: maxY, top: top, width: w)
        svg += "<text x=\"\(f(Self.left))\" y=\"\(f(h - Self.bottom + 16))\" font-size=\"11\">\(format(minX))</text>"
        svg += "<text x=\"\(f(w - Self.right))\" y=\"\(f(h - Self.bottom + 16))\" font-size=\"11\" text-anchor=\"end\">\(format(maxX))</text>"
        svg += "<text x=\"\(f(Self.left + plotW / 2))\" y=\"\(f(h - 8))\" font-size=\"11\" text-anchor=\"middle\">\(escape(xLabel))</text>"
        for (name, points, c) in drawn {
            let path = points.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"2\" points=\"\(path)\"><title>\(escape(name))</title></polyline>"
            for p in points where points.count <= 40 { svg += "<circle cx=\"\(f(px(p.0)))\" cy=\"\(f(py(p.1)))\" r=\"3\" fill=\"\(c)\"/>" }
        }
        return svg + "</svg>"
    }

    func header(_ title: String, width: Double, height: Double) -> String {
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\"><text x=\"10\" y=\"18\" font-size=\"13\" font-weight=\"bold\">\(escape(title))</text>"
    }

    func axes(maxY: Double, top: Double, width: Double) -> String {
        let plotH = Self.plotHeight
        var s = "<line x1=\"\(f(Self.left))\" y1=\"\(f(top))\" x2=\"\(f(Self.left))\" y2=\"\(f(top + plotH))\" stroke=\"#888\"/>"
        s += "<line x1=\"\(f(Self.left))\" y1=\"\(f(top + plotH))\" x2=\"\(f(width - Self.right))\" y2=\"\(f(top + plotH))\" stroke=\"#888\"/>"
        for i in 0...4 {
            let y = top + plotH - Double(i) / 4 * plotH
            s += "<line x1=\"\(f(Self.left - 4))\" y1=\"\(f(y))\" x2=\"\(f(width - Self.right))\" y2=\"\(f(y))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(f(Self.left - 6))\" y=\"\(f(y + 4))\" font-size=\"10\" text-anchor=\"end\">\(format(maxY * Double(i) / 4))</text>"
        }
        return s
    }

    func niceMax(_ v: Double) -> Double {
        guard v > 0 else { return 1 }
        let magnitude = pow(10, floor(log10(v)))
        for step in [1.0, 2, 2.5, 5, 10] where step * magnitude >= v { return step * magnitude }
        return 10 * magnitude
    }

    func f(_ v: Double) -> String { String(format: "%.1f", v) }
    func format(_ v: Double) -> String {
        if v >= 1e6 { return String(format: "%.1fM", v / 1e6) }
        if v >= 1e4 { return String(format: "%.0fk", v / 1e3) }
        return v == v.rounded() ? String(Int(v)) : String(format: "%.1f", v)
    }
    func escape(_ s: String) -> String { xmlEscaped(s) }
}

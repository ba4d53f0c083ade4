import Testing
import Foundation

/// `shadowsim report` checked in a real headless browser (Debian's chromium, which
/// tools/bootstrap.sh installs): the page renders to PNG, and the browser lays out
/// every chart the report drew, at a real size, with no network.
@Suite struct ReportTests {
    static let script = """
        local S = shadowsim
        local vm = S.vm{}
        local a, b = vm:space{}, vm:space{}
        for i = 0, S.params.pages - 1 do a:map(0x400000 + i * 4096, vm:alloc_frame{}); b:map(0x400000 + i * 4096, vm:alloc_frame{}) end
        local cpu = vm.vcpu[1]
        for round = 1, 200 do
          S.expect_ok(cpu:load_cr3(round % 2 == 0 and a or b))
          for i = 0, S.params.pages - 1 do S.expect_ok(cpu:write(0x400000 + i * 4096, round)) end
          if round % 10 == 0 then a:map(0x400000, vm:alloc_frame{}) end
        end
        """

    func run(_ executable: String, _ arguments: [String], in dir: String) throws -> (status: Int32, out: String) {
        let r = try CLIProcess.run(arguments, in: dir, executable: executable)
        return (r.status, r.out)
    }

    @Test func theReportRendersInAHeadlessBrowser() throws {
        try CLIProcess.withDirectory(["s.lua": Self.script]) { dir in try render(in: dir) }
    }

    func render(in dir: String) throws {
        let shadowsim = BadInputTests.executable
        let sweep = try run(shadowsim, ["sweep", "s.lua", "--param", "pages=4,16", "--policies", "kvm-unsync,vm-list,bare-metal",
                                        "--trace", "-o", "r.jsonl"], in: dir)
        #expect(sweep.status == 0)
        let report = try run(shadowsim, ["report", "r.jsonl", "-o", "report.html"], in: dir)
        #expect(report.status == 0)
        // "report.html: 6 runs, N charts"
        let charts = try #require(Int(report.out.split(separator: " ").dropLast().last ?? ""))
        #expect(charts >= 6, "bars per policy, a line chart for pages, a timeline per policy: \(report.out)")
        let html = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        #expect(!html.contains("<link") && !html.contains("src=") && !html.contains("url("), "self-contained: nothing fetched")

        let chromium = "/usr/bin/chromium"
        try #require(FileManager.default.isExecutableFile(atPath: chromium), "chromium is installed by tools/bootstrap.sh")
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,2600"]
        let dom = try run(chromium, flags + ["--dump-dom", "file://\(dir)/report.html"], in: dir)
        #expect(dom.out.contains("data-charts-rendered=\"\(charts)\""), "the browser laid out all \(charts) charts")
        _ = try run(chromium, flags + ["--screenshot=\(dir)/report.png", "file://\(dir)/report.html"], in: dir)
        let png = try Data(contentsOf: URL(fileURLWithPath: dir + "/report.png"))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 20_000, "a PNG with content: \(png.count) bytes")
    }
}

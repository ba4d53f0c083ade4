import ArgumentParser
import LinuxTrace

/// `shadowsim mmu-diff`: where a simulated MMU trace and a real host's part.
struct MMUDiff: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mmu-diff",
        abstract: "Align a simulated MMU trace with a real host's and print the first divergence.",
        discussion: """
            SIM is what `--mmu-trace` wrote; REAL is a host's kvmmmu events, as the raw \
            tracefs `trace` file or `trace-cmd report` prints them (its kvm plugin's \
            rendering of page events is read too), plain or gzip. Compared, in order: kvm_mmu_get_page, sync_page, \
            unsync_page, prepare_zap_page (gfn, level, role, root count, sync state, \
            new/existing), set_spte (gfn, rights, level), spte_requested (gfn, level), \
            pagetable_walk (address, error code) and walker_error. Ignored: pfns, spte \
            values and addresses, timestamps, tasks, CPUs, the generation, other events. \
            Exit status: 0 when the traces agree, 1 at a divergence, 2 for a bad command line \
            or an unreadable file.
            """)

    @Argument(help: "The simulated trace (--mmu-trace output).")
    var simulated: String

    @Argument(help: "The real trace (trace-cmd report -e kvmmmu).")
    var real: String

    @Option(help: "Agreeing events to show before the divergence.")
    var context = 5

    @Option(help: "Comma-separated events not to compare (e.g. kvm_mmu_pagetable_walk).")
    var ignore: String?

    func run() throws {
        guard context >= 0 else { throw usageError("--context must be 0 or more") }
        let ignored = Set((ignore ?? "").split(separator: ",").map { String($0) })
        for name in ignored where !MMUTraceDiff.comparedEvents.contains(name) {
            throw usageError("--ignore: \(name) is not a compared event (\(MMUTraceDiff.comparedEvents.sorted().joined(separator: ", ")))")
        }
        let left: [MMUTraceDiff.Event], right: [MMUTraceDiff.Event]
        do {
            left = try MMUTraceDiff.events(of: simulated, ignoring: ignored)
            right = try MMUTraceDiff.events(of: real, ignoring: ignored)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        guard let d = MMUTraceDiff.firstDivergence(left, right, contextEvents: context) else {
            print("the traces agree: \(left.count) events compared")
            return
        }
        print("the traces agree on \(d.agreed) events, then part:")
        for e in d.context { print("  \(simulated):\(e.line): \(e.text)") }
        print("- \(d.left.map { "\(simulated):\($0.line): \($0.text)" } ?? "\(simulated): (ends after \(left.count) events)")")
        print("+ \(d.right.map { "\(real):\($0.line): \($0.text)" } ?? "\(real): (ends after \(right.count) events)")")
        if let l = d.left, let r = d.right {
            print(l.name == r.name ? "  compared: \(l.key)\n        vs: \(r.key)" : "  events: \(l.name) vs \(r.name)")
        }
        throw ExitCode(1)
    }
}

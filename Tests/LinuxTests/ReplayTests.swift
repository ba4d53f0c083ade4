import Testing
import Foundation
import ShadowSimLua
import LinuxReplay
import GuestKernel

/// Each shipped trace replayed with the checker on: the model must agree with it. The
/// debug build replays a prefix of each; tools/test.sh replays them whole (release) under
/// every policy with `shadowsim replay --min-agreement`.
@Suite struct ReplayAgreementTests {
    static let traces = ["make-j2", "fork-exec-loop", "pagefault-bench", "threads-shootdown"]

    func replay(_ name: String, events: Int, policy: String = "kvm-unsync") throws -> ReplayRecord {
        var request = ReplayRequest(trace: repositoryRoot + "/traces/\(name).txt.gz")
        request.policy = policy
        request.maxEvents = events
        let session = Session(seed: 0, arguments: [], defaultPolicy: policy, check: true)
        return try ReplayRunner.replay(request, in: session).1
    }

    @Test(arguments: traces)
    func theReplayAgreesWithTheTrace(_ name: String) throws {
        let r = try replay(name, events: 12_000)
        #expect(r.events == 12_000)
        // Every traced fault faults in the model with the same bits, or a documented rule
        // explains why not; what is left unexplained stays under 1 %.
        let unexplained = r.faultsNotReproduced + r.faultsOtherCodeTotal
        #expect(r.faultsReplayed > 1000)
        #expect(unexplained * 100 <= r.faultsReplayed, "\(unexplained) of \(r.faultsReplayed) faults disagree")
        #expect(r.faultsAgreed + r.faultsRaced + r.faultsUnknownHistory + r.faultsUnknownArea + unexplained == r.faultsReplayed)
        #expect(r.retriesFaulted == 0)
        // Flushes: most match by CPU, reason and pages; the rest are counted by side.
        let f = r.flushes.values
        let traced = f.reduce(0) { $0 + $1.traced }, matched = f.reduce(0) { $0 + $1.matched }
        #expect(matched * 100 >= traced * 85, "\(matched) of \(traced) traced flushes matched")
        for a in f {
            #expect(a.matched + a.otherPages + a.traceOnly == a.traced)
            #expect(a.matched + a.otherPages + a.replayOnly == a.replayed)
        }
        // Every switch, fork, exec and exit of the trace was replayed.
        #expect(r.contextSwitches == r.eventsByName["sched_switch"] ?? 0)
        #expect(r.execs == r.eventsByName["sched_process_exec"] ?? 0)
        #expect(r.exits == r.eventsByName["sched_process_exit"] ?? 0)
        #expect(r.forks + r.vforks + r.threads == r.eventsByName["task_newtask"] ?? 0)
        #expect(r.skippedTotal == 0, "\(r.skipped)")
        #expect(r.lostEvents == 0)
    }

    @Test func sameTraceSameRecordUnderEveryPolicy() throws {
        // The policy changes the host's work, never what the guest kernel does.
        let a = try replay("fork-exec-loop", events: 3000, policy: "kvm-unsync")
        let b = try replay("fork-exec-loop", events: 3000, policy: "xen-oos")
        let c = try replay("fork-exec-loop", events: 3000, policy: "bare-metal")
        #expect(a.fields.map(\.value) == b.fields.map(\.value))
        #expect(a.fields.map(\.value) == c.fields.map(\.value))
    }
}

/// Bad traces: `file:line: message`, or a counted skip; never a trap.
@Suite struct BadTraceTests {
    func replay(_ text: String) -> (record: ReplayRecord?, error: String?) {
        let path = NSTemporaryDirectory() + "bad-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).txt"
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var request = ReplayRequest(trace: path)
        request.vcpus = 2
        let session = Session(seed: 0, arguments: [], defaultPolicy: "kvm-unsync", check: true)
        do {
            return (try ReplayRunner.replay(request, in: session).1, nil)
        } catch {
            return (session.vms.first?.replays.first?.record, error.description.replacingOccurrences(of: path, with: "T"))
        }
    }

    let header = "# shadowsim-trace kernel=6.18 cpus=2 page_size=4096 command=x\n"

    @Test func notATraceFailsAtLineOne() {
        #expect(replay("hello world\n").error?.hasPrefix("T:1: not a trace") == true)
    }

    @Test func aBadLineNamesItsLine() {
        let r = replay(header + "  sh-5  [000] .....   1.000001: sys_brk(brk: 0)\n  sh-5  [000] .....   1.0000\n  sh-5  [000] .....   1.000003: sys_brk -> 0x1000\n")
        #expect(r.error == "T:3: unreadable trace line: no timestamp after the [cpu] column", "\(r.error ?? "")")
        #expect(r.record?.events == 1, "what came before is kept")
    }

    @Test func aCutLastLineIsASkipNotAnError() {
        let r = replay(header + "  sh-5  [000] .....   1.000001: sys_brk(brk: 0)\n  sh-5  [000] .....   1.0000")
        #expect(r.error == nil)
        #expect(r.record?.truncated == true && r.record?.skipped["a truncated last line"] == 1)
    }

    @Test func anEventOnACPUTheGuestLacksIsAnError() {
        let r = replay(header + "  sh-5  [007] .....   1.000001: sys_brk(brk: 0)\n")
        #expect(r.error?.hasPrefix("T:2: an event on CPU 7, but the guest has 2 vCPUs") == true, "\(r.error ?? "")")
    }

    @Test func lossesAndUnknownEventsAreCounted() {
        let r = replay(header + "# entries-in-buffer/entries-written: 10/25   #P:2\n##### CPU 1 buffer started ####\n"
                       + "  sh-5  [000] .....   1.000001: irq_handler_entry: irq=1 name=x\n"
                       + "  sh-5  [000] .....   1.000002: page_fault_user: address=0x1000 ip=0x1000 error_code=0x4\n"
                       + "  sh-6  [001] .....   1.000003: task_newtask: pid=9 comm=sh clone_flags=0 oom_score_adj=0\n")
        #expect(r.error == nil, "\(r.error ?? "")")
        #expect(r.record?.lostEvents == 15 && r.record?.lostMarkers == 2)
        #expect(r.record?.skipped["event irq_handler_entry, which the replay does not use"] == 1)
        #expect(r.record?.tasksAdopted == 2, "two tasks whose forks are not in the trace")
        #expect(r.record?.faultsAgreed == 1)
    }

    @Test func aForkWithoutItsParentIsCounted() {
        let r = replay(header + "  sh-5  [000] .....   1.000001: sched_process_fork: comm=sh pid=4 child_comm=sh child_pid=9\n")
        #expect(r.error == nil)
        #expect(r.record?.skipped["sched_process_fork of an unknown parent"] == 1)
    }
}

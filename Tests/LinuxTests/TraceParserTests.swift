import Testing
import Foundation
import LinuxTrace

/// The repository root (Tests/LinuxTests/this file → root).
let repositoryRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// Every parse result of a file, with malformed lines as failures.
func parseAll(_ path: String) throws -> (events: [TraceEvent], headers: [TraceHeader], malformed: [(Int, String)]) {
    let reader = try TraceReader(path: path)
    var parser = TraceLineParser()
    var events: [TraceEvent] = [], headers: [TraceHeader] = [], malformed: [(Int, String)] = []
    try reader.forEachLine { (bytes, n) throws(TraceError) -> Bool in
        switch parser.parse(bytes, number: n) {
        case .event(let e): events.append(e)
        case .header(let h): headers.append(h)
        case .malformed(let why): malformed.append((n, why))
        case .nothing: break
        }
        return true
    }
    return (events, headers, malformed)
}

func parseLine(_ text: String, format: TraceFormat? = nil) -> TraceLineParser.Result {
    var parser = TraceLineParser(format: format)
    let bytes = Array(text.utf8)
    return bytes.withUnsafeBufferPointer { parser.parse($0, number: 7) }
}

func body(_ text: String) -> TraceEvent.Body? {
    if case .event(let e) = parseLine(text) { return e.body }
    return nil
}

@Suite struct TraceParserTests {
    let formats = repositoryRoot + "/traces/formats/"

    @Test func tracefsAndTraceCmdOfOneBufferGiveTheSameEvents() throws {
        let raw = try parseAll(formats + "tiny.tracefs.txt")
        let cmd = try parseAll(formats + "tiny.trace-cmd.txt")
        #expect(raw.malformed.isEmpty, "\(raw.malformed)")
        #expect(cmd.malformed.isEmpty, "\(cmd.malformed)")
        #expect(raw.events.count > 300)
        // Same buffer, same events: CPU, pid, time and fields (not line numbers).
        let strip = { (e: TraceEvent) in "\(e.cpu) \(e.pid) \(e.time) \(e.body)" }
        #expect(raw.events.map(strip) == cmd.events.map(strip))
    }

    @Test func perfScriptParsesEveryEventKind() throws {
        let perf = try parseAll(formats + "tiny.perf.txt")
        #expect(perf.malformed.isEmpty, "\(perf.malformed)")
        var kinds = Set<String>()
        for e in perf.events {
            switch e.body {
            case .schedSwitch: kinds.insert("switch")
            case .fork: kinds.insert("fork")
            case .exec: kinds.insert("exec")
            case .exit: kinds.insert("exit")
            case .newTask: kinds.insert("newtask")
            case .pageFault: kinds.insert("fault")
            case .tlbFlush: kinds.insert("flush")
            case .syscallEnter: kinds.insert("enter")
            case .syscallExit: kinds.insert("exit-call")
            default: break
            }
        }
        #expect(kinds.isSuperset(of: ["switch", "fork", "exec", "exit", "newtask", "fault", "flush", "enter", "exit-call"]), "\(kinds)")
    }

    @Test func eachFormatsLinesDecode() {
        #expect(body(" threads-shootdo-13943   [000] .....   446.301524: sys_mmap(addr: 0, len: 0x2000, prot: 3, flags: 0x22, fd: 0xffffffff, off: 0)")
                == .syscallEnter(.mmap, [0, 0x2000, 3, 0x22, 0xFFFF_FFFF, 0]))
        #expect(body(" threads-shootdo-13943   [000] .....   446.301525: sys_mmap -> 0x7f680500d000") == .syscallExit(.mmap, 0x7F68_0500_D000))
        #expect(body("            tiny-14777 [001]   470.072531: sys_enter_mmap:       addr: 0x00000000, len: 0x00002000, prot: 0x00000003, flags: 0x00000022, fd: 0xffffffff, off: 0x00000000")
                == .syscallEnter(.mmap, [0, 0x2000, 3, 0x22, 0xFFFF_FFFF, 0]))
        #expect(body("            tiny 14840 [000]   471.416518:        syscalls:sys_exit_brk: 0x563a49633000") == .syscallExit(.brk, 0x563A_4963_3000))
        #expect(body("              sh-13076   [001] .....   434.074325: sys_munmap -> 0xfffffffffffffff4") == .syscallExit(.munmap, -12))
        #expect(body("            tiny-14777 [001]   470.071969: tlb_flush:            pages=-1 reason=flush on task switch (0)") == .tlbFlush(reason: 0, pages: -1))
        #expect(body("            tiny-14777 [001]   470.071969: tlb_flush:            pages=0 reason= (5)") == .tlbFlush(reason: 5, pages: 0))
        #expect(body("            tiny 14840 [000]   471.416240:                tlb:tlb_flush: pages:1 reason:local MM shootdown (3)") == .tlbFlush(reason: 3, pages: 1))
        #expect(body("            make-12852   [001] d....   428.172796: page_fault_user: address=0x55bcd9713cd8 ip=0x7f0050a81aa2 error_code=0x7")
                == .pageFault(kernelMode: false, address: 0x55BC_D971_3CD8, errorCode: 7))
        #expect(body("             gcc-12854   [001] dn...   428.182268: page_fault_kernel: address=0x53d108 ip=elf_load error_code=0x2")
                == .pageFault(kernelMode: true, address: 0x53D108, errorCode: 2))
        #expect(body("  swift-frontend-14548   [000] d..2.   470.075249: sched_switch: prev_comm=swift frontend prev_pid=14548 prev_prio=120 prev_state=R ==> next_comm=tiny next_pid=14777 next_prio=120")
                == .schedSwitch(prev: 14548, prevComm: "swift frontend", next: 14777, nextComm: "tiny"))
        #expect(body("            tiny-14777 [001]   470.073047: sched_switch:         tiny:14777 [120] D ==> migration/1:21 [0]")
                == .schedSwitch(prev: 14777, prevComm: "tiny", next: 21, nextComm: "migration/1"))
        #expect(body("            make-12852   [001] .N...   428.181407: task_newtask: pid=12854 comm=make clone_flags=4100 oom_score_adj=0")
                == .newTask(pid: 12854, cloneFlags: 0x4100))
        #expect(body("             gcc-12854   [001] .N...   428.182372: sched_process_exec: filename=/usr/bin/gcc pid=12854 old_pid=12854")
                == .exec(pid: 12854, oldPid: 12854, filename: "/usr/bin/gcc"))
        #expect(body("              sh-13077   [000] .....   434.075500: sched_process_exit: comm=sh pid=13077 prio=120 group_dead=true")
                == .exit(pid: 13077, groupDead: true))
    }

    @Test func lossesAreEventsNotErrors() {
        #expect(body("##### CPU 0 buffer started ####") == .lost(count: nil))
        #expect(body("CPU:0 [LOST 1695 EVENTS]") == .lost(count: 1695))
        #expect(body("CPU:1 [1881 EVENTS DROPPED]") == .lost(count: 1881))
        #expect(body(" pagefault-bench 12427 [001]   415.552621: PERF_RECORD_LOST lost 3") == .lost(count: 3))
        if case .header(let h) = parseLine("# entries-in-buffer/entries-written: 1075/5085   #P:2") {
            #expect(h.entriesInBuffer == 1075 && h.entriesWritten == 5085)
        } else {
            Issue.record("the entries header was not read")
        }
    }

    @Test func otherLinesAreMalformedOrNothing() {
        #expect(parseLine("version = 6") == .nothing)
        #expect(parseLine("") == .nothing)
        if case .malformed = parseLine("\u{89}PNG garbage") {} else { Issue.record("binary garbage was accepted") }
        if case .malformed = parseLine("  sh-1  [000] .....   1.000000: page_fault_user: address=") {} else {
            Issue.record("a truncated fault line was accepted")
        }
    }

    @Test func aCompressedTraceCutShortIsAnErrorWithItsLine() throws {
        let source = try Data(contentsOf: URL(fileURLWithPath: repositoryRoot + "/traces/threads-shootdown.txt.gz"))
        let path = NSTemporaryDirectory() + "cut-\(getpid()).txt.gz"
        try source.prefix(200_000).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try parseAll(path)
            Issue.record("a cut gzip file was read without an error")
        } catch let e as TraceError {
            #expect(e.file == path && e.line > 1000)
            #expect(e.message.contains("ends early"), "\(e)")
        }
    }
}

import Glibc

/// The three text formats a trace comes in (traces/formats/FORMATS.md has examples).
public enum TraceFormat: String, Sendable {
    /// The kernel's own `trace` file (what tools/record-linux-trace.sh saves).
    case tracefs
    /// `trace-cmd report`.
    case traceCmd = "trace-cmd"
    /// `perf script`.
    case perf
}

/// Decodes one line of trace text into an event. Works on bytes: a trace has millions
/// of lines, and the replay reads them at hundreds of thousands a second.
public struct TraceLineParser {
    public var format: TraceFormat?

    public init(format: TraceFormat? = nil) { self.format = format }

    /// What a line was.
    public enum Result: Equatable {
        case event(TraceEvent)
        /// A comment, a header or an empty line.
        case nothing
        /// A header line that tells the format or the recording's facts.
        case header(TraceHeader)
        /// Not a line of any of the formats.
        case malformed(String)
    }

    /// Parses `line` (without its newline), number `number` of the file.
    public mutating func parse(_ line: UnsafeBufferPointer<UInt8>, number: Int) -> Result {
        var c = Cursor(line)
        c.skipSpaces()
        if c.atEnd { return .nothing }
        if c.peek == UInt8(ascii: "#") { return parseComment(line, number: number) }
        // trace-cmd's own header lines ("version = 6", buffer names).
        if c.hasPrefix("version = ") || c.hasPrefix("CPU ") && !c.hasPrefix("CPU:") { return .nothing }
        if c.hasPrefix("cpus=") {
            format = .traceCmd
            c.advance(5)
            var h = TraceHeader()
            h.cpus = c.decimal()
            return .header(h)
        }
        // Loss markers: "CPU:0 [LOST 1695 EVENTS]", "CPU:1 [1881 EVENTS DROPPED]".
        if c.hasPrefix("CPU:") {
            var d = c
            d.advance(4)
            guard let cpu = d.decimal() else { return .malformed("a CPU line without a CPU number") }
            d.skipSpaces()
            guard d.peek == UInt8(ascii: "[") else { return .malformed("a CPU line without a [...] marker") }
            d.advance(1)
            if d.hasPrefix("LOST") {
                d.advance(4)
                d.skipSpaces()
                return .event(TraceEvent(line: number, cpu: cpu, pid: 0, time: 0, body: .lost(count: d.decimal())))
            }
            let count = d.decimal()
            d.skipSpaces()
            if d.hasPrefix("EVENTS DROPPED") {
                return .event(TraceEvent(line: number, cpu: cpu, pid: 0, time: 0, body: .lost(count: count)))
            }
            return .malformed("an unknown CPU marker")
        }
        return parseEvent(c, number: number)
    }

    private mutating func parseComment(_ line: UnsafeBufferPointer<UInt8>, number: Int) -> Result {
        var c = Cursor(line)
        c.skipSpaces()
        // "##### CPU 0 buffer started ####": that CPU's earlier events were overwritten.
        if c.hasPrefix("#####") {
            c.advance(5)
            c.skipSpaces()
            guard c.hasPrefix("CPU") else { return .nothing }
            c.advance(3)
            c.skipSpaces()
            return .event(TraceEvent(line: number, cpu: c.decimal() ?? 0, pid: 0, time: 0, body: .lost(count: nil)))
        }
        c.advance(1)
        c.skipSpaces()
        if c.hasPrefix("shadowsim-trace") {
            format = .tracefs
            var h = TraceHeader()
            let text = c.rest
            for (key, value) in headerFields(text) {
                switch key {
                case "kernel": h.kernel = value
                case "cpus": h.cpus = Int(value)
                case "page_size": h.pageSize = Int(value)
                case "command": h.command = value
                default: break
                }
            }
            return .header(h)
        }
        if c.hasPrefix("tracer:") {
            format = .tracefs
            return .nothing
        }
        if c.hasPrefix("entries-in-buffer/entries-written:") {
            c.advance(34)
            c.skipSpaces()
            var h = TraceHeader()
            h.entriesInBuffer = c.decimal()
            if c.peek == UInt8(ascii: "/") { c.advance(1); h.entriesWritten = c.decimal() }
            return .header(h)
        }
        return .nothing
    }

    /// `key=value` pairs of our header line; `command=` takes the rest of the line.
    private func headerFields(_ text: String) -> [(String, String)] {
        var out: [(String, String)] = []
        var rest = Substring(text)
        while let eq = rest.firstIndex(of: "=") {
            let key = String(rest[..<eq]).trimmingLeadingSpaces
            let after = rest[rest.index(after: eq)...]
            if key == "command" {
                out.append((key, String(after)))
                break
            }
            let end = after.firstIndex(of: " ") ?? after.endIndex
            out.append((key, String(after[..<end])))
            rest = after[end...]
        }
        return out
    }

    /// `<comm>-<pid> [cpu] flags time: name: body` (tracefs), without flags
    /// (trace-cmd), or `<comm> <pid> [cpu] time: group:name: body` (perf).
    private mutating func parseEvent(_ start: Cursor, number: Int) -> Result {
        // The CPU column is the first "[ddd]": the comm before it may hold anything.
        guard let open = start.find3DigitBracket() else { return .malformed("no [cpu] column") }
        var back = open - 1
        let bytes = start.bytes
        while back >= 0 && bytes[back] == UInt8(ascii: " ") { back -= 1 }
        let pidEnd = back + 1
        while back >= 0 && bytes[back] >= 48 && bytes[back] <= 57 { back -= 1 }
        guard back + 1 < pidEnd, let pid = Int32(decimalIn: bytes, from: back + 1, to: pidEnd) else {
            return .malformed("no pid before the [cpu] column")
        }
        let separator = back >= 0 ? bytes[back] : 0
        let cpu = Int(bytes[open + 1] - 48) * 100 + Int(bytes[open + 2] - 48) * 10 + Int(bytes[open + 3] - 48)
        var c = Cursor(bytes, position: open + 5)
        c.skipSpaces()
        if format == nil && separator == UInt8(ascii: " ") { format = .perf }
        // tracefs puts five flag characters before the time ("d..1.", "....."): their
        // first is never a digit. trace-cmd and perf go straight to the time.
        if let b = c.peek, !(b >= 48 && b <= 57) {
            c.skipWord()
            c.skipSpaces()
        }
        guard let seconds = c.decimal(), c.peek == UInt8(ascii: "."), c.advance(1), let micros = c.decimal(),
              c.peek == UInt8(ascii: ":") else {
            return .malformed("no timestamp after the [cpu] column")
        }
        c.advance(1)
        c.skipSpaces()
        let time = UInt64(seconds) * 1_000_000 + UInt64(micros)
        guard let body = parseBody(&c) else { return .malformed("cannot read the fields of this event") }
        return .event(TraceEvent(line: number, cpu: cpu, pid: pid, time: time, body: body))
    }

    /// The event name and its fields.
    private func parseBody(_ c: inout Cursor) -> TraceEvent.Body? {
        // Name: up to ':' (perf: group:name:) or, for tracefs syscalls, up to '(' or ' '.
        var nameStart = c.position
        while let b = c.peek, b != UInt8(ascii: ":"), b != UInt8(ascii: "("), b != UInt8(ascii: " ") { c.advance(1) }
        var nameEnd = c.position
        if c.peek == UInt8(ascii: ":") {
            c.advance(1)
            // perf's "group:name:".
            if let b = c.peek, b != UInt8(ascii: " ") {
                nameStart = c.position
                while let b = c.peek, b != UInt8(ascii: ":") { c.advance(1) }
                nameEnd = c.position
                c.advance(1)
            }
        }
        c.skipSpaces()
        // Compared as bytes: no string is made for the common events.
        func named(_ s: StaticString) -> Bool { c.bytes(nameStart, nameEnd, equal: s) }
        // The common events return before any string is made.
        let userFault = named("page_fault_user")
        if userFault || named("page_fault_kernel") {
            guard let address = c.hexField("address="), let code = c.hexField("error_code=") else { return nil }
            return .pageFault(kernelMode: !userFault, address: address, errorCode: UInt32(truncatingIfNeeded: code))
        }
        if named("tlb_flush") {
            guard c.find("pages") else { return nil }
            c.advance(6)                                  // "pages:" or "pages="
            guard let pages = c.signedDecimal(), let reason = c.lastParenthesizedNumber() else { return nil }
            return .tlbFlush(reason: reason, pages: pages)
        }
        let name = named("sched_switch") ? "sched_switch"
            : String(decoding: UnsafeBufferPointer(rebasing: c.bytes[nameStart..<nameEnd]), as: UTF8.self)
        switch name {
        case "sched_switch":
            if let prevComm = c.text(between: "prev_comm=", and: " prev_pid="), let prev = c.decimalField("prev_pid="),
               let nextComm = c.text(between: "next_comm=", and: " next_pid="), let next = c.decimalField("next_pid=") {
                return .schedSwitch(prev: Int32(prev), prevComm: prevComm, next: Int32(next), nextComm: nextComm)
            }
            // trace-cmd: "prev:PID [prio] S ==> next:PID [prio]".
            guard let arrow = c.index(of: "==>"),
                  let prev = c.taskBeforeBracket(from: c.position, before: arrow),
                  let next = c.taskBeforeBracket(from: arrow + 3, before: c.bytes.count) else { return nil }
            return .schedSwitch(prev: prev.pid, prevComm: prev.comm, next: next.pid, nextComm: next.comm)
        case "sched_process_fork":
            guard let parent = c.decimalField(" pid=") ?? c.decimalField("pid="), let child = c.decimalField("child_pid=") else { return nil }
            return .fork(parent: Int32(parent), child: Int32(child))
        case "sched_process_exec":
            guard c.find("filename=") else { return nil }
            c.advance(9)
            let start = c.position
            guard let end = c.index(of: " pid=") else { return nil }
            let filename = String(decoding: UnsafeBufferPointer(rebasing: c.bytes[start..<end]), as: UTF8.self)
            c.position = end
            guard let pid = c.decimalField(" pid="), let old = c.decimalField("old_pid=") else { return nil }
            return .exec(pid: Int32(pid), oldPid: Int32(old), filename: filename)
        case "sched_process_exit":
            guard let pid = c.decimalField(" pid=") ?? c.decimalField("pid=") else { return nil }
            var groupDead: Bool?
            if c.find("group_dead=") { c.advance(11); groupDead = c.hasPrefix("true") }
            return .exit(pid: Int32(pid), groupDead: groupDead)
        case "sched_migrate_task":
            guard let pid = c.decimalField(" pid=") ?? c.decimalField("pid="), let from = c.decimalField("orig_cpu="),
                  let to = c.decimalField("dest_cpu=") else { return nil }
            return .migrate(pid: Int32(pid), from: from, to: to)
        case "task_newtask":
            guard let pid = c.decimalField("pid="), c.find("clone_flags="), c.advance(12), let flags = c.hex() else { return nil }
            return .newTask(pid: Int32(pid), cloneFlags: flags)
        case "PERF_RECORD_LOST":
            c.skipWord()
            c.skipSpaces()
            return .lost(count: c.decimal())
        default:
            return parseSyscall(name, &c)
        }
    }

    /// tracefs: `sys_mmap(addr: 0, len: 0x2000, …)` / `sys_mmap -> 0x…`;
    /// trace-cmd and perf: `sys_enter_mmap: addr: 0x…, …` / `sys_exit_mmap: 0x…`.
    private func parseSyscall(_ name: String, _ c: inout Cursor) -> TraceEvent.Body? {
        var call = name, entry = true
        if call.hasPrefix("sys_enter_") {
            call.removeFirst(10)
        } else if call.hasPrefix("sys_exit_") {
            call.removeFirst(9)
            entry = false
        } else if call.hasPrefix("sys_") {
            call.removeFirst(4)
            if c.peek == UInt8(ascii: "(") {
                c.advance(1)
            } else {
                c.skipSpaces()
                guard c.hasPrefix("->") else { return .other(name: name) }
                c.advance(2)
                entry = false
            }
        } else {
            return .other(name: name)
        }
        guard let syscall = TraceEvent.Syscall(rawValue: call) else { return .other(name: name) }
        c.skipSpaces()
        if !entry {
            guard let value = c.hex() else { return nil }
            return .syscallExit(syscall, Int64(bitPattern: value))
        }
        // "name: value" pairs separated by ", "; a value without "0x" is hex too (older
        // kernels print bare hex; 6.18 prints values below 10 in decimal, the same digit).
        var args: [UInt64] = []
        while !c.atEnd, c.peek != UInt8(ascii: ")") {
            while let b = c.peek, b != UInt8(ascii: ":") { c.advance(1) }
            guard c.peek == UInt8(ascii: ":") else { break }
            c.advance(1)
            c.skipSpaces()
            guard let v = c.hex() else { return nil }
            args.append(v)
            while let b = c.peek, b == UInt8(ascii: ",") || b == UInt8(ascii: " ") { c.advance(1) }
        }
        return .syscallEnter(syscall, args)
    }
}

/// A position in one line of bytes.
struct Cursor {
    let bytes: UnsafeBufferPointer<UInt8>
    var position: Int

    init(_ bytes: UnsafeBufferPointer<UInt8>, position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    var atEnd: Bool { position >= bytes.count }
    var remaining: Int { bytes.count - position }
    var peek: UInt8? { position < bytes.count ? bytes[position] : nil }
    var rest: String { String(decoding: UnsafeBufferPointer(rebasing: bytes[min(position, bytes.count)...]), as: UTF8.self) }

    /// Whether `bytes[start..<end]` spell `s`.
    func bytes(_ start: Int, _ end: Int, equal s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard end - start == n else { return false }
        return s.withUTF8Buffer { p in
            var i = 0
            while i < n && bytes[start + i] == p[i] { i += 1 }
            return i == n
        }
    }

    func string(from start: Int) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
    }

    @discardableResult
    mutating func advance(_ n: Int) -> Bool {
        position = min(position + n, bytes.count)
        return true
    }

    mutating func skipSpaces() {
        while position < bytes.count, bytes[position] == 32 || bytes[position] == 9 { position += 1 }
    }

    mutating func skipWord() {
        while position < bytes.count, bytes[position] != 32 { position += 1 }
    }

    func hasPrefix(_ s: StaticString) -> Bool {
        let n = s.utf8CodeUnitCount
        guard remaining >= n else { return false }
        return s.withUTF8Buffer { p in (0..<n).allSatisfy { bytes[position + $0] == p[$0] } }
    }

    /// The index of the first occurrence of `s` at or after the position.
    func index(of s: StaticString) -> Int? {
        let n = s.utf8CodeUnitCount
        guard n > 0, let base = bytes.baseAddress else { return nil }
        return s.withUTF8Buffer { p -> Int? in
            var i = position
            while i + n <= bytes.count {
                guard let hit = memchr(base + i, Int32(p[0]), bytes.count - n + 1 - i) else { return nil }
                i = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(hit))
                if memcmp(base + i, p.baseAddress!, n) == 0 { return i }
                i += 1
            }
            return nil
        }
    }

    mutating func find(_ s: StaticString) -> Bool {
        guard let i = index(of: s) else { return false }
        position = i
        return true
    }

    /// The position of the first "[ddd]" in the line.
    func find3DigitBracket() -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        var i = position
        while i + 4 < bytes.count {
            guard let hit = memchr(base + i, Int32(UInt8(ascii: "[")), bytes.count - 4 - i) else { return nil }
            i = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(hit))
            if bytes[i + 4] == UInt8(ascii: "]"),
               (1...3).allSatisfy({ bytes[i + $0] >= 48 && bytes[i + $0] <= 57 }) { return i }
            i += 1
        }
        return nil
    }

    mutating func decimal() -> Int? {
        let start = position
        var v = 0
        while position < bytes.count, bytes[position] >= 48 && bytes[position] <= 57 {
            v = v &* 10 &+ Int(bytes[position] - 48)
            position += 1
        }
        return position > start ? v : nil
    }

    mutating func signedDecimal() -> Int64? {
        var negative = false
        if peek == UInt8(ascii: "-") { negative = true; position += 1 }
        guard let v = decimal() else { return nil }
        return negative ? -Int64(v) : Int64(v)
    }

    /// Hexadecimal, with or without "0x".
    mutating func hex() -> UInt64? {
        if remaining >= 2, bytes[position] == 48, bytes[position + 1] | 0x20 == UInt8(ascii: "x") { position += 2 }
        let start = position
        var v: UInt64 = 0
        while position < bytes.count {
            let b = bytes[position]
            let d: UInt8
            switch b {
            case 48...57: d = b - 48
            case 97...102: d = b - 87
            case 65...70: d = b - 55
            default: return position > start ? v : nil
            }
            v = v << 4 | UInt64(d)
            position += 1
        }
        return position > start ? v : nil
    }

    /// The decimal value after `key` (searched from the current position).
    mutating func decimalField(_ key: StaticString) -> Int? {
        guard let i = index(of: key) else { return nil }
        position = i + key.utf8CodeUnitCount
        return decimal()
    }

    /// The hexadecimal value after `key`.
    mutating func hexField(_ key: StaticString) -> UInt64? {
        guard let i = index(of: key) else { return nil }
        position = i + key.utf8CodeUnitCount
        return hex()
    }

    /// The number in the last "(N)" of the line.
    func lastParenthesizedNumber() -> Int? {
        var i = bytes.count - 1
        while i >= 0 && bytes[i] != UInt8(ascii: ")") { i -= 1 }
        guard i > 0 else { return nil }
        var j = i - 1, v = 0, scale = 1
        while j >= 0 && bytes[j] >= 48 && bytes[j] <= 57 { v += Int(bytes[j] - 48) * scale; scale *= 10; j -= 1 }
        guard j >= 0, bytes[j] == UInt8(ascii: "("), j < i - 1 else { return nil }
        return v
    }

    /// The text between `open` and the next `close` (searched from the position, which
    /// moves to `close`).
    mutating func text(between open: StaticString, and close: StaticString) -> String? {
        guard let i = index(of: open) else { return nil }
        let start = i + open.utf8CodeUnitCount
        position = start
        guard let end = index(of: close) else { return nil }
        position = end
        return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }

    /// trace-cmd's "comm:PID [prio]" between `from` and `limit`: the PID before the last
    /// " [", the comm before its colon (a comm may hold spaces and colons).
    func taskBeforeBracket(from: Int, before limit: Int) -> (pid: Int32, comm: String)? {
        var i = limit - 1
        while i > from && !(bytes[i] == UInt8(ascii: "[") && bytes[i - 1] == UInt8(ascii: " ")) { i -= 1 }
        guard i > from else { return nil }
        var end = i - 1
        while end > from && bytes[end] == UInt8(ascii: " ") { end -= 1 }
        var start = end
        while start > from && bytes[start] >= 48 && bytes[start] <= 57 { start -= 1 }
        guard bytes[start] == UInt8(ascii: ":"), let pid = Int32(decimalIn: bytes, from: start + 1, to: end + 1) else { return nil }
        var commStart = from
        while commStart < start && bytes[commStart] == UInt8(ascii: " ") { commStart += 1 }
        let comm = String(decoding: UnsafeBufferPointer(rebasing: bytes[commStart..<start]), as: UTF8.self)
        return (pid, comm)
    }
}

extension Int32 {
    init?(decimalIn bytes: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) {
        guard start < end else { return nil }
        var v: Int64 = 0
        for i in start..<end {
            let b = bytes[i]
            guard b >= 48 && b <= 57 else { return nil }
            v = v * 10 + Int64(b - 48)
            if v > Int64(Int32.max) { return nil }
        }
        self = Int32(v)
    }
}

extension String {
    var trimmingLeadingSpaces: String { String(drop { $0 == " " }) }
}

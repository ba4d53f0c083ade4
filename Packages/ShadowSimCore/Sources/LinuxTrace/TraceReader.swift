#if canImport(Glibc)
import Glibc
#endif

/// Streams the lines of a trace file, plain or gzip-compressed (read through `gzip -dc`,
/// so a trace of any length costs one buffer). Memory does not grow with the trace.
public final class TraceReader {
    public let path: String
    private let file: UnsafeMutablePointer<FILE>
    private let compressed: Bool
    private var buffer: [UInt8]
    private var filled = 0
    private var start = 0
    private var finished = false
    /// Lines handed out so far.
    public private(set) var lineNumber = 0
    /// Bytes of text read so far (after decompression).
    public private(set) var bytesRead: UInt64 = 0
    /// Set while the last line, which has no newline, is handed out.
    public private(set) var atEnd = false

    /// Opens `path`; a missing or unreadable file is a `TraceError`.
    public init(path: String) throws(TraceError) {
        self.path = path
        guard let probe = fopen(path, "rb") else {
            throw TraceError(file: path, line: 0, message: "cannot open the trace: \(String(cString: strerror(errno)))")
        }
        var magic = [UInt8](repeating: 0, count: 2)
        let n = fread(&magic, 1, 2, probe)
        fclose(probe)
        compressed = n == 2 && magic[0] == 0x1F && magic[1] == 0x8B
        if compressed {
            let quoted = "'" + path.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
            // gzip's own message is not needed: a failure is reported as a TraceError.
            guard let pipe = popen("gzip -dc -- \(quoted) 2>/dev/null", "r") else {
                throw TraceError(file: path, line: 0, message: "cannot run gzip to read the compressed trace")
            }
            file = pipe
        } else {
            guard let f = fopen(path, "rb") else {
                throw TraceError(file: path, line: 0, message: "cannot open the trace: \(String(cString: strerror(errno)))")
            }
            file = f
        }
        buffer = [UInt8](repeating: 0, count: 1 << 20)
    }

    deinit { if !finished { close() } }

    private var closeStatus: Int32 = 0

    private func close() {
        finished = true
        closeStatus = compressed ? pclose(file) : fclose(file)
    }

    /// Calls `body` with each line (without its newline) and its number, until the end or
    /// until `body` returns false. Returns whether the last line ended without a newline
    /// (a trace cut short). A compressed stream that ends early is a `TraceError`.
    @discardableResult
    public func forEachLine(_ body: (UnsafeBufferPointer<UInt8>, Int) throws(TraceError) -> Bool) throws(TraceError) -> Bool {
        var unterminated = false
        var stoppedEarly = false
        outer: while true {
            // Hand out every complete line in the buffer.
            while true {
                let newline: Int? = buffer.withUnsafeBufferPointer { p in
                    guard start < filled, let hit = memchr(p.baseAddress! + start, 10, filled - start) else { return nil }
                    return p.baseAddress!.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                }
                guard let end = newline else { break }
                lineNumber += 1
                let keepGoing = try buffer.withUnsafeBufferPointer { (p) throws(TraceError) -> Bool in
                    var lineEnd = end
                    if lineEnd > start && p[lineEnd - 1] == 13 { lineEnd -= 1 }
                    return try body(UnsafeBufferPointer(rebasing: p[start..<lineEnd]), lineNumber)
                }
                start = end + 1
                if !keepGoing {
                    stoppedEarly = true
                    break outer
                }
            }
            // Move the partial line to the front and read more.
            if start > 0 {
                let partial = filled - start
                if partial > 0 { buffer.withUnsafeMutableBufferPointer { p in _ = memmove(p.baseAddress!, p.baseAddress! + start, partial) } }
                filled = partial
                start = 0
            }
            if filled == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
            let n = buffer.withUnsafeMutableBufferPointer { p in fread(p.baseAddress! + filled, 1, p.count - filled, file) }
            bytesRead &+= UInt64(n)
            filled += n
            if n == 0 {
                if filled > start {
                    lineNumber += 1
                    unterminated = true
                    atEnd = true
                    _ = try buffer.withUnsafeBufferPointer { (p) throws(TraceError) -> Bool in
                        try body(UnsafeBufferPointer(rebasing: p[start..<filled]), lineNumber)
                    }
                    start = filled
                }
                break
            }
        }
        close()
        // gzip killed by the closed pipe is no damage when the reader stopped on purpose.
        if compressed && closeStatus != 0 && !stoppedEarly {
            throw TraceError(file: path, line: lineNumber, message: "the compressed trace ends early or is damaged (gzip failed after line \(lineNumber)); nothing after it was read")
        }
        return unterminated
    }
}

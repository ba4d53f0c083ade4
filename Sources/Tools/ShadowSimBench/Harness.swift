#if canImport(Glibc)
import Glibc
#endif

/// Monotonic nanoseconds.
@inline(__always) func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Runs `work`, the measured part of a benchmark, and returns its result and duration in
/// nanoseconds. Never inlined, so that callgrind can count exactly these instructions
/// (`--toggle-collect='*measuredWork*'`: tools/bench-instructions.sh), which stay put on
/// a machine whose timings move.
@inline(never) func measuredWork<T>(_ work: () throws -> T) rethrows -> (result: T, nanoseconds: UInt64) {
    let t0 = now()
    let result = try work()
    return (result, now() - t0)
}

/// One benchmark's figures: the median over repetitions (after a warm-up) of the
/// time per operation, and the spread.
public struct BenchResult: Sendable {
    public let name: String
    public let medianNanoseconds: Double
    public let minNanoseconds: Double
    public let maxNanoseconds: Double
    public let operationsPerRepetition: Int
    public let repetitions: Int
    /// The target in ns per operation, when there is one.
    public let targetNanoseconds: Double?

    public var meetsTarget: Bool? { targetNanoseconds.map { medianNanoseconds <= $0 } }
}

/// Runs benchmarks: each repetition does `operations` operations (or times them one by
/// one when every operation needs its own setup); the first repetition warms up.
public final class BenchRunner {
    public var repetitions: Int
    public var filter: String?
    public private(set) var results: [BenchResult] = []
    let progress: (String) -> Void

    public init(repetitions: Int = 5, filter: String? = nil, progress: @escaping (String) -> Void = { _ in }) {
        self.repetitions = max(1, repetitions)
        self.filter = filter
        self.progress = progress
    }

    func wants(_ name: String) -> Bool { filter.map { name.contains($0) } ?? true }

    /// `body` performs `operations` operations and is timed as a whole. `setup` runs
    /// before each repetition, untimed.
    func measure<State>(_ name: String, target: Double? = nil, operations: Int,
                        setup: () throws -> State, _ body: (State) throws -> Void) rethrows {
        guard wants(name) else { return }
        progress(name)
        var samples: [Double] = []
        for rep in 0...repetitions {
            let state = try setup()
            let t = Double(try measuredWork { try body(state) }.nanoseconds) / Double(operations)
            if rep > 0 { samples.append(t) }
        }
        record(name, samples, operations: operations, target: target)
    }

    /// `body` times its own operations (returning total nanoseconds), for operations that
    /// need untimed work between them.
    func measureSelfTimed<State>(_ name: String, target: Double? = nil, operations: Int, repetitions: Int? = nil,
                                 setup: () throws -> State, _ body: (State) throws -> UInt64) rethrows {
        guard wants(name) else { return }
        progress(name)
        var samples: [Double] = []
        for rep in 0...(repetitions ?? self.repetitions) {
            let state = try setup()
            let t = Double(try body(state)) / Double(operations)
            if rep > 0 { samples.append(t) }
        }
        record(name, samples, operations: operations, target: target)
    }

    /// A figure computed rather than timed (bytes, say).
    func record(value name: String, _ value: Double, target: Double? = nil) {
        guard wants(name) else { return }
        results.append(BenchResult(name: name, medianNanoseconds: value, minNanoseconds: value, maxNanoseconds: value,
                                   operationsPerRepetition: 1, repetitions: 1, targetNanoseconds: target))
    }

    private func record(_ name: String, _ samples: [Double], operations: Int, target: Double?) {
        let sorted = samples.sorted()
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2]
            : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        results.append(BenchResult(name: name, medianNanoseconds: median, minNanoseconds: sorted.first!,
                                   maxNanoseconds: sorted.last!, operationsPerRepetition: operations,
                                   repetitions: samples.count, targetNanoseconds: target))
    }
}

/// Resident bytes of this process (/proc/self/statm), to measure growth.
func residentBytes() -> Int {
    guard let f = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(f) }
    var size = 0, resident = 0
    guard readTwoIntegers(f, &size, &resident) else { return 0 }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
}

private func readTwoIntegers(_ f: UnsafeMutablePointer<FILE>, _ a: inout Int, _ b: inout Int) -> Bool {
    var buffer = [UInt8](repeating: 0, count: 128)
    guard fread(&buffer, 1, 127, f) > 0 else { return false }
    let line = String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }, as: UTF8.self)
    let fields = line.split(separator: " ").compactMap { Int($0) }
    guard fields.count >= 2 else { return false }
    (a, b) = (fields[0], fields[1])
    return true
}

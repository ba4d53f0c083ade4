import ShadowSimFuzzKit
import ShadowMMU
import ShadowSimFiles
#if canImport(Glibc)
import Glibc
#endif

// Built two ways (see tools/fuzz.sh):
// - with `-sanitize=fuzzer -DSHADOWSIM_LIBFUZZER`: libFuzzer's main drives
//   `LLVMFuzzerTestOneInput`, and a finding aborts (libFuzzer saves the input); given
//   a `--` option it is the replay tool instead;
// - plainly: a replay tool, `shadowsim-fuzz FILE|DIR…`, that runs saved inputs (the
//   corpus, a crash file) or generated ones (`--generate N --seed S`, the same inputs
//   on every machine, which the CI pass uses) and prints what each did.
//
// Both read these environment variables:
// - SHADOWSIM_FUZZ_BUG=NAME plants a bug (see `shadowsim bugs`) and runs only the
//   policies whose code reaches it: a finding is then the expected outcome (the
//   catch table of tools/fuzz.sh);
// - SHADOWSIM_FUZZ_FLOORS=FILE holds lines `POLICY COUNTER MINIMUM`; at exit the sync
//   coverage summed over every input must reach each floor, or the process exits 1.

nonisolated(unsafe) var inputsRun = 0
nonisolated(unsafe) var operationsRun = 0
nonisolated(unsafe) var accessesChecked: UInt64 = 0
nonisolated(unsafe) var coverage: [String: SyncCoverage] = [:]
/// The replayed file, named in a finding.
nonisolated(unsafe) var currentInput = "the input"
nonisolated(unsafe) var plantedBug: PlantedBug?
nonisolated(unsafe) var policies = FuzzProgram.policies

/// Writes a line to standard error (fd 2, unbuffered).
func printError(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}

/// Reads SHADOWSIM_FUZZ_BUG; exits 2 on a name that is not a bug.
func configureFromEnvironment() {
    guard let name = getenv("SHADOWSIM_FUZZ_BUG").map({ String(cString: $0) }), !name.isEmpty else { return }
    guard let bug = PlantedBug(rawValue: name) else {
        printError("shadowsim-fuzz: SHADOWSIM_FUZZ_BUG: no bug '\(name)' (one of \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", ")))")
        exit(2)
    }
    plantedBug = bug
    policies = bug.policies
}

/// The totals, and the sync coverage per policy, on stdout.
func printTotals() {
    print("shadowsim-fuzz: \(inputsRun) inputs, \(operationsRun) operations over \(policies.count) policies, \(accessesChecked) accesses checked, 0 findings")
    let names = SyncCoverage().fields.map(\.name)
    let width = max(policies.map(\.count).max() ?? 0, 6)
    print("sync coverage".padding(width) + names.map { " " + $0 }.joined())
    for policy in policies where policy != "bare-metal" {
        let values = (coverage[policy] ?? SyncCoverage()).fields
        print(policy.padding(width) + zip(names, values).map { name, v in " " + String(v.value).leftPadding(name.count) }.joined())
    }
}

/// Holds the totals to the floors of SHADOWSIM_FUZZ_FLOORS; false (with a message per
/// floor missed) when one is not reached, or when the file cannot be read or parsed.
func floorsReached() -> Bool {
    guard let path = getenv("SHADOWSIM_FUZZ_FLOORS").map({ String(cString: $0) }), !path.isEmpty else { return true }
    guard let bytes = Files.read(path) else {
        printError("shadowsim-fuzz: \(path): cannot read the coverage floors")
        return false
    }
    var ok = true
    for (n, raw) in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        if words.isEmpty { continue }
        guard words.count == 3, let minimum = UInt64(words[2]),
              let value = (coverage[words[0]] ?? SyncCoverage()).fields.first(where: { $0.name == words[1] })?.value else {
            printError("\(path):\(n + 1): expected `POLICY COUNTER MINIMUM` with a counter of the coverage table")
            return false
        }
        if !policies.contains(words[0]) { continue }
        if value < minimum {
            printError("shadowsim-fuzz: coverage floor missed: \(words[0]) \(words[1]) = \(value), the floor is \(minimum) (\(path):\(n + 1))")
            ok = false
        }
    }
    return ok
}

/// Runs one input under every policy; a finding is reported on stderr and ends the
/// process with abort() so that libFuzzer keeps the input.
func runOne(_ bytes: [UInt8], only: [String]? = nil, trace: Bool = false) -> FuzzProgram.Outcome {
    do {
        let outcome = try FuzzProgram(bytes, plantedBug: plantedBug).run(policies: only ?? policies,
                                                                        trace: trace ? { print($0) } : nil)
        inputsRun += 1
        operationsRun += outcome.operations
        accessesChecked += outcome.checkedAccesses
        for (policy, c) in outcome.coverage { coverage[policy, default: SyncCoverage()] += c }
        return outcome
    } catch {
        fflush(nil)
        savePendingInput()
        printError("shadowsim-fuzz: finding in \(currentInput)\(plantedBug.map { " (planted bug \($0.rawValue))" } ?? ""): \(error)")
        abort()
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    _ = runOne(bytes)
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    configureFromEnvironment()
    atexit {
        printTotals()
        fflush(nil)
        // Leaving an atexit handler through exit() again is undefined; _exit is not.
        if !floorsReached() { _exit(1) }
    }
    return 0
}

extension String {
    func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
    func leftPadding(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

/// Runs `count` inputs from a splitmix64 stream seeded with `seed`: lengths of 0–4095
/// bytes, every byte from the stream, so input `i` of a seed is the same everywhere.
/// A finding saves the input (in .build-fuzz/findings/generated-SEED-I) before aborting.
func runGenerated(count: Int, seed: UInt64, trace: Bool) {
    var state = seed
    func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    for i in 0..<count {
        let length = Int(next() % 4096)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(length + 8)
        while bytes.count < length {
            var w = next()
            for _ in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: w)); w >>= 8 }
        }
        bytes.removeLast(bytes.count - length)
        let name = "generated-\(seed)-\(i)"
        currentInput = "input \(i) of seed \(seed) (saved as .build-fuzz/findings/\(name))"
        pendingInput = (name, bytes)
        _ = runOne(bytes, trace: trace)
        pendingInput = nil
    }
}

/// The generated input being run, saved if it finds something.
nonisolated(unsafe) var pendingInput: (name: String, bytes: [UInt8])?

func savePendingInput() {
    guard let (name, bytes) = pendingInput else { return }
    mkdir(".build-fuzz", 0o755)
    mkdir(".build-fuzz/findings", 0o755)
    guard let f = fopen(".build-fuzz/findings/" + name, "wb") else { return }
    _ = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) }
    fclose(f)
}

#if SHADOWSIM_LIBFUZZER
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's `main` to `<module>_main`; here that hands the
/// process to libFuzzer's driver, unless an argument is one of the replay tool's
/// (`--generate`, `--trace`, …: libFuzzer's flags take one dash).
@_cdecl("shadowsim_fuzz_main")
public func shadowsimFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    let arguments = (1..<Int(argc)).compactMap { argv?[$0].map { String(cString: $0) } }
    if arguments.contains(where: { $0.hasPrefix("--") }) {
        replayMain(arguments)
        return 0
    }
    var count = argc
    var pointers = argv
    return LLVMFuzzerRunDriver(&count, &pointers) { data, size in fuzzTestOneInput(data, size) }
}
#else
@main
enum Replay {
    static func main() { replayMain(Array(CommandLine.arguments.dropFirst())) }
}
#endif

/// The replay tool: saved inputs, or generated ones, under every policy.
func replayMain(_ argumentList: [String]) {
    configureFromEnvironment()
    var paths: [String] = []
    var only: [String]?
    var trace = false
    var generate = 0
    var seed: UInt64 = 1
    var arguments = argumentList[...]
    while let argument = arguments.popFirst() {
        switch argument {
        case "-h", "--help":
            print("""
                usage: shadowsim-fuzz [--trace] [--policy NAME] [--inject-bug BUG] [--generate N [--seed S]] [FILE|DIRECTORY…]
                Replays fuzz inputs under every policy (or NAME) with the checker on, and
                prints the sync coverage per policy; --trace prints each operation,
                --inject-bug plants a bug (a finding is then expected). --generate runs N
                inputs made by a generator seeded with S (the same inputs on any machine);
                a finding saves its input in .build-fuzz/findings/. --list-bugs prints
                every plantable bug and the policies its code is reached from. Build with
                tools/fuzz.sh to fuzz with libFuzzer.
                """)
            exit(0)
        case "--list-bugs":
            for bug in PlantedBug.allCases { print(bug.rawValue + " " + bug.policies.joined(separator: ",")) }
            exit(0)
        case "--trace": trace = true
        case "--inject-bug":
            guard let name = arguments.popFirst(), let bug = PlantedBug(rawValue: name) else {
                printError("shadowsim-fuzz: --inject-bug takes one of \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", "))")
                exit(2)
            }
            plantedBug = bug
            policies = bug.policies
        case "--policy":
            guard let name = arguments.popFirst(), FuzzProgram.policies.contains(name) else {
                printError("shadowsim-fuzz: --policy takes one of \(FuzzProgram.policies.joined(separator: ", "))")
                exit(2)
            }
            only = [name]
        case "--generate":
            guard let text = arguments.popFirst(), let n = Int(text), n > 0 else {
                printError("shadowsim-fuzz: --generate takes a positive number of inputs")
                exit(2)
            }
            generate = n
        case "--seed":
            guard let text = arguments.popFirst(), let n = UInt64(text) else {
                printError("shadowsim-fuzz: --seed takes a number")
                exit(2)
            }
            seed = n
        default:
            if argument.hasPrefix("--") {
                printError("shadowsim-fuzz: unknown option \(argument) (see --help)")
                exit(2)
            }
            paths.append(argument)
        }
    }
    guard !paths.isEmpty || generate > 0 else {
        printError("usage: shadowsim-fuzz [--trace] [--policy NAME] [--inject-bug BUG] [--generate N [--seed S]] [FILE|DIRECTORY…]")
        exit(2)
    }
    if let only { policies = only }
    if generate > 0 {
        runGenerated(count: generate, seed: seed, trace: trace)
        printTotals()
        if !floorsReached() { exit(1) }
        return
    }
    var files: [String] = []
    for path in paths {
        guard let listed = Files.list(path) else {
            printError("shadowsim-fuzz: \(path): no such file or directory")
            exit(2)
        }
        files += listed
    }
    for file in files {
        guard let bytes = Files.read(file) else {
            printError("shadowsim-fuzz: \(file): cannot read it")
            exit(2)
        }
        currentInput = file
        let o = runOne(bytes, trace: trace)
        print("\(file): \(o.operations) operations, \(o.skipped) refused, \(o.checkedAccesses) accesses checked")
    }
    printTotals()
    if !floorsReached() { exit(1) }
}

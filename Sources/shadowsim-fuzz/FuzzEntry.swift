import ShadowSimFuzzKit
import ShadowMMU
import ShadowSimFiles
#if canImport(Glibc)
import Glibc
#endif

// Built two ways (see tools/fuzz.sh):
// - with `-sanitize=fuzzer -DSHADOWSIM_LIBFUZZER`: libFuzzer's main drives
//   `LLVMFuzzerTestOneInput`, and a finding aborts (libFuzzer saves the input);
// - plainly: a replay tool, `shadowsim-fuzz FILE|DIR…`, that runs saved inputs (the
//   corpus, a crash file) and prints what each did.

nonisolated(unsafe) var inputsRun = 0
nonisolated(unsafe) var operationsRun = 0
nonisolated(unsafe) var accessesChecked: UInt64 = 0
/// The replayed file, named in a finding.
nonisolated(unsafe) var currentInput = "the input"

/// Writes a line to standard error (fd 2, unbuffered).
func printError(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
}

func printTotals() {
    print("shadowsim-fuzz: \(inputsRun) inputs, \(operationsRun) operations over \(FuzzProgram.policies.count) policies, \(accessesChecked) accesses checked, 0 findings")
}

/// Runs one input under every policy; a finding is reported on stderr and ends the
/// process with abort() so that libFuzzer keeps the input.
func runOne(_ bytes: [UInt8], policies: [String] = FuzzProgram.policies, trace: Bool = false,
            plantedBug: PlantedBug? = nil) -> FuzzProgram.Outcome {
    do {
        let outcome = try FuzzProgram(bytes, plantedBug: plantedBug).run(policies: policies, trace: trace ? { print($0) } : nil)
        inputsRun += 1
        operationsRun += outcome.operations
        accessesChecked += outcome.checkedAccesses
        return outcome
    } catch {
        fflush(nil)
        printError("shadowsim-fuzz: finding in \(currentInput): \(error)")
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
    atexit { printTotals() }
    return 0
}

#if SHADOWSIM_LIBFUZZER
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's `main` to `<module>_main`; here that hands the
/// process to libFuzzer's driver.
@_cdecl("shadowsim_fuzz_main")
public func shadowsimFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in fuzzTestOneInput(data, size) }
}
#else
@main
enum Replay {
    static func main() {
        var paths: [String] = []
        var policies = FuzzProgram.policies
        var trace = false
        var plantedBug: PlantedBug?
        var arguments = CommandLine.arguments.dropFirst()
        while let argument = arguments.popFirst() {
            switch argument {
            case "-h", "--help":
                print("""
                    usage: shadowsim-fuzz [--trace] [--policy NAME] [--inject-bug BUG] FILE|DIRECTORY…
                    Replays fuzz inputs under every policy (or NAME) with the checker on;
                    --trace prints each operation, --inject-bug plants a bug (a finding
                    is then expected). Build with tools/fuzz.sh to fuzz.
                    """)
                exit(0)
            case "--trace": trace = true
            case "--inject-bug":
                guard let name = arguments.popFirst(), let bug = PlantedBug(rawValue: name) else {
                    printError("shadowsim-fuzz: --inject-bug takes one of \(PlantedBug.allCases.map(\.rawValue).joined(separator: ", "))")
                    exit(2)
                }
                plantedBug = bug
            case "--policy":
                guard let name = arguments.popFirst(), FuzzProgram.policies.contains(name) else {
                    printError("shadowsim-fuzz: --policy takes one of \(FuzzProgram.policies.joined(separator: ", "))")
                    exit(2)
                }
                policies = [name]
            default: paths.append(argument)
            }
        }
        guard !paths.isEmpty else {
            printError("usage: shadowsim-fuzz [--trace] [--policy NAME] FILE|DIRECTORY…")
            exit(2)
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
            let o = runOne(bytes, policies: policies, trace: trace, plantedBug: plantedBug)
            print("\(file): \(o.operations) operations, \(o.skipped) refused, \(o.checkedAccesses) accesses checked")
        }
        printTotals()
    }
}
#endif

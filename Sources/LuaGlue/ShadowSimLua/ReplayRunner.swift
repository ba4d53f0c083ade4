import LuaKit
import X86
import GuestKernel
import ShadowMMU
import LinuxTrace
import LinuxReplay

/// What to replay and on what guest.
public struct ReplayRequest: Sendable {
    public var trace: String
    public var policy = "kvm-unsync"
    public var check = true
    /// vCPUs; nil: as many as the trace's CPUs.
    public var vcpus: Int?
    public var memoryBytes: UInt64 = 4 << 30
    public var linux = LinuxOptions()
    /// Stop after this many events.
    public var maxEvents: Int?
    public var shadowPages: Int?
    /// Disagreements with the trace to describe, by line (`explanations` of the result).
    public var explain = 0
    /// Polled during the replay: true stops it there (Ctrl-C), keeping what was done.
    public var shouldStop: (@Sendable () -> Bool)?

    public init(trace: String) { self.trace = trace }
}

/// Replays a trace on a VM of a session, outside Lua (`shadowsim replay`, and
/// `shadowsim.replay` in a scenario).
public enum ReplayRunner {
    /// The number of CPUs a trace was recorded on: its header's, else the highest CPU an
    /// event names plus one (a pass over the file).
    public static func traceCPUs(_ path: String) throws(TraceError) -> Int {
        let reader = try TraceReader(path: path)
        var parser = TraceLineParser()
        var highest = -1
        var fromHeader: Int?
        try reader.forEachLine { (bytes, number) throws(TraceError) -> Bool in
            switch parser.parse(bytes, number: number) {
            case .header(let h):
                if let c = h.cpus { fromHeader = c; return false }
            case .event(let e):
                highest = max(highest, e.cpu)
            case .malformed(let why):
                if number == 1 {
                    throw TraceError(file: path, line: number, message: "not a trace of tracefs, trace-cmd report or perf script: \(why)")
                }
            case .nothing:
                break
            }
            return true
        }
        return fromHeader ?? max(highest + 1, 1)
    }

    /// Replays `request.trace` on a new VM of `session`. The VM (counters, the Linux
    /// model, the replay's record) stays in the session even when the replay fails.
    @discardableResult
    public static func replay(_ request: ReplayRequest, in session: Session, name: String? = nil,
                              progress: ((TraceReplay.Progress) -> Void)? = nil) throws(ReplayError) -> (ScenarioVM, ReplayRecord) {
        let cpus: Int
        if let v = request.vcpus {
            cpus = v
        } else {
            do { cpus = try traceCPUs(request.trace) } catch { throw ReplayError(description: error.description) }
        }
        guard cpus <= MachineConfiguration.maxVCPUs else {
            throw ReplayError(description: "\(request.trace): \(cpus) CPUs, more than the \(MachineConfiguration.maxVCPUs) vCPUs a guest can have")
        }
        var config = MachineConfiguration(mode: .long4)
        config.vcpuCount = cpus
        config.memoryBytes = request.memoryBytes
        config.cr4SMEP = true
        config.cr4SMAP = true
        var mmu = ShadowMMUConfiguration()
        mmu.maxShadowPages = request.shadowPages
        let vm: ScenarioVM
        do {
            vm = try session.makeVM(config, name: name ?? "replay\(session.vms.count)", policy: request.policy, mmu: mmu,
                                    check: request.check)
        } catch {
            throw ReplayError(description: error.description)
        }
        let linux: LinuxKernel
        do { linux = try LinuxKernel(kernel: vm.kernel, options: request.linux) } catch {
            throw ReplayError(description: "\(request.trace): \(error)")
        }
        vm.linux = linux
        let replay = TraceReplay(linux: linux)
        replay.explain = request.explain
        defer {
            vm.replays.append((request.trace, replay.record))
            vm.explanations += replay.explanations
        }
        do {
            try replay.replay(path: request.trace, maxEvents: request.maxEvents, progress: progress, shouldStop: request.shouldStop)
        } catch {
            throw ReplayError(description: error.description)
        }
        return (vm, replay.record)
    }

    /// `shadowsim replay`: one trace under one policy, as a run record (what `compare`
    /// tabulates): status, error, the VM with its counters, the model's and the replay's.
    public static func run(_ request: ReplayRequest, mmuTrace: MMUTraceSink? = nil,
                           progress: ((TraceReplay.Progress) -> Void)? = nil) -> ScenarioResult {
        let session = Session(seed: 0, arguments: [], defaultPolicy: request.policy, check: request.check)
        session.mmuTrace = mmuTrace
        var failure: LuaScriptError?
        var interrupted = false
        do {
            let (_, record) = try replay(request, in: session, progress: progress)
            interrupted = record.interrupted
        } catch {
            failure = LuaScriptError(message: error.description, traceback: "")
        }
        let status = interrupted ? "interrupted" : (failure == nil ? "passed" : "failed")
        let report = session.report(script: request.trace, status: status, error: failure?.message)
        return ScenarioResult(error: failure, exhausted: interrupted ? .interrupt : nil, report: report)
    }
}

/// A replay that could not run or failed: `file:line: message`.
public struct ReplayError: Error, CustomStringConvertible {
    public let description: String
}

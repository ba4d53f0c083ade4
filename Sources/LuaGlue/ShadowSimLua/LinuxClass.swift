import CLua
import CLuaShim
import LuaKit
import X86
import GuestKernel
import LinuxReplay

/// `shadowsim.linux(vm, opts)`: the Linux model on a VM, driven at the level of a
/// kernel's process calls. Arguments are checked here; every rule is the model's.
final class LuaLinux {
    let linux: LinuxKernel
    var nextPID: Int32 = 100

    init(_ linux: LinuxKernel) { self.linux = linux }
}

extension ClassName {
    static let linux = "shadowsim.Linux"
}

/// `"rwx"`-style rights ("" or "none": PROT_NONE).
private func protection(_ call: inout LuaCall, _ text: String, _ index: Int32) throws(LuaRaise) -> Protection {
    if text == "none" { return [] }
    var p: Protection = []
    for c in text {
        switch c {
        case "r": p.insert(.read)
        case "w": p.insert(.write)
        case "x": p.insert(.exec)
        default: throw call.argumentError(index, "rights are letters of \"rwx\" (or \"none\"), got \"\(text)\"")
        }
    }
    return p
}

func registerLinuxClass(_ lua: LuaState) {
    func this(_ call: inout LuaCall) throws(LuaRaise) -> LuaLinux { try call.this(LuaLinux.self, className: ClassName.linux) }
    /// The task `pid` (argument `index`), made current on its CPU: process calls run there.
    func running(_ call: inout LuaCall, _ l: LuaLinux, _ index: Int32) throws(LuaRaise) -> Int {
        let pid = try call.integer(index, in: 1...Int64(Int32.max), "pid")
        guard let task = l.linux.task(Int32(pid)), !task.exited, task.kind == .user else {
            throw call.argumentError(index, "no process or thread has pid \(pid)")
        }
        if l.linux.current(on: task.cpu) !== task {
            try core { () throws(MachineError) in try l.linux.schedule(task, on: task.cpu) }
        }
        return task.cpu
    }
    func address(_ call: inout LuaCall, _ index: Int32) throws(LuaRaise) -> UInt64 { UInt64(bitPattern: try call.integer(index)) }

    lua.registerClass(ClassName.linux, methods: [
        ("spawn", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let o = try call.options(2, allowed: ["cpu"])
            let cpu = Int(try o.integer("cpu", in: 0...Int64(l.linux.cpuCount - 1)) ?? 0)
            let pid = l.nextPID
            l.nextPID += 1
            try core { () throws(MachineError) in
                let task = try l.linux.spawn(pid: pid, on: cpu)
                try l.linux.schedule(task, on: cpu)
            }
            call.push(Int64(pid))
            return 1
        }),
        ("fork", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let pid = l.nextPID
            l.nextPID += 1
            try core { () throws(MachineError) in _ = try l.linux.fork(on: cpu, child: pid, flags: []) }
            call.push(Int64(pid))
            return 1
        }),
        ("thread", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let pid = l.nextPID
            l.nextPID += 1
            try core { () throws(MachineError) in _ = try l.linux.fork(on: cpu, child: pid, flags: [.vm, .thread]) }
            call.push(Int64(pid))
            return 1
        }),
        ("exec", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            try core { () throws(MachineError) in try l.linux.exec(on: cpu) }
            return 0
        }),
        ("exit", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            try core { () throws(MachineError) in
                try l.linux.exit(on: cpu)
                try l.linux.schedule(nil, on: cpu)
            }
            return 0
        }),
        ("switch", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = Int(try call.integer(2, in: 0...Int64(l.linux.cpuCount - 1), "cpu"))
            var task: LinuxTask?
            if !call.isNoneOrNil(3) {
                let pid = try call.integer(3, in: 1...Int64(Int32.max), "pid")
                guard let t = l.linux.task(Int32(pid)), !t.exited else { throw call.argumentError(3, "no task has pid \(pid)") }
                task = t
            }
            try core { () throws(MachineError) in try l.linux.schedule(task, on: cpu) }
            return 0
        }),
        ("mmap", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let length = UInt64(try call.integer(3, in: 1...(1 << 46), "length"))
            let o = try call.options(4, allowed: ["prot", "shared", "file", "offset", "addr", "populate"])
            let prot = try protection(&call, try o.string("prot") ?? "rw", 4)
            var flags: MapFlags = try o.boolean("shared") ?? false ? .shared : .private
            let file = try o.string("file")
            if file == nil { flags.insert(.anonymous) }
            if try o.boolean("populate") ?? false { flags.insert(.populate) }
            let at = try o.integer("addr").map { UInt64(bitPattern: $0) }
            if at != nil { flags.insert(.fixed) }
            let offset = UInt64(try o.integer("offset", in: 0...(1 << 46)) ?? 0)
            let start = try core { () throws(MachineError) in
                try l.linux.mmap(on: cpu, address: at, length: length, protection: prot, flags: flags,
                                 fd: file == nil ? -1 : 3, offset: offset, file: file.map { FileKey($0) })
            }
            call.push(bits: start)
            return 1
        }),
        ("munmap", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let (a, n) = (try address(&call, 3), UInt64(try call.integer(4, in: 0...(1 << 47), "length")))
            try core { () throws(MachineError) in try l.linux.munmap(on: cpu, a, n) }
            return 0
        }),
        ("mprotect", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let (a, n) = (try address(&call, 3), UInt64(try call.integer(4, in: 0...(1 << 47), "length")))
            let prot = try protection(&call, try call.string(5), 5)
            try core { () throws(MachineError) in try l.linux.mprotect(on: cpu, a, n, prot) }
            return 0
        }),
        ("madvise", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let (a, n) = (try address(&call, 3), UInt64(try call.integer(4, in: 0...(1 << 47), "length")))
            let names: [String: Advice] = ["dontneed": .dontNeed, "free": .free, "remove": .remove]
            let name = try call.string(5)
            guard let advice = names[name] else { throw call.argumentError(5, "advice must be dontneed, free or remove, got \"\(name)\"") }
            try core { () throws(MachineError) in _ = try l.linux.madvise(on: cpu, a, n, advice.rawValue) }
            return 0
        }),
        ("brk", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let requested = call.isNoneOrNil(3) ? 0 : try address(&call, 3)
            call.push(bits: try core { () throws(MachineError) in try l.linux.brk(on: cpu, requested: requested) })
            return 1
        }),
        ("mremap", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let a = try address(&call, 3)
            let old = UInt64(try call.integer(4, in: 1...(1 << 46), "old length"))
            let new = UInt64(try call.integer(5, in: 1...(1 << 46), "new length"))
            call.push(bits: try core { () throws(MachineError) in try l.linux.mremap(on: cpu, a, oldLength: old, newLength: new) })
            return 1
        }),
        ("touch", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = try running(&call, l, 2)
            let va = try address(&call, 3)
            let kindName = call.isNoneOrNil(4) ? "read" : try call.string(4)
            let kinds: [String: AccessKind] = ["read": .read, "write": .write, "exec": .fetch]
            guard let kind = kinds[kindName] else { throw call.argumentError(4, "access must be read, write or exec, got \"\(kindName)\"") }
            let r = try core { () throws(MachineError) in try l.linux.touch(on: cpu, va, kind) }
            // "hit" when the access did not fault; else how the fault was handled.
            call.push(r.resolution?.rawValue ?? "hit")
            if r.first.outcome == .pageFault { call.push(Int64(r.first.errorCode)) } else { call.pushNil() }
            return 2
        }),
        ("current", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            let cpu = Int(try call.integer(2, in: 0...Int64(l.linux.cpuCount - 1), "cpu"))
            if let t = l.linux.current(on: cpu) { call.push(Int64(t.pid)) } else { call.pushNil() }
            return 1
        }),
        ("stats", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
            let l = try this(&call)
            pushJSON(&call, linuxObject(l.linux.stats, options: l.linux.options))
            return 1
        }),
    ])
}

/// `shadowsim.linux(vm, { kpti = false, pcid = true })`.
func newLinux(_ call: inout LuaCall) throws(LuaRaise) -> Int32 {
    let vm = try call.object(1, ScenarioVM.self, metatableName: ClassName.vm, expected: "vm")
    let o = try call.options(2, allowed: ["kpti", "pcid"])
    guard vm.linux == nil else { throw call.argumentError(1, "this VM already runs the Linux model") }
    let options = LinuxOptions(kpti: try o.boolean("kpti") ?? false, pcid: try o.boolean("pcid") ?? true)
    let linux = try core { () throws(MachineError) in try LinuxKernel(kernel: vm.kernel, options: options) }
    vm.linux = linux
    call.pushObject(LuaLinux(linux), className: ClassName.linux)
    return 1
}

/// `shadowsim.replay(path, { policy, vcpus, memory, kpti, pcid, events, check, name })`:
/// a trace replayed on a new VM of this run; returns the record and the VM.
func replayFromLua(_ call: inout LuaCall, session: Session) throws(LuaRaise) -> Int32 {
    let path = try call.string(1)
    let o = try call.options(2, allowed: ["policy", "vcpus", "memory", "kpti", "pcid", "events", "check", "name", "shadow_pages"])
    var request = ReplayRequest(trace: path)
    request.policy = try o.string("policy") ?? session.defaultPolicy
    request.check = try o.boolean("check") ?? session.check
    request.vcpus = try o.integer("vcpus", in: 1...Int64(MachineConfiguration.maxVCPUs)).map { Int($0) }
    request.memoryBytes = try o.byteSize("memory") ?? request.memoryBytes
    request.linux = LinuxOptions(kpti: try o.boolean("kpti") ?? false, pcid: try o.boolean("pcid") ?? true)
    request.maxEvents = try o.integer("events", in: 1...Int64.max).map { Int($0) }
    request.shadowPages = try o.integer("shadow_pages", in: 8...(1 << 30)).map { Int($0) }
    let name = try o.string("name")
    let vm: ScenarioVM, record: ReplayRecord
    do { (vm, record) = try ReplayRunner.replay(request, in: session, name: name) } catch { throw LuaRaise(error.description) }
    pushJSON(&call, replayObject(path, record))
    pushVM(&call, vm)
    return 2
}

/// A report object as a Lua value (objects become tables, null nil).
func pushJSON(_ call: inout LuaCall, _ value: JSONValue) {
    switch value {
    case .null: call.pushNil()
    case .bool(let b): call.push(b)
    case .integer(let i): call.push(i)
    case .number(let d): call.push(d)
    case .string(let s): call.push(s)
    case .array(let a):
        call.newTable(arrayCount: Int32(a.count))
        for (i, v) in a.enumerated() {
            pushJSON(&call, v)
            call.setIndex(Int64(i + 1))
        }
    case .object(let fields):
        call.newTable(fieldCount: Int32(fields.count))
        for (k, v) in fields {
            pushJSON(&call, v)
            call.setField(k)
        }
    }
}

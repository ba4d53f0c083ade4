import CLua
import CLuaShim
import LuaKit
import X86

// The paravirtual MMU calls (`vcpu:pv_update`, `vcpu:pv_flush`, `vm:batch`): arguments
// translated and checked here; what the hypercalls do is the policy's and the engine's.

/// `{ {gpa, value}, … }` at `index`: the entries of an update hypercall.
private func updateList(_ call: inout LuaCall, _ index: Int32) throws(LuaRaise) -> [PageTableUpdate] {
    try call.table(index)
    let L = call.L
    let n = lua_rawlen(L, index)
    var updates: [PageTableUpdate] = []
    updates.reserveCapacity(Int(n))
    for i in 0..<n {
        lua_rawgeti(L, index, Int64(i) + 1)
        defer { luashim_pop(L, 1) }
        guard lua_type(L, -1) == LUA_TTABLE else {
            throw call.argumentError(index, "update \(i + 1) must be a pair { gpa, value }, got \(call.typeName(-1))")
        }
        let notAPair = "update \(i + 1) must be a pair { gpa, value } of integers"
        let pair = try call.integers(inTableAt: -1, argument: index) { _ in notAPair }
        guard pair.count == 2 else { throw call.argumentError(index, notAPair) }
        updates.append(.write(address: pair[0], value: pair[1]))
    }
    return updates
}

var paravirtualVCPUMethods: [(String, LuaFunction)] { [
    /// `vcpu:pv_update({ {gpa, value}, … }, cpl)`: one update hypercall.
    ("pv_update", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        let vcpu = try call.this(VCPU.self, className: ClassName.vcpu)
        let updates = try updateList(&call, 2)
        let cpl = try call.optionalInteger(3).map { (v: Int64) throws(LuaRaise) -> Int in
            guard (0...3).contains(v) else { throw call.argumentError(3, "cpl must be 0…3, got \(v)") }
            return Int(v)
        }
        let r = try core { () throws(MachineError) in try vcpu.hypercall(.updatePageTables(updates), cpl: cpl) }
        guard r.isOK else { return pushFault(&call, r) }
        call.push(true)
        return 1
    }),
    /// `vcpu:pv_flush(vas | "all", { vcpus = {1, 2}, cpl })`: one flush hypercall; the
    /// targets default to this vCPU.
    ("pv_flush", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        let vcpu = try call.this(VCPU.self, className: ClassName.vcpu)
        let scope: FlushScope
        if lua_type(call.L, 2) == LUA_TSTRING {
            let word = try call.string(2)
            guard word == "all" else { throw call.argumentError(2, "expected a list of addresses or \"all\", got \"\(word)\"") }
            scope = .everything
        } else {
            try call.table(2)
            scope = .addresses(try call.integers(inTableAt: 2, argument: 2) { "address \($0) is not an integer" })
        }
        let o = try call.options(3, allowed: ["vcpus", "cpl"])
        let targets = try o.integerList("vcpus").map { $0.map { Int(truncatingIfNeeded: $0) - 1 } } ?? [vcpu.index]
        for t in targets where t < 0 { throw call.argumentError(3, "option 'vcpus': vCPUs are numbered from 1, got \(t + 1)") }
        let cpl = try o.integer("cpl", in: 0...3).map(Int.init)
        let r = try core { () throws(MachineError) in try vcpu.hypercall(.flushTLB(scope, vcpus: targets), cpl: cpl) }
        guard r.isOK else { return pushFault(&call, r) }
        call.push(true)
        return 1
    }),
] }

/// `vm:batch(fn, { by })`: Linux's lazy MMU mode. Page-table stores the VM's helpers make
/// by vCPU `by` while `fn` runs are sent as one update hypercall when it returns (or
/// fails: its error is raised again unchanged) under a paravirtual MMU; elsewhere they
/// happen as they are made.
var batchMethod: (String, LuaFunction) { ("batch", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
    let vm = try call.this(ScenarioVM.self, className: ClassName.vm)
    guard lua_type(call.L, 2) == LUA_TFUNCTION else {
        throw call.argumentError(2, "function expected, got \(call.typeName(2))")
    }
    let o = try call.options(3, allowed: ["by"])
    let by = try o.object("by", VCPU.self, metatableName: ClassName.vcpu, expected: "vcpu") ?? vm.machine.vcpus[0]
    guard vm.machine.vcpus.contains(where: { $0 === by }) else { throw call.argumentError(3, "option 'by': the vCPU belongs to another VM") }
    vm.kernel.beginBatch(by: by)
    lua_pushvalue(call.L, 2)
    let failed = luashim_pcall(call.L, 0, 0, 0) != LUA_OK
    // What was queued is sent either way; then the function's error, on top of the
    // stack, is raised again as it was.
    try core { () throws(MachineError) in try vm.kernel.endBatch(by: by) }
    return failed ? LUASHIM_RAISE_RAW : 0
}) }

import CLua
import CLuaShim
import LuaKit
import ShadowMMU
import X86

// Introspection of one vCPU's shadow walk (`vcpu:shadow_walk(va)`): the engine reports
// the walk as a value; this file only turns it into a Lua table.

var introspectionVCPUMethods: [(String, LuaFunction)] { [
    /// `vcpu:shadow_walk(va)`: `{ ends, steps = { {handle, level, index, spte}, … },
    /// nested_table, nested_level }`.
    ("shadow_walk", { (call: inout LuaCall) throws(LuaRaise) -> Int32 in
        let vcpu = try call.this(VCPU.self, className: ClassName.vcpu)
        let va = try call.bits(2)
        let walk = (vcpu.backend as? ShadowVCPU)?.shadowWalk(of: va) ?? ShadowWalkInfo(steps: [], end: .noShadowRoot)
        call.newTable(fieldCount: 4)
        let ends: String
        switch walk.end {
        case .leaf: ends = "leaf"
        case .notPresent: ends = "not present"
        case .noShadowRoot: ends = "no shadow root"
        case .nested(let table, let level):
            ends = "nested"
            call.push(bits: table << 12); call.setField("nested_table")
            call.push(level); call.setField("nested_level")
        }
        call.push(ends); call.setField("ends")
        call.newTable(arrayCount: Int32(walk.steps.count))
        for (i, step) in walk.steps.enumerated() {
            call.newTable(fieldCount: 4)
            call.push(Int(step.handle)); call.setField("handle")
            call.push(step.level); call.setField("level")
            call.push(step.index); call.setField("index")
            call.push(bits: step.value); call.setField("spte")
            call.setIndex(Int64(i + 1))
        }
        call.setField("steps")
        return 1
    }),
] }

/// A hash map from guest frame numbers to small counts or ids: open addressing with
/// linear probing and a multiply-shift hash. The engine looks frames up several times
/// per shadow fault, and `Dictionary` would hash each key with SipHash.
///
/// Invariants: `keys.count` is a power of two and more than twice `count`; a slot holds
/// `FrameMap.empty` or a key, and every key sits in the unbroken run of occupied slots
/// that starts at its home slot (deletion shifts later entries back, so no tombstones).
/// `FrameMap.empty` itself (`UInt64.max`) is never a key.
struct FrameMap<Value: FixedWidthInteger> {
    static var empty: UInt64 { .max }

    private var keys: [UInt64]
    private var values: [Value]
    private(set) var count = 0

    init() {
        keys = Array(repeating: Self.empty, count: 16)
        values = Array(repeating: 0, count: 16)
    }

    private var mask: Int { keys.count - 1 }

    @inline(__always) private func home(_ key: UInt64) -> Int {
        var x = key
        x = (x ^ (x >> 31)) &* 0x7FB5_D329_728E_A185
        x = (x ^ (x >> 27)) &* 0x81DA_DEF4_BC2D_D44D
        return Int(truncatingIfNeeded: x ^ (x >> 33)) & mask
    }

    /// The slot holding `key`, or the empty slot where it would go.
    @inline(__always) private func slot(of key: UInt64) -> Int {
        var i = home(key)
        while keys[i] != key && keys[i] != Self.empty { i = (i + 1) & mask }
        return i
    }

    subscript(key: UInt64) -> Value? {
        get {
            let i = slot(of: key)
            return keys[i] == key ? values[i] : nil
        }
        set {
            precondition(key != Self.empty, "FrameMap: UInt64.max is not a key")
            let i = slot(of: key)
            if let newValue {
                if keys[i] == key {
                    values[i] = newValue
                    return
                }
                keys[i] = key
                values[i] = newValue
                count += 1
                if count * 2 >= keys.count { grow() }
            } else if keys[i] == key {
                remove(at: i)
            }
        }
    }

    subscript(key: UInt64, default defaultValue: Value) -> Value {
        get { self[key] ?? defaultValue }
        set { self[key] = newValue }
    }

    /// Empties slot `hole`, then moves back each following entry of the run that its
    /// home slot no longer reaches past the hole.
    private mutating func remove(at hole: Int) {
        var hole = hole
        keys[hole] = Self.empty
        count -= 1
        var i = (hole + 1) & mask
        while keys[i] != Self.empty {
            let h = home(keys[i])
            // The entry may move into the hole unless its home lies cyclically in (hole, i].
            let reachable = hole <= i ? (h > hole && h <= i) : (h > hole || h <= i)
            if !reachable {
                keys[hole] = keys[i]
                values[hole] = values[i]
                keys[i] = Self.empty
                hole = i
            }
            i = (i + 1) & mask
        }
    }

    private mutating func grow() {
        let oldKeys = keys, oldValues = values
        keys = Array(repeating: Self.empty, count: oldKeys.count * 2)
        values = Array(repeating: 0, count: oldKeys.count * 2)
        count = 0
        for (k, v) in zip(oldKeys, oldValues) where k != Self.empty { self[k] = v }
    }
}

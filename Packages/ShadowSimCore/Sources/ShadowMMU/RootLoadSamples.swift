/// The 2010 review's question, measured at every root load (MOV to CR3): how many
/// unsync pages the VM has lying around, and how many of them the new root reaches
/// (what a reachable-only sync has to look at; a global list syncs them all).
public struct RootLoadSamples: Sendable, Equatable {
    /// Value → how many loads saw it.
    public private(set) var lyingAround = Histogram()
    public private(set) var reached = Histogram()

    public init() {}

    mutating func add(lyingAround l: UInt64, reached r: UInt64) {
        lyingAround.add(l)
        reached.add(r)
    }

    /// Pools another VM's samples with these.
    public mutating func merge(_ other: RootLoadSamples) {
        lyingAround.merge(other.lyingAround)
        reached.merge(other.reached)
    }

    public var loads: UInt64 { lyingAround.count }
}

/// An exact histogram of small non-negative integers.
public struct Histogram: Sendable, Equatable {
    public private(set) var counts: [UInt64: UInt64] = [:]
    public private(set) var count: UInt64 = 0
    public private(set) var sum: UInt64 = 0
    public private(set) var max: UInt64 = 0

    public init() {}

    mutating func add(_ v: UInt64) {
        counts[v, default: 0] &+= 1
        count &+= 1
        sum &+= v
        if v > max { max = v }
    }

    public mutating func merge(_ other: Histogram) {
        for (v, n) in other.counts { counts[v, default: 0] &+= n }
        count &+= other.count
        sum &+= other.sum
        max = Swift.max(max, other.max)
    }

    public var mean: Double { count == 0 ? 0 : Double(sum) / Double(count) }

    /// The smallest value at or below which `fraction` of the samples lie (0 when empty).
    public func percentile(_ fraction: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let rank = UInt64((fraction * Double(count)).rounded(.up))
        var seen: UInt64 = 0
        for v in counts.keys.sorted() {
            seen &+= counts[v]!
            if seen >= Swift.max(rank, 1) { return v }
        }
        return max
    }
}

/// Aligns two traces of KVM's `kvmmmu` events — ShadowSim's `--mmu-trace` output and a
/// real host's `trace-cmd report -e kvmmmu` — and finds where they first part.
///
/// Only what both sides can agree on is compared: event names, gfns, levels, roles, root
/// counts, sync state and access rights. The host's pfns, spte values, spte addresses,
/// timestamps, tasks and CPUs, and the `mmu_valid_gen` generation, are left out, and so
/// are ShadowSim's own `shadowsim_…` events (KVM has no such tracepoints).
public enum MMUTraceDiff {
    /// One compared event: its name and the fields compared, and where it came from.
    public struct Event: Equatable, Sendable {
        public var name: String
        public var key: String
        public var line: Int
        public var text: String

        public static func == (a: Event, b: Event) -> Bool { a.name == b.name && a.key == b.key }
    }

    /// The kvmmmu events compared; anything else in a trace is skipped.
    public static let comparedEvents: Set<String> = [
        "kvm_mmu_get_page", "kvm_mmu_sync_page", "kvm_mmu_unsync_page", "kvm_mmu_prepare_zap_page",
        "kvm_mmu_set_spte", "kvm_mmu_spte_requested", "kvm_mmu_pagetable_walk", "kvm_mmu_walker_error",
    ]

    /// The event on one line of either format, if it is one that is compared.
    public static func event(inLine line: String, number: Int, ignoring ignored: Set<String> = []) -> Event? {
        // `task [cpu] time: name: body`; the name is the first "kvm_…:" after the CPU column.
        guard let close = line.firstIndex(of: "]") else { return nil }
        var rest = line[line.index(after: close)...]
        while !rest.isEmpty && !rest.hasPrefix(" kvm_") { rest = rest.dropFirst() }
        guard !rest.isEmpty else { return nil }
        rest = rest.dropFirst()
        guard let colon = rest.firstIndex(of: ":") else { return nil }
        let name = String(rest[..<colon])
        guard comparedEvents.contains(name), !ignored.contains(name) else { return nil }
        let body = rest[rest.index(after: colon)...].split(separator: " ", omittingEmptySubsequences: true)
        return Event(name: name, key: key(of: name, body), line: number, text: line)
    }

    /// The fields of `body` that are compared, space-separated.
    static func key(of name: String, _ body: [Substring]) -> String {
        func after(_ word: String) -> Substring? {
            body.firstIndex(of: Substring(word)).flatMap { $0 + 1 < body.count ? body[$0 + 1] : nil }
        }
        switch name {
        case "kvm_mmu_set_spte":
            // gfn G spte S (rwxu) level L at A
            let rights = body.first { $0.hasPrefix("(") } ?? ""
            return "gfn \(after("gfn") ?? "?") \(rights) level \(after("level") ?? "?")"
        case "kvm_mmu_spte_requested":
            return "gfn \(after("gfn") ?? "?") level \(after("level") ?? "?")"
        case "kvm_mmu_pagetable_walk", "kvm_mmu_walker_error":
            // The flags repeat the number.
            return (after("addr").map { "addr \($0) " } ?? "") + "pferr \(after("pferr") ?? "?")"
        default:
            // sp gen N gfn …: everything from the gfn on.
            guard let gfn = body.firstIndex(of: "gfn") else { return body.joined(separator: " ") }
            return body[gfn...].joined(separator: " ")
        }
    }

    /// Where two traces part.
    public struct Divergence: Sendable {
        /// Events both had, in order, before they parted (the compared index of the first
        /// difference is `agreed`).
        public var agreed: Int
        /// The last agreeing events (simulated side) before the divergence.
        public var context: [Event]
        /// The first event that differs on each side; nil where that trace had ended.
        public var left: Event?
        public var right: Event?
    }

    /// Events of `path` (plain or gzip) that are compared, in order.
    public static func events(of path: String, ignoring ignored: Set<String> = []) throws(TraceError) -> [Event] {
        let reader = try TraceReader(path: path)
        var out: [Event] = []
        try reader.forEachLine { (bytes, number) throws(TraceError) -> Bool in
            let line = String(decoding: bytes, as: UTF8.self)
            if let e = event(inLine: line, number: number, ignoring: ignored) { out.append(e) }
            return true
        }
        return out
    }

    /// The first place `left` and `right` differ, with up to `contextEvents` agreeing
    /// events before it; nil when they agree throughout.
    public static func firstDivergence(_ left: [Event], _ right: [Event], contextEvents: Int = 5) -> Divergence? {
        var i = 0
        while i < left.count && i < right.count && left[i] == right[i] { i += 1 }
        if i == left.count && i == right.count { return nil }
        return Divergence(agreed: i, context: Array(left[max(0, i - contextEvents)..<i]),
                          left: i < left.count ? left[i] : nil, right: i < right.count ? right[i] : nil)
    }
}

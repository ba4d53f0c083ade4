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
        public var fields: [String: String]
        public var line: Int
        public var text: String

        /// The fields as `name=value`, in name order (what a divergence shows).
        public var key: String { fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }

        /// Same event and same fields, where a field one rendering leaves out (trace-cmd's
        /// kvm plugin prints no gfn for zap, sync and unsync; the kernel's format has no
        /// new/existing on those either) is compared only when both have it.
        public static func == (a: Event, b: Event) -> Bool {
            guard a.name == b.name else { return false }
            for key in Set(a.fields.keys).union(b.fields.keys) {
                let l = a.fields[key], r = b.fields[key]
                if l == r { continue }
                if (l == nil || r == nil) && optionalFields.contains(key) { continue }
                return false
            }
            return true
        }
    }

    static let optionalFields: Set<String> = ["gfn", "created", "gpte"]

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
        return Event(name: name, fields: fields(of: name, body), line: number, text: line)
    }

    /// The compared fields of `body`.
    static func fields(of name: String, _ body: [Substring]) -> [String: String] {
        func after(_ word: String) -> String? {
            body.firstIndex(of: Substring(word)).flatMap { $0 + 1 < body.count ? String(body[$0 + 1]) : nil }
        }
        switch name {
        case "kvm_mmu_set_spte":
            // gfn G spte S (rwxu) level L at A: the spte value and its address are the host's.
            return ["gfn": after("gfn") ?? "?", "rights": String(body.first { $0.hasPrefix("(") } ?? "?"),
                    "level": after("level") ?? "?"]
        case "kvm_mmu_spte_requested":
            return ["gfn": after("gfn") ?? "?", "level": after("level") ?? "?"]
        case "kvm_mmu_pagetable_walk", "kvm_mmu_walker_error":
            // The flags after the number repeat it.
            var f = ["pferr": after("pferr") ?? "?"]
            if let addr = after("addr") { f["addr"] = addr }
            return f
        default:
            return pageFields(body)
        }
    }

    /// A shadow page as either rendering describes it: the kernel's
    /// (`sp gen 0 gfn 4 l4 8-byte q0 wux nxe ad root 0 sync new`) or trace-cmd's kvm
    /// plugin (`new sp gfn 4 4 q0 wux !pae nxe wp root 0 sync`; no `sp gfn` on zap, sync
    /// and unsync). Bits only one of them prints (the plugin's pae/wp, decoded from an
    /// older role layout; the kernel's ad) are left out.
    static func pageFields(_ body: [Substring]) -> [String: String] {
        let accessNames: Set<Substring> = ["---", "--x", "w--", "w-x", "-u-", "-ux", "wu-", "wux"]
        var f: [String: String] = ["direct": "0", "invalid": "0"]
        var i = 0
        while i < body.count {
            let t = body[i]
            switch t {
            case "gen": i += 1
            case "gfn": if i + 1 < body.count { f["gfn"] = String(body[i + 1]) }; i += 1
            case "root": if i + 1 < body.count { f["root"] = String(body[i + 1]) }; i += 1
            case "new": f["created"] = "1"
            case "existing": f["created"] = "0"
            case "sync", "unsync": f["sync"] = String(t)
            case "direct": f["direct"] = "1"
            case "invalid": f["invalid"] = "1"
            case "nxe": f["nxe"] = "1"
            case "!nxe": f["nxe"] = "0"
            case "4-byte", "8-byte": f["gpte"] = String(t.prefix(1))
            default:
                if accessNames.contains(t) {
                    f["access"] = String(t)
                } else if t.count == 2, t.first == "q", let q = t.last, q.isNumber {
                    f["quadrant"] = String(q)
                } else if t.count == 2, t.first == "l", let l = t.last, l.isNumber {
                    f["level"] = String(l)
                } else if f["level"] == nil, t.allSatisfy(\.isNumber) {
                    f["level"] = String(t)
                }
            }
            i += 1
        }
        return f
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

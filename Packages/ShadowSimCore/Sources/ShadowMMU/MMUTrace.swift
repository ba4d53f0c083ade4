/// Where a simulation's MMU events go, one line each, in the layout of `trace-cmd
/// report`: `vm0.vcpu1 [001] 42: kvm_mmu_get_page: sp gen 0 gfn 1a2 l1 8-byte …`.
/// The task column names the VM and vCPU (`vm0.host [---]` for work no vCPU does) and a
/// sequence number stands where the timestamp would be. The VMs of one simulation share
/// a sink, so their events interleave in the order they happened.
///
/// Events KVM traces carry KVM's names and field order (arch/x86/kvm/mmu/mmutrace.h);
/// those KVM has no tracepoint for are `shadowsim_…`.
public final class MMUTraceSink {
    public private(set) var sequence: UInt64 = 0
    private let write: (String) -> Void
    private let flushWrites: () -> Void

    /// `write` receives each line with its newline; `flush` makes what was written so
    /// far durable (for a sink that outlives the command that reads it).
    public init(_ write: @escaping (String) -> Void, flush: @escaping () -> Void = {}) {
        self.write = write
        self.flushWrites = flush
    }

    public func flush() { flushWrites() }

    public func emit(vm: Int, vcpu: Int?, event: String, _ body: String) {
        sequence &+= 1
        let task = vcpu.map { "vm\(vm).vcpu\($0)" } ?? "vm\(vm).host"
        let cpu = vcpu.map { String(repeating: "0", count: max(0, 3 - String($0).count)) + String($0) } ?? "---"
        write("\(task) [\(cpu)] \(sequence): \(event): \(body)\n")
    }

    /// A phase marker (`shadowsim.mark`): not an MMU event, so no VM or vCPU.
    public func mark(_ label: String) {
        sequence &+= 1
        write("shadowsim [---] \(sequence): shadowsim_mark: \(label)\n")
    }
}

extension ShadowMMU {
    /// Sends this MMU's events to `sink` as VM number `vm` (nil stops tracing).
    public func traceEvents(to sink: MMUTraceSink?, vm: Int) {
        traceSink = sink
        traceVM = vm
        tracing = sink != nil
    }

    /// Emits one event (call only when `tracing`).
    @inline(never) func trace(_ event: StaticString, vcpu: ShadowVCPU? = nil, _ body: String) {
        traceSink?.emit(vm: traceVM, vcpu: (vcpu ?? actingVCPU)?.vcpu.index, event: "\(event)", body)
    }

    /// KVM's `KVM_MMU_PAGE_PRINTK`: `sp gen G gfn X lL B-byte qQ[ direct] ACC[ invalid]
    /// [!]nxe [!]ad root R sync|unsync`. There is no generation here (always 0) and A/D
    /// bits are always used.
    static func traceDescription(of sp: ShadowPage) -> String {
        "sp gen 0 gfn \(hexDigits(sp.gfn)) \(traceRole(sp.role)) root \(sp.rootCount) \(sp.unsync ? "unsync" : "sync")"
    }

    /// The role part of it: `l1 8-byte q0 wux nxe ad`.
    public static func traceRole(_ role: PageRole) -> String {
        let access = ["---", "--x", "w--", "w-x", "-u-", "-ux", "wu-", "wux"][Int(role.access & 7)]
        return "l\(role.level) \(role.has4ByteGPTE ? 4 : 8)-byte q\(role.quadrant)" + (role.direct ? " direct" : "")
            + " \(access)" + (role.invalid ? " invalid" : "") + " \(role.eferNX ? "" : "!")nxe ad"
    }

    /// KVM's `kvm_mmu_set_spte`: `gfn X spte S (rwxu) level L at A`. The spte is this
    /// model's encoding and `at` names the spte by page and index (a host address in KVM).
    static func traceSPTE(_ sp: ShadowPage, _ index: Int) -> String {
        let spte = sp.spt[index]
        let rights = "r" + (spte & SPTE.writable != 0 ? "w" : "-") + (spte & SPTE.executeDisable == 0 ? "x" : "-")
            + (spte & SPTE.user != 0 ? "u" : "-")
        let at = UInt64(UInt32(bitPattern: sp.id)) << 12 | UInt64(index * 8)
        return "gfn \(hexDigits(SPTE.target(spte))) spte \(hexDigits(spte)) (\(rights)) level \(sp.level) at \(hexDigits(at))"
    }

    /// KVM's page-fault error-code flags as `__print_flags` prints them: `P|W|U|RSVD|F`.
    static func traceErrorCode(_ code: UInt32) -> String {
        let names: [(UInt32, String)] = [(1, "P"), (2, "W"), (4, "U"), (8, "RSVD"), (0x10, "F")]
        return "pferr \(hexDigits(UInt64(code))) " + names.filter { code & $0.0 != 0 }.map(\.1).joined(separator: "|")
    }

    static func hexDigits(_ v: UInt64) -> String { String(v, radix: 16) }
}

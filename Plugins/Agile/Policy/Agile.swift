import ShadowMMU
import X86

/// Agile paging (Gandhi, Hill and Swift, ISCA 2016) over KVM's shadow paging: every
/// guest table starts shadowed; one whose stores keep exiting is switched to nested mode
/// (its shadows zapped, the walk finishing in the guest's own table through a nested
/// link, its stores native); a nested table left unwritten for a whole epoch is
/// shadowed again. Everything else is KVM's answer (kvm-unsync).
public final class Agile: SyncPolicy {
    public let name = "agile"
    public let summary = "agile paging: KVM's shadow paging, but a guest table whose stores keep exiting is walked nested until it goes quiet"
    public let lockDomain = LockDomain.vmLock

    /// An epoch ends every this many CR3 loads of the VM.
    public static let epochLength = 8
    /// Exits for stores to one table within an epoch that send it to nested mode.
    public static let trapsToGoNested = 4

    /// Exits per shadowed table in the current epoch.
    private var traps: [UInt64: Int] = [:]
    /// Tables the walk reaches through nested links.
    private var nestedTables = Set<UInt64>()
    private var loads = 0

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// Shadowed unless switched.
    public func walkDecision(forTable gfn: UInt64, level: Int, in mmu: ShadowMMU) -> WalkDecision {
        nestedTables.contains(gfn) ? .nested : .shadow
    }

    /// A write fault that unsynced the table, or an emulated store to it.
    public func didTrapTableWrite(_ gfn: UInt64, in mmu: ShadowMMU) {
        traps[gfn, default: 0] += 1
    }

    /// `kvm_set_cr3`, and the epoch clock.
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision {
        loads += 1
        if loads % Self.epochLength == 0 { endEpoch(vcpu.mmu) }
        return .switchToCachedRoot
    }

    /// Quiet nested tables (and ones no walk went through) go back to shadow mode; busy
    /// shadowed ones go nested (a table some root uses cannot: the engine refuses).
    /// In frame order, so a run is reproducible.
    private func endEpoch(_ mmu: ShadowMMU) {
        for gfn in nestedTables.sorted() where mmu.nestedLinkCount(toTable: gfn) == 0 || !mmu.nestedTableWasWritten(gfn) {
            nestedTables.remove(gfn)
            mmu.switchTable(gfn, to: .shadow)
        }
        for (gfn, count) in traps.sorted(by: { $0.key < $1.key }) where count >= Self.trapsToGoNested {
            if mmu.switchTable(gfn, to: .nested) { nestedTables.insert(gfn) }
        }
        traps.removeAll(keepingCapacity: true)
    }
}

/// Read-only views of the shadow state for scenarios and tools (`vm:shadow_pages()`,
/// `vm:sptes(gfn)`): value snapshots, so holding one never keeps a page alive.

/// One shadow page as it stands.
public struct ShadowPageInfo: Sendable, Equatable {
    /// The page's id: stable while it lives, reused after it is freed.
    public var handle: Int32
    public var gfn: UInt64
    public var role: PageRole
    /// The role as KVM's tracepoints print it: `l1 8-byte q0 wux nxe ad`.
    public var roleText: String
    public var unsync: Bool
    public var unsyncChildren: Int
    /// The non-leaf sptes that point here: (page handle, index).
    public var parents: [SPTERef]
    public var rootCount: Int
    /// Position on the active list, 1 = oldest (the next recycled); nil once zapped.
    public var age: Int?
}

/// One leaf spte that maps a guest frame.
public struct SPTEInfo: Sendable, Equatable {
    public var handle: Int32
    public var index: Int
    /// 1 = 4 KiB … 3 = 1 GiB.
    public var level: Int
    public var value: UInt64
    public var writable: Bool { value & SPTE.writable != 0 }
    public var user: Bool { value & SPTE.user != 0 }
    public var executable: Bool { value & SPTE.executeDisable == 0 }
    /// Clear on a prefetched spte no access has used yet.
    public var accessed: Bool { value & SPTE.accessed != 0 }
}

extension ShadowMMU {
    /// Every live shadow page (zapped roots included), oldest first.
    public func shadowPageInfos() -> [ShadowPageInfo] {
        var age: [Int32: Int] = [:]
        var n = 0
        for slot in activeOrder {
            guard let sp = activePage(slot) else { continue }
            n += 1
            age[sp.id] = n
        }
        let live = allPages
        return live.map { sp in
            ShadowPageInfo(handle: sp.id, gfn: sp.gfn, role: sp.role, roleText: Self.traceRole(sp.role), unsync: sp.unsync,
                                  unsyncChildren: sp.unsyncChildren, parents: sp.parents, rootCount: sp.rootCount,
                                  age: age[sp.id])
        }
    }

    /// The leaf sptes that map guest frame `gfn` (large ones covering it included).
    public func sptes(mapping gfn: UInt64) -> [SPTEInfo] {
        var out: [SPTEInfo] = []
        forEachLeafSPTE(mapping: gfn) { sp, index in
            out.append(SPTEInfo(handle: sp.id, index: index, level: sp.level, value: sp.spt[index]))
        }
        return out
    }
}

/// The hardware walk of one linear address through a vCPU's current shadow root: the
/// sptes it reads, and where it ends.
public struct ShadowWalkInfo: Sendable, Equatable {
    /// One spte read: the shadow page (handle, level), the index and the value.
    public struct Step: Sendable, Equatable {
        public var handle: Int32
        public var level: Int
        public var index: Int
        public var value: UInt64
    }
    /// Where the walk ends.
    public enum End: Sendable, Equatable {
        /// At a present leaf spte (the last step).
        case leaf
        /// At a not-present spte: the access takes a shadow page fault.
        case notPresent
        /// At a nested link (agile paging): the walk goes on in guest table `table`,
        /// which holds level-`level` entries, each address translated by the EPT.
        case nested(table: UInt64, level: Int)
        /// There is no shadow root (nested paging, or before the vCPU first entered).
        case noShadowRoot
    }
    public var steps: [Step]
    public var end: End

    public init(steps: [Step], end: End) {
        self.steps = steps
        self.end = end
    }
}

extension ShadowVCPU {
    /// How the hardware would walk `va` now, through the current root (what
    /// `shadow_walks` and `nested_walks` count, for one address).
    public func shadowWalk(of va: UInt64) -> ShadowWalkInfo {
        guard root.isValid, var sp = rootPage(root, for: va) else { return ShadowWalkInfo(steps: [], end: .noShadowRoot) }
        var steps: [ShadowWalkInfo.Step] = []
        while true {
            let index = ShadowVCPU.shadowIndex(va, level: sp.level)
            let spte = sp.spt[index]
            steps.append(.init(handle: sp.id, level: sp.level, index: index, value: spte))
            guard SPTE.isPresent(spte) else { return ShadowWalkInfo(steps: steps, end: .notPresent) }
            if sp.level == 1 || spte & SPTE.large != 0 { return ShadowWalkInfo(steps: steps, end: .leaf) }
            if SPTE.isNestedLink(spte) {
                return ShadowWalkInfo(steps: steps, end: .nested(table: SPTE.target(spte), level: sp.level - 1))
            }
            guard let child = mmu.child(of: spte, level: sp.level) else { return ShadowWalkInfo(steps: steps, end: .notPresent) }
            sp = child
        }
    }
}

/// The control-register bits that decide how a linear address is translated and
/// which accesses are allowed: the inputs of SDM sections 4.2–4.7 other than the
/// entries themselves.
public struct PagingControls: Equatable, Sendable {
    public var mode: PagingMode
    /// CR0.WP: supervisor writes honour read-only pages.
    public var cr0WP: Bool
    /// CR4.PSE: 4-MByte pages in 32-bit paging.
    public var cr4PSE: Bool
    /// CR4.SMEP: supervisor fetches from user-mode addresses fault.
    public var cr4SMEP: Bool
    /// CR4.SMAP: supervisor data accesses to user-mode addresses fault unless RFLAGS.AC.
    public var cr4SMAP: Bool
    /// IA32_EFER.NXE: bit 63 is execute-disable rather than reserved.
    public var eferNXE: Bool
    /// MAXPHYADDR: bits at and above it are reserved in entries (32...52).
    public var maxPhysAddr: Int

    public init(mode: PagingMode, cr0WP: Bool = false, cr4PSE: Bool = false, cr4SMEP: Bool = false,
                cr4SMAP: Bool = false, eferNXE: Bool = false, maxPhysAddr: Int = 46) {
        self.mode = mode
        self.cr0WP = cr0WP
        self.cr4PSE = cr4PSE
        self.cr4SMEP = cr4SMEP
        self.cr4SMAP = cr4SMAP
        self.eferNXE = eferNXE
        self.maxPhysAddr = maxPhysAddr
    }

    /// The MAXPHYADDR values the model accepts.
    public static let maxPhysAddrRange = 32...52

    /// Whether execute-disable exists (SDM 4.6: NXE and a mode with 64-bit entries).
    @inlinable public var executeDisableEnabled: Bool { eferNXE && mode.hasWideEntries }

    /// Mask of the physical-address bits an entry can carry (bits M-1:0).
    @inlinable public var physicalAddressMask: UInt64 { PTE.bits(maxPhysAddr - 1, 0) }

    /// Reserved bits of a present entry at `level`; `isLeaf` says whether PS = 1 makes
    /// the entry map a page (only meaningful where the mode honours PS).
    ///
    /// - legacy32 (4.3): only a 4-MByte PDE has reserved bits: bit 21 and the PSE-36
    ///   bits 20:13 beyond min(M, 40) - 32 address bits.
    /// - PAE (4.4): PDPTE bits 2:1, 8:5 and 63:M; PDE/PTE bits 62:M, bit 63 unless NXE;
    ///   a 2-MByte PDE also bits 20:13.
    /// - 4/5-level (4.5): bits 51:M, bit 63 unless NXE; PS in a PML4E/PML5E; a 1-GByte
    ///   PDPTE also bits 29:13; a 2-MByte PDE also bits 20:13.
    @inlinable public func reservedBits(level: Int, isLeaf: Bool) -> UInt64 {
        let m = maxPhysAddr
        let xdReserved: UInt64 = eferNXE ? 0 : PTE.executeDisable
        switch mode {
        case .legacy32:
            guard level == 2, isLeaf else { return 0 }
            let pse36AddressBits = min(m, 40) - 32
            return PTE.bits(21, 13 + pse36AddressBits)
        case .pae:
            if level == 3 { return PTE.bits(2, 1) | PTE.bits(8, 5) | PTE.bits(63, m) }
            var mask = PTE.bits(62, m) | xdReserved
            if level == 2 && isLeaf { mask |= PTE.bits(20, 13) }
            return mask
        case .long4, .long5:
            var mask = PTE.bits(51, m) | xdReserved
            switch level {
            case 4, 5: mask |= PTE.pageSize
            case 3 where isLeaf: mask |= PTE.bits(29, 13)
            case 2 where isLeaf: mask |= PTE.bits(20, 13)
            default: break
            }
            return mask
        }
    }

    /// Physical base of the structure or page an entry at `level` points to.
    @inlinable public func frameAddress(of entry: UInt64, level: Int, isLeaf: Bool) -> UInt64 {
        switch mode {
        case .legacy32:
            if isLeaf && level == 2 {
                // PSE-36: PDE bits 20:13 supply physical bits 39:32.
                let highBits = min(maxPhysAddr, 40) - 32
                let high = (entry >> 13) & PTE.bits(highBits - 1, 0)
                return (entry & 0xFFC0_0000) | (high << 32)
            }
            return entry & 0xFFFF_F000
        case .pae, .long4, .long5:
            let size: UInt64 = isLeaf ? mode.pageSize(leafLevel: level).bytes : 4096
            return entry & physicalAddressMask & ~(size - 1)
        }
    }
}

/// The effective rights of a complete translation: the combination over every
/// paging-structure entry that controls it (SDM 4.6).
public struct PageRights: Equatable, Sendable {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    // Computed, not stored: a stored static of another module is reached through a
    // lazy-initialisation accessor on every use, even on the fault path.
    /// R/W = 1 at every level.
    @inlinable public static var writable: PageRights { PageRights(rawValue: 1) }
    /// U/S = 1 at every level: a user-mode address.
    @inlinable public static var user: PageRights { PageRights(rawValue: 2) }
    /// XD = 1 at some level while execute-disable is enabled.
    @inlinable public static var executeDisable: PageRights { PageRights(rawValue: 4) }

    @inlinable public func contains(_ r: PageRights) -> Bool { rawValue & r.rawValue == r.rawValue }
    @inlinable public mutating func insert(_ r: PageRights) { rawValue |= r.rawValue }
    @inlinable public mutating func remove(_ r: PageRights) { rawValue &= ~r.rawValue }
}

/// Who performs an access and with which RFLAGS.AC: what SDM 4.6 needs besides rights.
public struct AccessContext: Equatable, Sendable {
    /// CPL = 3 makes the access a user-mode access.
    public var isUser: Bool
    /// RFLAGS.AC, which lifts SMAP for explicit supervisor accesses.
    public var rflagsAC: Bool

    @inlinable public init(cpl: Int, rflagsAC: Bool) {
        self.isUser = cpl == 3
        self.rflagsAC = rflagsAC
    }
}

/// A precomputed answer to "does SDM 4.6 allow this access?" for each access kind,
/// privilege and combination of effective rights. Rebuilt whenever CR0.WP, CR4.SMEP,
/// CR4.SMAP or RFLAGS.AC change, so the walker and TLB hits share one rule set and a
/// hit costs one table lookup.
public struct PermissionTable: Equatable, Sendable {
    /// Bit `rights` of byte `kind * 2 + isUser` says whether the access is allowed (one
    /// word: a check is a shift and a test).
    @usableFromInline var allowed: UInt64

    public init(controls: PagingControls, rflagsAC: Bool) {
        allowed = 0
        for kind in [AccessKind.read, .write, .fetch] {
            for isUser in [false, true] {
                var bits: UInt8 = 0
                for raw in UInt8(0)..<8 {
                    let rights = PageRights(rawValue: raw)
                    if PermissionTable.permits(kind: kind, isUser: isUser, rights: rights,
                                               controls: controls, rflagsAC: rflagsAC) {
                        bits |= 1 << raw
                    }
                }
                set(slot: Int(kind.rawValue) * 2 + (isUser ? 1 : 0), bits)
            }
        }
    }

    private mutating func set(slot: Int, _ bits: UInt8) {
        allowed |= UInt64(bits) << UInt64(slot * 8)
    }

    @inlinable @inline(__always)
    public func permits(_ kind: AccessKind, isUser: Bool, rights: PageRights) -> Bool {
        let slot = UInt64(kind.rawValue) &* 2 &+ (isUser ? 1 : 0)
        return (allowed >> (slot &* 8 &+ UInt64(rights.rawValue & 7))) & 1 != 0
    }

    /// SDM 4.6.1, stated once. `rights` are the combined rights of the translation.
    public static func permits(kind: AccessKind, isUser: Bool, rights: PageRights,
                               controls: PagingControls, rflagsAC: Bool) -> Bool {
        let userAddress = rights.contains(.user)
        let writable = rights.contains(.writable)
        let noExecute = rights.contains(.executeDisable)
        if isUser {
            // User-mode accesses: only user-mode addresses; writes need R/W; fetches need !XD.
            switch kind {
            case .read: return userAddress
            case .write: return userAddress && writable
            case .fetch: return userAddress && !noExecute
            }
        }
        // Supervisor-mode (explicit, CPL < 3) accesses.
        let smapBlocks = controls.cr4SMAP && !rflagsAC && userAddress
        switch kind {
        case .read:
            return !smapBlocks
        case .write:
            if smapBlocks { return false }
            return !controls.cr0WP || writable
        case .fetch:
            if userAddress && controls.cr4SMEP { return false }
            return !noExecute
        }
    }
}

/// Bits of the page-fault error code (SDM 4.7).
public enum PageFaultCode {
    /// 0: not present; 1: protection violation (including reserved bits).
    public static let present: UInt32 = 1 << 0
    public static let write: UInt32 = 1 << 1
    public static let user: UInt32 = 1 << 2
    public static let reservedBit: UInt32 = 1 << 3
    public static let instructionFetch: UInt32 = 1 << 4

    /// The access-dependent bits (W/R, U/S, I/D) for an access. I/D is reported only
    /// when SMEP is on, or when execute-disable exists (PAE-style paging with NXE).
    @inlinable public static func accessBits(kind: AccessKind, isUser: Bool,
                                             controls: PagingControls) -> UInt32 {
        var code: UInt32 = 0
        if kind == .write { code |= write }
        if isUser { code |= user }
        if kind == .fetch && (controls.cr4SMEP || controls.executeDisableEnabled) {
            code |= instructionFetch
        }
        return code
    }

    /// A short readable form such as `P|W|U` for reports.
    public static func describe(_ code: UInt32) -> String {
        var parts: [String] = []
        parts.append(code & present != 0 ? "P" : "NP")
        if code & write != 0 { parts.append("W") }
        if code & user != 0 { parts.append("U") }
        if code & reservedBit != 0 { parts.append("RSVD") }
        if code & instructionFetch != 0 { parts.append("I") }
        return parts.joined(separator: "|")
    }
}

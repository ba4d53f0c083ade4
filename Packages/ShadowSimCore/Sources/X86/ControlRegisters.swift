/// Control-register bits the model interprets (SDM vol. 3A 2.5, 2.2.1).
public enum CR0 {
    public static let pe: UInt64 = 1 << 0
    public static let et: UInt64 = 1 << 4
    public static let wp: UInt64 = 1 << 16
    public static let pg: UInt64 = 1 << 31
}

public enum CR4 {
    public static let pse: UInt64 = 1 << 4
    public static let pae: UInt64 = 1 << 5
    public static let pge: UInt64 = 1 << 7
    public static let la57: UInt64 = 1 << 12
    public static let pcide: UInt64 = 1 << 17
    public static let smep: UInt64 = 1 << 20
    public static let smap: UInt64 = 1 << 21
    /// Bits defined by the architecture (0–14, 16–18, 20–24); others are reserved (#GP).
    public static let defined: UInt64 = PTE.bits(14, 0) | PTE.bits(18, 16) | PTE.bits(24, 20)
}

public enum EFER {
    public static let sce: UInt64 = 1 << 0
    public static let lme: UInt64 = 1 << 8
    public static let lma: UInt64 = 1 << 10
    public static let nxe: UInt64 = 1 << 11
    /// Bits a WRMSR may set (SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE).
    public static let defined: UInt64 = sce | lme | lma | nxe | PTE.bits(15, 12)
}

public enum CR3Bits {
    /// Bit 63 of the MOV to CR3 source with CR4.PCIDE = 1: do not flush the new PCID.
    public static let noFlush: UInt64 = 1 << 63
    public static let pcidMask: UInt64 = 0xFFF
}

/// INVPCID types (SDM vol. 2A, INVPCID).
public enum InvpcidType: Int, Sendable, CaseIterable, CustomStringConvertible {
    case individualAddress = 0
    case singleContext = 1
    case allContextsIncludingGlobals = 2
    case allContexts = 3

    public var description: String {
        switch self {
        case .individualAddress: "address"
        case .singleContext: "context"
        case .allContextsIncludingGlobals: "all"
        case .allContexts: "all_nonglobal"
        }
    }

    public init?(name: String) {
        guard let t = InvpcidType.allCases.first(where: { $0.description == name }) else { return nil }
        self = t
    }
}

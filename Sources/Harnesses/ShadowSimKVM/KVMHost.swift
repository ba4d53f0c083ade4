import CKVM
import Glibc

/// The host's KVM as the kvm backend needs it: reachable, running guests on its shadow
/// MMU (not nested paging), and the processor features it offers a guest.
public struct KVMHost: Sendable {
    public let pcid: Bool, invpcid: Bool, smep: Bool, smap: Bool, gbpages: Bool
    /// How the host runs guests, e.g. "kvm-pvm (shadow paging only)".
    public let mmu: String
    /// Whether zapping a shadow page zaps the unsync pages below it (upstream KVM does;
    /// a KVM with the module parameter `eager_zap_unsync_children=N` does not).
    public let zapsUnsyncChildren: Bool

    public init(pcid: Bool, invpcid: Bool, smep: Bool, smap: Bool, gbpages: Bool, mmu: String, zapsUnsyncChildren: Bool) {
        self.pcid = pcid; self.invpcid = invpcid; self.smep = smep; self.smap = smap; self.gbpages = gbpages
        self.mmu = mmu; self.zapsUnsyncChildren = zapsUnsyncChildren
    }

    /// Probes /dev/kvm. Errors say why the backend cannot run here: no /dev/kvm, or a
    /// KVM that uses nested paging (its shadow MMU would not run).
    public static func probe() throws(BackendError) -> KVMHost {
        var message = [CChar](repeating: 0, count: 256)
        let features = ckvm_host_features(&message, message.count)
        guard features >= 0 else { throw BackendError("the host's KVM is not usable: \(text(of: message))") }
        let mmu: String
        if let ept = parameter("kvm_intel", "ept"), ept == "Y" || ept == "1" {
            throw BackendError("the host's KVM uses nested paging (kvm_intel ept=\(ept)), so its shadow MMU does not run; reload kvm_intel with ept=0 to compare")
        } else if let npt = parameter("kvm_amd", "npt"), npt == "Y" || npt == "1" {
            throw BackendError("the host's KVM uses nested paging (kvm_amd npt=\(npt)), so its shadow MMU does not run; reload kvm_amd with npt=0 to compare")
        } else if access("/sys/module/kvm_pvm", F_OK) == 0 {
            mmu = "kvm-pvm (shadow paging only; CPL 0 guest code is emulated)"
        } else if parameter("kvm_intel", "ept") != nil {
            mmu = "kvm_intel with ept=0 (shadow paging)"
        } else if parameter("kvm_amd", "npt") != nil {
            mmu = "kvm_amd with npt=0 (shadow paging)"
        } else {
            mmu = "KVM without nested paging (shadow paging)"
        }
        let f = Int32(features)
        return KVMHost(pcid: f & Int32(CKVM_PCID) != 0, invpcid: f & Int32(CKVM_INVPCID) != 0,
                       smep: f & Int32(CKVM_SMEP) != 0, smap: f & Int32(CKVM_SMAP) != 0,
                       gbpages: f & Int32(CKVM_GBPAGES) != 0, mmu: mmu,
                       zapsUnsyncChildren: parameter("kvm", "eager_zap_unsync_children").map { $0 == "Y" || $0 == "1" } ?? true)
    }

    private static func parameter(_ module: String, _ name: String) -> String? {
        guard let f = fopen("/sys/module/\(module)/parameters/\(name)", "r") else { return nil }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, 64, f) != nil else { return nil }
        return text(of: buffer).trimmingSuffix()
    }

    /// Why the host cannot run `op` the way the simulator does, if it cannot.
    func lacks(for op: GuestOperation) -> String? {
        switch op {
        case .writeControl(_, .cr4, let value, false) where value & 0x2_0000 != 0 && !pcid:
            return "a MOV to CR4 that sets PCIDE, and the host's KVM offers no PCID (CPUID.01H:ECX.PCID = 0); make the VM without PCIDs"
        case .invpcid(_, _, _, _, false) where !invpcid:
            return "INVPCID, which the host's KVM does not offer (CPUID.07H:EBX.INVPCID = 0)"
        case .writeControl(_, .cr4, let value, false) where value & 0x30_0000 != 0:
            return "a MOV to CR4 that sets SMEP or SMAP: the kvm backend's agent runs its CPL 0 code from user pages"
        default:
            return nil
        }
    }
}

extension String {
    func trimmingSuffix() -> String {
        var s = self
        while let last = s.last, last == "\n" || last == " " { s.removeLast() }
        return s
    }
}

/// A C string a C call wrote into `buffer` (up to its first NUL).
func text(of buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

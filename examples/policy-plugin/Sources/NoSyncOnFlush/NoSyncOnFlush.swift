import ShadowMMU
import X86

/// A deliberately wrong policy, to show what validating a plugin catches: like
/// kvm-unsync, but a flushing MOV to CR3 neither syncs the unsync tables the new root
/// reaches nor flushes the TLB. Every scenario that passes under bare metal still runs
/// under it; `shadowsim test scripts --policy .build/debug/libNoSyncOnFlush.so` fails
/// with the architectural checker's report of the first stale translation it hands out.
public final class NoSyncOnFlush: SyncPolicy {
    public let name = "no-sync-on-flush"
    public let summary = "broken on purpose: a flushing CR3 load neither syncs nor flushes"
    public let lockDomain = LockDomain.vmLock

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    /// The mistake: the root is switched, and that is all.
    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision { .policyHandles }
    public func cr3Loaded(_ vcpu: ShadowVCPU, previousCR3: UInt64, pdptesChanged: Bool, noFlush: Bool) {
        if pdptesChanged { vcpu.freeRoots(.current) }
        if vcpu.vcpu.cr3 != previousCR3 { vcpu.switchRoot(to: vcpu.vcpu.cr3) }
    }

    // Root syncs, INVLPG, INVPCID and guest flushes: KVM's, the engine's defaults.
}

@_cdecl("shadowsim_policy_abi")
public func shadowsimPolicyABI() -> Int32 { PluginABI.version }

@_cdecl("shadowsim_policy_create")
public func shadowsimPolicyCreate() -> UnsafeMutableRawPointer? { PluginABI.export(NoSyncOnFlush()) }

import ShadowMMU
import X86

/// KVM with its `flush_on_reuse` debug switch: like kvm-unsync, but
/// reusing a cached root always syncs it and flushes, even on a no-flush CR3 load.
/// Compare its pages_synced and tlb_flush with kvm-unsync on PCID-heavy workloads to
/// see what the no-flush fast path saves.
public final class FlushOnReuse: SyncPolicy {
    public let name = "kvm-flush-on-reuse"
    public let summary = "kvm-unsync, but every reuse of a cached root syncs and flushes (KVM's flush_on_reuse)"
    public let lockDomain = LockDomain.vmLock

    public init() {}
    public func attach(to mmu: ShadowMMU) {}

    public func rootLoadDecision(_ vcpu: ShadowVCPU, previousCR3: UInt64, noFlush: Bool) -> RootLoadDecision { .policyHandles }
    public func cr3Loaded(_ vcpu: ShadowVCPU, previousCR3: UInt64, pdptesChanged: Bool, noFlush: Bool) {
        let cr3 = vcpu.vcpu.cr3
        if pdptesChanged { vcpu.freeRoots(.current) }
        if cr3 != previousCR3 && vcpu.switchRoot(to: cr3) {
            // The one decision that differs: a reused root is always synced and flushed.
            vcpu.request(.syncRoots)
            vcpu.request(.flushCurrent)
        }
        if !noFlush { vcpu.invalidatePCIDRoots(vcpu.vcpu.currentPCID) }
    }

    // Root syncs, INVLPG, INVPCID and guest flushes: KVM's, the engine's defaults.
}

// The plugin's one versioned entry point pair.
@_cdecl("shadowsim_policy_abi")
public func shadowsimPolicyABI() -> Int32 { PluginABI.version }

@_cdecl("shadowsim_policy_create")
public func shadowsimPolicyCreate() -> UnsafeMutableRawPointer? { PluginABI.export(FlushOnReuse()) }

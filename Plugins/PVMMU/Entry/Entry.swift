// The plugin's C entry points, for building PVMMU as a .so (product PVMMUPolicy).
import PVMMU
import ShadowMMU

@_cdecl("shadowsim_policy_abi")
public func shadowsimPolicyABI() -> Int32 { PluginABI.version }

@_cdecl("shadowsim_policy_create")
public func shadowsimPolicyCreate() -> UnsafeMutableRawPointer? { PluginABI.export(PVMMU()) }

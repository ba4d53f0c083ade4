// The plugin's C entry points, for building Agile as a .so (product AgilePolicy).
import Agile
import ShadowMMU

@_cdecl("shadowsim_policy_abi")
public func shadowsimPolicyABI() -> Int32 { PluginABI.version }

@_cdecl("shadowsim_policy_create")
public func shadowsimPolicyCreate() -> UnsafeMutableRawPointer? { PluginABI.export(Agile()) }

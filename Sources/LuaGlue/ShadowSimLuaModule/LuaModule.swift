import ShadowSimLua

/// The Swift half of `luaopen_shadowsim` (Sources/CShadowSimModule): installs the module
/// and returns 1, or LUASHIM_RAISE with the message on the stack for the C half to raise.
@_cdecl("shadowsim_open_module")
public func shadowsimOpenModule(_ L: OpaquePointer?) -> Int32 {
    openShadowSimModule(L!)
}

#include "CShadowSimModule.h"

/* The Swift half (Sources/ShadowSimLuaModule). Swift never raises a Lua error: it
   returns a negative count with the message on the stack, and C raises it here. */
int shadowsim_open_module(lua_State *L);

int luaopen_shadowsim(lua_State *L) {
    int n = shadowsim_open_module(L);
    if (n < 0) return lua_error(L);
    return n;
}

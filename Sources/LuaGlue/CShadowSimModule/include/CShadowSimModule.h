/* `require "shadowsim"` from a stock Lua 5.4 interpreter. */
#include <lua.h>
int luaopen_shadowsim(lua_State *L);

#include "CLuaShim.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { size_t used; } Budget;

static void *abort_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    Budget *b = (Budget *)ud;
    if (ptr == NULL) osize = 0;
    if (nsize == 0) {
        free(ptr);
        b->used -= osize;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL) {
        fputs("shadowsim: Lua ran out of memory\n", stderr);
        abort();
    }
    b->used = b->used - osize + nsize;
    return p;
}

static int panic(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "shadowsim: unprotected Lua error: %s\n", msg ? msg : "(not a string)");
    return 0; /* Lua aborts after this */
}

lua_State *luashim_newstate(void) {
    Budget *b = calloc(1, sizeof(Budget));
    if (b == NULL) return NULL;
    lua_State *L = lua_newstate(abort_alloc, b);
    if (L) lua_atpanic(L, panic);
    return L;
}

size_t luashim_memory_in_use(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud ? ((Budget *)ud)->used : 0;
}

static int trampoline(lua_State *L) {
    luashim_Function fn = (luashim_Function)lua_touserdata(L, lua_upvalueindex(1));
    int n = fn(L); /* Swift runs and returns; no Swift frame is below us any more */
    if (n >= 0) return n;
    if (n == LUASHIM_RAISE && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

void luashim_pushfunction(lua_State *L, luashim_Function fn, int nup) {
    lua_pushlightuserdata(L, (void *)fn);
    lua_insert(L, -(nup + 1));
    lua_pushcclosure(L, trampoline, nup + 1);
}

int luashim_traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int luashim_where(lua_State *L, int level, char *buf, size_t size) {
    lua_Debug ar;
    if (!lua_getstack(L, level, &ar) || !lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0) return 0;
    snprintf(buf, size, "%s:%d", ar.short_src, ar.currentline);
    return 1;
}

int luashim_calledname(lua_State *L, char *buf, size_t size) {
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar) || !lua_getinfo(L, "n", &ar) || ar.name == NULL) return 0;
    snprintf(buf, size, "%s", ar.name);
    return ar.namewhat && strcmp(ar.namewhat, "method") == 0 ? 2 : 1;
}

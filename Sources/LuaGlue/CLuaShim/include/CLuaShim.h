#pragma once
// Wrappers for Lua macros Swift cannot import, and the error trampoline.
//
// Rule: Swift code called from Lua never raises a Lua error itself (a longjmp must
// not cross Swift frames). It returns LUASHIM_RAISE with the message on the stack,
// and the C trampoline calls lua_error after Swift has returned.
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>

#define LUASHIM_RAISE     (-1)  /* raise the string on top, prefixed with "chunk:line: " */
#define LUASHIM_RAISE_RAW (-2)  /* re-raise the value on top unchanged */

typedef int (*luashim_Function)(lua_State *L);

/* A state whose allocator aborts instead of raising LUA_ERRMEM. */
lua_State *luashim_newstate(void);

/* Budgets, enforced by a count hook every 1000 VM instructions: the hook raises a Lua
   error (from C, so no Swift frame is crossed) naming the budget, and records which
   one in `exceeded`. `extra_bytes` reports memory held outside Lua (guest memory). */
enum { LUASHIM_BUDGET_NONE = 0, LUASHIM_BUDGET_STEPS = 1, LUASHIM_BUDGET_MEMORY = 2,
       LUASHIM_BUDGET_TIME = 3, LUASHIM_BUDGET_INTERRUPT = 4 };
typedef struct {
    long long max_steps;            /* 0: no limit */
    long long steps;
    unsigned long long max_memory;  /* bytes, Lua heap plus extra_bytes; 0: no limit */
    double timeout;                 /* seconds; 0: no limit */
    double started;
    unsigned long long (*extra_bytes)(void *context);
    void *context;
    int exceeded;
    void (*sample)(void *context);  /* called at every check when set (--trace) */
} luashim_Budgets;
void luashim_set_budgets(lua_State *L, luashim_Budgets *budgets);
/* Ctrl-C sets a flag the budget hook turns into an "interrupted" error. */
void luashim_catch_interrupt(void);
int luashim_interrupted(void);
double luashim_now(void);
/* Bytes the state currently holds. */
size_t luashim_memory_in_use(lua_State *L);

/* Pushes fn as a Lua function through the trampoline; the nup values on top of the
   stack become upvalues 2..nup+1 (upvalue 1 is fn). */
void luashim_pushfunction(lua_State *L, luashim_Function fn, int nup);

/* Message handler for lua_pcall: appends a traceback to string errors. */
int luashim_traceback(lua_State *L);

/* Type check against a metatable at mtidx without raising: the object pointer or NULL. */
static inline void *luashim_toobject_mt(lua_State *L, int idx, int mtidx) {
    void **slot = (void **)lua_touserdata(L, idx);
    if (slot == NULL || !lua_getmetatable(L, idx)) return NULL;
    int same = lua_rawequal(L, -1, mtidx);
    lua_settop(L, -2);
    return same ? *slot : NULL;
}

static inline void luashim_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline int luashim_pcall(lua_State *L, int nargs, int nresults, int msgh) { return lua_pcall(L, nargs, nresults, msgh); }
static inline void luashim_newtable(lua_State *L) { lua_newtable(L); }
static inline int luashim_upvalueindex(int i) { return lua_upvalueindex(i); }
static inline int luashim_registryindex(void) { return LUA_REGISTRYINDEX; }
static inline const char *luashim_tostring(lua_State *L, int i) { return lua_tolstring(L, i, NULL); }
static inline int luashim_isinteger(lua_State *L, int i) { return lua_isinteger(L, i); }
static inline void luashim_insert(lua_State *L, int i) { lua_insert(L, i); }
static inline void luashim_remove(lua_State *L, int i) { lua_remove(L, i); }
/* Source and current line of the function at stack level `level` (1 = caller). */
int luashim_where(lua_State *L, int level, char *buf, size_t size);
/* Name under which the running C function was called, and whether as a method. */
int luashim_calledname(lua_State *L, char *buf, size_t size);

#include "CLuaShim.h"
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
        /* Name the Lua line that raised it, as for string errors. */
        lua_Debug ar;
        int level = 1;
        while (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline <= 0) level++;
        if (lua_getstack(L, level, &ar) && ar.currentline > 0)
            msg = lua_pushfstring(L, "%s:%d: error object is a %s value", ar.short_src, ar.currentline,
                                  luaL_typename(L, 1));
        else
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

static volatile sig_atomic_t interrupted = 0;
static void on_interrupt(int sig) { (void)sig; interrupted = 1; }

void luashim_catch_interrupt(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    /* A parent may have started us with SIGINT blocked (Foundation's Process does). */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

int luashim_interrupted(void) { return interrupted; }

double luashim_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static luashim_Budgets *budgets_of(lua_State *L) {
    luashim_Budgets *b = NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, "luashim.budgets");
    b = (luashim_Budgets *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
}

/* Pushes "file:line: " for the innermost frame that runs a script's own code (a chunk
   loaded from a file, "@…"), skipping the built-in chunks ("=shadowsim.prelude", …) a
   budget can run out in; "" when there is none. */
static void push_script_where(lua_State *L) {
    lua_Debug ar;
    for (int level = 0; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.source[0] == '@' && ar.currentline > 0) {
            lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    luaL_where(L, 0);
}

/* Raises `message` with the position of the script code the hook interrupted. */
static void raise_here(lua_State *L, const char *fmt, ...) {
    va_list args;
    push_script_where(L);
    va_start(args, fmt);
    lua_pushvfstring(L, fmt, args);
    va_end(args);
    lua_concat(L, 2);
    lua_error(L);
}

static void budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    luashim_Budgets *b = budgets_of(L);
    if (b == NULL) return;
    b->steps += 1000;
    if (b->sample) b->sample(b->context);
    if (interrupted) {
        b->exceeded = LUASHIM_BUDGET_INTERRUPT;
        raise_here(L, "interrupted (Ctrl-C)");
    }
    if (b->max_steps > 0 && b->steps > b->max_steps) {
        b->exceeded = LUASHIM_BUDGET_STEPS;
        raise_here(L, "the step budget is exhausted: more than %I Lua instructions (--max-steps)", (lua_Integer)b->max_steps);
    }
    if (b->max_memory > 0) {
        unsigned long long used = luashim_memory_in_use(L) + (b->extra_bytes ? b->extra_bytes(b->context) : 0);
        if (used > b->max_memory) {
            b->exceeded = LUASHIM_BUDGET_MEMORY;
            raise_here(L, "the memory budget is exhausted: %I bytes of Lua and guest memory in use, the limit is %I (--max-memory)",
                       (lua_Integer)used, (lua_Integer)b->max_memory);
        }
    }
    if (b->timeout > 0 && luashim_now() - b->started > b->timeout) {
        b->exceeded = LUASHIM_BUDGET_TIME;
        raise_here(L, "the time budget is exhausted: the run took more than %f seconds (--timeout)", b->timeout);
    }
}

void luashim_set_budgets(lua_State *L, luashim_Budgets *b) {
    lua_pushlightuserdata(L, b);
    lua_setfield(L, LUA_REGISTRYINDEX, "luashim.budgets");
    b->started = luashim_now();
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1000);
}

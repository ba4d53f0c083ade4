#include <stdlib.h>
#include <string.h>
#include "util.h"

void arena_init(arena *a, size_t cap) {
    a->base = malloc(cap);
    a->used = 0;
    a->cap = a->base ? cap : 0;
}

void *arena_alloc(arena *a, size_t n) {
    size_t aligned = (a->used + 15) & ~(size_t)15;
    if (aligned + n > a->cap)
        return NULL;
    a->used = aligned + n;
    memset(a->base + aligned, 0, n);
    return a->base + aligned;
}

void arena_free(arena *a) {
    free(a->base);
    a->base = NULL;
    a->used = a->cap = 0;
}

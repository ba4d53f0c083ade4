#include <stdlib.h>
#include "util.h"

void vec_init(vec *v) { v->data = NULL; v->len = v->cap = 0; }

void vec_push(vec *v, long x) {
    if (v->len == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 8;
        long *nd = realloc(v->data, ncap * sizeof *nd);
        if (!nd) abort();
        v->data = nd;
        v->cap = ncap;
    }
    v->data[v->len++] = x;
}

long vec_sum(const vec *v) {
    long s = 0;
    for (size_t i = 0; i < v->len; i++) s += v->data[i];
    return s;
}

void vec_free(vec *v) { free(v->data); vec_init(v); }

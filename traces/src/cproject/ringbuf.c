#include <stdlib.h>
#include "util.h"

void rb_init(ringbuf *r, size_t cap) {
    r->a = malloc((cap + 1) * sizeof *r->a);
    r->head = r->tail = 0;
    r->cap = cap + 1;
}

int rb_put(ringbuf *r, long x) {
    size_t next = (r->tail + 1) % r->cap;
    if (next == r->head) return 0;
    r->a[r->tail] = x;
    r->tail = next;
    return 1;
}

int rb_get(ringbuf *r, long *x) {
    if (r->head == r->tail) return 0;
    *x = r->a[r->head];
    r->head = (r->head + 1) % r->cap;
    return 1;
}

void rb_free(ringbuf *r) { free(r->a); r->a = NULL; }

#include <stdlib.h>
#include "util.h"

void heap_init(heap *h) { h->a = NULL; h->n = h->cap = 0; }

void heap_push(heap *h, long x) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->a = realloc(h->a, h->cap * sizeof *h->a);
        if (!h->a) abort();
    }
    size_t i = h->n++;
    while (i > 0 && h->a[(i - 1) / 2] > x) { h->a[i] = h->a[(i - 1) / 2]; i = (i - 1) / 2; }
    h->a[i] = x;
}

long heap_pop(heap *h) {
    long top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && h->a[c + 1] < h->a[c]) c++;
        if (h->a[c] >= last) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

void heap_free(heap *h) { free(h->a); heap_init(h); }

#include <ctype.h>
#include "util.h"

size_t tokenize(const char *s, void (*cb)(const char *tok, size_t n, void *ctx), void *ctx) {
    size_t count = 0;
    while (*s) {
        while (*s && !isalnum((unsigned char)*s)) s++;
        const char *start = s;
        while (*s && isalnum((unsigned char)*s)) s++;
        if (s > start) { cb(start, (size_t)(s - start), ctx); count++; }
    }
    return count;
}

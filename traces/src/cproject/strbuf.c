#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

void sb_init(strbuf *b) { b->s = NULL; b->len = b->cap = 0; }

static void sb_reserve(strbuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t ncap = b->cap ? b->cap : 32;
    while (ncap < b->len + extra + 1) ncap *= 2;
    char *ns = realloc(b->s, ncap);
    if (!ns) abort();
    b->s = ns;
    b->cap = ncap;
}

void sb_append(strbuf *b, const char *s) {
    size_t n = strlen(s);
    sb_reserve(b, n);
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

void sb_appendf_long(strbuf *b, long x) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%ld", x);
    sb_append(b, tmp);
}

void sb_free(strbuf *b) { free(b->s); sb_init(b); }

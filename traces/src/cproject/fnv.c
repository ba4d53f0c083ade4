#include "util.h"

uint64_t fnv1a_buf(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    while (n--) { h ^= *s++; h *= 0x100000001b3ull; }
    return h;
}

uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    while (*s) { h ^= (unsigned char)*s++; h *= 0x100000001b3ull; }
    return h;
}

#include "util.h"

void bloom_init(bloom *b, size_t nbits, int k) { bitset_init(&b->bits, nbits); b->k = k; }

static size_t probe(const bloom *b, uint64_t h1, uint64_t h2, int i) {
    return (size_t)((h1 + (uint64_t)i * h2) % b->bits.nbits);
}

void bloom_add(bloom *b, const char *s) {
    uint64_t h1 = fnv1a(s), h2 = (h1 >> 33) | 1;
    for (int i = 0; i < b->k; i++) bitset_set(&b->bits, probe(b, h1, h2, i));
}

int bloom_maybe(const bloom *b, const char *s) {
    uint64_t h1 = fnv1a(s), h2 = (h1 >> 33) | 1;
    for (int i = 0; i < b->k; i++)
        if (!bitset_test(&b->bits, probe(b, h1, h2, i))) return 0;
    return 1;
}

void bloom_free(bloom *b) { bitset_free(&b->bits); }

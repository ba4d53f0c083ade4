#include <stdlib.h>
#include "util.h"

void bitset_init(bitset *b, size_t nbits) {
    b->nbits = nbits;
    b->w = calloc((nbits + 63) / 64, sizeof *b->w);
}

void bitset_set(bitset *b, size_t i) { b->w[i / 64] |= 1ull << (i % 64); }

int bitset_test(const bitset *b, size_t i) { return (b->w[i / 64] >> (i % 64)) & 1; }

size_t bitset_count(const bitset *b) {
    size_t n = 0;
    for (size_t i = 0; i < (b->nbits + 63) / 64; i++) n += (size_t)__builtin_popcountll(b->w[i]);
    return n;
}

void bitset_free(bitset *b) { free(b->w); b->w = NULL; b->nbits = 0; }

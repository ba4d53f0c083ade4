#include <stdlib.h>
#include "util.h"

struct trie { struct trie *child[26]; int terminal; };

trie *trie_new(void) { return calloc(1, sizeof(trie)); }

void trie_insert(trie *t, const char *w) {
    for (; *w; w++) {
        int c = (*w | 0x20) - 'a';
        if (c < 0 || c >= 26) continue;
        if (!t->child[c]) t->child[c] = trie_new();
        t = t->child[c];
    }
    t->terminal = 1;
}

int trie_contains(const trie *t, const char *w) {
    for (; *w && t; w++) {
        int c = (*w | 0x20) - 'a';
        if (c < 0 || c >= 26) continue;
        t = t->child[c];
    }
    return t && t->terminal;
}

size_t trie_nodes(const trie *t) {
    size_t n = 1;
    for (int i = 0; i < 26; i++) if (t->child[i]) n += trie_nodes(t->child[i]);
    return n;
}

void trie_free(trie *t) {
    if (!t) return;
    for (int i = 0; i < 26; i++) trie_free(t->child[i]);
    free(t);
}

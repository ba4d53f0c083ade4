#include <stdlib.h>
#include <string.h>
#include "util.h"

struct entry { char *key; long value; struct entry *next; };
struct hmap { struct entry **b; size_t nb, count; };

hmap *hmap_new(size_t buckets) {
    hmap *m = calloc(1, sizeof *m);
    m->nb = buckets ? buckets : 16;
    m->b = calloc(m->nb, sizeof *m->b);
    return m;
}

void hmap_put(hmap *m, const char *key, long value) {
    size_t i = fnv1a(key) % m->nb;
    for (struct entry *e = m->b[i]; e; e = e->next)
        if (strcmp(e->key, key) == 0) { e->value = value; return; }
    struct entry *e = malloc(sizeof *e);
    e->key = strdup(key);
    e->value = value;
    e->next = m->b[i];
    m->b[i] = e;
    m->count++;
}

int hmap_get(const hmap *m, const char *key, long *value) {
    for (struct entry *e = m->b[fnv1a(key) % m->nb]; e; e = e->next)
        if (strcmp(e->key, key) == 0) { *value = e->value; return 1; }
    return 0;
}

size_t hmap_count(const hmap *m) { return m->count; }

void hmap_free(hmap *m) {
    for (size_t i = 0; i < m->nb; i++)
        for (struct entry *e = m->b[i], *n; e; e = n) { n = e->next; free(e->key); free(e); }
    free(m->b);
    free(m);
}

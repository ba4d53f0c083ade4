/* util.h — public interface of the small utility library used by the
 * ShadowSim make-j2 workload (traces/make-j2.txt.gz). */
#ifndef CPROJECT_UTIL_H
#define CPROJECT_UTIL_H
#include <stddef.h>
#include <stdint.h>

/* arena.c */
typedef struct arena { unsigned char *base; size_t used, cap; } arena;
void arena_init(arena *a, size_t cap);
void *arena_alloc(arena *a, size_t n);
void arena_free(arena *a);

/* vec.c */
typedef struct vec { long *data; size_t len, cap; } vec;
void vec_init(vec *v);
void vec_push(vec *v, long x);
long vec_sum(const vec *v);
void vec_free(vec *v);

/* strbuf.c */
typedef struct strbuf { char *s; size_t len, cap; } strbuf;
void sb_init(strbuf *b);
void sb_append(strbuf *b, const char *s);
void sb_appendf_long(strbuf *b, long x);
void sb_free(strbuf *b);

/* hashmap.c */
typedef struct hmap hmap;
hmap *hmap_new(size_t buckets);
void hmap_put(hmap *m, const char *key, long value);
int hmap_get(const hmap *m, const char *key, long *value);
size_t hmap_count(const hmap *m);
void hmap_free(hmap *m);

/* list.c */
typedef struct lnode { long v; struct lnode *next; } lnode;
lnode *list_push(lnode *head, long v);
lnode *list_reverse(lnode *head);
size_t list_len(const lnode *head);
void list_free(lnode *head);

/* sort.c */
void sort_longs(long *a, size_t n);
int is_sorted(const long *a, size_t n);

/* crc32.c */
uint32_t crc32_buf(const void *p, size_t n);

/* base64.c */
size_t base64_encode(const unsigned char *in, size_t n, char *out);
size_t base64_decode(const char *in, size_t n, unsigned char *out);

/* utf8.c */
size_t utf8_count(const char *s);
int utf8_encode(uint32_t cp, char out[4]);

/* escape.c */
void json_escape(const char *in, strbuf *out);

/* matrix.c */
void mat_mul(const double *a, const double *b, double *c, int n);
double mat_trace(const double *a, int n);

/* rng.c */
typedef struct rng { uint64_t s; } rng;
void rng_seed(rng *r, uint64_t seed);
uint64_t rng_next(rng *r);
double rng_double(rng *r);

/* heap.c */
typedef struct heap { long *a; size_t n, cap; } heap;
void heap_init(heap *h);
void heap_push(heap *h, long x);
long heap_pop(heap *h);
void heap_free(heap *h);

/* bitset.c */
typedef struct bitset { uint64_t *w; size_t nbits; } bitset;
void bitset_init(bitset *b, size_t nbits);
void bitset_set(bitset *b, size_t i);
int bitset_test(const bitset *b, size_t i);
size_t bitset_count(const bitset *b);
void bitset_free(bitset *b);

/* ringbuf.c */
typedef struct ringbuf { long *a; size_t head, tail, cap; } ringbuf;
void rb_init(ringbuf *r, size_t cap);
int rb_put(ringbuf *r, long x);
int rb_get(ringbuf *r, long *x);
void rb_free(ringbuf *r);

/* tokenizer.c */
size_t tokenize(const char *s, void (*cb)(const char *tok, size_t n, void *ctx), void *ctx);

/* stats.c */
typedef struct stats { double n, mean, m2, min, max; } stats;
void stats_init(stats *s);
void stats_add(stats *s, double x);
double stats_stddev(const stats *s);

/* histogram.c */
typedef struct histogram { size_t bins[16]; double lo, hi; } histogram;
void hist_init(histogram *h, double lo, double hi);
void hist_add(histogram *h, double x);
size_t hist_total(const histogram *h);

/* rle.c */
size_t rle_encode(const unsigned char *in, size_t n, unsigned char *out);
size_t rle_decode(const unsigned char *in, size_t n, unsigned char *out);

/* bloom.c */
typedef struct bloom { bitset bits; int k; } bloom;
void bloom_init(bloom *b, size_t nbits, int k);
void bloom_add(bloom *b, const char *s);
int bloom_maybe(const bloom *b, const char *s);
void bloom_free(bloom *b);

/* trie.c */
typedef struct trie trie;
trie *trie_new(void);
void trie_insert(trie *t, const char *word);
int trie_contains(const trie *t, const char *word);
size_t trie_nodes(const trie *t);
void trie_free(trie *t);

/* graph.c */
int graph_bfs_reachable(int n, const int (*edges)[2], int nedges, int from);

/* date.c */
int days_in_month(int year, int month);
long days_from_civil(int y, int m, int d);

/* fnv.c */
uint64_t fnv1a(const char *s);
uint64_t fnv1a_buf(const void *p, size_t n);

/* primes.c */
size_t sieve_count(size_t limit);
int is_prime(uint64_t n);
#endif

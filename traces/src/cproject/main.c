/* main.c — exercises every module of the library and prints a summary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

static void count_token(const char *tok, size_t n, void *ctx) {
    char word[64];
    if (n >= sizeof word) n = sizeof word - 1;
    memcpy(word, tok, n);
    word[n] = '\0';
    long c = 0;
    hmap_get(ctx, word, &c);
    hmap_put(ctx, word, c + 1);
}

int main(void) {
    static const char text[] =
        "the quick brown fox jumps over the lazy dog and the dog sleeps while the fox runs";
    rng r;
    rng_seed(&r, 42);

    vec v;
    vec_init(&v);
    for (int i = 0; i < 1000; i++) vec_push(&v, (long)(rng_next(&r) % 10000));
    sort_longs(v.data, v.len);

    hmap *m = hmap_new(64);
    size_t ntok = tokenize(text, count_token, m);
    long the = 0;
    hmap_get(m, "the", &the);

    char b64[128];
    unsigned char back[128];
    base64_encode((const unsigned char *)"shadow mmu", 10, b64);
    size_t nback = base64_decode(b64, strlen(b64), back);

    strbuf sb;
    sb_init(&sb);
    json_escape("line\n\"quoted\"\t", &sb);
    sb_append(&sb, " sum=");
    sb_appendf_long(&sb, vec_sum(&v));

    double a[16], b[16], c[16];
    for (int i = 0; i < 16; i++) { a[i] = rng_double(&r); b[i] = i % 5 == 0; }
    mat_mul(a, b, c, 4);

    heap h;
    heap_init(&h);
    for (int i = 0; i < 100; i++) heap_push(&h, (long)(rng_next(&r) % 1000));
    long hmin = heap_pop(&h);

    stats st;
    histogram hist;
    stats_init(&st);
    hist_init(&hist, 0, 1);
    for (int i = 0; i < 500; i++) { double x = rng_double(&r); stats_add(&st, x); hist_add(&hist, x); }

    unsigned char raw[64], enc[128], dec[64];
    memset(raw, 'a', 40);
    memset(raw + 40, 'b', 24);
    size_t nenc = rle_encode(raw, sizeof raw, enc);
    size_t ndec = rle_decode(enc, nenc, dec);

    bloom bl;
    bloom_init(&bl, 1024, 3);
    trie *t = trie_new();
    lnode *list = NULL;
    const char *words[] = {"page", "table", "shadow", "tlb", "flush", "fault"};
    for (int i = 0; i < 6; i++) { bloom_add(&bl, words[i]); trie_insert(t, words[i]); list = list_push(list, i); }
    list = list_reverse(list);

    static const int edges[][2] = {{0, 1}, {1, 2}, {2, 3}, {3, 1}, {4, 5}};
    int reach = graph_bfs_reachable(6, edges, 5, 0);

    arena ar;
    arena_init(&ar, 4096);
    char *scratch = arena_alloc(&ar, 100);
    char u8[4];
    int u8n = utf8_encode(0x20AC, u8);
    memcpy(scratch, u8, (size_t)u8n);
    scratch[u8n] = '\0';

    printf("sorted=%d tokens=%zu the=%ld b64=%s back=%zu\n", is_sorted(v.data, v.len), ntok, the,
           b64, nback);
    printf("json=%s\n", sb.s);
    printf("trace=%.3f heapmin=%ld mean=%.3f sd=%.3f hist=%zu rle=%zu/%zu\n", mat_trace(c, 4),
           hmin, st.mean, stats_stddev(&st), hist_total(&hist), nenc, ndec);
    printf("bloom(tlb)=%d bloom(xyz)=%d trie=%d/%zu list=%zu reach=%d\n", bloom_maybe(&bl, "tlb"),
           bloom_maybe(&bl, "xyz"), trie_contains(t, "shadow"), trie_nodes(t), list_len(list),
           reach);
    printf("crc=%08x fnv=%016llx primes<10000=%zu days=%ld feb2024=%d euro=%s(%zu chars)\n",
           crc32_buf(text, strlen(text)), (unsigned long long)fnv1a_buf(text, strlen(text)),
           sieve_count(10000), days_from_civil(2024, 3, 1), days_in_month(2024, 2), scratch,
           utf8_count(scratch));

    arena_free(&ar);
    trie_free(t);
    bloom_free(&bl);
    list_free(list);
    heap_free(&h);
    sb_free(&sb);
    hmap_free(m);
    vec_free(&v);
    return 0;
}

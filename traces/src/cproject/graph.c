#include <stdlib.h>
#include "util.h"

int graph_bfs_reachable(int n, const int (*edges)[2], int nedges, int from) {
    ringbuf q;
    bitset seen;
    int count = 0;
    rb_init(&q, (size_t)n);
    bitset_init(&seen, (size_t)n);
    bitset_set(&seen, (size_t)from);
    rb_put(&q, from);
    long v;
    while (rb_get(&q, &v)) {
        count++;
        for (int e = 0; e < nedges; e++)
            if (edges[e][0] == v && !bitset_test(&seen, (size_t)edges[e][1])) {
                bitset_set(&seen, (size_t)edges[e][1]);
                rb_put(&q, edges[e][1]);
            }
    }
    rb_free(&q);
    bitset_free(&seen);
    return count;
}

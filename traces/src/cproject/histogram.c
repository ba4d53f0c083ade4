#include <string.h>
#include "util.h"

void hist_init(histogram *h, double lo, double hi) {
    memset(h->bins, 0, sizeof h->bins);
    h->lo = lo;
    h->hi = hi;
}

void hist_add(histogram *h, double x) {
    int i = (int)((x - h->lo) / (h->hi - h->lo) * 16);
    if (i < 0) i = 0;
    if (i > 15) i = 15;
    h->bins[i]++;
}

size_t hist_total(const histogram *h) {
    size_t t = 0;
    for (int i = 0; i < 16; i++) t += h->bins[i];
    return t;
}

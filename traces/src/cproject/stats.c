#include <math.h>
#include "util.h"

void stats_init(stats *s) { s->n = s->mean = s->m2 = 0; s->min = INFINITY; s->max = -INFINITY; }

void stats_add(stats *s, double x) {     /* Welford */
    s->n += 1;
    double d = x - s->mean;
    s->mean += d / s->n;
    s->m2 += d * (x - s->mean);
    if (x < s->min) s->min = x;
    if (x > s->max) s->max = x;
}

double stats_stddev(const stats *s) { return s->n > 1 ? sqrt(s->m2 / (s->n - 1)) : 0.0; }

#include <stddef.h>
#include "util.h"

static void swap(long *a, long *b) { long t = *a; *a = *b; *b = t; }

static void insertion(long *a, size_t n) {
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && a[j - 1] > a[j]; j--) swap(&a[j - 1], &a[j]);
}

void sort_longs(long *a, size_t n) {
    while (n > 16) {
        long p = a[n / 2];
        size_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i >= j) break;
            swap(&a[i++], &a[j--]);
        }
        sort_longs(a, j + 1);
        a += j + 1;
        n -= j + 1;
    }
    insertion(a, n);
}

int is_sorted(const long *a, size_t n) {
    for (size_t i = 1; i < n; i++) if (a[i - 1] > a[i]) return 0;
    return 1;
}

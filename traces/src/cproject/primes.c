#include <stdlib.h>
#include "util.h"

size_t sieve_count(size_t limit) {
    if (limit < 2) return 0;
    unsigned char *composite = calloc(limit + 1, 1);
    size_t n = 0;
    for (size_t i = 2; i <= limit; i++) {
        if (composite[i]) continue;
        n++;
        for (size_t j = i * i; j <= limit; j += i) composite[j] = 1;
    }
    free(composite);
    return n;
}

int is_prime(uint64_t n) {
    if (n < 2) return 0;
    for (uint64_t d = 2; d * d <= n; d++) if (n % d == 0) return 0;
    return 1;
}

/* pagefault-bench.c — the page-fault micro-benchmark of the PVM paper
 * (Huang et al., SOSP '23): repeatedly mmap a 1 MiB anonymous region, write
 * one byte in every 4 KiB page (one minor page fault per page), munmap it,
 * until TOTAL_MIB MiB have been touched in total.
 *
 * usage: pagefault-bench [TOTAL_MIB [CHUNK_KIB]]   (defaults: 1024, 1024)
 * Build: gcc -O2 -Wall -o pagefault-bench pagefault-bench.c
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long total_mib = argc > 1 ? atol(argv[1]) : 1024;
    long chunk_kib = argc > 2 ? atol(argv[2]) : 1024;
    long page = sysconf(_SC_PAGESIZE);
    size_t chunk = (size_t)chunk_kib * 1024;
    if (total_mib <= 0 || chunk_kib <= 0 || chunk % (size_t)page) {
        fprintf(stderr, "usage: %s [TOTAL_MIB [CHUNK_KIB]]\n", argv[0]);
        return 2;
    }
    long rounds = total_mib * 1024 / chunk_kib;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long r = 0; r < rounds; r++) {
        volatile char *p = mmap(NULL, chunk, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        for (size_t off = 0; off < chunk; off += (size_t)page)
            p[off] = (char)r;                       /* write fault */
        if (munmap((void *)p, chunk)) { perror("munmap"); return 1; }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    long faults = rounds * (long)(chunk / (size_t)page);
    fprintf(stderr, "pagefault-bench: %ld rounds x %ld KiB, %ld page touches in %.3f s (%.0f ns/fault)\n",
            rounds, chunk_kib, faults, s, s * 1e9 / (double)faults);
    return 0;
}

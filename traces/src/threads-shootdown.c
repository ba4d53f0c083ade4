/* threads-shootdown.c — two threads of one process, pinned to CPU 0 and CPU 1,
 * that change the page tables of their shared mm while the other one is
 * running, so that the kernel must send remote TLB shootdowns (IPIs).
 *
 * Per iteration (both threads in lock-step, spin barrier so neither CPU idles):
 *   1. both threads read every page of a shared 64 KiB region and write their
 *      own half of it (both CPUs now cache TLB entries for it);
 *   2. thread 0: madvise(MADV_DONTNEED) the shared region every 2nd iteration,
 *      else mprotect it PROT_READ and back to PROT_READ|PROT_WRITE;
 *      thread 1 (concurrently): mmap a private 128 KiB region, touch every page,
 *      mprotect its first half PROT_READ, madvise(MADV_DONTNEED) the second
 *      quarter, touch again, munmap;
 *      thread 0 then does the same private-region work;
 *   3. barrier.
 *
 * usage: threads-shootdown [ITERATIONS]   (default 400)
 * Build: gcc -O2 -Wall -pthread -o threads-shootdown threads-shootdown.c
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHARED_PAGES 16
#define PRIVATE_PAGES 32

static long page;
static long iterations = 400;
static volatile char *shared;
static atomic_long barrier_count;

static void spin_barrier(long *generation) {
    long target = (*generation + 1) * 2;
    atomic_fetch_add(&barrier_count, 1);
    long spins = 0;
    while (atomic_load(&barrier_count) < target)
        if (++spins % 100000 == 0) sched_yield();  /* don't starve if CPUs are busy */
    (*generation)++;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (e) { fprintf(stderr, "pthread_setaffinity_np(cpu %d): error %d\n", cpu, e); exit(1); }
}

static void private_work(long it) {
    size_t len = (size_t)(PRIVATE_PAGES * page);
    volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    for (long i = 0; i < PRIVATE_PAGES; i++) p[i * page] = (char)it;
    if (mprotect((void *)p, len / 2, PROT_READ)) { perror("mprotect"); exit(1); }
    if (madvise((void *)(p + len / 2), len / 4, MADV_DONTNEED)) { perror("madvise"); exit(1); }
    for (long i = PRIVATE_PAGES / 2; i < PRIVATE_PAGES; i++) p[i * page] += 1;
    long sum = 0;
    for (long i = 0; i < PRIVATE_PAGES / 2; i++) sum += p[i * page];
    (void)sum;
    if (munmap((void *)p, len)) { perror("munmap"); exit(1); }
}

static void *worker(void *arg) {
    int id = (int)(long)arg;
    long gen = 0;
    size_t slen = (size_t)(SHARED_PAGES * page);
    pin(id);
    spin_barrier(&gen);
    for (long it = 0; it < iterations; it++) {
        long sum = 0;
        for (long i = 0; i < SHARED_PAGES; i++) sum += shared[i * page];
        for (long i = id * SHARED_PAGES / 2; i < (id + 1) * SHARED_PAGES / 2; i++)
            shared[i * page] = (char)(sum + it);
        spin_barrier(&gen);
        if (id == 0) {
            if (it % 2 == 0) {
                if (madvise((void *)shared, slen, MADV_DONTNEED)) { perror("madvise"); exit(1); }
            } else {
                if (mprotect((void *)shared, slen, PROT_READ)) { perror("mprotect"); exit(1); }
                if (mprotect((void *)shared, slen, PROT_READ | PROT_WRITE)) { perror("mprotect"); exit(1); }
            }
        }
        private_work(it);
        spin_barrier(&gen);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) iterations = atol(argv[1]);
    if (iterations <= 0) { fprintf(stderr, "usage: %s [ITERATIONS]\n", argv[0]); return 2; }
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) { fprintf(stderr, "needs 2 CPUs\n"); return 1; }
    page = sysconf(_SC_PAGESIZE);
    shared = mmap(NULL, (size_t)(SHARED_PAGES * page), PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) { perror("mmap"); return 1; }
    pthread_t t[2];
    for (long i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i)) { perror("pthread_create"); return 1; }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    munmap((void *)shared, (size_t)(SHARED_PAGES * page));
    fprintf(stderr, "threads-shootdown: %ld iterations on CPUs 0 and 1 done\n", iterations);
    return 0;
}

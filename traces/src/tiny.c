/* tiny.c — a tiny workload that fires every recorded event at least once,
 * used to record the same kind of run in three text formats (traces/formats/).
 *
 *  - mmap + write faults (page_fault_user), mprotect / madvise(MADV_DONTNEED)
 *    while a second thread of the same mm spins on CPU 1 (tlb_flush
 *    "remote IPI send" here, "remote shootdown" on CPU 1),
 *  - a thread sleeping on a pipe while pinned to CPU 0 is re-pinned to CPU 1
 *    and woken by the main thread: the wake-up migrates it in the main
 *    thread's context (sched_migrate_task; migrations done by the kernel's
 *    stopper thread are not attributed to the traced process tree),
 *  - mremap, a kernel-mode fault (read() into an untouched page), brk (sbrk),
 *    munmap (plus one failing munmap: EINVAL, to show error returns),
 *    fork + exec of /bin/true, exit.
 *
 * Build: gcc -O2 -Wall -pthread -o tiny tiny.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;
static atomic_long progress;
static volatile char *region;
static int pipefd[2];

static void pin_thread(pthread_t t, int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(t, sizeof s, &s);
}

static void *spinner(void *arg) {
    (void)arg;
    pin_thread(pthread_self(), 1);
    long sum = 0;
    while (!atomic_load(&stop)) {            /* keeps the mm loaded on CPU 1 */
        sum += region[0];
        atomic_fetch_add(&progress, 1);
    }
    return (void *)sum;
}

static void *sleeper(void *arg) {
    (void)arg;
    char c;
    if (read(pipefd[0], &c, 1) != 1) perror("read pipe");
    return NULL;
}

static void wait_spinner_running(void) {
    long p0 = atomic_load(&progress);
    while (atomic_load(&progress) < p0 + 1000) ;
}

int main(void) {
    long pg = sysconf(_SC_PAGESIZE);
    pin_thread(pthread_self(), 0);
    region = mmap(NULL, 8 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 8; i++) region[i * pg] = 1;            /* user write faults */

    pthread_t t;
    pthread_create(&t, NULL, spinner, NULL);
    for (int k = 0; k < 4; k++) {
        wait_spinner_running();
        mprotect((void *)region, 4 * pg, PROT_READ);
        mprotect((void *)region, 4 * pg, PROT_READ | PROT_WRITE);
        madvise((void *)(region + 4 * pg), 2 * pg, MADV_DONTNEED);
        region[4 * pg] = 2;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);

    /* sched_migrate_task in our own context: wake a sleeper re-pinned elsewhere */
    if (pipe(pipefd)) { perror("pipe"); return 1; }
    pthread_t s;
    pthread_create(&s, NULL, sleeper, NULL);
    pin_thread(s, 0);
    pin_thread(pthread_self(), 1);
    usleep(20000);                                              /* sleeper blocks on CPU 0 */
    pin_thread(s, 1);
    if (write(pipefd[1], "x", 1) != 1) perror("write pipe");
    pthread_join(s, NULL);

    char *moved = mremap((void *)region, 8 * pg, 16 * pg, MREMAP_MAYMOVE);
    if (moved == MAP_FAILED) { perror("mremap"); return 1; }
    moved[12 * pg] = 2;
    int fd = open("/dev/zero", O_RDONLY);
    char *fresh = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (read(fd, fresh, (size_t)pg) < 0) perror("read");       /* kernel-mode fault */
    close(fd);
    char *brk0 = sbrk(0);
    sbrk(64 * pg);
    brk0[0] = 3;
    sbrk(-64 * pg);
    munmap(fresh, (size_t)pg);
    if (munmap(fresh + 1, (size_t)pg) == 0) return 1;          /* fails: EINVAL (-22) */
    munmap(moved, 16 * pg);

    pid_t c = fork();
    if (c == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(c, &st, 0);
    printf("tiny: child exited %d\n", WEXITSTATUS(st));
    return 0;
}

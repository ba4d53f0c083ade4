// The /dev/kvm calls of `shadowsim run --backend kvm` (see ckvm.h). All of the backend's
// unsafe memory handling sits here: ioctl structures, the kvm_run page, the stats file.
#define _GNU_SOURCE
#include "ckvm.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct ckvm {
    int kvm, vm, nvcpus;
    int vcpu[CKVM_MAX_VCPUS];
    struct kvm_run *run[CKVM_MAX_VCPUS];
    size_t run_size;
    uint8_t *memory;
    uint64_t memory_size;
    char error[256];
};

static int fail(ckvm *vm, int err, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(vm->error, sizeof vm->error, format, args);
    va_end(args);
    size_t n = strlen(vm->error);
    if (err) snprintf(vm->error + n, sizeof vm->error - n, ": %s", strerror(err));
    return err ? -err : -EINVAL;
}

const char *ckvm_error(const ckvm *vm) { return vm->error; }
uint8_t *ckvm_memory(ckvm *vm) { return vm->memory; }

void ckvm_close(ckvm *vm) {
    if (!vm) return;
    for (int i = 0; i < vm->nvcpus; i++) {
        if (vm->run[i]) munmap(vm->run[i], vm->run_size);
        if (vm->vcpu[i] >= 0) close(vm->vcpu[i]);
    }
    if (vm->memory) munmap(vm->memory, vm->memory_size);
    if (vm->vm >= 0) close(vm->vm);
    if (vm->kvm >= 0) close(vm->kvm);
    free(vm);
}

int ckvm_host_features(char *error, size_t error_size) {
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { int e = errno; snprintf(error, error_size, "/dev/kvm: %s", strerror(e)); return -e; }
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + 256 * sizeof cpuid->entries[0]);
    if (!cpuid) { close(kvm); snprintf(error, error_size, "out of memory"); return -ENOMEM; }
    cpuid->nent = 256;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) {
        int e = errno;
        snprintf(error, error_size, "KVM_GET_SUPPORTED_CPUID: %s", strerror(e));
        free(cpuid); close(kvm);
        return -e;
    }
    int features = 0;
    for (uint32_t i = 0; i < cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
        if (e->function == 1 && (e->ecx >> 17 & 1)) features |= CKVM_PCID;
        if (e->function == 7 && e->index == 0) {
            if (e->ebx >> 10 & 1) features |= CKVM_INVPCID;
            if (e->ebx >> 7 & 1) features |= CKVM_SMEP;
            if (e->ebx >> 20 & 1) features |= CKVM_SMAP;
        }
        if (e->function == 0x80000001 && (e->edx >> 26 & 1)) features |= CKVM_GBPAGES;
    }
    free(cpuid);
    close(kvm);
    return features;
}

ckvm *ckvm_open(uint64_t memory_bytes, int vcpus, char *error, size_t error_size) {
    ckvm *vm = calloc(1, sizeof *vm);
    if (!vm) { snprintf(error, error_size, "out of memory"); return NULL; }
    vm->kvm = vm->vm = -1;
    for (int i = 0; i < CKVM_MAX_VCPUS; i++) vm->vcpu[i] = -1;
    int r = 0;
    struct kvm_cpuid2 *cpuid = NULL;
    if (vcpus < 1 || vcpus > CKVM_MAX_VCPUS) { r = fail(vm, 0, "the kvm backend runs 1 or 2 vCPUs, not %d", vcpus); goto out; }
    vm->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm < 0) { r = fail(vm, errno, "/dev/kvm"); goto out; }
    vm->vm = ioctl(vm->kvm, KVM_CREATE_VM, 0);
    if (vm->vm < 0) { r = fail(vm, errno, "KVM_CREATE_VM"); goto out; }
    // Shared anonymous memory is not backed by transparent huge pages, and touching
    // every page now keeps the host's zero page (and the MMU-notifier zap when the guest
    // first writes it) out of the measurements.
    vm->memory = mmap(NULL, memory_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (vm->memory == MAP_FAILED) { vm->memory = NULL; r = fail(vm, errno, "mmap of %llu bytes of guest memory", (unsigned long long)memory_bytes); goto out; }
    vm->memory_size = memory_bytes;
    madvise(vm->memory, memory_bytes, MADV_NOHUGEPAGE);
    memset(vm->memory, 0, memory_bytes);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = memory_bytes, .userspace_addr = (uint64_t)(uintptr_t)vm->memory,
    };
    if (ioctl(vm->vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { r = fail(vm, errno, "KVM_SET_USER_MEMORY_REGION"); goto out; }
    enum { CPUID_ENTRIES = 256 };
    cpuid = calloc(1, sizeof *cpuid + CPUID_ENTRIES * sizeof cpuid->entries[0]);
    if (!cpuid) { r = fail(vm, ENOMEM, "cpuid"); goto out; }
    cpuid->nent = CPUID_ENTRIES;
    if (ioctl(vm->kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) { r = fail(vm, errno, "KVM_GET_SUPPORTED_CPUID"); goto out; }
    int size = ioctl(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (size <= 0) { r = fail(vm, errno, "KVM_GET_VCPU_MMAP_SIZE"); goto out; }
    vm->run_size = (size_t)size;
    for (int i = 0; i < vcpus; i++) {
        vm->vcpu[i] = ioctl(vm->vm, KVM_CREATE_VCPU, i);
        if (vm->vcpu[i] < 0) { r = fail(vm, errno, "KVM_CREATE_VCPU %d", i); goto out; }
        vm->nvcpus = i + 1;
        vm->run[i] = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu[i], 0);
        if (vm->run[i] == MAP_FAILED) { vm->run[i] = NULL; r = fail(vm, errno, "mmap of kvm_run"); goto out; }
        // The processor KVM supports (without it the guest has no NX, no 1 GiB pages).
        if (ioctl(vm->vcpu[i], KVM_SET_CPUID2, cpuid) < 0) { r = fail(vm, errno, "KVM_SET_CPUID2"); goto out; }
    }
out:
    free(cpuid);
    if (r < 0) {
        snprintf(error, error_size, "%s", vm->error);
        ckvm_close(vm);
        return NULL;
    }
    return vm;
}

int ckvm_set_mmu_pages(ckvm *vm, uint64_t pages) {
    if (ioctl(vm->vm, KVM_SET_NR_MMU_PAGES, (unsigned long)pages) < 0) return fail(vm, errno, "KVM_SET_NR_MMU_PAGES %llu", (unsigned long long)pages);
    return 0;
}

static int vcpu_fd(ckvm *vm, int vcpu) { return vcpu >= 0 && vcpu < vm->nvcpus ? vm->vcpu[vcpu] : -1; }

int ckvm_enter_long_mode(ckvm *vm, int vcpu, const ckvm_long_mode *state) {
    int fd = vcpu_fd(vm, vcpu);
    if (fd < 0) return fail(vm, 0, "no vCPU %d", vcpu);
    struct kvm_sregs s;
    if (ioctl(fd, KVM_GET_SREGS, &s) < 0) return fail(vm, errno, "KVM_GET_SREGS");
    s.cr0 = state->cr0; s.cr3 = state->cr3; s.cr4 = state->cr4; s.efer = state->efer;
    struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = state->code_selector, .type = 11,
                                .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1 };
    struct kvm_segment data = { .base = 0, .limit = 0xffffffff, .selector = state->data_selector, .type = 3,
                                .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1 };
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.gdt.base = state->gdt_base; s.gdt.limit = state->gdt_limit;
    s.idt.base = state->idt_base; s.idt.limit = state->idt_limit;
    struct kvm_segment tr = { .base = state->tss_base, .limit = state->tss_limit, .selector = state->tss_selector,
                              .type = 11, .present = 1, .s = 0 };
    s.tr = tr;
    if (ioctl(fd, KVM_SET_SREGS, &s) < 0) return fail(vm, errno, "KVM_SET_SREGS");
    return 0;
}

int ckvm_get_regs(ckvm *vm, int vcpu, ckvm_regs *out) {
    int fd = vcpu_fd(vm, vcpu);
    struct kvm_regs g;
    if (fd < 0 || ioctl(fd, KVM_GET_REGS, &g) < 0) return fail(vm, errno, "KVM_GET_REGS");
    *out = (ckvm_regs){ g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rsp, g.rbp, g.rip, g.rflags };
    return 0;
}

int ckvm_set_regs(ckvm *vm, int vcpu, const ckvm_regs *in) {
    int fd = vcpu_fd(vm, vcpu);
    struct kvm_regs g;
    memset(&g, 0, sizeof g);
    g.rax = in->rax; g.rbx = in->rbx; g.rcx = in->rcx; g.rdx = in->rdx; g.rsi = in->rsi; g.rdi = in->rdi;
    g.rsp = in->rsp; g.rbp = in->rbp; g.rip = in->rip; g.rflags = in->rflags;
    if (fd < 0 || ioctl(fd, KVM_SET_REGS, &g) < 0) return fail(vm, errno, "KVM_SET_REGS");
    return 0;
}

int ckvm_get_control(ckvm *vm, int vcpu, uint64_t *cr2, uint64_t *cr3, int *cpl) {
    int fd = vcpu_fd(vm, vcpu);
    struct kvm_sregs s;
    if (fd < 0 || ioctl(fd, KVM_GET_SREGS, &s) < 0) return fail(vm, errno, "KVM_GET_SREGS");
    *cr2 = s.cr2; *cr3 = s.cr3; *cpl = s.cs.dpl;
    return 0;
}

static void on_timer(int signal) { (void)signal; }

int ckvm_run(ckvm *vm, int vcpu, unsigned timeout_ms, ckvm_exit *exit) {
    int fd = vcpu_fd(vm, vcpu);
    if (fd < 0) return fail(vm, 0, "no vCPU %d", vcpu);
    // A timer signal aimed at this thread makes KVM_RUN return EINTR if the guest never
    // exits (a CPL 0 HLT on kvm-pvm does not).
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_timer;
    sigaction(SIGRTMIN, &action, NULL);
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = SIGRTMIN;
    event._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &event, &timer) < 0) return fail(vm, errno, "timer_create");
    struct itimerspec when = { .it_value = { .tv_sec = timeout_ms / 1000, .tv_nsec = (long)(timeout_ms % 1000) * 1000000L } };
    timer_settime(timer, 0, &when, NULL);
    int r = ioctl(fd, KVM_RUN, 0);
    int err = errno;
    timer_delete(timer);
    if (r < 0) {
        if (err == EINTR) { fail(vm, 0, "the guest did not exit within %u ms", timeout_ms); return -ETIMEDOUT; }
        return fail(vm, err, "KVM_RUN");
    }
    struct kvm_run *run = vm->run[vcpu];
    memset(exit, 0, sizeof *exit);
    exit->reason = run->exit_reason;
    if (run->exit_reason == KVM_EXIT_IO) {
        exit->port = run->io.port;
        exit->is_out = run->io.direction == KVM_EXIT_IO_OUT;
        exit->value = *((uint8_t *)run + run->io.data_offset);
    }
    return 0;
}

int ckvm_stats(ckvm *vm, int vcpu, ckvm_stat *out, int max) {
    int owner = vcpu < 0 ? vm->vm : vcpu_fd(vm, vcpu);
    if (owner < 0) return fail(vm, 0, "no vCPU %d", vcpu);
    int fd = ioctl(owner, KVM_GET_STATS_FD, NULL);
    if (fd < 0) return fail(vm, errno, "KVM_GET_STATS_FD");
    struct kvm_stats_header header;
    int count = 0;
    if (pread(fd, &header, sizeof header, 0) != (ssize_t)sizeof header) { count = fail(vm, errno, "reading the stats header"); goto done; }
    size_t desc_size = sizeof(struct kvm_stats_desc) + header.name_size;
    char *descs = malloc(desc_size * header.num_desc);
    if (!descs) { count = fail(vm, ENOMEM, "stats"); goto done; }
    if (pread(fd, descs, desc_size * header.num_desc, header.desc_offset) != (ssize_t)(desc_size * header.num_desc)) {
        free(descs);
        count = fail(vm, errno, "reading the stats descriptors");
        goto done;
    }
    for (uint32_t i = 0; i < header.num_desc && count < max; i++) {
        struct kvm_stats_desc *d = (struct kvm_stats_desc *)(descs + i * desc_size);
        if (d->size != 1) continue;   // histograms are not read
        uint64_t value;
        if (pread(fd, &value, sizeof value, header.data_offset + d->offset) != (ssize_t)sizeof value) continue;
        snprintf(out[count].name, CKVM_NAME, "%s", d->name);
        out[count].value = value;
        out[count].flags = d->flags;
        count++;
    }
    free(descs);
done:
    close(fd);
    return count;
}

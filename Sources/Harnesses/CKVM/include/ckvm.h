// ckvm: the few /dev/kvm calls `shadowsim run --backend kvm` makes, in C because the
// KVM ioctls are variadic and their structures are kernel UAPI. Every call returns 0 or
// a negative errno and leaves a message in the VM's `error` buffer.
#ifndef CKVM_H
#define CKVM_H
#include <stdint.h>
#include <stddef.h>

typedef struct ckvm ckvm;

enum { CKVM_MAX_VCPUS = 2, CKVM_MAX_STATS = 96, CKVM_NAME = 48 };

enum { CKVM_PCID = 1, CKVM_INVPCID = 2, CKVM_SMEP = 4, CKVM_SMAP = 8, CKVM_GBPAGES = 16 };

/// What the host's KVM offers a guest (KVM_GET_SUPPORTED_CPUID) as CKVM_* bits, or a
/// negative errno with the reason in `error` (no /dev/kvm, no permission).
int ckvm_host_features(char *error, size_t error_size);

/// Opens /dev/kvm, makes a VM with `memory_bytes` of pre-faulted RAM at guest-physical 0
/// (no transparent huge pages, so the host maps it with 4 KiB pages) and `vcpus` vCPUs.
/// NULL on failure, with the reason in `error`.
ckvm *ckvm_open(uint64_t memory_bytes, int vcpus, char *error, size_t error_size);
void ckvm_close(ckvm *vm);
const char *ckvm_error(const ckvm *vm);
uint8_t *ckvm_memory(ckvm *vm);
/// KVM_SET_NR_MMU_PAGES: the shadow-page budget.
int ckvm_set_mmu_pages(ckvm *vm, uint64_t pages);

typedef struct {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, rip, rflags;
} ckvm_regs;

typedef struct {
    uint64_t cr0, cr3, cr4, efer;
    uint64_t gdt_base, idt_base, tss_base;
    uint16_t gdt_limit, idt_limit, tss_limit;
    uint16_t code_selector, data_selector, tss_selector;
} ckvm_long_mode;

/// Long mode at CPL 0 with a flat 64-bit code segment and the given tables.
int ckvm_enter_long_mode(ckvm *vm, int vcpu, const ckvm_long_mode *state);
int ckvm_get_regs(ckvm *vm, int vcpu, ckvm_regs *regs);
int ckvm_set_regs(ckvm *vm, int vcpu, const ckvm_regs *regs);
/// CR2, CR3 and the CPL (CS.DPL) as the vCPU has them now.
int ckvm_get_control(ckvm *vm, int vcpu, uint64_t *cr2, uint64_t *cr3, int *cpl);

typedef struct {
    uint32_t reason;     // KVM_EXIT_*
    uint16_t port;       // KVM_EXIT_IO
    uint8_t value;       // first byte written by OUT
    uint8_t is_out;
} ckvm_exit;

/// KVM_RUN until the next exit to this program; -ETIMEDOUT after `timeout_ms`.
int ckvm_run(ckvm *vm, int vcpu, unsigned timeout_ms, ckvm_exit *exit);

typedef struct {
    char name[CKVM_NAME];
    uint64_t value;
    uint32_t flags;      // KVM_STATS_TYPE_* | KVM_STATS_UNIT_* | KVM_STATS_BASE_*
} ckvm_stat;

/// The binary statistics (KVM_GET_STATS_FD) of the VM (`vcpu` < 0) or of a vCPU: up to
/// `max` single-value entries; returns how many, or a negative errno.
int ckvm_stats(ckvm *vm, int vcpu, ckvm_stat *out, int max);

#endif

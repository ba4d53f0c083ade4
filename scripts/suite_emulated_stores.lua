-- runs under: every policy
--
-- suite_emulated_stores.lua: stores the hypervisor's instruction emulator makes
-- (vcpu:write/fill with { emulated = true }: guest kernel code under PVM, an emulated
-- instruction writing a page table), with exact counter deltas, under the checker.
--  1. An emulated store rewriting the PTE of a shadowed, synced table: one emulated
--     instruction, one tracked page-table write, no fault exit. The shadow policies zap
--     the spte (KVM's kvm_mmu_track_write), so the next read already sees the new frame;
--     nested paging and bare metal keep the stale TLB entry until INVLPG (x86 allows both).
--  2. An emulated store to a data frame: counted as a tracked write too once shadowed
--     tables exist (KVM counts every emulated write then).
--  3. An emulated REP STOS of 64 aligned bytes: 8 iterations, 8 emulated instructions.
--  4. A store that faults (a read-only page at CPL 3): #PF P|W|U, nothing written, the
--     instruction still emulated.
--  5. The emulator's walk sets A and D in the guest's PTE, as the processor would.
--  6. A store across a page boundary writes both pages.
local S = shadowsim
local expect_ok, expect_eq, expect_delta = S.expect_ok, S.expect_eq, S.expect_delta

local vm = S.vm{ mode = "long4", vcpus = 1, memory = "64M" }
local cpu = vm.vcpu[1]
local hyper = vm.policy ~= "bare-metal"
local shadows = hyper and vm.policy ~= "tdp"
local function n(cond) return cond and 1 or 0 end

local space = vm:space()
local VA, DATA, RO = 0x400000, 0x600000, 0x800000
local f1, f2, data, ro = vm:alloc_frame(), vm:alloc_frame(), vm:alloc_frame(), vm:alloc_frame()
local data2 = vm:alloc_frame()
space:map(VA, f1)
space:map(DATA, data, { dirty = false, accessed = false })
space:map(DATA + 0x1000, data2)
space:map(RO, ro, { write = false })
expect_ok(cpu:load_cr3(space))
expect_eq(select(2, cpu:read(VA, 8, 3)), f1, "the first mapping")

-- 1. The PTE rewritten by an emulated store at CPL 0.
local pte, pte_gpa = space:entry(VA, 1)
local before = vm:counters()
expect_ok(cpu:write(vm:physmap(pte_gpa), (pte & ~0x000FFFFFFFFFF000) | f2, 8, 0, { emulated = true }))
expect_delta(before, vm:counters(), { insn_emulation = n(hyper), mmu_pte_write = n(shadows), pf_taken = 0, exits = 0 },
  "an emulated page-table store")
expect_eq(select(2, cpu:read(VA, 8, 3)), shadows and f2 or f1, "the spte zapped by write tracking, or the stale TLB entry")
expect_ok(cpu:invlpg(VA))
expect_eq(select(2, cpu:read(VA, 8, 3)), f2, "the new mapping after INVLPG")

-- 2. A data store.
before = vm:counters()
expect_ok(cpu:write(DATA + 8, 0x1122334455667788, 8, 3, { emulated = true }))
expect_delta(before, vm:counters(), { insn_emulation = n(hyper), mmu_pte_write = n(shadows), pf_taken = 0 },
  "an emulated data store")
expect_eq(vm:read_phys(data + 8, 8), 0x1122334455667788, "the value stored")
-- 5. Its walk set A and D.
local leaf = space:entry(DATA, 1)
expect_eq(leaf & (S.PTE.A | S.PTE.D), S.PTE.A | S.PTE.D, "A and D set by the emulator's walk")

-- 3. REP STOS of 64 bytes.
before = vm:counters()
expect_ok(cpu:fill(DATA + 64, 64, 0xAB, 3, { emulated = true }))
-- One emulated instruction (KVM counts a REP once), eight tracked 8-byte stores.
expect_delta(before, vm:counters(), { insn_emulation = n(hyper), mmu_pte_write = 8 * n(shadows) },
  "eight emulated iterations")
expect_eq(vm:read_phys(data + 64, 8), 0xABABABABABABABAB, "the first iteration")
expect_eq(vm:read_phys(data + 120, 8), 0xABABABABABABABAB, "the last iteration")
expect_eq(vm:read_phys(data + 128, 8), 0, "nothing beyond")

-- 4. A faulting store.
before = vm:counters()
S.expect_fault(S.PF.P | S.PF.W | S.PF.U, RO, "an emulated store to a read-only page",
  cpu:write(RO, 5, 8, 3, { emulated = true }))
expect_delta(before, vm:counters(), { insn_emulation = n(hyper), pf_protection = 1, mmu_pte_write = 0 },
  "the instruction ran and faulted")
expect_eq(vm:read_phys(ro, 8), 0, "nothing written")

-- 6. Across a page boundary: 4 bytes at the end of one page, 4 at the start of the next.
expect_ok(cpu:write(DATA + 0xFFC, 0x0A0B0C0D01020304, 8, 3, { emulated = true }))
expect_eq(vm:read_phys(data + 0xFFC, 4), 0x01020304, "the first page's part")
expect_eq(vm:read_phys(data2, 4), 0x0A0B0C0D, "the second page's part")

-- runs under: every policy
-- string_stores.lua: a kernel clearing a reused frame with REP STOSB while the frame is
-- still a shadowed table. A string store is not a page-table-writing instruction, so KVM
-- zaps the frame's shadow pages and lets it run again (a second fault then maps the
-- page writable); when nothing can be zapped at once — the frame is in use as a root,
-- here a cached one — it emulates the iterations instead, 1024 one-byte tracked stores
-- per batch. The exact counts are those of the host's KVM (`--backend kvm` compares).
local S = shadowsim
local vm = S.vm{ mode = "long4", vcpus = 1, memory = "64M" }
local cpu = vm.vcpu[1]
local A, B = vm:space(), vm:space()
local base = 0x10000000
local kvm = vm.policy == "kvm-unsync"

local function load(space)
  cpu:set{ cpl = 0 }; S.expect_ok(cpu:load_cr3(space)); cpu:set{ cpl = 3 }
end

load(A)
A:map(base, vm:alloc_frame()); A:map(base + 0x200000, vm:alloc_frame())
S.expect_ok(cpu:read(base)); S.expect_ok(cpu:read(base + 0x200000))

S.mark("clear a page directory that is still shadowed")
local _, pde = A:entry(base, 2)
local pd = pde & ~0xFFF
vm:free_frame(pd)
local before = vm:counters()
S.expect_eq(vm:alloc_frame{ by = cpu }, pd, "the freed frame comes back (LIFO)")
if kvm then
  S.expect_delta(before, vm:counters(), { pf_taken = 2, pf_fixed = 1, pf_emulate = 1, mmu_shadow_zapped = 1, mmu_pte_write = 0 },
    "unprotected and retried")
end

S.mark("clear a cached root")
B:map(base, vm:alloc_frame())
load(B)
S.expect_ok(cpu:read(base))
vm:free_frame(A.cr3)
before = vm:counters()
S.expect_eq(vm:alloc_frame{ by = cpu }, A.cr3, "A's top table comes back")
if kvm then
  S.expect_delta(before, vm:counters(), { pf_taken = 2, pf_fixed = 1, pf_emulate = 1, mmu_pte_write = 1024, mmu_shadow_zapped = 2 },
    "a root in use cannot be zapped at once: one emulated batch, then natively")
end

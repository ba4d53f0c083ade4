-- policy_wp_emulate.lua -- no unsync: write-protect and emulate (KVM oos_shadow=0,
-- Xen Shadow-2). Reference shadow-mmu.md §9 P1, §4.2, sync-point matrix.
--
-- What it proves, under policy "wp-emulate" (long4, 1 vCPU):
--  * Nothing ever goes unsync: mmu_unsync stays 0 through PTE edits, remaps, new
--    tables, CR3 switches and INVLPG.
--  * Every store to a shadowed table, leaf or not, exits and is emulated: pf_emulate,
--    mmu_pte_write and insn_emulation grow by exactly one per store (stores are spread
--    so that no table gets 3 emulated writes without a fault through it in between).
--  * Stores to a table that is not shadowed run natively (no exit, no emulation).
--  * The emulated store takes effect at once: the old spte is zapped and the TLBs
--    flushed, so a remapped page is seen even before INVLPG (P1: nothing is stale).
--  * CR3 loads have nothing to sync: pages_synced stays 0 for the whole run.
--  * Flooding zaps leaf tables too (P1: "apply it to all levels"): three emulated
--    stores to a page table without a fault through it zap it (mmu_flooded +1,
--    mmu_shadow_zapped +1); the next store to it runs without emulation (the frame is
--    no longer shadowed), and the guest still sees the right mappings afterwards.
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok

local P = require("policy_check")
local expect_delta, measure, reads = P.expect_delta, P.measure, P.reads

local VA = 0x00400000
local vm = S.vm{ policy = "wp-emulate", mode = "long4", vcpus = 1, memory = "64M" }
expect_eq(vm.policy, "wp-emulate", "policy pinned")
local c = vm.vcpu[1]
local A, B = vm:space(), vm:space()
local f = {}
for i = 1, 16 do f[i] = vm:alloc_frame() end
-- A: three page tables (VA, VA + 2M, VA + 4M), pages never accessed beyond the first.
for t = 0, 2 do
  for i = 0, 3 do A:map(VA + t * 0x200000 + i * 0x1000, f[1 + t * 4 + i]) end
end
B:map(VA, f[13])
expect_ok(c:load_cr3(B)); reads(c, VA, f[13], "B")
expect_ok(c:load_cr3(A))
for t = 0, 2 do reads(c, VA + t * 0x200000, f[1 + t * 4], "A table " .. t) end
-- Link A's root to the physmap, so the stores below cost only what the policy decides.
expect_ok(c:read(vm:physmap(f[16]), 8, 0))

------------------------------------------------------------------ one emulation per store
-- Two stores per table, then a fault through it (a first access of another page),
-- round robin: 2 x 3 stores per round, 3 rounds.
local d = measure(vm, function()
  for round = 1, 3 do
    for t = 0, 2 do
      local base = VA + t * 0x200000
      A:map(base + 0x1000 * round, f[14])                      -- present -> present remap
      A:map(base + 0x1000 * round, f[1 + t * 4 + round])       -- and back
    end
    for t = 0, 2 do reads(c, VA + t * 0x200000 + 0x1000 * round, f[1 + t * 4 + round], "round " .. round) end
  end
end)
expect_delta(d, { pf_emulate = 18, mmu_pte_write = 18, insn_emulation = 18, exits_page_fault = 18 + 9,
                  mmu_unsync = 0, mmu_flooded = 0, pages_synced = 0 }, "18 leaf stores, 18 emulations")

-- Upper levels too: a new PD entry (PDE store) is emulated; the new table itself is
-- not shadowed yet, so the store into it runs natively.
local T = vm:alloc_frame()
d = measure(vm, function() A:set_entry(0x00A00000, 2, T | S.PTE.P | S.PTE.RW | S.PTE.US) end)
expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1, mmu_unsync = 0 }, "PDE store emulated")
d = measure(vm, function() A:map(0x00A00000, f[15]) end)
expect_delta(d, { pf_emulate = 0, mmu_pte_write = 0, exits = 0 }, "store into the new, unshadowed table")
reads(c, 0x00A00000, f[15], "new table in use (now shadowed)")

------------------------------------------------------------------ the shadow is never stale
reads(c, VA, f[1], "cached")
d = measure(vm, function() A:map(VA, f[14]) end)
expect_delta(d, { pf_emulate = 1, mmu_unsync = 0 }, "remap emulated")
-- The emulated store zapped the present spte and flushed every vCPU's TLB (KVM's
-- kvm_mmu_track_write): the new mapping is used at once, without INVLPG.
reads(c, VA, f[14], "fresh at once")
expect_ok(c:invlpg(VA))
reads(c, VA, f[14], "after INVLPG")

------------------------------------------------------------------ CR3 loads sync nothing
d = measure(vm, function()
  for _ = 1, 3 do expect_ok(c:load_cr3(B)); expect_ok(c:load_cr3(A)) end
end)
expect_delta(d, { pages_synced = 0, sptes_resynced = 0, exits_cr3 = 6, mmu_unsync = 0 }, "CR3 loads")
reads(c, VA, f[14], "A after the switches")

------------------------------------------------------------------ flooding zaps leaf tables
reads(c, VA + 0x2000, f[3], "a fault through table 0 resets its count")
local base = VA
d = measure(vm, function() A:map(base + 0x1000, f[14]); A:map(base + 0x1000, f[2]) end)
expect_delta(d, { pf_emulate = 2, mmu_flooded = 0 }, "two stores")
d = measure(vm, function() A:map(base + 0x3000, f[14]) end)
expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1, mmu_flooded = 1, mmu_shadow_zapped = 1 }, "third store floods")
d = measure(vm, function() A:map(base + 0x3000, f[4]) end)
expect_delta(d, { pf_emulate = 0, mmu_pte_write = 0 }, "the unshadowed table is written natively")
expect_ok(c:invlpg(base + 0x1000)); expect_ok(c:invlpg(base + 0x3000))
reads(c, base + 0x1000, f[2], "table 0 shadowed again")
reads(c, base + 0x3000, f[4], "table 0 entry 3")
d = measure(vm, function() A:map(base + 0x1000, f[14]) end)
expect_delta(d, { pf_emulate = 1, mmu_unsync = 0 }, "shadowed again: stores are emulated again")

local k = vm:counters()
expect_eq(k.mmu_unsync, 0, "never unsync")
expect_eq(k.pages_synced, 0, "never synced")
expect_eq(k.pf_emulate, k.mmu_pte_write, "every emulation was a page-table write")
S.record("wp_emulate", { pf_emulate = k.pf_emulate, exits = k.exits, cycles = vm:cycles().total })
P.finish("policy_wp_emulate")

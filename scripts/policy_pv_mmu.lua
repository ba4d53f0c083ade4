-- runs under: every policy
--
-- policy_pv_mmu.lua: the paravirtual MMU (pv-mmu) against KVM's unsync scheme, by
-- exact counter deltas, under the checker. The guest is the same under every policy:
-- page-table edits go through the VM's helpers inside `vm:batch` (Linux's lazy MMU
-- mode), which under pv-mmu become update hypercalls and elsewhere ordinary stores.
--  1. Eight PTEs of a live leaf table rewritten in one batch: pv-mmu takes one exit
--     (exits_hypercall +1, pv_updates +8) and no fault; nothing goes unsync. kvm-unsync
--     takes one write-protection fault and unsyncs the table; wp-emulate emulates all
--     stores until the third floods the table.
--  2. The new mappings are seen at once under pv-mmu (the update re-derived the sptes
--     and flushed); the other policies need the guest's INVLPGs first, as x86 says.
--  3. A flushing CR3 load back to the edited space: pv-mmu syncs nothing (its cached
--     root is still usable); kvm-unsync syncs the unsync table.
--  4. One PTE changed, then INVLPG: kvm-unsync resyncs that one spte and the table
--     stays unsync (PVM's second cost); pv-mmu has nothing to resync.
--  5. A kernel mapping shared by four processes rewritten: under kvm-unsync the leaf
--     goes unsync and every root above it is marked, and a later flushing load syncs
--     it; pv-mmu applies the update to the one shared shadow and never syncs.
--  6. A flush hypercall reaching both vCPUs: one exit on the caller, one kick of the
--     other (running) vCPU, no INVLPG exits.
--  7. A store to a table that bypasses the hypercall still exits and is emulated.
--  8. A leaf table linked a second time, read-only, is shadowed under two roles: one
--     update reaches both shadows (pv-mmu re-derives the spte in each), and after the
--     guest's INVLPGs both addresses see the new frame under every policy.
local S = shadowsim
local expect, expect_eq, expect_ok, expect_delta = S.expect, S.expect_eq, S.expect_ok, S.expect_delta

local policy = S.default_policy
local pv, kvm, wp = policy == "pv-mmu", policy == "kvm-unsync", policy == "wp-emulate"
local vm = S.vm{ mode = "long4", vcpus = 2, memory = "64M" }
local c1, c2 = vm.vcpu[1], vm.vcpu[2]

-- A kernel mapping made before any process exists, so every process shares its tables.
local KVA = 0xFFFFC90000000000
local kframe, kframe2 = vm:alloc_frame(), vm:alloc_frame()
vm.kernel:map(KVA, kframe, { user = false, global = false })

local A, B = vm:space(), vm:space()
local VA = 0x00400000
local old, new = {}, {}
for i = 0, 7 do
  old[i], new[i] = vm:alloc_frame(), vm:alloc_frame()
  A:map(VA + i * 0x1000, old[i])
end
B:map(VA, vm:alloc_frame())
expect_ok(c1:load_cr3(A))
for i = 0, 7 do expect_eq(select(2, c1:read(VA + i * 0x1000, 8, 3)), old[i], "the first mappings") end
expect_ok(c2:load_cr3(B))
expect_ok(c2:read(VA, 8, 3))

-- 1. Eight PTEs rewritten in one batch.
local before = vm:counters()
vm:batch(function()
  for i = 0, 7 do A:map(VA + i * 0x1000, new[i]) end
end, { by = c1 })
if pv then
  expect_delta(before, vm:counters(), { exits_hypercall = 1, pv_updates = 8, pf_taken = 0, mmu_pte_write = 0,
                                        mmu_unsync_events = 0, mmu_unsync = 0, remote_tlb_flush_requests = 1 },
    "one update hypercall for the batch")
elseif kvm then
  expect_delta(before, vm:counters(), { exits_hypercall = 0, pv_updates = 0, pf_taken = 1, mmu_pte_write = 0,
                                        mmu_unsync_events = 1, mmu_unsync = 1 },
    "one write-protection fault unsyncs the table")
elseif wp then
  -- Emulated until the third store floods the table (zapped), then native.
  expect_delta(before, vm:counters(), { exits_hypercall = 0, pf_emulate = 3, mmu_pte_write = 3, mmu_flooded = 1 },
    "stores emulated until flooding")
end

-- 2. Seen at once under pv-mmu; after INVLPG everywhere.
for i = 0, 7 do
  local _, gpa = c1:read(VA + i * 0x1000, 8, 3)
  if pv then expect_eq(gpa, new[i], "the update re-derived the spte") end
  expect_ok(c1:invlpg(VA + i * 0x1000))
  expect_eq(select(2, c1:read(VA + i * 0x1000, 8, 3)), new[i], "the new mapping after INVLPG")
end

-- 3. A flushing CR3 load away and back.
before = vm:counters()
expect_ok(c1:load_cr3(B))
expect_ok(c1:load_cr3(A))
local d = S.delta(before, vm:counters())
if pv then
  expect_delta(before, vm:counters(), { pages_synced = 0, sptes_resynced = 0, mmu_cache_miss = 0 },
    "pv-mmu: nothing to sync, the cached roots reused")
elseif kvm then
  expect_eq(d.pages_synced, 1, "kvm-unsync syncs the unsync table on the flushing load")
  expect_eq(vm:counters().mmu_unsync, 0, "and it is synced")
end
for i = 0, 7 do expect_eq(select(2, c1:read(VA + i * 0x1000, 8, 3)), new[i], "still the new mappings") end

-- 4. One PTE changed, then INVLPG.
before = vm:counters()
vm:batch(function() A:map(VA, old[0], { write = false }) end, { by = c1 })
expect_ok(c1:invlpg(VA))
d = S.delta(before, vm:counters())
if pv then
  expect_delta(before, vm:counters(), { exits_hypercall = 1, pv_updates = 1, invlpg_resyncs = 0, pf_taken = 0 },
    "one update, nothing to resync at INVLPG")
elseif kvm then
  expect_delta(before, vm:counters(), { mmu_unsync_events = 1, pf_taken = 1, invlpg_resyncs = 1 },
    "the store unsyncs the table, INVLPG resyncs the one spte")
  expect_eq(vm:counters().mmu_unsync, 1, "and the table stays unsync")
end
S.expect_pf(7, c1:write(VA, 2, 8, 3))
expect_eq(select(2, c1:read(VA, 8, 3)), old[0], "and maps the old frame")

-- 5. A kernel mapping shared by four processes.
local procs = {}
for i = 1, 4 do
  procs[i] = vm:space()
  expect_ok(c1:load_cr3(procs[i]))
  expect_eq(select(2, c1:read(KVA, 8, 0)), kframe, "the shared kernel mapping")
end
before = vm:counters()
vm:batch(function() vm.kernel:map(KVA, kframe2, { user = false, global = false }) end, { by = c1 })
expect_ok(c1:invlpg(KVA))
expect_eq(select(2, c1:read(KVA, 8, 0)), kframe2, "the new kernel mapping in the current process")
for i = 1, 4 do
  expect_ok(c1:load_cr3(procs[i]))
  expect_eq(select(2, c1:read(KVA, 8, 0)), kframe2, "the new kernel mapping in every process")
end
d = S.delta(before, vm:counters())
if pv then
  expect_delta(before, vm:counters(), { exits_hypercall = 1, pv_updates = 1, mmu_unsync_events = 0, pages_synced = 0 },
    "pv-mmu: one update applied to the shared shadow, no sync")
elseif kvm then
  expect_eq(d.mmu_unsync_events, 1, "kvm-unsync: the shared leaf goes unsync")
  expect(d.pages_synced >= 1, "and a flushing load syncs it")
end

-- 6. A flush hypercall reaching both vCPUs.
if pv then
  expect_ok(c2:load_cr3(A))
  expect_ok(c2:read(VA + 0x2000, 8, 3))
  before = vm:counters()
  local c1_before, c2_before = c1:counters(), c2:counters()
  expect_ok(c1:pv_flush({ VA + 0x2000, VA + 0x3000 }, { vcpus = { 1, 2 } }))
  expect_delta(before, vm:counters(), { exits_hypercall = 1, remote_flush_targets = 1, exits_invlpg = 0 },
    "one exit, one kick")
  expect_eq(c1:counters().exits_hypercall - c1_before.exits_hypercall, 1, "the caller's exit")
  expect_eq(c2:counters().exits - c2_before.exits, 0, "the target takes no exit of its own")
  expect_ok(c1:pv_flush("all"))
  S.expect_error("vcpu 3", c1.pv_flush, c1, "all", { vcpus = { 3 } })
else
  S.expect_error("offers no page-table hypercalls", c1.pv_flush, c1, "all")
  S.expect_error("offers no page-table hypercalls", c1.pv_update, c1, { { A.cr3, 0 } })
end

-- 7. A store that bypasses the hypercall.
local pte, pte_gpa = A:entry(VA + 0x4000, 1)
before = vm:counters()
expect_ok(c1:write(vm:physmap(pte_gpa), pte, 8, 0))
if pv or wp then
  expect_delta(before, vm:counters(), { pf_emulate = 1, mmu_pte_write = 1, exits_hypercall = 0 },
    "a direct store to a shadowed table is emulated")
end
-- 8. One table, two roles.
local T, ALIAS = 0x40000000, 0x40200000
local t1, t2, fresh = vm:alloc_frame(), vm:alloc_frame(), vm:alloc_frame()
A:map(T, t1)
A:map(T + 0x1000, t2)
A:map(ALIAS + 0x10000, vm:alloc_frame())         -- the alias's directory entry gets a table
local pde = A:entry(T, 2)
A:set_entry(ALIAS, 2, pde & ~S.PTE.RW)            -- the same table, read-only
expect_ok(c1:load_cr3(A))
for _, va in ipairs{ T, ALIAS } do expect_eq(select(2, c1:read(va, 8, 3)), t1, "the table through both links") end
local shadows = 0
for _, p in ipairs(vm:shadow_pages()) do
  if p.gfn == (pde & 0x000FFFFFFFFFF000) >> 12 and p.level == 1 then shadows = shadows + 1 end
end
if policy ~= "bare-metal" and policy ~= "tdp" then expect_eq(shadows, 2, "two shadows of the table") end
before = vm:counters()
vm:batch(function() A:map(T, fresh) end, { by = c1 })
local after = vm:counters()
-- The accesses first: a shadow the update missed is the checker's to report.
for _, va in ipairs{ T, ALIAS } do expect_ok(c1:invlpg(va)) end
for _, va in ipairs{ T, ALIAS } do expect_eq(select(2, c1:read(va, 8, 3)), fresh, "the new frame through both links") end
if pv then
  expect_delta(before, after, { exits_hypercall = 1, pv_updates = 1, sptes_resynced = 2, sync_sptes_dropped = 2 },
    "one update re-derives the spte in both shadows")
end
print(("policy_pv_mmu: ok under %s"):format(policy))

-- policy_sync_scope.lua -- which unsync pages a CR3 load syncs: only those the new
-- root reaches (modern KVM, "kvm-unsync") or every unsync page of the VM (the per-VM
-- list, "vm-list"). Reference shadow-mmu.md §4.5 (last paragraph), §6.2 (Avi's
-- review points c and d), §9 P2 vs P4a, §10 invariant 13.
--
-- What it proves: the same guest runs under both policies. Five processes each edit
-- their own page table (each table goes unsync: mmu_unsync = 5 under both). Then one
-- flushing CR3 load of process 1:
--  * kvm-unsync syncs exactly process 1's table (pages_synced +1) and leaves the four
--    unreachable ones unsync (mmu_unsync = 4);
--  * vm-list syncs all five (pages_synced +5, mmu_unsync = 0): more pages synced.
-- Then the other processes' tables are written again (one store each, from process 1):
--  * kvm-unsync: they are still unsync and writable, so no store exits (exits +0);
--  * vm-list: each first store exits again and re-unsyncs its table (exits +4,
--    mmu_unsync back to 4) -- "syncing every unsync page defeats the purpose of unsync".
-- Both guests then see every process's latest mappings after switching to it.
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok

local P = require("policy_check")
local expect_delta, measure, reads = P.expect_delta, P.measure, P.reads

local VA = 0x00400000
local N = 5

local function run(policy)
  local vm = S.vm{ policy = policy, mode = "long4", vcpus = 1, memory = "64M" }
  expect_eq(vm.policy, policy, "policy pinned")
  local c = vm.vcpu[1]
  local procs, first, second, third = {}, {}, {}, {}
  for p = 1, N do
    procs[p] = vm:space()
    first[p], second[p], third[p] = vm:alloc_frame(), vm:alloc_frame(), vm:alloc_frame()
    procs[p]:map(VA, first[p])
  end
  -- Every process runs once: its tables are shadowed and synced.
  for p = 1, N do
    expect_ok(c:load_cr3(procs[p]))
    local _, pa = expect_ok(c:read(VA, 8, 3))
    expect_eq(pa, first[p], policy .. ": process " .. p)
  end
  expect_eq(vm:counters().mmu_unsync, 0, policy .. ": nothing unsync")

  -- Each process's table is edited (from the last process; one store each).
  local d = measure(vm, function() for p = 1, N do procs[p]:map(VA, second[p]) end end)
  expect_delta(d, { mmu_unsync = N, exits = N, pf_emulate = 0 }, policy .. ": every table unsync")

  local r = { policy = policy }
  r.load = measure(vm, function() expect_ok(c:load_cr3(procs[1])) end)
  r.unsync_after_load = vm:counters().mmu_unsync
  local _, pa = expect_ok(c:read(VA, 8, 3))
  expect_eq(pa, second[1], policy .. ": process 1 sees its edit")

  -- Link process 1's root to the kernel's physmap (a read of a data frame through
  -- it), so that what the stores below cost is the policy's decision, not building
  -- that path. (Reading a page table's own frame would do more: a read fault that maps
  -- a dirty, writable gpte asks for a writable spte and so unsyncs the table, as KVM's
  -- make_spte does.)
  expect_ok(c:read(vm:physmap(first[1]), 8, 0))
  -- Second round of edits to the other processes' tables.
  r.rewrite = measure(vm, function() for p = 2, N do procs[p]:map(VA, third[p]) end end)
  r.unsync_after_rewrite = vm:counters().mmu_unsync

  -- Every process sees its latest mapping.
  for p = 2, N do
    expect_ok(c:load_cr3(procs[p]))
    local _, pa2 = expect_ok(c:read(VA, 8, 3))
    expect_eq(pa2, third[p], policy .. ": process " .. p .. " sees its latest mapping")
  end
  r.total = vm:counters()
  r.cycles = vm:cycles().total
  return r
end

local kvm = run("kvm-unsync")
local list = run("vm-list")

-- kvm-unsync: reachable-only.
expect_delta(kvm.load, { pages_synced = 1, mmu_unsync = -1, exits_cr3 = 1 }, "kvm-unsync: CR3 load")
expect_eq(kvm.unsync_after_load, N - 1, "kvm-unsync: unreachable tables stay unsync")
expect_delta(kvm.rewrite, { exits = 0, mmu_unsync = 0, pf_emulate = 0 }, "kvm-unsync: rewrites of unsync tables")
expect_eq(kvm.unsync_after_rewrite, N - 1, "kvm-unsync: still unsync")

-- vm-list: everything.
expect_delta(list.load, { pages_synced = N, mmu_unsync = -N, exits_cr3 = 1 }, "vm-list: CR3 load")
expect_eq(list.unsync_after_load, 0, "vm-list: nothing left unsync")
expect_delta(list.rewrite, { exits = N - 1, exits_page_fault = N - 1, mmu_unsync = N - 1, pf_emulate = 0 },
             "vm-list: every first rewrite exits and re-unsyncs")
expect_eq(list.unsync_after_rewrite, N - 1, "vm-list: re-unsynced")

-- The relations.
expect(list.load.pages_synced > kvm.load.pages_synced, "vm-list syncs more pages at the CR3 load")
expect(list.rewrite.exits > kvm.rewrite.exits, "vm-list takes more exits on later first writes")
expect(list.total.pages_synced > kvm.total.pages_synced, "vm-list syncs more pages overall")
expect(list.total.list_entries_walked > 0 and kvm.total.list_entries_walked == 0, "only vm-list walks a list")

print(("%-11s %8s %8s %10s %12s"):format("policy", "synced", "exits", "unsync", "cycles"))
for _, r in ipairs{ kvm, list } do
  print(("%-11s %8d %8d %10d %12.0f"):format(r.policy, r.total.pages_synced, r.total.exits, r.total.mmu_unsync, r.cycles))
  S.record("sync_scope_" .. r.policy, { pages_synced = r.total.pages_synced, exits = r.total.exits,
                                        cycles = r.cycles, unsync_after_load = r.unsync_after_load })
end
P.finish("policy_sync_scope")

-- policy_global_list.lua -- the April 2010 patch's host-wide unsync list and lock
-- ("global-list") against the per-VM list ("vm-list"). Reference shadow-mmu.md §6.2
-- (Avi's review points a and b: the list must be per guest; "Locking?"), §9 P3, P4.
--
-- What it proves: three VMs in one host, each with its own process whose page tables
-- are shadowed; VM 2 leaves 3 tables unsync, VM 3 leaves 2, VM 1 leaves 1.
--  * Under global-list, one CR3 load in VM 1 walks the whole host list: it syncs its
--    own page (pages_synced +1, mmu_unsync -1) and walks past the 5 entries of VMs 2
--    and 3 (lock_work_other_vms +5, list_entries_walked +6); the other VMs' pages stay
--    unsync (a VM never syncs another VM's pages). A later CR3 load in VM 2 walks past
--    VM 3's 2 entries only (VM 1's entry left the list when it was synced):
--    lock_work_other_vms +2, and syncs its own 3 pages.
--  * A VM with nothing unsync still pays for the others: a reload in VM 1 with VM 3's
--    2 entries listed costs lock_work_other_vms +2 and syncs nothing.
--  * The same under vm-list: every VM walks only its own list, lock_work_other_vms
--    stays 0 everywhere, and the work per CR3 load is the VM's own entries.
--  * Both sync every unsync page of the loading VM, reachable or not (P3/P4a): VM 2's
--    tables are all synced by one CR3 load even though two of them belong to another
--    process.
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok

local P = require("policy_check")
local expect_delta, measure, reads = P.expect_delta, P.measure, P.reads

local VA = 0x00400000
local REGION = 0x00200000           -- one page table per 2 MiB

-- A guest with two processes: process 1 has `n1` page tables, process 2 has `n2`;
-- both run once (every table shadowed and synced), process 1 runs last.
local function guest(policy, name, n1, n2)
  local vm = S.vm{ policy = policy, mode = "long4", vcpus = 1, memory = "64M", name = name }
  expect_eq(vm.policy, policy, "policy pinned")
  local g = { vm = vm, c = vm.vcpu[1], p = { vm:space(), vm:space() }, n = { n1, n2 }, f = {} }
  for i = 1, 8 do g.f[i] = vm:alloc_frame() end
  for k = 1, 2 do
    for i = 1, g.n[k] do g.p[k]:map(VA + (i - 1) * REGION, g.f[i]) end
  end
  for k = 2, 1, -1 do
    expect_ok(g.c:load_cr3(g.p[k]))
    for i = 1, g.n[k] do expect_ok(g.c:read(VA + (i - 1) * REGION, 8, 3)) end
  end
  -- Link process 1's root to the physmap, so the edits below only unsync.
  expect_ok(g.c:read(vm:physmap(g.f[8]), 8, 0))
  expect_eq(vm:counters().mmu_unsync, 0, name .. ": nothing unsync yet")
  return g
end

-- Edit `count` tables of process k (one store each: each table goes unsync).
local function edit(g, k, count)
  local d = measure(g.vm, function()
    for i = 1, count do g.p[k]:map(VA + (i - 1) * REGION + 0x1000, g.f[i]) end
  end)
  expect_delta(d, { mmu_unsync = count, pf_emulate = 0 }, g.vm.name .. ": edits unsync")
end

local function scenario(policy)
  local g1 = guest(policy, policy .. "-1", 1, 0)
  local g2 = guest(policy, policy .. "-2", 1, 2)
  local g3 = guest(policy, policy .. "-3", 2, 0)
  edit(g1, 1, 1)
  edit(g2, 1, 1); edit(g2, 2, 2)                 -- VM 2: one table of process 1, two of process 2
  edit(g3, 1, 2)
  local r = {}
  -- VM 1 switches to its process again (a root load).
  r.vm1_load = measure(g1.vm, function() expect_ok(g1.c:load_cr3(g1.p[1])) end)
  r.vm2_unsync, r.vm3_unsync = g2.vm:counters().mmu_unsync, g3.vm:counters().mmu_unsync
  -- VM 2 reloads process 1's CR3: every page of VM 2, both processes', is synced.
  r.vm2_load = measure(g2.vm, function() expect_ok(g2.c:load_cr3(g2.p[1])) end)
  -- VM 1 again, with nothing of its own unsync.
  r.vm1_idle = measure(g1.vm, function() expect_ok(g1.c:load_cr3(g1.p[1])) end)
  -- Everyone still sees its own mappings (the edits mapped f[i] at +0x1000).
  for _, g in ipairs{ g1, g2, g3 } do
    expect_ok(g.c:load_cr3(g.p[1]))
    local _, pa = expect_ok(g.c:read(VA + 0x1000, 8, 3))
    expect_eq(pa, g.f[1], g.vm.name .. ": edit visible")
  end
  r.totals = { g1.vm:counters(), g2.vm:counters(), g3.vm:counters() }
  return r
end

------------------------------------------------------------------ global-list
local gl = scenario("global-list")
expect_delta(gl.vm1_load, { pages_synced = 1, mmu_unsync = -1, lock_work_other_vms = 5, list_entries_walked = 6 },
             "global-list: VM 1's CR3 load walks VM 2's 3 and VM 3's 2 entries")
expect_eq(gl.vm2_unsync, 3, "global-list: VM 2's pages are not synced by VM 1")
expect_eq(gl.vm3_unsync, 2, "global-list: VM 3's pages are not synced by VM 1")
expect_delta(gl.vm2_load, { pages_synced = 3, mmu_unsync = -3, lock_work_other_vms = 2, list_entries_walked = 5 },
             "global-list: VM 2 syncs its 3 pages (reachable or not), walks past VM 3's 2")
expect_delta(gl.vm1_idle, { pages_synced = 0, lock_work_other_vms = 2, list_entries_walked = 2 },
             "global-list: VM 1 with nothing unsync still walks VM 3's entries")

------------------------------------------------------------------ vm-list
local vl = scenario("vm-list")
expect_delta(vl.vm1_load, { pages_synced = 1, mmu_unsync = -1, lock_work_other_vms = 0, list_entries_walked = 1 },
             "vm-list: VM 1's CR3 load walks its own list only")
expect_eq(vl.vm2_unsync, 3, "vm-list: VM 2 untouched")
expect_eq(vl.vm3_unsync, 2, "vm-list: VM 3 untouched")
expect_delta(vl.vm2_load, { pages_synced = 3, mmu_unsync = -3, lock_work_other_vms = 0, list_entries_walked = 3 },
             "vm-list: VM 2 syncs its 3 pages")
expect_delta(vl.vm1_idle, { pages_synced = 0, lock_work_other_vms = 0, list_entries_walked = 0 },
             "vm-list: an idle VM walks nothing")
for i = 1, 3 do
  expect_eq(vl.totals[i].lock_work_other_vms, 0, "vm-list: VM " .. i .. " never works for another VM")
end

-- The relation: the global lock makes VMs pay for each other.
local gl_other, vl_other = 0, 0
for i = 1, 3 do
  gl_other = gl_other + gl.totals[i].lock_work_other_vms
  vl_other = vl_other + vl.totals[i].lock_work_other_vms
end
expect(gl_other > 0 and vl_other == 0, "work for other VMs: global-list " .. gl_other .. ", vm-list " .. vl_other)
S.record("global_list_other_vm_work", { global_list = gl_other, vm_list = vl_other })
print(("lock work for other VMs: global-list %d, vm-list %d"):format(gl_other, vl_other))
P.finish("policy_global_list")

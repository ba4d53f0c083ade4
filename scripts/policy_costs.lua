-- policy_costs.lua -- one fork/exec-like workload under all six policies, with the
-- counters and estimated cycles side by side. Reference shadow-mmu.md §9 (expected
-- profile of each policy), §8 (cost model), §6.2 (Avi's review).
--
-- The workload (long4, 1 vCPU, 64 MiB): a parent process with 48 pages in two page
-- tables, 4 rounds of
--   fork:  the kernel (on the parent's CR3) builds a child space mapping the same
--          frames read-only, and write-protects the parent's PTEs (copy-on-write),
--          then reloads CR3 (its TLB flush);
--   child: runs (CR3 switch), reads every page, then "exec": unmaps every page and
--          maps 16 fresh ones, writes them;
--   parent: runs again (CR3 switch), writes 8 pages: each write faults (#PF in the
--          guest), the kernel copies the page, maps the copy writable, INVLPGs, writes.
-- Every policy must give the guest the same results (checked value by value).
--
-- What it proves (relations that must hold whatever the cost constants):
--  * wp-emulate never unsyncs (mmu_unsync == 0 after every step) and emulates more
--    page-table writes than any other policy (pf_emulate strictly the largest);
--  * tdp takes no CR3 exits and builds no shadow pages;
--  * kvm-unsync syncs no more pages than vm-list (reachable-only vs everything), and
--    global-list syncs exactly what vm-list syncs (same rule, one VM on the host);
--  * xen-oos never has more than 3 pages out of sync (1 vCPU);
--  * the list policies walk lists, the others never do.
-- It prints a table (exits, emulations, syncs, cycles) and records each policy's
-- counters and cycles (`--json`).
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok

local POLICIES = { "kvm-unsync", "wp-emulate", "global-list", "vm-list", "xen-oos", "tdp" }
local BASES = { 0x00400000, 0x00600000 }      -- two page tables
local PER_TABLE, ROUNDS, EXEC_PAGES, COW_PAGES = 24, 4, 16, 8

local function va_of(i)                        -- pages 1..48
  local t = (i - 1) // PER_TABLE + 1
  return BASES[t] + ((i - 1) % PER_TABLE) * 0x1000
end

local function workload(policy)
  local vm = S.vm{ policy = policy, mode = "long4", vcpus = 1, memory = "64M" }
  expect_eq(vm.policy, policy, "policy pinned")
  local c = vm.vcpu[1]
  local seen = {}                              -- guest-visible results, in order
  local max_unsync = 0
  local function note(v)
    seen[#seen + 1] = v
    local u = vm:counters().mmu_unsync
    if u > max_unsync then max_unsync = u end
  end
  local function kernel() c:set{ cpl = 0 } end

  local P = vm:space()
  local n = PER_TABLE * #BASES
  local frame = {}
  for i = 1, n do
    frame[i] = vm:alloc_frame()
    P:map(va_of(i), frame[i])
  end
  expect_ok(c:load_cr3(P))
  for i = 1, n do expect_ok(c:write(va_of(i), 0x1000 + i, 8, 3)) end

  for round = 1, ROUNDS do
    -- fork
    kernel()
    local C = vm:space()
    for i = 1, n do
      C:map(va_of(i), frame[i], { write = false })
      P:map(va_of(i), frame[i], { write = false })
    end
    expect_ok(c:load_cr3(P))                   -- the kernel's flush after write-protecting
    note(vm:counters().mmu_unsync >= 0)
    -- child runs, reads everything, then execs
    expect_ok(c:load_cr3(C))
    for i = 1, n do
      local v = expect_ok(c:read(va_of(i), 8, 3))
      note(v)
    end
    for i = 1, n do C:unmap(va_of(i)) end
    for i = 1, EXEC_PAGES do
      local f = vm:alloc_frame()
      C:map(va_of(i), f)
      expect_ok(c:write(va_of(i), round * 0x100 + i, 8, 3))
    end
    note(expect_ok(c:read(va_of(1), 8, 3)))
    -- parent runs again; copy-on-write faults on the pages it writes
    expect_ok(c:load_cr3(P))
    for k = 1, COW_PAGES do
      local i = (round * 7 + k * 5) % n + 1
      local va = va_of(i)
      local _, fault = c:write(va, 0x2000 + round, 8, 3)
      expect(fault and fault.kind == "pf" and fault.error_code == (S.PF.P | S.PF.W | S.PF.U),
             policy .. ": COW write faults in the guest")
      local old = expect_ok(c:read(va, 8, 3))
      local copy = vm:alloc_frame()
      vm:write_phys(copy, old, 8)              -- the kernel's copy (a memcpy)
      P:map(va, copy)
      expect_ok(c:invlpg(va))
      frame[i] = copy
      expect_ok(c:write(va, 0x2000 + round, 8, 3))
      note(expect_ok(c:read(va, 8, 3)))
    end
    for i = 1, n do note(expect_ok(c:read(va_of(i), 8, 3))) end
  end
  local r = vm:counters()
  r.cycles = vm:cycles().total
  r.max_unsync = max_unsync
  return r, seen
end

local results, reference = {}, nil
for _, policy in ipairs(POLICIES) do
  local r, seen = workload(policy)
  results[policy] = r
  if reference == nil then
    reference = seen
  else
    expect_eq(#seen, #reference, policy .. ": as many results as " .. POLICIES[1])
    for i = 1, #seen do
      if seen[i] ~= reference[i] then
        expect_eq(seen[i], reference[i], policy .. ": guest-visible result " .. i .. " differs from " .. POLICIES[1])
      end
    end
  end
  S.record("costs_" .. policy, r)
end

print(("%-12s %7s %7s %8s %7s %7s %8s %8s %10s %12s"):format("policy", "exits", "cr3", "emulate", "synced",
      "unsync", "shadow", "ept", "list", "cycles"))
for _, policy in ipairs(POLICIES) do
  local r = results[policy]
  print(("%-12s %7d %7d %8d %7d %7d %8d %8d %10d %12.0f"):format(policy, r.exits, r.exits_cr3, r.pf_emulate,
        r.pages_synced, r.max_unsync, r.mmu_cache_miss, r.ept_violations, r.list_entries_walked, r.cycles))
end

-- wp-emulate: never unsync, the most emulation.
local wp = results["wp-emulate"]
expect_eq(wp.max_unsync, 0, "wp-emulate never unsyncs")
expect_eq(wp.pages_synced, 0, "wp-emulate never syncs")
for _, policy in ipairs(POLICIES) do
  if policy ~= "wp-emulate" then
    expect(wp.pf_emulate > results[policy].pf_emulate,
           ("wp-emulate emulates more than %s (%d vs %d)"):format(policy, wp.pf_emulate, results[policy].pf_emulate))
    expect(results[policy].max_unsync > 0 or policy == "tdp", policy .. " unsyncs page tables")
  end
end
-- tdp: no CR3 exits, no shadow pages.
local tdp = results["tdp"]
expect_eq(tdp.exits_cr3, 0, "tdp takes no CR3 exits")
expect_eq(tdp.shadow_pages, 0, "tdp has no shadow pages")
expect_eq(tdp.mmu_cache_miss, 0, "tdp never builds a shadow page")
expect(tdp.ept_violations > 0, "tdp pays EPT violations")
for _, policy in ipairs(POLICIES) do
  if policy ~= "tdp" then
    expect_eq(results[policy].exits_cr3, tdp.cr3_loads, policy .. ": every CR3 load exits")
  end
end
-- xen-oos: bounded out-of-sync pages (3 per vCPU, 1 vCPU here).
expect(results["xen-oos"].max_unsync <= 3, "xen-oos keeps at most 3 pages out of sync")
-- Sync scope.
local kvm, vml, gl = results["kvm-unsync"], results["vm-list"], results["global-list"]
expect(kvm.pages_synced <= vml.pages_synced,
       ("kvm-unsync syncs no more pages than vm-list (%d vs %d)"):format(kvm.pages_synced, vml.pages_synced))
expect_eq(gl.pages_synced, vml.pages_synced, "global-list syncs what vm-list syncs (one VM on the host)")
expect_eq(gl.lock_work_other_vms, 0, "global-list alone on the host works for no other VM")
expect(vml.list_entries_walked > 0 and gl.list_entries_walked > 0, "the list policies walk their lists")
for _, policy in ipairs{ "kvm-unsync", "wp-emulate", "xen-oos", "tdp" } do
  expect_eq(results[policy].list_entries_walked, 0, policy .. " walks no list")
end
print("policy_costs: ok")

-- policy_tdp.lua -- nested paging (EPT/NPT) as the baseline. Reference shadow-mmu.md
-- §4.13, §9 P6, sync-point matrix column P6, §8 (2-D walk, first-touch violations).
--
-- What it proves, under policy "tdp" (long4, 1 vCPU, 4 KiB host pages):
--  * No shadow pages at all: shadow_pages and mmu_cache_miss stay 0.
--  * MOV CR3, INVLPG and guest page-table stores cause no exits: exits_cr3,
--    exits_invlpg, pf_emulate and mmu_pte_write are 0, and a store into a page table
--    whose frame the EPT already maps costs no exit at all (exits +0).
--  * The first touch of each guest frame costs one EPT violation, page-table frames
--    included: a first access through tables built by the loader (host-side writes)
--    costs exactly 4 violations (the new PDPT, PD and PT frames and the data frame; the
--    top-level table was already touched when the kernel wrote it). A second process:
--    creating it touches one new frame (its top table, written through the kernel's
--    1 GiB physmap page: 1 violation, since with 4 KiB host pages the 2-D translation
--    is cached at 4 KiB), and its first access through its three new tables to the
--    same data frame costs 3: one violation per frame, not per mapping.
--  * A repeated access after a TLB flush (INVLPG, CR3 reload) costs a two-dimensional
--    walk (tdp_walks +1) and no new violation.
--  * A 2-D walk reads every guest level and makes a 4-level EPT walk for each and for
--    the final address: nested_walk_host_refs +12, +16, +20, +24 in legacy32, PAE,
--    long4 and long5, the guest levels costed as a hardware walk's.
--  * host_pages = "2m": one violation maps a whole 2 MiB region (the next 4 KiB frame
--    costs none); "4k": every frame costs one.
-- Every section runs; the script fails at the end listing each failed one.
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok
local PTE = S.PTE

local P = require("policy_check")
local expect_delta, measure, reads = P.expect_delta, P.measure, P.reads

local VA = 0x00400000                 -- PML4 0, PDPT 0, PD 2, PT 0
local vm = S.vm{ policy = "tdp", mode = "long4", vcpus = 1, memory = "64M", host_pages = "4k" }
expect_eq(vm.policy, "tdp", "policy pinned")
local c = vm.vcpu[1]
local A = vm:space()                  -- top table written by the kernel (guest stores)

-- The loader builds A's and B's user tables with host-side writes: no guest access
-- touches these frames before the processes run.
local RW = PTE.P | PTE.RW | PTE.US
local function chain(space, data)
  local pdpt, pd, pt = vm:alloc_frame(), vm:alloc_frame(), vm:alloc_frame()
  vm:write_phys(space.cr3, pdpt | RW, 8)                 -- PML4 entry 0
  vm:write_phys(pdpt, pd | RW, 8)                        -- PDPT entry 0
  vm:write_phys(pd + 2 * 8, pt | RW, 8)                  -- PD entry 2
  vm:write_phys(pt, data | RW, 8)                        -- PT entry 0
  return pt
end
local D, D2 = vm:alloc_frame(), vm:alloc_frame()
chain(A, D)

P.section("no exits; one violation per new frame; walks after flushes", function()
  -- CR3 loads: no exits.
  local d = measure(vm, function() expect_ok(c:load_cr3(A)) end)
  expect_delta(d, { exits = 0, exits_cr3 = 0, ept_violations = 0, cr3_loads = 1 }, "CR3 load")

  -- First access: 4 new frames (PDPT, PD, PT, data).
  d = measure(vm, function() reads(c, VA, D, "A's page") end)
  expect_delta(d, { ept_violations = 4, tdp_walks = 1, exits = 4, exits_page_fault = 4, shadow_walks = 0,
                    nested_walks = 1, nested_walk_host_refs = 20 },
               "first touch: one violation per new frame; one 2-D walk of 4 guest levels, 20 EPT references")
  -- A TLB hit: nothing.
  d = measure(vm, function() reads(c, VA + 8, D + 8, "TLB hit") end)
  expect_delta(d, { tdp_walks = 0, ept_violations = 0, exits = 0, tlb_hits = 1 }, "TLB hit")
  -- INVLPG: no exit; the next access walks again, with no violation.
  d = measure(vm, function() expect_ok(c:invlpg(VA)) end)
  expect_delta(d, { exits = 0, exits_invlpg = 0, invlpg_exits = 0, invlpg = 1 }, "INVLPG")
  d = measure(vm, function() reads(c, VA, D, "after INVLPG") end)
  expect_delta(d, { tdp_walks = 1, ept_violations = 0, exits = 0 }, "repeated access after INVLPG")
  -- Same after a flushing CR3 reload.
  d = measure(vm, function() expect_ok(c:load_cr3(A)); reads(c, VA, D, "after CR3 reload") end)
  expect_delta(d, { tdp_walks = 1, ept_violations = 0, exits = 0 }, "repeated access after a CR3 reload")

  -- A page-table store: the PT frame is EPT-mapped already (the walk touched it), and
  -- the physmap path to it too after one warm-up store elsewhere in that frame.
  A:set_entry(VA + 0x2000, 1, 0)                              -- warms the physmap translation
  d = measure(vm, function() A:map(VA + 0x1000, D2) end)
  expect_delta(d, { exits = 0, pf_emulate = 0, mmu_pte_write = 0, ept_violations = 0, insn_emulation = 0 },
               "page-table store: no exit")
  -- The new PTE was non-present before: seen without a flush; D2 is a new frame.
  d = measure(vm, function() reads(c, VA + 0x1000, D2, "new mapping") end)
  expect_delta(d, { ept_violations = 1, tdp_walks = 1 }, "new data frame")
  -- A present -> present remap is seen after INVLPG (the guest's own TLB rules).
  A:map(VA, D2)
  reads(c, VA, D, "stale until INVLPG (allowed)")
  expect_ok(c:invlpg(VA))
  d = measure(vm, function() reads(c, VA, D2, "after INVLPG") end)
  expect_delta(d, { ept_violations = 0, tdp_walks = 1, exits = 0 }, "remap after INVLPG")

  local k = vm:counters()
  expect_eq(k.shadow_pages, 0, "no shadow pages")
  expect_eq(k.mmu_cache_miss, 0, "no shadow pages ever created")
  expect_eq(k.exits_cr3, 0, "no CR3 exits")
  expect_eq(k.exits_invlpg, 0, "no INVLPG exits")
  expect_eq(k.pf_emulate, 0, "no emulation")
  expect_eq(k.mmu_unsync, 0, "nothing unsync")
  expect_eq(k.exits, k.ept_violations, "every exit was an EPT violation")
  S.record("tdp", { ept_violations = k.ept_violations, tdp_walks = k.tdp_walks, cycles = vm:cycles().total })
end)

-- Process B. Creating it is a guest store (through the kernel's 1 GiB physmap page)
-- into a fresh frame, its top table: with 4 KiB host pages that frame's first touch is
-- one EPT violation, whatever page size the guest uses -- the TLB can only cache the
-- 2-D translation at the smaller of the guest and host page sizes. Its three
-- loader-built tables are new frames when B first runs; D is not.
P.section("first touch through a guest large page", function()
  local B
  local d = measure(vm, function() B = vm:space() end)
  expect_delta(d, { ept_violations = 1, exits_cr3 = 0 }, "B's creation touches one new frame (its top table)")
  chain(B, D)
  d = measure(vm, function() expect_ok(c:load_cr3(B)); reads(c, VA, D, "B's page") end)
  expect_delta(d, { ept_violations = 3, exits_cr3 = 0 }, "B: only its three tables are new frames")
  expect_eq(vm:counters().shadow_pages, 0, "still no shadow pages")
end)

-- The 2-D walk in each paging mode: a 4-level EPT walk for each guest level and one for
-- the final address, the guest levels themselves charged as a hardware walk's levels
-- (12 EPT references for a 32-bit guest, 16 for PAE, 24 for 5 levels).
for _, m in ipairs{ { "legacy32", 2 }, { "pae", 3 }, { "long4", 4 }, { "long5", 5 } } do
  local mode, levels = m[1], m[2]
  P.section("2-D walk references, " .. mode, function()
    local v = S.vm{ policy = "tdp", mode = mode, vcpus = 1, memory = "64M" }
    local cpu = v.vcpu[1]
    local X = v:space()
    local frame = v:alloc_frame()
    X:map(VA, frame)
    expect_ok(cpu:load_cr3(X))
    reads(cpu, VA, frame, mode .. ": first access")
    expect_ok(cpu:invlpg(VA))
    local before = v:cycles().breakdown
    local d = measure(v, function() reads(cpu, VA, frame, mode .. ": after INVLPG") end)
    expect_delta(d, { tdp_walks = 1, nested_walks = 1, nested_walk_host_refs = (levels + 1) * 4, exits = 0,
                      shadow_walks = 0 }, mode .. ": one 2-D walk")
    local after = v:cycles().breakdown
    expect_eq(after.hardware_walks - before.hardware_walks, levels * 25, mode .. ": its guest levels")
    expect_eq(after.nested_walk_host_refs - before.nested_walk_host_refs, (levels + 1) * 4 * 25,
              mode .. ": its EPT references")
  end)
end

-- Host page size: with 2 MiB host pages the EPT maps a 2 MiB region per violation; with
-- 4 KiB pages every frame costs one. Two pages 4 KiB apart at guest-physical 16 MiB
-- (a region nothing touched before).
for _, host in ipairs{ "4k", "2m" } do
  P.section("host pages " .. host, function()
    local v = S.vm{ policy = "tdp", mode = "long4", vcpus = 1, memory = "64M", host_pages = host }
    expect_eq(v.policy, "tdp", "policy pinned")
    local cpu = v.vcpu[1]
    local X = v:space()
    X:map(VA, 16 * S.MiB); X:map(VA + 0x1000, 16 * S.MiB + 0x1000)
    X:map(VA + 0x2000, X.cr3)                  -- a low frame, touched already
    expect_ok(cpu:load_cr3(X))
    reads(cpu, VA + 0x2000, X.cr3, host .. ": warm-up through the same tables")
    local d = measure(v, function() reads(cpu, VA, 16 * S.MiB, host .. ": first page") end)
    expect_delta(d, { ept_violations = 1 }, host .. ": the first page at 16 MiB")
    d = measure(v, function() reads(cpu, VA + 0x1000, 16 * S.MiB + 0x1000, host .. ": second page") end)
    expect_delta(d, { ept_violations = host == "4k" and 1 or 0, tdp_walks = 1 }, host .. ": the next 4 KiB frame")
    local k = v:counters()
    expect_eq(host == "4k" and k.pages_2m or k.pages_4k, 0, host .. ": EPT mappings of the other size")
  end)
end

P.finish("policy_tdp")

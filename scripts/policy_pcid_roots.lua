-- policy_pcid_roots.lua -- modern KVM's cached roots with PCIDs (reference
-- shadow-mmu.md §4.12, §4.11, §10 invariants 9-11, §11 B7), by counters.
--
-- What it proves, under policy "kvm-unsync" (long4, 1 vCPU, CR4.PCIDE = 1; A runs
-- with PCID 1, B with PCID 2, C with PCID 1):
--  1. A NOFLUSH MOV CR3 back to a cached root reuses it as is: no new root page
--     (mmu_cache_miss +0) and no sync (pages_synced +0), even when a table below it is
--     unsync with edits (staleness the guest allowed by not flushing); A's table stays
--     unsync.
--  2. A flushing MOV CR3 of the same value syncs (pages_synced +1, mmu_unsync -1) and
--     the edit becomes visible; a flushing switch to a cached root (B -> A) reuses it
--     (mmu_cache_miss +0) and syncs it (pages_synced +1).
--  3. B7: a flushing MOV CR3 with PCID 1 (to C) frees the cached root of A (also PCID 1):
--     after switching to B and then NOFLUSH back to A, A's root is rebuilt and synced
--     (pages_synced +1) and the edit made before the flush is visible. Control: with no
--     PCID-1 flush in between, the NOFLUSH return syncs nothing.
--     Also the sequence flushing CR3=A, switch to B, NOFLUSH back to A: the return
--     reuses the root synced by the flush (pages_synced +0, mmu_cache_miss +0) and
--     shows the edit made before the flush.
--  4. INVLPG on B re-derives the entry in A's cached root too (§4.11 modern: all
--     cached roots): sptes_resynced +1 and A's table stays unsync; back on A (NOFLUSH)
--     the new translation is used.
--  5. Guest-scope flushes (§4.9, §4.12, invariant 11, B2): toggling CR4.PGE or INVPCID
--     all-context syncs the current root (pages_synced +1) and frees the cached root
--     of A, whose table is unsync, so the NOFLUSH return to A rebuilds and syncs it;
--     INVPCID single-context for PCID 1 frees A's cached root the same way.
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok

local P = require("policy_check")
local expect_delta, measure, reads = P.expect_delta, P.measure, P.reads

local VA = 0x00400000

-- A fresh guest: A, B and C each map VA; A (PCID 1) and B (PCID 2) have run once.
local function setup()
  local vm = S.vm{ policy = "kvm-unsync", mode = "long4", vcpus = 1, memory = "64M" }
  expect_eq(vm.policy, "kvm-unsync", "policy pinned")
  local c = vm.vcpu[1]
  local g = { vm = vm, c = c, A = vm:space(), B = vm:space(), C = vm:space(), f = {} }
  for i = 1, 10 do g.f[i] = vm:alloc_frame() end
  g.A:map(VA, g.f[1]); g.B:map(VA, g.f[2]); g.C:map(VA, g.f[3])
  expect_ok(c:set{ pcide = true })
  expect_ok(c:load_cr3(g.A, { pcid = 1 })); reads(c, VA, g.f[1], "setup: A")
  expect_ok(c:load_cr3(g.B, { pcid = 2 })); reads(c, VA, g.f[2], "setup: B")
  expect_eq(c:regs().pcid, 2, "setup: running PCID 2")
  expect_eq(vm:counters().mmu_unsync, 0, "setup: nothing unsync")
  return g
end

------------------------------------------------------------------ 1, 2: NOFLUSH reuse; flushing loads sync
P.section("1-2 NOFLUSH reuse, flushing loads sync", function()
  local g = setup()
  local vm, c, A, B, f = g.vm, g.c, g.A, g.B, g.f
  local d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1, noflush = true })) end)
  expect_delta(d, { mmu_cache_miss = 0, pages_synced = 0, exits_cr3 = 1 }, "1: NOFLUSH to cached A")
  reads(c, VA, f[1], "1: A")

  -- Edit A's table while A runs: it goes unsync. NOFLUSH round trip: nothing synced.
  A:map(VA, f[4])
  expect_eq(vm:counters().mmu_unsync, 1, "1: A's PT unsync")
  d = measure(vm, function()
    expect_ok(c:load_cr3(B, { pcid = 2, noflush = true }))
    expect_ok(c:load_cr3(A, { pcid = 1, noflush = true }))
  end)
  expect_delta(d, { mmu_cache_miss = 0, pages_synced = 0, mmu_unsync = 0, exits_cr3 = 2 }, "1: NOFLUSH round trip")

  -- Flushing MOV CR3 of the same value: the current root is synced.
  d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1 })) end)
  expect_delta(d, { mmu_cache_miss = 0, pages_synced = 1, mmu_unsync = -1 }, "2: flushing CR3 <- A (same)")
  reads(c, VA, f[4], "2: the edit is visible after the flush")

  -- Flushing switch to a cached root: reused and synced.
  expect_ok(c:load_cr3(B, { pcid = 2, noflush = true }))
  A:map(VA, f[5])                                            -- A's PT unsync again (from B)
  expect_eq(vm:counters().mmu_unsync, 1, "2: A's PT unsync")
  d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1 })) end)
  expect_delta(d, { mmu_cache_miss = 0, pages_synced = 1, mmu_unsync = -1 }, "2: flushing switch B -> A")
  reads(c, VA, f[5], "2: the edit is visible")
end)

------------------------------------------------------------------ 3: B7, a PCID flush frees cached roots of that PCID
P.section("3 control: NOFLUSH reuse without a PCID flush", function()
  -- Control: no PCID-1 flush between the edit and the NOFLUSH return.
  local g = setup()
  local vm, c, A, B, f = g.vm, g.c, g.A, g.B, g.f
  A:map(VA, f[4])                                            -- A (cached) goes unsync; B runs
  expect_eq(vm:counters().mmu_unsync, 1, "3 control: A's PT unsync")
  local d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1, noflush = true })) end)
  expect_delta(d, { pages_synced = 0, mmu_unsync = 0, mmu_cache_miss = 0 }, "3 control: NOFLUSH reuse, no sync")
end)
P.section("3 B7: a PCID-1 flush frees A's cached root", function()
  local g = setup()
  local vm, c, A, B, C, f = g.vm, g.c, g.A, g.B, g.C, g.f
  A:map(VA, f[4])                                            -- A (cached, PCID 1) goes unsync
  expect_eq(vm:counters().mmu_unsync, 1, "3: A's PT unsync")
  -- A flushing MOV CR3 with PCID 1 (to another table) invalidates every PCID-1 entry,
  -- so A's cached root must go.
  expect_ok(c:load_cr3(C, { pcid = 1 })); reads(c, VA, f[3], "3: C")
  expect_ok(c:load_cr3(B, { pcid = 2, noflush = true }))
  local d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1, noflush = true })) end)
  expect_delta(d, { pages_synced = 1, mmu_unsync = -1 }, "3: NOFLUSH to A after a PCID-1 flush: root rebuilt and synced")
  reads(c, VA, f[4], "3: no stale cached root: A sees the edit made before the PCID-1 flush")
end)
P.section("3' flushing CR3=A, B, NOFLUSH back to A", function()
  -- The sequence flushing CR3=A, switch to B, NOFLUSH back to A.
  local g = setup()
  local vm, c, A, B, f = g.vm, g.c, g.A, g.B, g.f
  A:map(VA, f[4])                                            -- edit while B runs
  local d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1 })) end)
  expect_delta(d, { pages_synced = 1, mmu_unsync = -1, mmu_cache_miss = 0 }, "3': flushing CR3 <- A")
  reads(c, VA, f[4], "3': A after the flush")
  expect_ok(c:load_cr3(B, { pcid = 2 }))
  d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1, noflush = true })) end)
  expect_delta(d, { pages_synced = 0, mmu_cache_miss = 0 }, "3': NOFLUSH back to A")
  reads(c, VA, f[4], "3': A after NOFLUSH")
end)

------------------------------------------------------------------ 4: INVLPG covers cached roots
P.section("4 INVLPG covers cached roots", function()
  local g = setup()
  local vm, c, A, B, f = g.vm, g.c, g.A, g.B, g.f
  A:map(VA + 0x1000, f[6])                                   -- A's PT unsync (A cached, B runs)
  A:map(VA, f[7])                                            -- edit entry 0, no exit
  local d = measure(vm, function() expect_ok(c:invlpg(VA)) end)
  expect_delta(d, { sptes_resynced = 1, mmu_unsync = 0, pages_synced = 0, exits_invlpg = 1 },
               "4: INVLPG on B re-derives A's entry in the cached root")
  expect_eq(vm:counters().mmu_unsync, 1, "4: A's PT stays unsync")
  d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1, noflush = true })) end)
  expect_delta(d, { pages_synced = 0, mmu_cache_miss = 0 }, "4: NOFLUSH back to A")
  reads(c, VA, f[7], "4: the entry INVLPG re-derived")
end)

------------------------------------------------------------------ 5: guest-scope flushes
-- A CR4.PGE toggle or INVPCID all-context is a guest-scope flush (KVM_REQ_TLB_FLUSH_GUEST):
-- the current root is synced and cached roots with unsync pages below are freed (§4.9,
-- §4.12, invariant 11, the B2 fix). INVPCID single-context for PCID 1 frees PCID 1's
-- cached roots like a flushing MOV CR3 with PCID 1 (kvm_invalidate_pcid).
for _, how in ipairs{ "pge", "invpcid_all", "invpcid_single" } do
  P.section("5 guest-scope flush by " .. how, function()
    local g = setup()
    local vm, c, A, B, f = g.vm, g.c, g.A, g.B, g.f
    A:map(VA, f[4])                                          -- A (cached) unsync with an edit
    if how ~= "invpcid_single" then B:map(VA, f[5]) end      -- B (current) too
    local unsync = vm:counters().mmu_unsync
    local d = measure(vm, function()
      if how == "pge" then
        expect_ok(c:set{ pge = false }); expect_ok(c:set{ pge = true })
      elseif how == "invpcid_all" then
        expect_ok(c:invpcid("all", 0, 0))
      else
        expect_ok(c:invpcid("context", 1, 0))
      end
    end)
    if how == "pge" then
      expect_delta(d, { pages_synced = 1, mmu_unsync = -1 }, "5: the PGE toggles sync B's (current) table once")
    elseif how == "invpcid_all" then
      expect_delta(d, { pages_synced = 1, mmu_unsync = -1 }, "5: INVPCID all-context syncs B's table")
    else
      expect_delta(d, { pages_synced = 0, mmu_unsync = 0 }, "5: INVPCID PCID 1 syncs nothing now")
    end
    if how ~= "invpcid_single" then reads(c, VA, f[5], "5: B sees its edit") end
    -- A's cached root was freed: the NOFLUSH return rebuilds it, and so syncs it.
    d = measure(vm, function() expect_ok(c:load_cr3(A, { pcid = 1, noflush = true })) end)
    expect_delta(d, { pages_synced = 1, mmu_unsync = -1 }, "5: NOFLUSH to A after the flush: rebuilt and synced")
    reads(c, VA, f[4], "5: A sees its edit")
    expect_eq(vm:counters().mmu_unsync, unsync - (how == "pge" and 2 or how == "invpcid_all" and 2 or 1),
              "5: what is left unsync")
  end)
end

P.finish("policy_pcid_roots")

-- policy_kvm_unsync.lua -- modern KVM's unsync rules (reference shadow-mmu.md §4.2,
-- §4.3 "modern", §4.5, §4.7, §4.11, §2.5, §10 invariants 12/13, §11 B1), by counters.
--
-- What it proves, under policy "kvm-unsync" (long4; 1 vCPU unless said otherwise):
--  1. The first store to a synced, shadowed leaf table (a PTE) exits once and unsyncs
--     the table instead of being emulated: mmu_unsync +1, pf_emulate and mmu_pte_write
--     +0. Later stores to the now-unsync table do not exit at all.
--  2. A store to an upper-level table (a PDE) is write-tracked: it exits and is emulated
--     every time (pf_emulate +1, mmu_pte_write +1, insn_emulation +1 per store), and the
--     table never goes unsync.
--  3. A flushing CR3 load syncs the unsync pages reachable from the new root only: the
--     current process's edited table is synced (pages_synced +1, mmu_unsync -1, the
--     edit is visible), another process's edited table stays unsync (§4.5 last
--     paragraph, invariant 13); loading that process's CR3 later syncs it.
--  4. INVLPG on an address mapped by an unsync table makes the new PTE visible but
--     leaves the table unsync (§4.11: mmu_unsync and pages_synced unchanged).
--  5. Sync before link (§11 B1, invariant 12): a non-present -> present PDE/PDPTE that
--     points at a table with unsync edits shows the edits on the first access, with no
--     flush in between -- for a leaf table (transient sync at get_page, §4.7: it stays
--     unsync) and for a page directory whose child is unsync (mmu_sync_children before
--     link: the child is synced, mmu_unsync -1).
--  6. Write flooding (§4.2 modern): three emulated writes to a page directory without a
--     fault walking through it in between zap it (mmu_flooded +1 on the third); a fault
--     through it in between resets the count. A misaligned (2-byte, mid-entry) store
--     zaps at once; a 1-byte store at an entry's start is not misaligned. Leaf tables
--     are exempt from flooding (they unsync instead).
--  7. Recycling (§2.5): with shadow_pages = 64 and 24 processes, the oldest shadow pages
--     are zapped to make room (mmu_recycled > 0, the gauge never exceeds the budget)
--     and every process still reads its own data.
--  8. A page table linked from two entries of one page directory, unsync, is synced
--     once by a flushing CR3 load (KVM's mmu_pages_add de-duplicates; §4.5 step 1).
--  9. Sync batches hold 16 entries, path nodes included (§4.5 step 1): 29 unsync tables
--     under one PD take three batches (13 + 13 + 3), so three write-protect flushes.
-- 10. A page table used as a page directory: its unsync leaf shadow is zapped (§4.3
--     modern), and the frame is write-tracked afterwards.
-- 11. Prefetch never unsyncs (§4.1 step 4): a prefetched writable mapping of a shadowed
--     page table is made read-only; the guest's own write then unsyncs it.
-- 12. Remote flushes IPI only running vCPUs (§4.9): remote_tlb_flush and
--     remote_flush_targets with vcpus_running = true and false.
-- 13. kvm_mmu_sync_roots checks for unsync pages before taking the MMU lock (§2.6): a
--     flushing CR3 reload with nothing unsync takes no lock (lock_acquisitions +0).
-- Every section runs; the script fails at the end listing each failed one.
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok
local PTE = S.PTE

local P = require("policy_check")
local expect_delta, measure, reads = P.expect_delta, P.measure, P.reads

local function new_vm(opts)
  opts.policy = "kvm-unsync"
  opts.mode = "long4"
  local vm = S.vm(opts)
  expect_eq(vm.policy, "kvm-unsync", "policy pinned")
  return vm
end

--- A kvm-unsync guest with vCPU 1, one process space and `frames` fresh frames.
local function guest(opts, frames)
  local vm = new_vm(opts)
  local f = {}
  for i = 1, frames do f[i] = vm:alloc_frame() end
  return vm, vm.vcpu[1], vm:space(), f
end

local VA = 0x00400000                      -- PD index 2 of PDPT 0 of PML4 0

------------------------------------------------------------------ 1, 2: leaf unsync, upper levels tracked
P.section("1-2 leaf unsync, upper levels write-tracked", function()
  local vm, c, A, f = guest({ memory = "64M" }, 8)
  A:map(VA, f[1])
  expect_ok(c:load_cr3(A))
  reads(c, VA, f[1], "1: A's page")                  -- shadows A's PDPT, PD and PT
  expect_eq(vm:counters().mmu_unsync, 0, "1: nothing unsync yet")

  -- First PTE store to the synced PT: one exit, unsync, no emulation.
  local d = measure(vm, function() A:map(VA + 0x1000, f[2]) end)
  expect_delta(d, { mmu_unsync = 1, pf_emulate = 0, mmu_pte_write = 0, insn_emulation = 0,
                    exits = 1, exits_page_fault = 1, pf_fixed = 1 }, "1: first PTE store")
  -- Later stores to the unsync table run natively.
  d = measure(vm, function()
    A:map(VA + 0x2000, f[3]); A:map(VA + 0x3000, f[4]); A:unmap(VA + 0x3000)
  end)
  expect_delta(d, { exits = 0, mmu_unsync = 0, pf_emulate = 0, mmu_pte_write = 0 }, "1: later PTE stores")

  -- PDE stores: A's PD is shadowed at level 2, so it is write-tracked. Each store
  -- points PDE 5 at a fresh table and the access after it walks through the PD (so
  -- flooding never triggers): every store is emulated.
  local PDE_VA = 0x00A00000                          -- PD index 5
  local tables = {}
  for i = 1, 4 do
    tables[i] = vm:alloc_frame()
    vm:write_phys(tables[i], f[5 + (i % 3)] | PTE.P | PTE.RW | PTE.US, 8)   -- entry 0 of the table
  end
  for i = 1, 4 do
    d = measure(vm, function() A:set_entry(PDE_VA, 2, tables[i] | PTE.P | PTE.RW | PTE.US) end)
    expect_delta(d, { exits = 1, pf_emulate = 1, mmu_pte_write = 1, insn_emulation = 1, mmu_unsync = 0,
                      mmu_flooded = 0 }, "2: PDE store " .. i)
    expect_ok(c:invlpg(PDE_VA))
    reads(c, PDE_VA, f[5 + (i % 3)], "2: the PDE store took effect " .. i)
  end
  expect_eq(vm:counters().mmu_unsync, 1, "2: only the leaf table is unsync")
end)

------------------------------------------------------------------ 3, 4: reachable-only sync; INVLPG
P.section("3-4 reachable-only sync; INVLPG", function()
  local vm = new_vm{ memory = "64M" }
  local c = vm.vcpu[1]
  local A, B = vm:space(), vm:space()
  local f = {}
  for i = 1, 10 do f[i] = vm:alloc_frame() end
  A:map(VA, f[1]); B:map(VA, f[2])
  expect_ok(c:load_cr3(B)); reads(c, VA, f[2], "3: B")
  expect_ok(c:load_cr3(A)); reads(c, VA, f[1], "3: A")

  -- Edit both processes' page tables (present -> present remaps, which need a flush).
  A:map(VA, f[3])
  B:map(VA, f[4])
  expect_eq(vm:counters().mmu_unsync, 2, "3: A's and B's tables unsync")
  reads(c, VA, f[1], "3: A's old translation is still cached (allowed)")

  -- Flushing CR3 load of A: A's table is reachable, B's is not.
  local d = measure(vm, function() expect_ok(c:load_cr3(A)) end)
  expect_delta(d, { pages_synced = 1, mmu_unsync = -1, exits_cr3 = 1, mmu_cache_miss = 0 }, "3: CR3 <- A")
  expect_eq(vm:counters().mmu_unsync, 1, "3: B's table stays unsync (unreachable from A)")
  reads(c, VA, f[3], "3: A's edit is visible after the flush")

  -- Loading B syncs B's table.
  d = measure(vm, function() expect_ok(c:load_cr3(B)) end)
  expect_delta(d, { pages_synced = 1, mmu_unsync = -1 }, "3: CR3 <- B")
  reads(c, VA, f[4], "3: B's edit is visible")
  expect_eq(vm:counters().mmu_unsync, 0, "3: nothing unsync")

  -- 4: INVLPG on an unsync table. B's table goes unsync, then VA is remapped.
  B:map(VA + 0x1000, f[5])                                  -- unsyncs B's table
  expect_eq(vm:counters().mmu_unsync, 1, "4: B's table unsync")
  B:map(VA, f[6])                                           -- no exit: the table is unsync
  reads(c, VA, f[4], "4: stale until invalidated (allowed)")
  d = measure(vm, function() expect_ok(c:invlpg(VA)) end)
  expect_delta(d, { mmu_unsync = 0, pages_synced = 0, exits_invlpg = 1, invlpg_exits = 1 }, "4: INVLPG")
  reads(c, VA, f[6], "4: INVLPG made the new PTE visible")
  expect_eq(vm:counters().mmu_unsync, 1, "4: the table is still unsync after INVLPG")
  -- Only that entry was re-derived: another stale entry of the same table stays stale
  -- in the shadow until the table is synced.
  reads(c, VA + 0x1000, f[5], "4: the other new entry (non-present before) is visible")
end)

------------------------------------------------------------------ 5: sync before link (B1)
P.section("5 sync before link (B1)", function()
  local vm, c, A, f = guest({ memory = "64M" }, 10)
  A:map(VA, f[1])
  expect_ok(c:load_cr3(A))
  reads(c, VA, f[1], "5: A")
  A:map(VA + 0x1000, f[2])                                   -- unsync A's PT
  A:map(VA, f[3])                                            -- edit entry 0: f1 -> f3 (no exit)
  expect_eq(vm:counters().mmu_unsync, 1, "5: A's PT unsync with an edit")

  -- (a) A previously absent PDPTE (0xC0000000, PDPT index 3) now points at A's PD,
  -- whose child PT is unsync: the PD is linked only after its unsync child is synced.
  local pd = A:entry(VA, 3) & 0x000FFFFFFFFFF000
  local pdpte_alias = 0xC0000000
  expect_eq(A:entry(pdpte_alias, 3), 0, "5a: PDPTE 3 is not present")
  local d = measure(vm, function() A:set_entry(pdpte_alias, 3, pd | PTE.P | PTE.RW | PTE.US) end)
  expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1 }, "5a: PDPTE store emulated")
  d = measure(vm, function() reads(c, pdpte_alias + VA, f[3], "5a: the alias shows the edit at once (no flush)") end)
  expect_delta(d, { pages_synced = 1, mmu_unsync = -1, mmu_cache_miss = 0, exits_cr3 = 0, exits_invlpg = 0 },
               "5a: PD linked after syncing its unsync child")
  expect_eq(vm:counters().mmu_unsync, 0, "5a: nothing unsync")
  expect_ok(c:invlpg(VA))
  reads(c, VA, f[3], "5a: the original address after INVLPG")

  -- (b) The PT goes unsync again with an edit; a previously absent PDE (0xE00000, PD
  -- index 7) now points at it: get_page syncs it transiently before linking (§4.7).
  A:map(VA + 0x2000, f[5])                                   -- unsync again (one exit)
  A:map(VA, f[4])                                            -- entry 0: f3 -> f4 (no exit)
  expect_eq(vm:counters().mmu_unsync, 1, "5b: A's PT unsync with an edit")
  local pt = A:entry(VA, 2) & 0x000FFFFFFFFFF000
  local pde_alias = 0x00E00000
  expect_eq(A:entry(pde_alias, 2), 0, "5b: PDE 7 is not present")
  d = measure(vm, function() A:set_entry(pde_alias, 2, pt | PTE.P | PTE.RW | PTE.US) end)
  expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1 }, "5b: PDE store emulated")
  d = measure(vm, function() reads(c, pde_alias, f[4], "5b: the alias shows the edit at once (no flush)") end)
  expect_delta(d, { pages_synced = 1, mmu_unsync = 0, mmu_cache_miss = 0 }, "5b: transient sync of the unsync PT")
  expect_eq(vm:counters().mmu_unsync, 1, "5b: the PT stays unsync after a transient sync (§4.7)")
end)

------------------------------------------------------------------ 6: write flooding
P.section("6 write flooding", function()
  local vm, c, A, f = guest({ memory = "64M" }, 6)
  A:map(VA, f[1])
  -- PD index 3: a PT with pages never accessed (A = 0, so never prefetched): each
  -- first read of one faults and walks through the PD.
  for i = 0, 3 do A:map(0x00600000 + i * 0x1000, f[2]) end
  expect_ok(c:load_cr3(A))
  reads(c, VA, f[1], "6: A")
  local PDE = { 0x01000000, 0x01200000, 0x01400000, 0x01600000 }   -- unused PD entries

  -- Two emulated writes, then a fault that walks through the PD, then two more: no flood.
  local d = measure(vm, function()
    A:set_entry(PDE[1], 2, 0); A:set_entry(PDE[2], 2, 0)
    reads(c, 0x00600000, f[2], "6: a fault through the PD resets its count")
    A:set_entry(PDE[3], 2, 0); A:set_entry(PDE[4], 2, 0)
  end)
  expect_delta(d, { mmu_pte_write = 4, pf_emulate = 4, mmu_flooded = 0, mmu_shadow_zapped = 0 }, "6: no flood")

  -- Three in a row: the third zaps the PD (and, with it, nothing unsync below).
  reads(c, 0x00601000, f[2], "6: another fault through the PD")
  d = measure(vm, function() A:set_entry(PDE[1], 2, 0); A:set_entry(PDE[2], 2, 0) end)
  expect_delta(d, { mmu_flooded = 0 }, "6: two writes")
  d = measure(vm, function() A:set_entry(PDE[3], 2, 0) end)
  expect_delta(d, { mmu_flooded = 1, mmu_shadow_zapped = 1, mmu_pte_write = 1 }, "6: third write floods")
  -- The guest is unaffected: the PD is shadowed again on the next fault.
  expect_ok(c:invlpg(VA))
  d = measure(vm, function() reads(c, VA, f[1], "6: after the zap") end)
  expect_eq(d.mmu_cache_miss, 1, "6: the PD is shadowed again (the PT page still exists)")

  -- Misaligned stores zap at once; a one-byte store at an entry's start (clear_bit on
  -- the low byte) does not count as misaligned.
  local _, pde_gpa = A:entry(PDE[1], 2)
  reads(c, 0x00602000, f[2], "6: reset the count")
  d = measure(vm, function() expect_ok(c:write(vm:physmap(pde_gpa), 0, 1, 0)) end)
  expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1, mmu_flooded = 0, mmu_shadow_zapped = 0 },
               "6: one-byte store at an entry's start: emulated, not misaligned")
  reads(c, 0x00603000, f[2], "6: reset the count")
  d = measure(vm, function() expect_ok(c:write(vm:physmap(pde_gpa) + 2, 0, 2, 0)) end)
  expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1, mmu_flooded = 1, mmu_shadow_zapped = 1 },
               "6: two-byte store inside an entry: misaligned, zapped at once")
  expect_ok(c:invlpg(VA))
  reads(c, VA, f[1], "6: after the misaligned zap")

  -- Leaf tables are exempt: many stores to one PT never flood it (they unsync it).
  d = measure(vm, function() for i = 0, 5 do A:map(0x00700000 + i * 0x1000, f[3 + i % 3]) end end)
  expect_delta(d, { mmu_flooded = 0, pf_emulate = 0, mmu_unsync = 1 }, "6: leaf tables unsync instead")
end)

------------------------------------------------------------------ 7: recycling under a 64-page budget
P.section("7 recycling under a 64-page budget", function()
  local vm = new_vm{ memory = "64M", shadow_pages = 64 }
  local c = vm.vcpu[1]
  local N = 24
  local procs, frames = {}, {}
  for p = 1, N do
    procs[p] = vm:space()
    frames[p] = vm:alloc_frame()
    procs[p]:map(VA + (p % 4) * 0x200000, frames[p])      -- PML4, PDPT, PD, PT each
  end
  local peak = 0
  for round = 1, 2 do
    for p = 1, N do
      expect_ok(c:load_cr3(procs[p]))
      local va = VA + (p % 4) * 0x200000
      if round == 1 then
        expect_ok(c:write(va, 0x5000 + p, 8, 3))
      else
        local v, pa = expect_ok(c:read(va, 8, 3))
        expect_eq(pa, frames[p], "7: process " .. p .. "'s frame")
        expect_eq(v, 0x5000 + p, "7: process " .. p .. "'s data")
      end
      local n = vm:counters().shadow_pages
      if n > peak then peak = n end
    end
  end
  local k = vm:counters()
  expect(k.mmu_recycled > 0, "7: pages were recycled (mmu_recycled = " .. k.mmu_recycled .. ")")
  expect(peak <= 64, "7: shadow pages within the budget (peak " .. peak .. ")")
  expect(k.mmu_shadow_zapped >= k.mmu_recycled, "7: every recycled page was zapped")
  S.record("kvm_unsync_recycling", { recycled = k.mmu_recycled, peak = peak, cache_miss = k.mmu_cache_miss })
end)

------------------------------------------------------------------ 8: one sync per unsync page per walk
-- KVM's mmu_unsync_walk records an unsync page once even when it is reached through
-- several entries of the same parent (mmu_pages_add skips a page already in the
-- batch), so a CR3 load syncs it once.
P.section("8 one sync per unsync page per walk", function()
  local vm, c, A, f = guest({ memory = "64M" }, 6)
  A:map(VA, f[1])
  local pt = A:entry(VA, 2) & 0x000FFFFFFFFFF000
  A:set_entry(0x00E00000, 2, pt | PTE.P | PTE.RW | PTE.US)   -- PD entries 2 and 7 -> one PT
  expect_ok(c:load_cr3(A))
  reads(c, VA, f[1], "8: through PDE 2")
  reads(c, 0x00E00000, f[1], "8: through PDE 7")
  A:map(VA, f[2])                                            -- unsync (exit), edit entry 0
  expect_eq(vm:counters().mmu_unsync, 1, "8: the shared PT is unsync")
  local d = measure(vm, function() expect_ok(c:load_cr3(A)) end)
  reads(c, VA, f[2], "8: the edit through PDE 2")
  reads(c, 0x00E00000, f[2], "8: the edit through PDE 7")
  expect_delta(d, { mmu_unsync = -1, pages_synced = 1 }, "8: a PT linked twice from one PD is synced once")
end)

------------------------------------------------------------------ 9: sync batches of 16 entries, path included
-- mmu_sync_children works in batches of KVM_PAGE_ARRAY_NR = 16 entries, and the entries
-- count the path (the root, the PDPT, the PD: 3 here) as well as the unsync leaves, so
-- 29 unsync tables under one PD are synced in batches of 13, 13 and 3; each batch first
-- write-protects its tables with one remote flush (§4.5 steps 1-2). The edits only add
-- mappings (non-present -> present), so the syncs themselves drop nothing and need no
-- further flush.
P.section("9 sync batches count path nodes", function()
  local vm = new_vm{ memory = "64M" }
  local c = vm.vcpu[1]
  local A = vm:space()
  local N = 29
  local f = {}
  for i = 1, N + 1 do f[i] = vm:alloc_frame() end
  for i = 1, N do A:map(VA + (i - 1) * 0x200000, f[i]) end     -- PD entries 2 .. 30
  expect_ok(c:load_cr3(A))
  for i = 1, N do reads(c, VA + (i - 1) * 0x200000, f[i], "9: table " .. i) end
  expect_ok(c:read(vm:physmap(f[N + 1]), 8, 0))              -- link the physmap path
  local d = measure(vm, function() for i = 1, N do A:map(VA + (i - 1) * 0x200000 + 0x1000, f[N + 1]) end end)
  expect_delta(d, { mmu_unsync = N, exits = N }, "9: every table unsync")
  d = measure(vm, function() expect_ok(c:load_cr3(A)) end)
  expect_delta(d, { pages_synced = N, mmu_unsync = -N, write_protections = N, sptes_resynced = N },
               "9: the CR3 load syncs all " .. N)
  expect_delta(d, { remote_tlb_flush_requests = 3 }, "9: three batches (13 + 13 + 3 leaves), one flush each")
  for i = 1, N do reads(c, VA + (i - 1) * 0x200000 + 0x1000, f[N + 1], "9: new mapping " .. i) end
end)

------------------------------------------------------------------ 10: upper-level use of an unsync table
-- §4.3 modern: creating an upper-level shadow page for a frame that has unsync leaf
-- shadows zaps them; the frame is write-tracked from then on (stores are emulated).
P.section("10 a page table reused as a page directory", function()
  local vm, c, A, f = guest({ memory = "64M" }, 6)
  A:map(VA, f[1])
  vm:write_phys(f[1], f[2] | PTE.P | PTE.RW | PTE.US | PTE.A, 8)   -- f1 read as a PT: entry 0 -> f2
  expect_ok(c:load_cr3(A))
  reads(c, VA, f[1], "10: A")
  A:map(VA + 0x1000, f[3])                                          -- A's PT (P) goes unsync
  expect_eq(vm:counters().mmu_unsync, 1, "10: P unsync")
  local pt = A:entry(VA, 2) & 0x000FFFFFFFFFF000
  A:set_entry(0xC0000000, 3, pt | PTE.P | PTE.RW | PTE.US)         -- PDPTE 3 -> P, used as a PD
  local d = measure(vm, function() reads(c, 0xC0000000, f[2], "10: through P as a page directory") end)
  expect_delta(d, { mmu_unsync = -1, mmu_shadow_zapped = 1, pages_synced = 0 },
               "10: the unsync leaf shadow of P is zapped, not synced")
  d = measure(vm, function() A:map(VA + 0x2000, f[4]) end)
  expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1, mmu_unsync = 0 }, "10: P is write-tracked now")
  expect_ok(c:invlpg(VA + 0x1000))
  reads(c, VA + 0x1000, f[3], "10: P as a page table still works")
end)

------------------------------------------------------------------ 11: prefetch never unsyncs
-- §4.1 step 4 / §4.3 modern: a prefetched spte that would map a shadowed page table
-- writable is made read-only instead of unsyncing the table; the faulting access
-- itself may unsync it.
P.section("11 prefetch never unsyncs", function()
  local vm, c, A, f = guest({ memory = "64M", prefetch = true }, 6)
  A:map(VA, f[1])
  expect_ok(c:load_cr3(A))
  reads(c, VA, f[1], "11: A")                                       -- A's PT (P) shadowed
  local pt = A:entry(VA, 2) & 0x000FFFFFFFFFF000
  local W = 0x01000000                                              -- another PT: entry 0 data,
  A:map(W, f[2], { accessed = true, dirty = true })                 -- entry 1 -> P, writable,
  A:map(W + 0x1000, pt, { accessed = true, dirty = true })          -- accessed and dirty
  local d = measure(vm, function() reads(c, W, f[2], "11: entry 0") end)
  expect_delta(d, { sptes_prefetched = 1, mmu_unsync = 0 },
               "11: entry 1 (P, writable) is prefetched (entry 2 is absent: prefetch stops) without unsyncing P")
  d = measure(vm, function() expect_ok(c:write(W + 0x1000 + 8, 0, 8, 3)) end)
  expect_delta(d, { mmu_unsync = 1, exits = 1, pf_emulate = 0 }, "11: the guest's own write through it unsyncs P")
end)

------------------------------------------------------------------ 12: remote flushes interrupt running vCPUs only
-- §4.9: a remote flush sends IPIs only to other vCPUs that are running
-- (remote_tlb_flush counts flushes that sent any, remote_flush_targets the IPIs);
-- halted vCPUs flush on their next entry.
for _, running in ipairs{ true, false } do
  P.section("12 remote flushes, vcpus_running = " .. tostring(running), function()
    local vm = new_vm{ memory = "64M", vcpus = 3, vcpus_running = running }
    local A = vm:space()
    local f = {}
    for i = 1, 4 do f[i] = vm:alloc_frame() end
    A:map(VA, f[1])
    for v = 1, 3 do
      expect_ok(vm.vcpu[v]:load_cr3(A)); reads(vm.vcpu[v], VA, f[1], "12: vCPU " .. v)
      expect_ok(vm.vcpu[v]:read(vm:physmap(f[4]), 8, 0))
    end
    A:map(VA, f[2], { by = vm.vcpu[1] })                           -- unsync + present -> present edit
    local d = measure(vm, function() expect_ok(vm.vcpu[1]:load_cr3(A)) end)
    -- One flush for write-protecting the table, one for the dropped spte.
    expect_delta(d, { pages_synced = 1, remote_tlb_flush_requests = 2,
                      remote_tlb_flush = running and 2 or 0, remote_flush_targets = running and 4 or 0 },
                 "12: the sync's flushes")
    reads(vm.vcpu[1], VA, f[2], "12: vCPU 1 sees the edit")
    -- The other vCPUs' TLBs were flushed by the hypervisor: they see it too.
    reads(vm.vcpu[2], VA, f[2], "12: vCPU 2 sees the edit")
  end)
end

------------------------------------------------------------------ 13: lock-free "anything to sync?" check
-- §2.6: modern kvm_mmu_sync_roots checks the root's unsync/unsync_children without the
-- MMU lock and takes the lock only when there is something to sync. A flushing CR3
-- reload with nothing unsync takes no lock; with an unsync table below, it takes it.
P.section("13 sync_roots takes the lock only when needed", function()
  local vm, c, A, f = guest({ memory = "64M" }, 3)
  A:map(VA, f[1])
  expect_ok(c:load_cr3(A))
  reads(c, VA, f[1], "13: A")
  expect_ok(c:read(vm:physmap(f[3]), 8, 0))
  local d = measure(vm, function() expect_ok(c:load_cr3(A)) end)
  expect_delta(d, { pages_synced = 0, lock_acquisitions = 0 }, "13: nothing unsync: no lock")
  A:map(VA + 0x1000, f[2])
  d = measure(vm, function() expect_ok(c:load_cr3(A)) end)
  expect_delta(d, { pages_synced = 1, lock_acquisitions = 1 }, "13: one unsync table: one lock acquisition")
end)

P.finish("policy_kvm_unsync")

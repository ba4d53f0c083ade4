-- policy_xen_oos.lua -- Xen's out-of-sync L1 shadows ("Shadow-3"). Reference
-- shadow-mmu.md §7.2-7.5, §9 P5, §10 invariants 4 and 17.
--
-- What it proves, under policy "xen-oos" (long4):
--  1. Bounded slots: one vCPU edits 6 shadowed page tables (one store each). The first
--     3 go out of sync (mmu_unsync +1 each, no emulation); each later one takes a slot
--     by evicting an occupant, which is resynced (its writable mapping write-protected
--     again: write_protections +1, mmu_unsync +0). mmu_unsync never exceeds 3 per vCPU.
--     Every edit is visible afterwards (after INVLPG): evicted pages were resynced.
--  2. INVLPG of an address in an out-of-sync table blanks that one shadow entry: the
--     new PTE is used, and the table stays out of sync (mmu_unsync unchanged, no
--     write protection).
--  3. A CR3 write resyncs that vCPU's own out-of-sync pages: mmu_unsync drops to 0 in a
--     1-vCPU VM (write_protections + as many as were out of sync), and every edit is
--     visible.
--  4. Two vCPUs: each holds its own 3 slots (mmu_unsync = 6 = 3 x vcpus after each
--     edits 3 tables); a CR3 write on vCPU 1 resyncs vCPU 1's pages only (mmu_unsync
--     6 -> 3, write_protections +3) and updates vCPU 2's pages it can reach, which stay
--     out of sync -- vCPU 1 sees vCPU 2's edits.
--  5. Snapshot invariant (§7.4 last paragraph, invariant 17): an entry the fault path
--     propagates from an out-of-sync page also updates the snapshot. A PTE changed
--     after the snapshot, faulted in (after INVLPG), then changed back to its snapshot
--     value must be resynced by the next CR3 write: the guest then sees the restored
--     mapping.
--  6. Only a table shadowed once, as an L1, may go out of sync: a table also reached
--     through a supervisor-only PDE has two shadows, so a store to it is emulated
--     (pf_emulate +1, mmu_unsync +0), while a store to a singly shadowed one unsyncs.
--  7. A user-mode store to a page table (mapped writable at CPL 3) unsyncs it but is
--     still emulated (§7.3, §9 P5): pf_emulate +1 and mmu_unsync +1; the next user
--     store runs natively.
-- Every section runs; the script fails at the end listing each failed one.
local S = shadowsim
local expect, expect_eq, expect_ok = S.expect, S.expect_eq, S.expect_ok

local P = require("policy_check")
local expect_delta, measure, reads = P.expect_delta, P.measure, P.reads

local VA = 0x00400000
local REGION = 0x00200000
local T = 6

-- A guest whose process maps one page in each of T page tables, run on every vCPU.
local function guest(vcpus)
  local vm = S.vm{ policy = "xen-oos", mode = "long4", vcpus = vcpus, memory = "64M" }
  expect_eq(vm.policy, "xen-oos", "policy pinned")
  local g = { vm = vm, A = vm:space(), f = {}, new = {} }
  for i = 1, 24 do g.f[i] = vm:alloc_frame() end
  for t = 1, T do
    g.A:map(VA + (t - 1) * REGION, g.f[t])
    g.new[t] = g.f[T + t]
  end
  for v = 1, vcpus do
    local c = vm.vcpu[v]
    expect_ok(c:load_cr3(g.A))
    for t = 1, T do reads(c, VA + (t - 1) * REGION, g.f[t], "setup") end
    expect_ok(c:read(vm:physmap(g.f[24]), 8, 0))      -- link the root to the physmap
  end
  expect_eq(vm:counters().mmu_unsync, 0, "setup: nothing out of sync")
  return g
end

------------------------------------------------------------------ 1-3: one vCPU
P.section("1-3 bounded slots, INVLPG, CR3 resync (1 vCPU)", function()
  local g = guest(1)
  local vm, c, A = g.vm, g.vm.vcpu[1], g.A
  -- The tables are consecutive frames, so the first three hash to different slots.
  local slot = {}
  for t = 1, 3 do slot[(A:entry(VA + (t - 1) * REGION, 2) >> 12) % 3] = true end
  expect(slot[0] and slot[1] and slot[2], "1: the first three tables hash to three slots")

  for t = 1, T do
    local d = measure(vm, function() A:map(VA + (t - 1) * REGION, g.new[t]) end)
    if t <= 3 then
      expect_delta(d, { mmu_unsync = 1, write_protections = 0, pf_emulate = 0, exits = 1 }, "1: edit " .. t .. " goes out of sync")
    else
      expect_delta(d, { mmu_unsync = 0, write_protections = 1, pf_emulate = 0, exits = 1 },
                   "1: edit " .. t .. " evicts and resyncs an occupant")
    end
    expect(vm:counters().mmu_unsync <= 3, "1: at most 3 out-of-sync pages per vCPU")
  end
  expect_eq(vm:counters().mmu_unsync, 3, "1: three slots in use")
  for t = 1, T do
    expect_ok(c:invlpg(VA + (t - 1) * REGION))
    reads(c, VA + (t - 1) * REGION, g.new[t], "1: edit " .. t .. " visible after INVLPG")
  end

  -- 2: the last table edited is certainly out of sync (it just took a slot).
  local last = VA + (T - 1) * REGION
  local d = measure(vm, function() A:map(last, g.f[1]) end)
  expect_delta(d, { exits = 0, mmu_unsync = 0 }, "2: a store to an out-of-sync table runs natively")
  reads(c, last, g.new[T], "2: stale until invalidated (allowed)")
  d = measure(vm, function() expect_ok(c:invlpg(last)) end)
  expect_delta(d, { mmu_unsync = 0, write_protections = 0, exits_invlpg = 1 }, "2: INVLPG")
  reads(c, last, g.f[1], "2: INVLPG made the new PTE visible")
  expect_eq(vm:counters().mmu_unsync, 3, "2: still out of sync")

  -- 3: CR3 write: own pages resynced.
  A:map(VA, g.f[2])                          -- may or may not exit; visible after the CR3 write
  local n = vm:counters().mmu_unsync
  d = measure(vm, function() expect_ok(c:load_cr3(A)) end)
  expect_delta(d, { mmu_unsync = -n, write_protections = n, exits_cr3 = 1 }, "3: CR3 write resyncs own pages")
  expect_eq(vm:counters().mmu_unsync, 0, "3: nothing out of sync on a 1-vCPU VM")
  reads(c, VA, g.f[2], "3: edit visible")
  reads(c, last, g.f[1], "3: edit visible")
  for t = 2, T - 1 do reads(c, VA + (t - 1) * REGION, g.new[t], "3: table " .. t) end
end)

------------------------------------------------------------------ 4: two vCPUs, per-vCPU slots
P.section("4 per-vCPU slots (2 vCPUs)", function()
  local g = guest(2)
  local vm, A = g.vm, g.A
  local c1, c2 = vm.vcpu[1], vm.vcpu[2]
  for t = 1, 3 do A:map(VA + (t - 1) * REGION, g.new[t], { by = c1 }) end
  for t = 4, 6 do A:map(VA + (t - 1) * REGION, g.new[t], { by = c2 }) end
  expect_eq(vm:counters().mmu_unsync, 6, "4: 3 per vCPU")
  local d = measure(vm, function() expect_ok(c1:load_cr3(A)) end)
  expect_delta(d, { mmu_unsync = -3, write_protections = 3 }, "4: vCPU 1's CR3 write resyncs its own 3 pages")
  expect_eq(vm:counters().mmu_unsync, 3, "4: vCPU 2's pages stay out of sync")
  for t = 1, T do reads(c1, VA + (t - 1) * REGION, g.new[t], "4: vCPU 1 sees edit " .. t) end
  d = measure(vm, function() expect_ok(c2:load_cr3(A)) end)
  expect_delta(d, { mmu_unsync = -3, write_protections = 3 }, "4: vCPU 2's CR3 write resyncs its pages")
  for t = 1, T do reads(c2, VA + (t - 1) * REGION, g.new[t], "4: vCPU 2 sees edit " .. t) end
end)

------------------------------------------------------------------ 5: snapshot kept equal to what the shadow shows
P.section("5 snapshot follows propagated entries", function()
  local g = guest(1)
  local vm, c, A, f = g.vm, g.vm.vcpu[1], g.A, g.f
  local original = A:entry(VA, 1)                            -- f[1], accessed
  A:map(VA + 0x1000, f[20])                                   -- out of sync; snapshot taken
  expect_eq(vm:counters().mmu_unsync, 1, "5: out of sync")
  A:map(VA, f[21])                                            -- entry 0: f1 -> f21
  expect_ok(c:invlpg(VA))                                     -- blanks the sl1e
  reads(c, VA, f[21], "5: the fault propagates f21 into the shadow")
  A:set_entry(VA, 1, original)                                -- back to the snapshot's value
  expect_ok(c:load_cr3(A))                                    -- resync: shadow must follow the guest
  expect_eq(vm:counters().mmu_unsync, 0, "5: resynced")
  reads(c, VA, f[1], "5: after a flushing CR3 write the guest's current PTE (f1) is used")
end)

------------------------------------------------------------------ 6: only a table with a single L1 shadow may go out of sync
P.section("6 a table with two shadows is emulated", function()
  local g = guest(1)
  local vm, c, A, f = g.vm, g.vm.vcpu[1], g.A, g.f
  -- A second PDE maps table 1 supervisor-only: a second shadow (other inherited access).
  local pt = A:entry(VA, 2) & 0x000FFFFFFFFFF000
  local alias = 0x00E00000                                   -- PD index 7, not present
  A:set_entry(alias, 2, pt | S.PTE.P | S.PTE.RW)
  local _, pa = expect_ok(c:read(alias, 8, 0))
  expect_eq(pa, f[1], "6: the alias maps table 1's entry 0")
  local d = measure(vm, function() A:map(VA + 0x1000, f[20]) end)
  expect_delta(d, { pf_emulate = 1, mmu_pte_write = 1, mmu_unsync = 0 }, "6: store to a doubly shadowed table: emulated")
  d = measure(vm, function() A:map(VA + 0x200000 + 0x1000, f[20]) end)
  expect_delta(d, { pf_emulate = 0, mmu_unsync = 1 }, "6: store to a singly shadowed table: out of sync")
end)

------------------------------------------------------------------ 7: user-mode writes to a page table are emulated
-- §7.3 / §9 P5: the unsync happens, but a user-mode write is still emulated (only
-- supervisor writes re-execute natively); later writes find the mapping writable.
P.section("7 user-mode write to a page table: unsynced and emulated", function()
  local g = guest(1)
  local vm, c, A, f = g.vm, g.vm.vcpu[1], g.A, g.f
  local pt = A:entry(VA, 2) & 0x000FFFFFFFFFF000
  local UVA = 0x10000000                                     -- table 1 mapped user-writable
  A:map(UVA, pt, { write = true, user = true })
  expect_ok(c:read(UVA, 8, 3))
  local d = measure(vm, function() expect_ok(c:write(UVA + 8, f[20] | S.PTE.P | S.PTE.RW | S.PTE.US, 8, 3)) end)
  expect_delta(d, { mmu_unsync = 1, pf_emulate = 1, insn_emulation = 1 }, "7: first user-mode store")
  d = measure(vm, function() expect_ok(c:write(UVA + 16, f[21] | S.PTE.P | S.PTE.RW | S.PTE.US, 8, 3)) end)
  expect_delta(d, { exits = 0, pf_emulate = 0 }, "7: the table is out of sync and writable now")
  reads(c, VA + 0x1000, f[20], "7: the emulated store took effect")
end)

P.finish("policy_xen_oos")

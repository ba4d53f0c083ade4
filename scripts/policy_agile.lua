-- runs under: every policy
--
-- policy_agile.lua: agile paging (agile) against KVM's unsync scheme, by exact counter
-- deltas, under the checker. The guest is the same under every policy: a process A
-- whose one leaf table T keeps being rewritten while the vCPU switches between A and B
-- (two CR3 loads a round). Agile's epoch is 8 CR3 loads of the VM (its first load is
-- at creation, one per vCPU; epochs end at loads 8, 16, 24, …); 4 exits for stores to
-- one table within an epoch send it nested.
--  1. Rounds of "remap a page of T, INVLPG, read it, switch to B and back": under
--     kvm-unsync (and agile, while T is shadowed) each takes one write fault that
--     unsyncs T and a sync of T on the way back. The first epoch ends after 3 rounds;
--     the second (loads 9–16) holds rounds 4–7, so at load 16 agile sends T nested:
--     its shadow page is zapped (tables_to_nested 1).
--  2. The next access through T faults once and links T's parent spte to T itself
--     (nested_links 1); the retried walk finishes in the guest's table (nested_walks),
--     and its first touches of T's frame and of the data frame take an EPT violation
--     each: three exits. `vcpu:shadow_walk` shows the walk ending at the link.
--  3. Four more rounds: agile takes no exit for T's stores and syncs nothing; kvm-unsync
--     keeps taking a fault and a sync per round.
--  4. Write protection across modes: a page of T maps the frame of another shadowed
--     table U of A. A read through the nested walk is cached read-only; a store exits
--     and unsyncs U (as a store through an spte would), under agile as under kvm-unsync.
--  5. A frame vCPU 1 cached writable through T becomes a shadowed table F (vCPU 2,
--     running B, walks through it): every vCPU is flushed, and vCPU 1's next store to
--     F exits and unsyncs it, as through a writable spte under kvm-unsync. (Nested TLB
--     entries are in no reverse map: the engine flushes because F is on its list of
--     frames nested walks cached writable.)
--  6. T left alone for a whole epoch goes back to shadow mode (tables_to_shadow 1,
--     nested_links 0); the next access builds its shadow page again and walks no
--     nested table.
local S = shadowsim
local expect, expect_eq, expect_ok, expect_delta = S.expect, S.expect_eq, S.expect_ok, S.expect_delta

local policy = S.default_policy
local agile, kvm = policy == "agile", policy == "kvm-unsync"
local vm = S.vm{ mode = "long4", vcpus = 2, memory = "64M" }
local c, c2 = vm.vcpu[1], vm.vcpu[2]

local A, B = vm:space(), vm:space()
local VA, UVA = 0x00400000, 0x40000000   -- T covers VA's 2 MiB; U covers UVA's
local current = {}   -- the frame each page of T maps now
for i = 0, 15 do
  current[i] = vm:alloc_frame()
  A:map(VA + i * 0x1000, current[i])
end
A:map(UVA, vm:alloc_frame())
B:map(VA, vm:alloc_frame())
local _, T = A:entry(VA, 1)
T = T & ~0xFFF
local _, U = A:entry(UVA, 1)
U = U & ~0xFFF

expect_ok(c:load_cr3(A))                                 -- CR3 load 1
for i = 0, 15 do expect_eq(select(2, c:read(VA + i * 0x1000, 8, 3)), current[i], "the first mappings") end
expect_ok(c:read(UVA, 8, 3))

local round = 0
-- One round: remap a page of T, INVLPG, read it, then to B and back (two CR3 loads).
local function rewrite_and_switch()
  round = round + 1
  local i = round % 16
  local f = vm:alloc_frame()
  current[i] = f
  A:map(VA + i * 0x1000, f, { by = c })
  expect_ok(c:invlpg(VA + i * 0x1000))
  expect_eq(select(2, c:read(VA + i * 0x1000, 8, 3)), f, "the remapped page")
  expect_ok(c:load_cr3(B))
  expect_ok(c:read(VA, 8, 3))
  expect_ok(c:load_cr3(A))
end

-- 1. Rounds 1–6 (loads 3–14), then round 7 (loads 15 and 16, the second epoch's end).
if agile or kvm then expect_eq(vm:counters().exits_cr3, 3, "one load per vCPU at creation, then A") end
local before = vm:counters()
for _ = 1, 6 do rewrite_and_switch() end
if agile or kvm then
  expect_delta(before, vm:counters(), { mmu_unsync_events = 6, pages_synced = 6, tables_to_nested = 0, nested_links = 0 },
    "one unsync and one sync of T per round")
end
before = vm:counters()
rewrite_and_switch()
if agile then
  expect_delta(before, vm:counters(), { mmu_unsync_events = 1, tables_to_nested = 1, nested_links = 0, nested_walks = 0 },
    "T goes nested at the epoch's end")
elseif kvm then
  expect_delta(before, vm:counters(), { mmu_unsync_events = 1, tables_to_nested = 0 }, "T stays shadowed")
end

-- 2. The next access links T nested and walks it.
before = vm:counters()
expect_eq(select(2, c:read(VA + 0x1000, 8, 3)), current[1], "a page of T")
if agile then
  expect_delta(before, vm:counters(), { pf_taken = 3, pf_fixed = 3, exits_page_fault = 3, nested_links = 1,
                                        nested_walks = 1, ept_violations = 2, mmu_cache_miss = 0 },
    "one fault links T nested; the nested walk maps T's frame and the page in the EPT")
end
-- Where the walk of a page of T goes: three shadow levels, then T itself under agile.
local walk = c:shadow_walk(VA + 0x1000)
if agile then
  expect_eq(walk.ends, "nested", "the walk ends at a nested link")
  expect_eq(walk.nested_table, T, "to T")
  expect_eq(walk.nested_level, 1, "whose entries are PTEs")
  expect_eq(#walk.steps, 3, "after the level-4, 3 and 2 sptes")
elseif policy == "tdp" or policy == "bare-metal" then
  expect_eq(walk.ends, "no shadow root", "no shadow tables")
else
  expect_eq(walk.ends, "leaf", "a shadow leaf")
  expect_eq(#walk.steps, 4, "four shadow levels")
end

-- 3. Four more rounds: T's stores are native under agile.
before = vm:counters()
for _ = 1, 4 do rewrite_and_switch() end
if agile then
  expect_delta(before, vm:counters(), { mmu_unsync_events = 0, pages_synced = 0, pf_emulate = 0, tables_to_nested = 0,
                                        tables_to_shadow = 0, nested_links = 0 },
    "no exit for T's stores, nothing to sync")
elseif kvm then
  expect_delta(before, vm:counters(), { mmu_unsync_events = 4, pages_synced = 4 }, "a fault and a sync per round")
end

-- 4. A page of T maps table U: read-only in the TLB, a store unsyncs U.
A:map(VA + 0x8000, U, { by = c })
expect_ok(c:invlpg(VA + 0x8000))
expect_ok(c:read(UVA, 8, 3))                    -- U is shadowed and synced
before = vm:counters()
expect_ok(c:read(VA + 0x8000, 8, 0))
expect_delta(before, vm:counters(), { mmu_unsync_events = 0, pf_emulate = 0 }, "a read of table U")
before = vm:counters()
local _, uentry = A:entry(UVA, 1)
expect_ok(c:write(VA + 0x8000 + (uentry & 0xFFF), vm:read_phys(uentry, 8), 8, 0))
if agile or kvm then
  expect_delta(before, vm:counters(), { pf_taken = 1, mmu_unsync_events = 1, mmu_unsync = 1, pf_emulate = 0 },
    "a store to U through T exits once and unsyncs U")
end
expect_ok(c:read(UVA, 8, 3))

-- 5. A frame cached writable through T (in vCPU 1's TLB) becomes a shadowed table when
--    vCPU 2, running B, first walks through it. F opens a 2 MiB region no spte maps
--    (the guest kernel's stores to its tables map theirs, large sptes included): only
--    the engine's list of frames nested walks cached writable can tell it to flush.
local NEWVA = 0x80000000
local D = vm:alloc_frame()
B:map(NEWVA + 0x200000, vm:alloc_frame())       -- B's directory for NEWVA's region
expect_ok(c2:load_cr3(B))
expect_ok(c2:read(NEWVA + 0x200000, 8, 3))       -- shadowed by vCPU 2's walk
local F
repeat F = vm:alloc_frame() until F % 0x200000 == 0
B:set_entry(NEWVA, 2, F | 0x67, { by = c2 })    -- the directory entry names F (emulated)
A:map(VA + 0x9000, F, { by = c })
expect_ok(c:invlpg(VA + 0x9000))
expect_ok(c:write(VA + 0x9000, D | 0x67, 8, 0))  -- F's first entry maps D
before = vm:counters()
expect_eq(select(2, c2:read(NEWVA, 8, 3)), D, "NEWVA through F")
expect_ok(c2:invlpg(NEWVA))   -- a sync point: the checker looks at every vCPU's TLB there
if agile or kvm then
  expect_delta(before, vm:counters(), { remote_tlb_flush_requests = 1, mmu_cache_miss = 1 },
    "F shadowed: every vCPU flushed")
end
before = vm:counters()
expect_ok(c:write(VA + 0x9000 + 8, 0, 8, 0))
if agile or kvm then
  expect_delta(before, vm:counters(), { pf_taken = 1, mmu_unsync_events = 1, pf_emulate = 0 },
    "vCPU 1's next store to F exits and unsyncs it")
end

-- 6. T left alone: back to shadow mode at the next epoch's end.
before = vm:counters()
for _ = 1, 8 do
  expect_ok(c:load_cr3(B))
  expect_ok(c:load_cr3(A))
  expect_ok(c:read(VA + 0x2000, 8, 3))
end
if agile then
  expect_delta(before, vm:counters(), { tables_to_shadow = 1, tables_to_nested = 0, nested_links = -1 },
    "quiet T shadowed again")
end
before = vm:counters()
expect_ok(c:invlpg(VA + 0x3000))
expect_eq(select(2, c:read(VA + 0x3000, 8, 3)), current[3], "a page of T, shadowed again")
if agile then
  expect_delta(before, vm:counters(), { nested_walks = 0, nested_links = 0 }, "a shadow walk")
  expect_eq(c:shadow_walk(VA + 0x3000).ends, "leaf", "T shadowed again")
end
local n = vm:counters()
print(("policy_agile [%s]: tables_to_nested %d, tables_to_shadow %d, nested_walks %d, unsync events %d, pages synced %d")
  :format(policy, n.tables_to_nested, n.tables_to_shadow, n.nested_walks, n.mmu_unsync_events, n.pages_synced))

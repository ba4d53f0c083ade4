-- runs under: every policy
--
-- suite_pcid.lua: process-context identifiers (CR4.PCIDE = 1) in long4 and long5,
-- and what x86 requires to be visible after each kind of switch and invalidation.
-- Processes A, B, C run with PCIDs 1, 2, 3 (and A also under PCID 4; D shares PCID 1
-- with A). Whatever x86 lets a no-flush switch keep stale is left to the checker; the
-- script asserts only what must be visible.
--  1. No-flush switches to cached roots and back, with edits in between: a page made
--     present (not present -> present) while another process runs is seen on the
--     no-flush return with no invalidation; a remapped page is seen after INVLPG on
--     the return; A's edits made from B are seen after a flushing return.
--  2. Flushing switches: each flushing MOV to CR3 makes every edit of that space seen;
--     the same table under two PCIDs (A with PCIDs 1 and 4): a flushing load of one
--     PCID makes the edits seen there.
--  3. INVPCID: type 0 (one address of another PCID), type 1 (a whole other PCID),
--     type 2 (everything, globals included: a global page edited), type 3 (every
--     non-global entry), each issued while another process runs; the no-flush return
--     must see the edits.
--  4. B7 (reference §11): edit A's tables, flushing CR3 = A, switch to B, no-flush back
--     to A: the edits must be visible. Variant: the flush of PCID 1 is a flushing load
--     of D (another space with the same PCID), then B, then no-flush back to A; checked
--     where D maps nothing (PCID 1 may now hold D's translations).
--  5. PCIDE 1 -> 0 flushes everything (globals too): edits of A (cached under PCIDs 1
--     and 4) and of a global page are seen afterwards, then PCIDE is set again.
--  6. Two vCPUs: vCPU 2 runs A under PCID 1; vCPU 1 edits A's PTEs; vCPU 2 invalidates
--     with INVPCID type 1 / type 0 / INVLPG (interleaved, seeded) and must see them.
local S = shadowsim
local P, PF = S.PTE, S.PF
local expect_ok = S.expect_ok

local function reads(c, va, gpa, value, what, cpl) return S.expect_read(c, va, gpa, value, what, cpl or 3) end

local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

local VA, VB, VC = 0x00400000, 0x00401000, 0x00402000     -- one page table
local VF = 0x00A00000                                      -- another page table
local GVA = 0x00600000                                     -- a user global page
local VXS = { long4 = 0x0000100000000000, long5 = 0x0001000000000000 }  -- another top-level entry
local KVA = { long4 = 0xFFFFC90000010000, long5 = 0xFF91000000010000 }

for mi, mode in ipairs{ "long4", "long5" } do
  local vm = S.vm{ mode = mode, vcpus = 2, memory = "64M" }
  local c, c2 = vm.vcpu[1], vm.vcpu[2]
  local marker = {}
  local f = {}
  for i = 1, 28 do
    f[i] = vm:alloc_frame()
    marker[f[i]] = (0xC0DE << 32) | (mi << 24) | i
    vm:write_phys(f[i], marker[f[i]], 8)
  end
  local KG, VX = KVA[mode], VXS[mode]
  vm.kernel:map(KG, f[20], { user = false, global = true })     -- a global kernel page
  local A, B, C, D = vm:space(), vm:space(), vm:space(), vm:space()
  -- What each space maps (the scenario's own view), and a helper to change it.
  local want = { [A] = {}, [B] = {}, [C] = {}, [D] = {} }
  local function map(s, va, fr, attrs, by)
    attrs = attrs or {}
    attrs.by = by or c
    s:map(va, fr, attrs)
    want[s][va] = fr
  end
  local function unmap(s, va, by)
    s:unmap(va, { by = by or c })
    want[s][va] = false
  end
  local function sees(cpu, s, va, what)
    local fr = want[s][va]
    if fr then
      reads(cpu, va, fr, marker[fr], what)
    else
      faults(PF.U, what, cpu:read(va, 8, 3))
    end
  end
  local function sees_all(cpu, s, what)
    for _, va in ipairs{ VA, VB, VC, VF } do sees(cpu, s, va, what .. " " .. S.hex(va)) end
  end
  map(A, VA, f[1]); map(A, VB, f[2]); map(A, VF, f[3]); want[A][VC] = false
  map(B, VA, f[5]); map(B, VB, f[6]); map(B, VF, f[7]); want[B][VC] = false
  map(C, VA, f[9]); map(C, VB, f[10]); map(C, VF, f[11]); want[C][VC] = false
  map(D, VA, f[13]); map(D, VB, f[14]); map(D, VF, f[15]); want[D][VC] = false
  map(A, GVA, f[16], { global = true })
  map(A, VX, f[25])                                          -- D maps nothing there

  local function load(cpu, s, pcid, noflush)
    expect_ok(cpu:load_cr3(s, { pcid = pcid, noflush = noflush }))
    S.expect_eq(cpu:regs().pcid, pcid, mode .. ": PCID after the load")
  end

  expect_ok(c:load_cr3(A))                                   -- CR3[11:0] = 0 to set PCIDE
  expect_ok(c:set{ pcide = true })
  load(c, A, 1); sees_all(c, A, mode .. " start A")
  reads(c, GVA, f[16], marker[f[16]], mode .. " start: A's global page")
  reads(c, KG, f[20], marker[f[20]], mode .. " start: global kernel page", 0)
  load(c, B, 2); sees_all(c, B, mode .. " start B")
  load(c, C, 3); sees_all(c, C, mode .. " start C")
  load(c, A, 4); sees_all(c, A, mode .. " start A under PCID 4")

  ------------------------------------------------------------------ 1. no-flush round trips
  load(c, A, 1, true)
  sees_all(c, A, mode .. " 1: A cached under PCID 1")
  load(c, B, 2, true)
  sees_all(c, B, mode .. " 1: B cached under PCID 2")
  map(A, VC, f[4])                                           -- A: not present -> present
  map(A, VB, f[8])                                           -- A: remap
  map(B, VA, f[12], nil, c)                                  -- B (running): remap
  expect_ok(c:invlpg(VA))
  sees(c, B, VA, mode .. " 1: B after its own remap and INVLPG")
  load(c, A, 1, true)
  sees(c, A, VC, mode .. " 1: no-flush return, not present -> present seen")
  sees(c, A, VA, mode .. " 1: no-flush return, unchanged page")
  expect_ok(c:invlpg(VB))
  sees(c, A, VB, mode .. " 1: no-flush return, remap seen after INVLPG")
  load(c, C, 3, true)
  map(A, VA, f[17])                                          -- A, edited from C
  unmap(A, VF)
  load(c, A, 1)                                              -- flushing return
  sees_all(c, A, mode .. " 1: flushing return to A")
  load(c, B, 2, true)
  sees_all(c, B, mode .. " 1: B, no-flush (nothing of B changed since its last flush)")

  ------------------------------------------------------------------ 2. flushing switches, two PCIDs on one table
  map(A, VF, f[3])                                           -- A: not present -> present
  map(A, VB, f[18])
  load(c, A, 4)                                              -- PCID 4 flushed
  sees_all(c, A, mode .. " 2: flushing load of A under PCID 4")
  load(c, A, 1, true)
  sees(c, A, VF, mode .. " 2: A under PCID 1 (no flush), the page made present")
  load(c, A, 1)
  sees_all(c, A, mode .. " 2: flushing load of A under PCID 1")
  load(c, B, 2)
  sees_all(c, B, mode .. " 2: flushing load of B")

  ------------------------------------------------------------------ 3. INVPCID types 0-3 from another process
  -- type 0: one address of PCID 1
  map(A, VA, f[1])
  expect_ok(c:invpcid(0, 1, VA))
  load(c, A, 1, true)
  sees(c, A, VA, mode .. " 3: INVPCID type 0 of PCID 1 from B")
  -- type 1: all of PCID 1
  load(c, B, 2, true)
  map(A, VA, f[17]); map(A, VB, f[2]); unmap(A, VC)
  expect_ok(c:invpcid(1, 1))
  load(c, A, 1, true)
  sees_all(c, A, mode .. " 3: INVPCID type 1 of PCID 1 from B")
  -- type 2: everything, global translations included
  load(c, C, 3, true)
  map(A, VA, f[1]); map(A, VB, f[18]); map(A, VC, f[4])
  map(A, GVA, f[19], { global = true })
  vm.kernel:map(KG, f[21], { user = false, global = true, by = c })
  map(C, VA, f[22])
  expect_ok(c:invpcid(2))
  sees_all(c, C, mode .. " 3: INVPCID type 2, C itself")
  faults(PF.U, mode .. " 3: INVPCID type 2 removed A's global page from C's view", c:read(GVA, 8, 3))
  reads(c, KG, f[21], marker[f[21]], mode .. " 3: INVPCID type 2, the global kernel page", 0)
  load(c, A, 1, true)
  sees_all(c, A, mode .. " 3: INVPCID type 2, A (no-flush return)")
  reads(c, GVA, f[19], marker[f[19]], mode .. " 3: INVPCID type 2, A's global page")
  load(c, A, 4, true)
  sees_all(c, A, mode .. " 3: INVPCID type 2, A under PCID 4 (no-flush return)")
  -- type 3: every non-global entry
  load(c, B, 2, true)
  map(A, VA, f[17]); unmap(A, VB); map(A, VF, f[23])
  map(B, VB, f[8])
  expect_ok(c:invpcid(3))
  sees_all(c, B, mode .. " 3: INVPCID type 3, B itself")
  load(c, A, 1, true)
  sees_all(c, A, mode .. " 3: INVPCID type 3, A under PCID 1")
  load(c, A, 4, true)
  sees_all(c, A, mode .. " 3: INVPCID type 3, A under PCID 4")
  reads(c, KG, f[21], marker[f[21]], mode .. " 3: the global kernel page after type 3", 0)

  ------------------------------------------------------------------ 4. B7
  load(c, A, 1)
  sees_all(c, A, mode .. " 4: A")
  map(A, VA, f[1]); map(A, VB, f[2]); map(A, VF, f[3])       -- A's edits (A running)
  load(c, A, 1)                                              -- flushing CR3 = A
  load(c, B, 2, true)
  load(c, A, 1, true)                                        -- no-flush back to A
  sees_all(c, A, mode .. " 4: B7, no-flush return after a flushing load of A")
  -- Again, with the edits made from B, after the flushing load.
  load(c, B, 2, true)
  map(A, VB, f[18])
  load(c, A, 1)
  load(c, C, 3)
  load(c, A, 1, true)
  sees_all(c, A, mode .. " 4: B7 with the edit made from B")
  -- Variant: PCID 1 flushed by a flushing load of another space, D, with PCID 1. From
  -- then on PCID 1 may hold D's translations (x86 lets a no-flush load of A use them,
  -- paging-structure caches included), so what must be seen is checked at VX, which
  -- D maps at no level.
  reads(c, VX, want[A][VX], marker[want[A][VX]], mode .. " 4: A's VX cached under PCID 1")
  load(c, B, 2, true)
  map(A, VA, f[17]); map(A, VC, f[4]); unmap(A, VF)
  map(A, VX, f[26])
  load(c, D, 1)                                              -- flushes PCID 1
  load(c, B, 2, true)
  load(c, A, 1, true)
  reads(c, VX, f[26], marker[f[26]], mode .. " 4: B7 variant, PCID 1 flushed through D")
  load(c, A, 1)                                              -- PCID 1 is A's again
  sees_all(c, A, mode .. " 4: A after a flushing load of PCID 1")
  load(c, A, 4, true)
  expect_ok(c:invpcid(1, 4))
  sees_all(c, A, mode .. " 4: A under PCID 4 after INVPCID type 1 of PCID 4")

  ------------------------------------------------------------------ 5. PCIDE 1 -> 0
  load(c, A, 1, true)
  sees_all(c, A, mode .. " 5: A under PCID 1")
  load(c, B, 2, true)
  map(A, VA, f[1]); map(A, VF, f[3]); unmap(A, VC)
  map(A, GVA, f[16], { global = true })
  vm.kernel:map(KG, f[20], { user = false, global = true, by = c })
  map(B, VA, f[5])
  load(c, A, 4, true)
  expect_ok(c:set{ pcide = false })
  S.expect_eq(c:regs().pcid, 0, mode .. " 5: PCID 0 after clearing PCIDE")
  sees_all(c, A, mode .. " 5: A after PCIDE 1 -> 0")
  reads(c, GVA, f[16], marker[f[16]], mode .. " 5: A's global page after PCIDE 1 -> 0")
  reads(c, KG, f[20], marker[f[20]], mode .. " 5: the global kernel page after PCIDE 1 -> 0", 0)
  expect_ok(c:load_cr3(B))
  sees_all(c, B, mode .. " 5: B after PCIDE 1 -> 0")
  expect_ok(c:set{ pcide = true })
  load(c, A, 1, true)
  sees_all(c, A, mode .. " 5: A under PCID 1, PCIDE set again")
  load(c, C, 3, true)
  sees_all(c, C, mode .. " 5: C under PCID 3, PCIDE set again")

  ------------------------------------------------------------------ 6. two vCPUs
  expect_ok(c2:load_cr3(A))
  expect_ok(c2:set{ pcide = true })
  load(c2, A, 1)
  sees_all(c2, A, mode .. " 6: vCPU 2 runs A")
  load(c, B, 2, true)
  local pool = { f[1], f[2], f[3], f[17], f[18], f[23], f[24] }
  for round = 1, 4 do
    local gen, ack, done, busy = 0, 0, false, false
    local pending
    S.interleave(S.seed * 8 + mi * 4 + round, {
      function()                                             -- vCPU 1 edits A's PTEs
        for i = 1, 8 do
          local va = ({ VA, VB, VC, VF })[S.random(1, 4)]
          busy = true                                        -- an edit in flight
          if S.random() < 0.2 then unmap(A, va) else map(A, va, pool[S.random(1, #pool)]) end
          pending, busy = va, false
          gen = gen + 1
          while ack < gen do c:read(VA, 8, 3) end           -- wait for vCPU 2
        end
        done = true
      end,
      function()                                             -- vCPU 2 runs A
        local how = 0
        while not done do
          if ack < gen then
            local g = gen
            how = how % 4 + 1
            if how == 1 then expect_ok(c2:invpcid(1, 1))
            elseif how == 2 then expect_ok(c2:invpcid(0, 1, pending))
            elseif how == 3 then expect_ok(c2:invlpg(pending))
            else load(c2, A, 1) end
            sees_all(c2, A, ("%s 6: round %d, vCPU 2 after invalidation %d"):format(mode, round, how))
            ack = g
          elseif not busy then
            sees(c2, A, VA, mode .. " 6: vCPU 2 reads while nothing is pending")
          else
            c2:read(VA, 8, 3)                                -- may be old or new
          end
        end
      end,
    })
  end
  load(c2, C, 3, true)
  load(c2, A, 1, true)
  sees_all(c2, A, mode .. " 6: vCPU 2, no-flush return to A")
end
print("suite_pcid: ok under " .. S.default_policy)

-- tlb_invlpg.lua -- TLB staleness and invalidation of 4 KiB user mappings
-- (Intel SDM vol. 3A 4.10.2, 4.10.4.1, 4.10.4.2, 4.10.4.3), in legacy32, pae,
-- long4 and long5 paging.
--
-- What it proves, per mode:
--  * After a PTE is changed in memory (remap to another frame, R/W 1->0, P 1->0)
--    and nothing is invalidated, accesses keep using the cached translation
--    (the stale frame, the stale write permission, the stale "present").
--  * INVLPG of another page leaves that stale entry alone; INVLPG of the page
--    removes it, so the next access walks and sees the new PTE (4.10.4.1).
--  * A flushing MOV to CR3 (PCIDE = 0) -- of the same space or of another one --
--    removes non-global entries (4.10.4.1), also after hundreds of CR3 loads.
--  * Permission increases (R/W 0->1, U/S 0->1, XD 1->0) may fault once through the
--    stale entry (4.10.4.3); that #PF invalidates the entry (4.10.4.2), so the
--    retry succeeds with no INVLPG. A write through an entry cached with D = 0
--    walks again (so it already sees R/W = 1).
--  * Non-present -> present needs no invalidation: a #PF'd address is not cached
--    (4.10.2.3 / 4.10.4.3).
--  * Counters: a stale access is a TLB hit without a walk; the access after an
--    invalidation is a miss with one walk.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local PF = S.PF

-- Checks one access result; failures are reported at the caller's line.
local read_is = S.expect_read

local function ok_is(gpa, what, first, fault)
  if first == nil then error(what .. ": expected success at gpa " .. S.hex(gpa) .. ", got " .. fault.text, 2) end
  if first ~= gpa then error(what .. ": expected gpa " .. S.hex(gpa) .. ", got " .. S.hex(first), 2) end
end

local pf_is = S.expect_fault

local delta_is = S.expect_delta

local VA, VB, VC, VD = 0x00400000, 0x00401000, 0x00402000, 0x00403000
local VE, VF, VG, VH = 0x00404000, 0x00405000, 0x00406000, 0x00407000
local VJ = 0x00408000
local VI = 0x00c00000            -- no page table yet: the PDE is absent

for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode, name = mode }
  local c = vm.vcpu[1]
  local s, s2 = vm:space{}, vm:space{}
  local f = {}
  for i = 1, 4 do
    f[i] = vm:alloc_frame{}
    vm:write_phys(f[i], 0x5A00 + i, 8)       -- a marker per frame
  end
  local M = function(i) return 0x5A00 + i end
  S.expect_eq(S.expect_ok(c:load_cr3(s)), true, mode .. ": MOV CR3 s")

  ---------------------------------------------------------------- remap
  s:map(VA, f[1]); s:map(VB, f[3])
  read_is(c, VA, f[1], M(1), mode .. ": first read of VA")
  read_is(c, VB, f[3], M(3), mode .. ": first read of VB")
  s:map(VA, f[2])                               -- PTE -> f[2], no invalidation
  local before = c:counters()
  read_is(c, VA, f[1], M(1), mode .. ": remapped PTE, stale TLB entry still used")
  delta_is(before, c:counters(), { tlb_hits = 1, tlb_misses = 0, walks = 0 }, mode .. ": stale read is a hit")
  read_is(c, VA + 0x7F8, f[1] + 0x7F8, nil, mode .. ": stale entry covers the whole page")
  c:invlpg(VB)
  read_is(c, VA, f[1], M(1), mode .. ": INVLPG of another page keeps the stale entry")
  before = c:counters()
  c:invlpg(VA + 0x123)                          -- any address of the page
  delta_is(before, c:counters(), { invlpg = 1 }, mode .. ": INVLPG counted")
  before = c:counters()
  read_is(c, VA, f[2], M(2), mode .. ": after INVLPG the new PTE is used")
  delta_is(before, c:counters(), { tlb_hits = 0, tlb_misses = 1, walks = 1 }, mode .. ": read after INVLPG walks")
  read_is(c, VB, f[3], M(3), mode .. ": VB unaffected by INVLPG of VA")

  ---------------------------------------------------------------- flushing MOV CR3, same space
  s:map(VA, f[3])
  read_is(c, VA, f[2], M(2), mode .. ": stale before MOV CR3")
  before = c:counters()
  S.expect_ok(c:load_cr3(s))
  delta_is(before, c:counters(), { cr3_loads = 1, cr3_noflush = 0, tlb_flush_pcid = 1 }, mode .. ": MOV CR3 counted")
  read_is(c, VA, f[3], M(3), mode .. ": MOV CR3 (same space) flushed the entry")

  ---------------------------------------------------------------- flushing MOV CR3, other space
  s2:map(VA, f[4])
  s:map(VA, f[1])
  read_is(c, VA, f[3], M(3), mode .. ": stale before switching space")
  S.expect_ok(c:load_cr3(s2))
  S.expect_eq(c:regs().cr3, s2.cr3, mode .. ": CR3 holds s2")
  read_is(c, VA, f[4], M(4), mode .. ": other space's translation after MOV CR3")
  S.expect_ok(c:load_cr3(s))
  read_is(c, VA, f[1], M(1), mode .. ": back in s, its current PTE is used")

  ---------------------------------------------------------------- R/W 1 -> 0
  s:map(VC, f[1], { write = true })
  ok_is(f[1], mode .. ": write to RW page", c:write(VC, 0x1111))
  s:map(VC, f[1], { write = false })          -- now read-only (and D clear)
  ok_is(f[1], mode .. ": CPL0 write through stale RW entry", c:write(VC, 0x2222))
  ok_is(f[1], mode .. ": CPL3 write through stale RW entry", c:write(VC, 0x3333, 8, 3))
  S.expect_eq(vm:read_phys(f[1], 8), 0x3333, mode .. ": stale writes reached the frame")
  c:invlpg(VC)
  pf_is(PF.P | PF.W, VC, mode .. ": CPL0 write after INVLPG (WP=1)", c:write(VC, 0x4444))
  pf_is(PF.P | PF.W | PF.U, VC, mode .. ": CPL3 write after INVLPG", c:write(VC, 0x4444, 8, 3))
  S.expect_eq(vm:read_phys(f[1], 8), 0x3333, mode .. ": faulting writes changed nothing")
  read_is(c, VC, f[1], 0x3333, mode .. ": reads of the RO page still work")
  vm:write_phys(f[1], M(1), 8)

  ---------------------------------------------------------------- P 1 -> 0
  s:map(VD, f[2])
  read_is(c, VD, f[2], M(2), mode .. ": read of VD")
  S.expect_eq(s:unmap(VD), true, mode .. ": unmap VD")
  S.expect_eq(s:entry(VD, 1), 0, mode .. ": PTE cleared")
  read_is(c, VD, f[2], M(2), mode .. ": P=0 in memory, stale entry still used")
  read_is(c, VD, f[2], M(2), mode .. ": stale entry also serves CPL3", 3)
  c:invlpg(VD)
  before = c:counters()
  pf_is(0, VD, mode .. ": CPL0 read after INVLPG is not-present", c:read(VD))
  pf_is(PF.U, VD, mode .. ": CPL3 read after INVLPG is not-present", c:read(VD, 8, 3))
  pf_is(PF.W, VD, mode .. ": CPL0 write after INVLPG is not-present", c:write(VD, 1))
  delta_is(before, c:counters(), { pf_not_present = 3, walks = 3 }, mode .. ": not-present faults counted")
  S.expect_eq(s:unmap(VD), false, mode .. ": nothing left to unmap")

  ---------------------------------------------------------------- R/W 0 -> 1 with a dirty cached entry
  s:map(VE, f[3], { write = false, dirty = true })
  read_is(c, VE, f[3], M(3), mode .. ": read of RO+D page caches it with D=1")
  s:map(VE, f[3], { write = true, dirty = true })
  before = c:counters()
  pf_is(PF.P | PF.W, VE, mode .. ": write through the stale RO entry faults once", c:write(VE, 0x7777))
  delta_is(before, c:counters(), { pf_protection = 1, walks = 0 }, mode .. ": the spurious fault came from the TLB")
  S.expect_eq(vm:read_phys(f[3], 8), M(3), mode .. ": the faulting write stored nothing")
  before = c:counters()
  ok_is(f[3], mode .. ": retry without INVLPG succeeds (the #PF invalidated the entry)", c:write(VE, 0x7777))
  delta_is(before, c:counters(), { invlpg = 0, walks = 1 }, mode .. ": the retry walked")
  S.expect_eq(vm:read_phys(f[3], 8), 0x7777, mode .. ": retry stored")
  vm:write_phys(f[3], M(3), 8)

  ---------------------------------------------------------------- R/W 0 -> 1 with a clean cached entry
  s:map(VF, f[4], { write = false })          -- D = 0
  read_is(c, VF, f[4], M(4), mode .. ": read of RO page caches it with D=0")
  s:map(VF, f[4], { write = true })
  before = c:counters()
  ok_is(f[4], mode .. ": write through a clean entry walks and sees R/W=1", c:write(VF, 0x8888))
  delta_is(before, c:counters(), { walks = 1, pf_protection = 0 }, mode .. ": clean-entry write re-walked")
  S.expect_eq(s:entry(VF, 1) & (S.PTE.D | S.PTE.A | S.PTE.RW), S.PTE.D | S.PTE.A | S.PTE.RW, mode .. ": walk set A and D")
  vm:write_phys(f[4], M(4), 8)

  ---------------------------------------------------------------- U/S 0 -> 1
  s:map(VG, f[1], { user = false, dirty = true })
  read_is(c, VG, f[1], M(1), mode .. ": CPL0 read of supervisor page")
  s:map(VG, f[1], { user = true, dirty = true })
  pf_is(PF.P | PF.U, VG, mode .. ": CPL3 read through stale supervisor entry faults", c:read(VG, 8, 3))
  read_is(c, VG, f[1], M(1), mode .. ": CPL3 retry succeeds without INVLPG", 3)

  ---------------------------------------------------------------- XD 1 -> 0 (not in 32-bit paging)
  if mode ~= "legacy32" then
    s:map(VH, f[2], { nx = true, dirty = true })
    read_is(c, VH, f[2], M(2), mode .. ": read of NX page")
    s:map(VH, f[2], { nx = false, dirty = true })
    pf_is(PF.P | PF.I, VH, mode .. ": fetch through stale XD entry faults", c:fetch(VH))
    ok_is(f[2], mode .. ": fetch retry succeeds without INVLPG", c:fetch(VH))
  end

  ---------------------------------------------------------------- not present -> present
  pf_is(0, VI, mode .. ": unmapped VI (no page table)", c:read(VI))
  pf_is(PF.U, VI, mode .. ": unmapped VI, CPL3", c:translate(VI, "read", 3))
  s:map(VI, f[2])
  before = c:counters()
  read_is(c, VI, f[2], M(2), mode .. ": newly mapped page is seen without invalidation")
  delta_is(before, c:counters(), { walks = 1, invlpg = 0 }, mode .. ": the new mapping was walked")
  S.expect_eq(s:unmap(VI + 0x1000), false, mode .. ": neighbour not mapped")
  pf_is(PF.W, VI + 0x1000, mode .. ": neighbour PTE not present", c:write(VI + 0x1000, 1))
  s:map(VI + 0x1000, f[3])
  ok_is(f[3], mode .. ": neighbour after mapping, no invalidation", c:write(VI + 0x1000, M(3)))

  ---------------------------------------------------------------- many flushing MOV CR3s
  for i = 1, 300 do
    local k = (i % 3) + 1
    s:map(VJ, f[k])
    if i % 2 == 0 then
      read_is(c, VJ, f[(i - 1) % 3 + 1], M((i - 1) % 3 + 1), mode .. ": before CR3 load " .. i .. " the old frame")
    end
    S.expect_ok(c:load_cr3(s))
    read_is(c, VJ, f[k], M(k), mode .. ": after CR3 load " .. i)
  end
end

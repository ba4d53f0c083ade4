-- tlb_pcid.lua -- process-context identifiers (Intel SDM vol. 3A 4.10.1, 4.10.4.1;
-- MOV to CR4 #GP conditions, vol. 2), in long4 and long5 paging, plus the
-- #GP for CR4.PCIDE outside IA-32e mode (legacy32, pae).
--
-- What it proves:
--  * Setting CR4.PCIDE is #GP unless IA-32e mode is active and CR3[11:0] = 0;
--    the failed MOV to CR4 changes nothing (PCIDE stays clear, entries stay).
--  * With CR4.PCIDE = 0 CR3[11:0] is no PCID: the current PCID is 0.
--  * Setting PCIDE does not drop the translations cached under PCID 0.
--  * With PCIDE = 1 the current PCID is CR3[11:0]; bit 63 of the MOV source is not
--    stored in CR3.
--  * MOV to CR3 with bit 63 set (no-flush) keeps every PCID's entries: the stale
--    entries of a PCID are used again when switching back with no-flush.
--  * MOV to CR3 without bit 63 flushes the non-global entries of the new PCID
--    only; other PCIDs' entries and global entries stay.
--  * The same CR3 table with two PCIDs has two separate sets of entries.
--  * INVLPG invalidates the page for the current PCID (and global entries), not
--    the other PCIDs' entries for that page.
--  * Clearing CR4.PCIDE flushes everything, for every PCID, globals included.
-- Entry counts use c:tlb_entries(p) - c:tlb_entries(4095) (PCID 4095 is never
-- used here, so that count is the global entries alone).
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim

local PCIDE = 1 << 17
local VA, VB, GVA = 0x00400000, 0x00401000, 0x00602000   -- distinct TLB sets

local read_is = S.expect_read

local delta_is = S.expect_delta

local function nonglobal(c, pcid) return c:tlb_entries(pcid) - c:tlb_entries(4095) end

------------------------------------------------------------------ no PCIDs outside IA-32e mode
for _, mode in ipairs{ "legacy32", "pae" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode }
  local c = vm.vcpu[1]
  local cr4 = c:regs().cr4
  local before = c:counters()
  S.expect_gp(c:set{ pcide = true })
  S.expect_eq(c:regs().cr4, cr4, mode .. ": CR4 unchanged after the #GP")
  delta_is(before, c:counters(), { gp = 1 }, mode .. ": #GP counted")
  S.expect_eq(c:regs().pcid, 0, mode .. ": PCID 0")
end

for _, mode in ipairs{ "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode }
  local c = vm.vcpu[1]
  local s1, s2 = vm:space{}, vm:space{}
  local f = {}
  for i = 1, 4 do f[i] = vm:alloc_frame{}; vm:write_phys(f[i], 0x7C00 + i, 8) end
  local M = function(i) return 0x7C00 + i end
  s1:map(VA, f[1]); s2:map(VA, f[2])
  s1:map(VB, f[3]); s2:map(VB, f[4])
  s1:map(GVA, f[1], { global = true }); s2:map(GVA, f[2])

  ---------------------------------------------------------------- PCIDE needs CR3[11:0] = 0
  S.expect_ok(c:load_cr3(s1, { pcid = 5 }))               -- PCIDE=0: bits 11:0 are not a PCID
  S.expect_eq(c:regs().cr3, s1.cr3 | 5, mode .. ": CR3 keeps bits 11:0")
  S.expect_eq(c:regs().pcid, 0, mode .. ": PCIDE=0 -> PCID 0")
  read_is(c, VA, f[1], M(1), mode .. ": s1 with CR3[11:0]=5, PCIDE=0")
  local before = c:counters()
  S.expect_gp(c:set{ pcide = true })
  delta_is(before, c:counters(), { gp = 1, tlb_flush_all = 0 }, mode .. ": #GP counted, nothing flushed")
  S.expect_eq(c:regs().cr4 & PCIDE, 0, mode .. ": PCIDE still clear")
  S.expect_ok(c:load_cr3(s1))
  read_is(c, VA, f[1], M(1), mode .. ": s1, CR3[11:0]=0")
  s1:map(VA, f[3])                                         -- make the PCID-0 entry stale
  S.expect_ok(c:set{ pcide = true })
  S.expect_eq(c:regs().cr4 & PCIDE, PCIDE, mode .. ": PCIDE set")
  S.expect_eq(c:regs().pcid, 0, mode .. ": PCID 0 after setting PCIDE")
  read_is(c, VA, f[1], M(1), mode .. ": setting PCIDE kept the PCID-0 entry (stale)")
  S.expect_ok(c:load_cr3(s1))                              -- flushes PCID 0
  read_is(c, VA, f[3], M(3), mode .. ": flushing load of PCID 0")
  s1:map(VA, f[1])
  c:invlpg(VA)

  ---------------------------------------------------------------- two spaces, two PCIDs
  S.expect_ok(c:load_cr3(s1, { pcid = 1 }))
  S.expect_eq(c:regs().pcid, 1, mode .. ": PCID 1")
  S.expect_eq(c:regs().cr3, s1.cr3 | 1, mode .. ": CR3 = s1 | 1")
  read_is(c, VA, f[1], M(1), mode .. ": s1/PCID1 VA")
  read_is(c, VB, f[3], M(3), mode .. ": s1/PCID1 VB")
  read_is(c, GVA, f[1], M(1), mode .. ": s1/PCID1 global")
  S.expect_eq(nonglobal(c, 1), 2, mode .. ": PCID 1 holds VA and VB")
  before = c:counters()
  S.expect_ok(c:load_cr3(s2, { pcid = 2, noflush = true }))
  delta_is(before, c:counters(), { cr3_loads = 1, cr3_noflush = 1, tlb_flush_pcid = 0 }, mode .. ": no-flush load counted")
  S.expect_eq(c:regs().cr3, s2.cr3 | 2, mode .. ": bit 63 is not stored in CR3")
  S.expect_eq(c:regs().pcid, 2, mode .. ": PCID 2")
  read_is(c, VA, f[2], M(2), mode .. ": s2/PCID2 VA (PCID 1's entry not used)")
  read_is(c, VB, f[4], M(4), mode .. ": s2/PCID2 VB")
  read_is(c, GVA, f[1], M(1), mode .. ": global entry of s1 matches PCID 2 too")
  S.expect_eq(nonglobal(c, 1), 2, mode .. ": PCID 1 entries kept by the no-flush switch")
  S.expect_eq(nonglobal(c, 2), 2, mode .. ": PCID 2 holds VA and VB")

  -- Make both PCIDs' VA entries stale.
  s1:map(VA, f[4]); s2:map(VA, f[3])
  S.expect_ok(c:load_cr3(s1, { pcid = 1, noflush = true }))
  read_is(c, VA, f[1], M(1), mode .. ": back to PCID 1 with no-flush: stale entry used")
  S.expect_ok(c:load_cr3(s2, { pcid = 2, noflush = true }))
  read_is(c, VA, f[2], M(2), mode .. ": back to PCID 2 with no-flush: stale entry used")
  -- A flushing load of PCID 1 leaves PCID 2 alone.
  before = c:counters()
  S.expect_ok(c:load_cr3(s1, { pcid = 1 }))
  delta_is(before, c:counters(), { cr3_noflush = 0, tlb_flush_pcid = 1 }, mode .. ": flushing load counted")
  S.expect_eq(nonglobal(c, 1), 0, mode .. ": PCID 1 flushed")
  S.expect_eq(nonglobal(c, 2), 2, mode .. ": PCID 2 untouched")
  read_is(c, VA, f[4], M(4), mode .. ": PCID 1 after its flushing load sees the new PTE")
  read_is(c, GVA, f[1], M(1), mode .. ": global survives the flushing load")
  S.expect_ok(c:load_cr3(s2, { pcid = 2, noflush = true }))
  read_is(c, VA, f[2], M(2), mode .. ": PCID 2 still stale after PCID 1's flush")
  S.expect_ok(c:load_cr3(s2, { pcid = 2 }))
  read_is(c, VA, f[3], M(3), mode .. ": PCID 2 flushing load")

  ---------------------------------------------------------------- same table, another PCID
  S.expect_ok(c:load_cr3(s1, { pcid = 3 }))
  before = c:counters()
  read_is(c, VA, f[4], M(4), mode .. ": s1 under PCID 3")
  delta_is(before, c:counters(), { walks = 1 }, mode .. ": PCID 3 has its own entries (miss)")
  S.expect_eq(nonglobal(c, 3), 1, mode .. ": one PCID-3 entry")

  ---------------------------------------------------------------- INVLPG: current PCID only
  S.expect_ok(c:load_cr3(s1, { pcid = 1, noflush = true }))
  read_is(c, VA, f[4], M(4), mode .. ": PCID 1 VA cached")
  s1:map(VA, f[2]); s2:map(VA, f[1])            -- both stale again
  S.expect_ok(c:load_cr3(s2, { pcid = 2, noflush = true }))
  read_is(c, VA, f[3], M(3), mode .. ": PCID 2 VA stale")
  read_is(c, GVA, f[1], M(1), mode .. ": global still cached")
  c:invlpg(VA)
  c:invlpg(GVA)
  read_is(c, VA, f[1], M(1), mode .. ": INVLPG in PCID 2 removed PCID 2's entry")
  read_is(c, GVA, f[2], M(2), mode .. ": INVLPG in PCID 2 removed the global entry")
  S.expect_ok(c:load_cr3(s1, { pcid = 1, noflush = true }))
  read_is(c, VA, f[4], M(4), mode .. ": PCID 1's entry for the page survived INVLPG in PCID 2")
  read_is(c, GVA, f[1], M(1), mode .. ": PCID 1 walks for the global page again")
  c:invlpg(VA)
  read_is(c, VA, f[2], M(2), mode .. ": INVLPG in PCID 1")

  ---------------------------------------------------------------- PCIDE 1 -> 0 flushes everything
  S.expect_ok(c:load_cr3(s2, { pcid = 2, noflush = true }))
  read_is(c, VB, f[4], M(4), mode .. ": PCID 2 VB cached")
  S.expect_ok(c:load_cr3(s1, { pcid = 1, noflush = true }))
  read_is(c, VB, f[3], M(3), mode .. ": PCID 1 VB cached")
  read_is(c, GVA, f[1], M(1), mode .. ": global cached")
  S.expect(nonglobal(c, 1) >= 2 and nonglobal(c, 2) >= 1, mode .. ": entries in PCIDs 1 and 2")
  s1:map(VB, f[1]); s1:map(GVA, f[3], { global = true })
  before = c:counters()
  S.expect_ok(c:set{ pcide = false })
  delta_is(before, c:counters(), { tlb_flush_all = 1 }, mode .. ": PCIDE 1->0 is a full flush")
  S.expect_eq(c:regs().pcid, 0, mode .. ": PCID 0 after clearing PCIDE")
  for _, p in ipairs{ 0, 1, 2, 3, 4095 } do
    S.expect_eq(c:tlb_entries(p), 0, mode .. ": no entry at all for PCID " .. p .. " (globals included)")
  end
  read_is(c, VB, f[1], M(1), mode .. ": non-global entry gone after PCIDE 1->0")
  read_is(c, GVA, f[3], M(3), mode .. ": global entry gone after PCIDE 1->0")
end

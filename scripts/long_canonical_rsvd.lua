-- long_canonical_rsvd.lua -- IA-32e specifics: canonical addresses, CR3 reserved
-- bits, and reserved bits in paging-structure entries (Intel SDM vol. 3A 3.3.7.1,
-- 4.5, Tables 4-12..4-20, 4.7; vol. 2 MOV CR), in long4 and long5.
--
-- What it proves:
--  * A data access, fetch or translation of a non-canonical address is #GP (not
--    #PF): no walk happens, and no TLB entry is used -- not even the one of the
--    canonical page with the same bits 56:0. long4 needs bits 63:47 equal, long5 bits 63:56, so
--    0x0000800000000000 is #GP in long4 but an ordinary (not present) #PF in long5.
--  * INVLPG of a non-canonical address is a no-op, not a fault.
--  * MOV to CR3 with a bit at or above MAXPHYADDR is #GP (for M = 46, 40, 52; also
--    with CR4.PCIDE = 1); CR3 and the TLB are left unchanged. PWT/PCD are fine.
--  * Present entries with a reserved bit give #PF with P|RSVD plus W/U/I as the
--    access says -- whatever the access rights: bits 51:M in any entry (M = 46 and
--    40), PS in a PML4E/PML5E; bits 62:52 and 11:9 are ignored, not reserved;
--    bit 63 is reserved only with NXE = 0.
--  * A reserved-bit fault in a non-leaf entry leaves the leaf's A/D alone.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local PTE, PF = S.PTE, S.PF

local pf_is = S.expect_fault

local function gp_is(what, first, fault)
  if first ~= nil then error(what .. ": expected #GP, got success " .. S.hex(first), 2) end
  if fault.kind ~= "gp" then error(what .. ": expected #GP, got " .. fault.text, 2) end
end

local function ok_is(gpa, what, first, fault)
  if first == nil then error(what .. ": expected success at gpa " .. S.hex(gpa) .. ", got " .. fault.text, 2) end
  if first ~= gpa then error(what .. ": expected gpa " .. S.hex(gpa) .. ", got " .. S.hex(first), 2) end
end

local delta_is = S.expect_delta

local CASES = {
  long4 = { gp = { 0x0000800000000000, 0xFFFF7FFFFFFFFFFF, 0x8000000000000000, 0x7FFFFFFFFFFFFFFF, 0x00FF800000001000 },
            pf = { 0x00007FFFFFFFF000, 0xFFFF800000000000 } },
  long5 = { gp = { 0x0100000000000000, 0xFEFFFFFFFFFFFFFF, 0x8000000000000000, 0x7F00000000000000 },
            pf = { 0x0000800000000000, 0x00FFFFFFFFFFF000, 0xFF00000000000000 } },
}

for _, mode in ipairs{ "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local f = vm:alloc_frame{}
  local VA = 0x00400000
  s:map(VA, f)
  S.expect_ok(c:load_cr3(s))
  ok_is(f, mode .. ": VA mapped", c:translate(VA, "read"))

  ---------------------------------------------------------------- canonical addresses
  for _, va in ipairs(CASES[mode].gp) do
    local before = c:counters()
    gp_is(mode .. ": read " .. S.hex(va), c:read(va))
    gp_is(mode .. ": write " .. S.hex(va), c:write(va, 1))
    gp_is(mode .. ": fetch " .. S.hex(va), c:fetch(va))
    gp_is(mode .. ": translate " .. S.hex(va), c:translate(va, "read", 3))
    delta_is(before, c:counters(), { gp = 4, walks = 0, pf_not_present = 0, pf_protection = 0 },
             mode .. ": " .. S.hex(va) .. " #GP without a walk")
    c:invlpg(va)                                        -- a no-op, no fault
  end
  for _, va in ipairs(CASES[mode].pf) do
    pf_is(0, va, mode .. ": canonical " .. S.hex(va) .. " read", c:read(va))
    pf_is(PF.W | PF.U, va, mode .. ": canonical " .. S.hex(va) .. " user write", c:write(va, 1, 8, 3))
  end
  -- Non-canonical aliases of a cached page (same bits 56:0) are #GP too, not hits.
  ok_is(f, mode .. ": VA cached", c:translate(VA, "read"))
  for _, alias in ipairs{ VA | (1 << 60), VA | 0xFE00000000000000, VA | (1 << 63) } do
    local b = c:counters()
    gp_is(mode .. ": alias " .. S.hex(alias) .. " of a cached page", c:read(alias))
    gp_is(mode .. ": alias " .. S.hex(alias) .. " write", c:write(alias, 1))
    delta_is(b, c:counters(), { gp = 2, tlb_hits = 0, walks = 0 }, mode .. ": alias " .. S.hex(alias) .. " is no TLB hit")
  end
  local before = c:counters()
  c:invlpg(CASES[mode].gp[1])
  delta_is(before, c:counters(), { invlpg = 1, gp = 0 }, mode .. ": INVLPG of a non-canonical address")
  ok_is(f, mode .. ": VA still fine", c:translate(VA, "read"))

  ---------------------------------------------------------------- CR3 reserved bits
  local f2 = vm:alloc_frame{}
  s:map(VA, f2)                                         -- VA's cached entry is stale now
  for _, bit in ipairs{ 46, 47, 51, 52, 55, 63 } do
    before = c:counters()
    gp_is(mode .. ": CR3 bit " .. bit, c:load_cr3(s.cr3 | (1 << bit)))
    delta_is(before, c:counters(), { gp = 1, tlb_flush_pcid = 0, cr3_loads = 0 }, mode .. ": CR3 bit " .. bit .. " #GP counted")
    S.expect_eq(c:regs().cr3, s.cr3, mode .. ": CR3 unchanged after #GP")
    ok_is(f, mode .. ": the failed MOV CR3 flushed nothing", c:translate(VA, "read"))
  end
  S.expect_ok(c:load_cr3(s.cr3 | PTE.PWT | PTE.PCD))
  S.expect_eq(c:regs().cr3, s.cr3 | 0x18, mode .. ": PWT/PCD kept in CR3")
  ok_is(f2, mode .. ": MOV CR3 with PWT|PCD flushed and works", c:translate(VA, "read"))
  S.expect_ok(c:load_cr3(s))
  S.expect_ok(c:set{ pcide = true })
  gp_is(mode .. ": CR3 bit 46 with PCIDE=1", c:load_cr3(s.cr3 | (1 << 46), { pcid = 1 }))
  gp_is(mode .. ": CR3 bit 46 with PCIDE=1, no-flush", c:load_cr3(s.cr3 | (1 << 46), { pcid = 1, noflush = true }))
  S.expect_eq(c:regs().cr3, s.cr3, mode .. ": CR3 unchanged")
  S.expect_ok(c:set{ pcide = false })

  ---------------------------------------------------------------- reserved bits in entries (M = 46)
  local levels = mode == "long4" and 4 or 5
  local RV = 0x00600000                                 -- its own page table
  local rf = vm:alloc_frame{}
  s:map(RV, rf, { write = false, user = false })
  ok_is(rf, mode .. ": RV mapped", c:translate(RV, "read"))
  for level = 1, levels do
    s:set_entry(RV, 1, s:entry(RV, 1) & ~(PTE.A | PTE.D))   -- so that a walk reaching the leaf shows
    local leaf_before = s:entry(RV, 1)
    local good = s:entry(RV, level)
    for _, bit in ipairs{ 46, 50, 51 } do
      s:set_entry(RV, level, good | (1 << bit))
      c:invlpg(RV)
      before = c:counters()
      pf_is(PF.P | PF.RSVD, RV, mode .. ": level " .. level .. " bit " .. bit .. ", read", c:read(RV))
      -- A user write to a supervisor read-only page: RSVD, with the access's W/U bits.
      pf_is(PF.P | PF.RSVD | PF.W | PF.U, RV, mode .. ": level " .. level .. " bit " .. bit .. ", user write",
            c:write(RV, 1, 8, 3))
      pf_is(PF.P | PF.RSVD | PF.I, RV, mode .. ": level " .. level .. " bit " .. bit .. ", fetch", c:fetch(RV))
      delta_is(before, c:counters(), { pf_reserved = 3, pf_protection = 0 }, mode .. ": RSVD faults counted")
      if level == 1 then
        S.expect_eq(s:entry(RV, 1), good | (1 << bit), mode .. ": RSVD in the leaf leaves it alone (no A)")
      end
    end
    s:set_entry(RV, level, good)
    S.expect_eq(s:entry(RV, 1), leaf_before, mode .. ": RSVD faults at level " .. level .. " left the leaf alone")
    -- Ignored bits: 11:9 and 62:52.
    s:set_entry(RV, level, good | (7 << 9) | (1 << 52) | (1 << 58) | (1 << 62))
    c:invlpg(RV)
    ok_is(rf, mode .. ": level " .. level .. " ignored bits 11:9, 62:52", c:translate(RV, "read"))
    s:set_entry(RV, level, good)
  end
  -- PS in the top-level entry is reserved.
  local top = s:entry(RV, levels)
  s:set_entry(RV, levels, top | PTE.PS)
  c:invlpg(RV)
  pf_is(PF.P | PF.RSVD, RV, mode .. ": PS in the " .. (levels == 4 and "PML4E" or "PML5E"), c:read(RV))
  if levels == 5 then
    local pml4e = s:entry(RV, 4)
    s:set_entry(RV, 5, top)
    s:set_entry(RV, 4, pml4e | PTE.PS)
    c:invlpg(RV)
    pf_is(PF.P | PF.RSVD, RV, mode .. ": PS in the PML4E (5-level)", c:read(RV))
    s:set_entry(RV, 4, pml4e)
  end
  s:set_entry(RV, levels, top)
  c:invlpg(RV)
  ok_is(rf, mode .. ": RV restored", c:translate(RV, "read"))
  -- Bit 63 with NXE = 0 is reserved; with NXE = 1 it is XD.
  s:set_entry(RV, 1, s:entry(RV, 1) | PTE.NX)
  c:invlpg(RV)
  ok_is(rf, mode .. ": XD page read with NXE=1", c:translate(RV, "read"))
  S.expect_ok(c:set{ nxe = false })
  c:invlpg(RV)
  pf_is(PF.P | PF.RSVD, RV, mode .. ": bit 63 with NXE=0", c:read(RV))
  S.expect_ok(c:set{ nxe = true })

  ---------------------------------------------------------------- other MAXPHYADDR values
  for _, m in ipairs{ 40, 52 } do
    local vmm = S.vm{ policy = "bare-metal",  mode = mode, maxphyaddr = m }
    local cm = vmm.vcpu[1]
    local t = vmm:space{}
    local g = vmm:alloc_frame{}
    t:map(VA, g)
    S.expect_ok(cm:load_cr3(t))
    gp_is(mode .. " M=" .. m .. ": CR3 bit " .. m, cm:load_cr3(t.cr3 | (1 << m)))
    if m < 52 then
      gp_is(mode .. " M=" .. m .. ": CR3 bit 51", cm:load_cr3(t.cr3 | (1 << 51)))
      local pte = t:entry(VA, 1)
      t:set_entry(VA, 1, pte | (1 << m))
      cm:invlpg(VA)
      pf_is(PF.P | PF.RSVD, VA, mode .. " M=" .. m .. ": PTE bit " .. m, cm:read(VA))
      t:set_entry(VA, 1, pte | (1 << (m - 1)))
      cm:invlpg(VA)
      ok_is(g | (1 << (m - 1)), mode .. " M=" .. m .. ": PTE bit " .. (m - 1) .. " is an address bit",
            cm:translate(VA, "read"))
    else
      local pte = t:entry(VA, 1)
      t:set_entry(VA, 1, pte | (1 << 51))
      cm:invlpg(VA)
      ok_is(g | (1 << 51), mode .. " M=52: PTE bit 51 is an address bit", cm:translate(VA, "read"))
    end
    S.expect_eq(cm:regs().cr3, t.cr3, mode .. " M=" .. m .. ": CR3 unchanged")
  end
end

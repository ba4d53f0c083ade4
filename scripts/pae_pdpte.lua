-- runs under: every policy
-- pae_pdpte.lua -- the PAE PDPTE registers (Intel SDM vol. 3A 4.4.1, 4.4.2,
-- Table 4-7/4-8; MOV CR #GP conditions in vol. 2).
--
-- What it proves (PAE paging):
--  * The four PDPTEs are loaded into registers by MOV to CR3; changing a PDPTE
--    in memory has no effect on translation -- not even after INVLPG, INVPCID
--    (all contexts, globals included) or a CR0.WP change -- until the PDPTEs
--    are loaded again.
--  * They are loaded again by MOV to CR3, and by MOV to CR4 changing PGE, PSE or
--    SMEP (in either direction).
--  * MOV to CR3 is #GP(0) when a present PDPTE has a reserved bit set (bits 2:1,
--    8:5, 63 -- XD is reserved in a PDPTE even with NXE = 1 -- and bits 63:M with
--    M = MAXPHYADDR); the failed MOV leaves CR3, the PDPTE registers and the TLB
--    as they were. PWT, PCD and the ignored bits 11:9 are not reserved; a PDPTE
--    with P = 0 is not checked at all. A MOV to CR4 that would reload such
--    PDPTEs is #GP too and leaves CR4 unchanged.
--  * A not-present PDPTE register gives #PF with P = 0 (W/U as the access says).
--  * CR3 bits 4:0 are ignored: the PDPT is 32-byte aligned, not page aligned.
-- Runs under every policy: a shadow MMU must follow the PDPTE registers too (a MOV to
-- CR4 that reloads them with other values leaves its PAE root stale otherwise).
local S = shadowsim
local PTE, PF = S.PTE, S.PF

local read_is = S.expect_read

local pf_is = S.expect_fault

local delta_is = S.expect_delta

local vm = S.vm{ mode = "pae" }
local c = vm.vcpu[1]
local s, s2 = vm:space{}, vm:space{}
local VA, VA2 = 0x00400000, 0x00401000         -- both under PDPTE 0
local f = {}
for i = 1, 4 do f[i] = vm:alloc_frame{}; vm:write_phys(f[i], 0x9900 + i, 8) end
s:map(VA, f[1]); s:map(VA2, f[3])
s2:map(VA, f[2]); s2:map(VA2, f[4])
local own, other = s:entry(VA, 3), s2:entry(VA, 3)      -- s's and s2's PDPTE 0
S.expect_eq(own & PTE.P, PTE.P, "s PDPTE 0 present")
S.expect_ne(own, other, "the spaces have different page directories")
S.expect_ok(c:load_cr3(s))
read_is(c, VA, f[1], 0x9901, "s, VA")

---------------------------------------------------------------- memory change alone does nothing
s:set_entry(VA, 3, other)                      -- PDPTE 0 of s now names s2's PD
S.expect_eq(s:entry(VA, 3), other, "PDPTE 0 changed in memory")
c:invlpg(VA)
read_is(c, VA, f[1], 0x9901, "after INVLPG the walk still uses the PDPTE register")
read_is(c, VA2, f[3], 0x9903, "a never-cached address also uses the PDPTE register")
S.expect_ok(c:invpcid(2))
read_is(c, VA, f[1], 0x9901, "INVPCID type 2 does not reload the PDPTEs")
S.expect_ok(c:set{ wp = false }); S.expect_ok(c:set{ wp = true })
c:invlpg(VA)
read_is(c, VA, f[1], 0x9901, "a CR0.WP change does not reload the PDPTEs")

---------------------------------------------------------------- MOV to CR3 loads them
S.expect_ok(c:load_cr3(s))
read_is(c, VA, f[2], 0x9902, "MOV CR3 loaded the new PDPTE 0")
read_is(c, VA2, f[4], 0x9904, "MOV CR3 loaded the new PDPTE 0 (VA2)")

---------------------------------------------------------------- MOV to CR4 (PGE, PSE, SMEP) loads them
local pse_on = c:regs().cr4 & (1 << 4) ~= 0      -- toggled twice, whatever it is now
local reloads = {
  { set = { pge = false }, what = "PGE 1->0" }, { set = { pge = true }, what = "PGE 0->1" },
  { set = { pse = not pse_on }, what = "PSE toggled" }, { set = { pse = pse_on }, what = "PSE toggled back" },
  { set = { smep = true }, what = "SMEP 0->1" }, { set = { smep = false }, what = "SMEP 1->0" },
}
local current = other
for i, r in ipairs(reloads) do
  local nextv = (current == other) and own or other
  local want, want2 = (nextv == own) and f[1] or f[2], (nextv == own) and f[3] or f[4]
  local have = (current == own) and f[1] or f[2]
  s:set_entry(VA, 3, nextv)
  c:invlpg(VA)
  read_is(c, VA, have, nil, r.what .. ": before the MOV to CR4 the old PDPTE is used")
  S.expect_ok(c:set(r.set))
  c:invlpg(VA); c:invlpg(VA2)
  read_is(c, VA, want, nil, r.what .. ": MOV to CR4 reloaded PDPTE 0")
  read_is(c, VA2, want2, nil, r.what .. ": MOV to CR4 reloaded PDPTE 0 (VA2)")
  current = nextv
end
-- SMAP is not in the list: no reload.
local nextv = (current == other) and own or other
s:set_entry(VA, 3, nextv)
S.expect_ok(c:set{ smap = true }); S.expect_ok(c:set{ smap = false })
c:invlpg(VA)
read_is(c, VA, (current == own) and f[1] or f[2], nil, "a CR4.SMAP change does not reload the PDPTEs")
s:set_entry(VA, 3, own)
S.expect_ok(c:load_cr3(s))
read_is(c, VA, f[1], 0x9901, "back to s's own PD")

---------------------------------------------------------------- reserved bits: MOV CR3 #GP
local VB = 0x40000000                           -- PDPTE 1
local good1 = s:entry(VB, 3)
local bad_bits = { 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 63, 1 << 46, 1 << 51 }
for _, bit in ipairs(bad_bits) do
  s:set_entry(VB, 3, good1 | bit)
  s:set_entry(VA, 3, other)                     -- would change VA's translation if loaded
  local before = c:counters()
  S.expect_gp(c:load_cr3(s))
  delta_is(before, c:counters(), { gp = 1, tlb_flush_pcid = 0 }, "PDPTE bit " .. S.hex(bit) .. ": #GP counted, no flush")
  S.expect_eq(c:regs().cr3, s.cr3, "PDPTE bit " .. S.hex(bit) .. ": CR3 unchanged")
  c:invlpg(VA)
  read_is(c, VA, f[1], 0x9901, "PDPTE bit " .. S.hex(bit) .. ": old PDPTE registers still in use")
  -- The same PDPTE makes a reloading MOV to CR4 fault, with CR4 unchanged.
  local cr4 = c:regs().cr4
  S.expect_gp(c:set{ pge = false })
  S.expect_eq(c:regs().cr4, cr4, "PDPTE bit " .. S.hex(bit) .. ": CR4 unchanged after the #GP")
  read_is(c, VA, f[1], 0x9901, "PDPTE bit " .. S.hex(bit) .. ": PDPTE registers unchanged by the failed MOV CR4")
  s:set_entry(VA, 3, own)
end
-- Not reserved: PWT, PCD, ignored bits 11:9, address bit 45 (below MAXPHYADDR 46).
for _, bit in ipairs{ PTE.PWT, PTE.PCD, 1 << 9, 1 << 10, 1 << 11 } do
  s:set_entry(VB, 3, good1 | bit)
  S.expect_eq(S.expect_ok(c:load_cr3(s)), true, "PDPTE bit " .. S.hex(bit) .. " is not reserved")
end
s:set_entry(VB, 3, (1 << 45) | PTE.P)
S.expect_ok(c:load_cr3(s))                      -- address bits below MAXPHYADDR are fine
-- A not-present PDPTE is not checked, and gives #PF(P=0).
s:set_entry(VB, 3, 0xFFFFFFFFFFFFFFFE)          -- every bit but P
S.expect_ok(c:load_cr3(s))
pf_is(0, VB + 0x123, "not-present PDPTE: CPL0 read", c:read(VB + 0x123))
pf_is(PF.W | PF.U, VB + 0x123, "not-present PDPTE: CPL3 write", c:write(VB + 0x123, 1, 8, 3))
pf_is(PF.I, VB, "not-present PDPTE: fetch (NXE=1 -> I/D)", c:fetch(VB))
s:set_entry(VB, 3, good1)
S.expect_ok(c:load_cr3(s))
read_is(c, VA, f[1], 0x9901, "all PDPTEs good again")

---------------------------------------------------------------- MAXPHYADDR 36
do
  local vm36 = S.vm{ mode = "pae", maxphyaddr = 36 }
  local c36 = vm36.vcpu[1]
  local t = vm36:space{}
  local g = t:entry(VB, 3)
  t:set_entry(VB, 3, g | (1 << 36))
  S.expect_gp(c36:load_cr3(t))
  t:set_entry(VB, 3, g | (1 << 35))
  S.expect_ok(c36:load_cr3(t))                  -- bit 35 is an address bit with M = 36
  t:set_entry(VB, 3, g)
end

---------------------------------------------------------------- CR3 bits 4:0 ignored, 32-byte PDPT
S.expect_ok(c:load_cr3(s.cr3 | 0x1F))
S.expect_eq(c:regs().cr3, s.cr3 | 0x1F, "CR3 keeps bits 4:0")
c:invlpg(VA)
read_is(c, VA, f[1], 0x9901, "CR3 bits 4:0 ignored")
-- A second PDPT in the same frame, at offset 0x20: s2's PDPTE 0, then s's 1..3.
local pdpt2 = s.cr3 + 0x20
vm:write_phys(pdpt2, other, 8)
for i = 1, 3 do vm:write_phys(pdpt2 + 8 * i, vm:read_phys(s.cr3 + 8 * i, 8), 8) end
S.expect_ok(c:load_cr3(pdpt2))
read_is(c, VA, f[2], 0x9902, "PDPT at a 32-byte (not 4 KiB) aligned address")
read_is(c, vm:physmap(f[4]), f[4], 0x9904, "kernel half through PDPTE 3 of the second PDPT")
S.expect_ok(c:load_cr3(s))
read_is(c, VA, f[1], 0x9901, "back to the first PDPT")

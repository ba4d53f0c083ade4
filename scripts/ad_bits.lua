-- ad_bits.lua -- accessed and dirty flags in guest memory (Intel SDM vol. 3A 4.8,
-- 4.10.2, 4.10.4.3), with 4 KiB pages in legacy32, pae, long4 and long5.
--
-- What it proves, per mode:
--  * A read walk sets A in every paging-structure entry of the path (PAE: every
--    entry but the PDPTE, which has no A flag -- bits 8:5 of a PDPTE are reserved
--    and stay 0), and sets no D anywhere.
--  * A write sets D in the leaf PTE only; the entries above keep D = 0.
--  * A write through a TLB entry that a read cached (D = 0 then) walks again and
--    sets D; once D is cached, writes are plain TLB hits.
--  * A write that needs a fresh walk sets A and D in the leaf in one update.
--  * Entries whose A/D are already set are not written again.
--  * TLB hits do not set A/D: after software clears A (or D) in a cached leaf, the
--    flag stays clear until the entry is invalidated and walked again.
--  * A faulting access leaves the leaf untouched: user write to a read-only page,
--    user read of a supervisor page, supervisor write to a read-only page with
--    CR0.WP = 1, fetch from an XD page.
--  * An access that crosses a page boundary sets D in both leaves.
--  * Counters: reads/writes, tlb_hits, tlb_misses, walks and ad_updates move by
--    exactly what each access implies.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local PTE, PF = S.PTE, S.PF

local delta_is = S.expect_delta

local pf_is = S.expect_fault

local LEVELS = { legacy32 = 2, pae = 3, long4 = 4, long5 = 5 }

for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local top = LEVELS[mode]
  local walked = mode == "pae" and top - 1 or top   -- entries read from memory by a walk
  local f = vm:alloc_frame{}
  local VA = 0x00400000
  s:map(VA, f)
  S.expect_ok(c:load_cr3(s))
  local pdpte = mode == "pae" and s:entry(VA, 3) or nil
  for l = top, 1, -1 do
    if not (mode == "pae" and l == 3) then
      S.expect_eq(s:entry(VA, l) & (PTE.A | PTE.D), 0, mode .. ": A/D clear at level " .. l .. " before any access")
    end
  end

  ---------------------------------------------------------------- read: A everywhere, no D
  local before = c:counters()
  S.expect_ok(c:read(VA))
  delta_is(before, c:counters(), { reads = 1, walks = 1, tlb_misses = 1, tlb_hits = 0, ad_updates = walked },
           mode .. ": first read walks and sets A in " .. walked .. " entries")
  for l = top, 1, -1 do
    local e = s:entry(VA, l)
    if mode == "pae" and l == 3 then
      S.expect_eq(e, pdpte, mode .. ": the PAE PDPTE is not written by a walk")
    else
      S.expect_eq(e & PTE.A, PTE.A, mode .. ": A set at level " .. l .. " by a read")
      S.expect_eq(e & PTE.D, 0, mode .. ": no D at level " .. l .. " after a read")
    end
  end
  before = c:counters()
  S.expect_ok(c:read(VA + 8))
  delta_is(before, c:counters(), { tlb_hits = 1, walks = 0, ad_updates = 0 }, mode .. ": second read is a hit")

  ---------------------------------------------------------------- write through the read's entry
  before = c:counters()
  S.expect_eq(S.expect_ok(c:write(VA + 16, 0xABCD)), f + 16, mode .. ": write gpa")
  delta_is(before, c:counters(), { writes = 1, walks = 1, tlb_misses = 1, tlb_hits = 0, ad_updates = 1 },
           mode .. ": write through a clean entry re-walks and sets D once")
  S.expect_eq(s:entry(VA, 1) & (PTE.A | PTE.D), PTE.A | PTE.D, mode .. ": D set in the PTE")
  for l = top, 2, -1 do
    if not (mode == "pae" and l == 3) then
      S.expect_eq(s:entry(VA, l) & PTE.D, 0, mode .. ": no D above the leaf (level " .. l .. ")")
    end
  end
  if pdpte then S.expect_eq(s:entry(VA, 3), pdpte, mode .. ": PDPTE unchanged by the write") end
  S.expect_eq(vm:read_phys(f + 16, 8), 0xABCD, mode .. ": data written")
  before = c:counters()
  S.expect_ok(c:write(VA + 24, 1))
  S.expect_ok(c:read(VA + 24))
  delta_is(before, c:counters(), { tlb_hits = 2, walks = 0, ad_updates = 0 }, mode .. ": dirty entry: write and read hit")

  ---------------------------------------------------------------- fresh write: A and D together
  local f2 = vm:alloc_frame{}
  s:map(VA + 0x1000, f2)
  before = c:counters()
  S.expect_ok(c:write(VA + 0x1000, 7))
  delta_is(before, c:counters(), { walks = 1, ad_updates = 1 }, mode .. ": first access a write: one leaf update")
  S.expect_eq(s:entry(VA + 0x1000, 1) & (PTE.A | PTE.D), PTE.A | PTE.D, mode .. ": A and D set by the write")

  ---------------------------------------------------------------- already set: nothing to write
  local f3 = vm:alloc_frame{}
  s:map(VA + 0x2000, f3, { accessed = true, dirty = true })
  local e3 = s:entry(VA + 0x2000, 1)
  before = c:counters()
  S.expect_ok(c:write(VA + 0x2000, 9))
  delta_is(before, c:counters(), { walks = 1, ad_updates = 0 }, mode .. ": A and D already set: no update")
  S.expect_eq(s:entry(VA + 0x2000, 1), e3, mode .. ": leaf unchanged")

  ---------------------------------------------------------------- hits do not set A or D
  s:set_entry(VA, 1, s:entry(VA, 1) & ~(PTE.A | PTE.D))   -- software clears A and D
  S.expect_ok(c:read(VA))
  S.expect_ok(c:write(VA, 3))
  S.expect_eq(s:entry(VA, 1) & (PTE.A | PTE.D), 0, mode .. ": TLB hits leave the cleared A/D alone")
  c:invlpg(VA)
  S.expect_ok(c:read(VA))
  S.expect_eq(s:entry(VA, 1) & (PTE.A | PTE.D), PTE.A, mode .. ": after INVLPG a read walk sets A again")
  S.expect_ok(c:write(VA, 4))
  S.expect_eq(s:entry(VA, 1) & (PTE.A | PTE.D), PTE.A | PTE.D, mode .. ": and a write sets D again")

  ---------------------------------------------------------------- faulting accesses leave the leaf alone
  local ro, sup, nx = VA + 0x3000, VA + 0x4000, VA + 0x5000
  s:map(ro, vm:alloc_frame{}, { write = false })
  s:map(sup, vm:alloc_frame{}, { user = false })
  local e_ro, e_sup = s:entry(ro, 1), s:entry(sup, 1)
  before = c:counters()
  pf_is(PF.P | PF.W | PF.U, ro, mode .. ": user write to RO page", c:write(ro, 1, 8, 3))
  pf_is(PF.P | PF.W, ro, mode .. ": CPL0 write to RO page (WP=1)", c:write(ro, 1, 8, 0))
  pf_is(PF.P | PF.U, sup, mode .. ": user read of supervisor page", c:read(sup, 8, 3))
  pf_is(PF.P | PF.W | PF.U, sup, mode .. ": user write to supervisor page", c:write(sup, 1, 8, 3))
  delta_is(before, c:counters(), { pf_protection = 4, ad_updates = 0 }, mode .. ": protection faults set no flag")
  S.expect_eq(s:entry(ro, 1), e_ro, mode .. ": RO leaf untouched by faulting writes")
  S.expect_eq(s:entry(sup, 1), e_sup, mode .. ": supervisor leaf untouched by faulting user accesses")
  S.expect_eq(e_ro & (PTE.A | PTE.D), 0, mode .. ": (no A/D in the RO leaf)")
  if mode ~= "legacy32" then
    s:map(nx, vm:alloc_frame{}, { nx = true })
    local e_nx = s:entry(nx, 1)
    pf_is(PF.P | PF.I, nx, mode .. ": fetch from XD page", c:fetch(nx))
    S.expect_eq(s:entry(nx, 1), e_nx, mode .. ": XD leaf untouched by the faulting fetch")
  end
  -- A permitted access to those pages sets A (and D) as usual.
  S.expect_ok(c:read(ro, 8, 3))
  S.expect_eq(s:entry(ro, 1) & (PTE.A | PTE.D), PTE.A, mode .. ": user read of the RO page sets A only")
  S.expect_ok(c:write(sup, 5, 8, 0))
  S.expect_eq(s:entry(sup, 1) & (PTE.A | PTE.D), PTE.A | PTE.D, mode .. ": CPL0 write to the supervisor page sets A and D")

  ---------------------------------------------------------------- page-crossing write
  local x = VA + 0x6000
  local fa, fb = vm:alloc_frame{}, vm:alloc_frame{}
  s:map(x, fa); s:map(x + 0x1000, fb)
  before = c:counters()
  S.expect_eq(S.expect_ok(c:write(x + 0xFFC, 0x1122334455667788)), fa + 0xFFC, mode .. ": split write gpa")
  delta_is(before, c:counters(), { writes = 1, walks = 2, ad_updates = 2 }, mode .. ": split write walks both pages")
  S.expect_eq(s:entry(x, 1) & (PTE.A | PTE.D), PTE.A | PTE.D, mode .. ": D in the first page's PTE")
  S.expect_eq(s:entry(x + 0x1000, 1) & (PTE.A | PTE.D), PTE.A | PTE.D, mode .. ": D in the second page's PTE")
  S.expect_eq(vm:read_phys(fa + 0xFFC, 4), 0x55667788, mode .. ": low half in the first frame")
  S.expect_eq(vm:read_phys(fb, 4), 0x11223344, mode .. ": high half in the second frame")
  S.expect_eq(S.expect_ok(c:read(x + 0xFFC)), 0x1122334455667788, mode .. ": split read")
end

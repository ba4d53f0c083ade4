-- tlb_global.lua -- global pages and CR4.PGE (Intel SDM vol. 3A 4.10.2.4, 4.10.4.1),
-- in legacy32, pae, long4 and long5 paging.
--
-- What it proves, per mode:
--  * With CR4.PGE = 1, a translation from a leaf with G = 1 is global: it survives
--    flushing MOV to CR3 loads into another space that maps the same VA to another
--    frame (the global translation keeps being used), and back again.
--  * INVLPG of the page removes the global translation, even when executed while
--    another address space is current; so does a #PF caused by the global entry
--    (a stale read-only global translation faults once, the retry succeeds).
--  * Changing CR4.PGE (1 -> 0 and 0 -> 1) flushes every TLB entry, global or not.
--  * With CR4.PGE = 0 the G bit has no effect: a flushing MOV to CR3 removes the
--    translation of a G = 1 leaf.
--  * G only matters in the leaf: G set in a PDE that references a page table does
--    not make the 4 KiB translation global (the bit is ignored there).
--  * (long4/long5) the same for a global supervisor page in the kernel half.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local PTE = S.PTE

local read_is = S.expect_read

local delta_is = S.expect_delta

local GVA = 0x00400000   -- global in s1, non-global (other frame) in s2
local NVA = 0x00800000   -- non-global in both, its own page table
local KVA = { long4 = 0xFFFFC90000001000, long5 = 0xFF91000000001000 }

for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode, name = mode }       -- pge = true by default
  local c = vm.vcpu[1]
  S.expect_eq(c:regs().cr4 & 0x80, 0x80, mode .. ": CR4.PGE set at boot")
  local s1, s2 = vm:space{}, vm:space{}
  local f = {}
  for i = 1, 4 do f[i] = vm:alloc_frame{}; vm:write_phys(f[i], 0x6B00 + i, 8) end
  local M = function(i) return 0x6B00 + i end

  s1:map(GVA, f[1], { global = true })
  s2:map(GVA, f[2])
  s1:map(NVA, f[3])
  s2:map(NVA, f[4])
  S.expect_eq(s1:entry(GVA, 1) & PTE.G, PTE.G, mode .. ": s1 leaf has G")
  S.expect_eq(s2:entry(GVA, 1) & PTE.G, 0, mode .. ": s2 leaf has no G")

  ------------------------------------------------------------ global survives MOV CR3
  S.expect_ok(c:load_cr3(s1))
  read_is(c, GVA, f[1], M(1), mode .. ": s1 global page")
  read_is(c, NVA, f[3], M(3), mode .. ": s1 non-global page")
  S.expect_ok(c:load_cr3(s2))
  local before = c:counters()
  read_is(c, GVA, f[1], M(1), mode .. ": in s2 the global translation of s1 is still used")
  delta_is(before, c:counters(), { tlb_hits = 1, walks = 0 }, mode .. ": global hit")
  read_is(c, NVA, f[4], M(4), mode .. ": in s2 the non-global page was flushed")
  S.expect_ok(c:load_cr3(s1))
  S.expect_ok(c:load_cr3(s2))
  read_is(c, GVA, f[1], M(1), mode .. ": global survives several CR3 loads")
  ------------------------------------------------------------ INVLPG removes it (from s2)
  c:invlpg(GVA + 0xFF8)
  read_is(c, GVA, f[2], M(2), mode .. ": INVLPG removed the global translation; s2's PTE is used")
  S.expect_ok(c:load_cr3(s1))
  read_is(c, GVA, f[1], M(1), mode .. ": s1 again")

  ------------------------------------------------------------ PGE 1 -> 0 flushes globals
  S.expect_ok(c:load_cr3(s2))
  read_is(c, GVA, f[1], M(1), mode .. ": global cached again")
  before = c:counters()
  S.expect_eq(S.expect_ok(c:set{ pge = false }), true, mode .. ": clear PGE")
  delta_is(before, c:counters(), { tlb_flush_all = 1 }, mode .. ": PGE change is a full flush")
  S.expect_eq(c:regs().cr4 & 0x80, 0, mode .. ": CR4.PGE clear")
  read_is(c, GVA, f[2], M(2), mode .. ": clearing CR4.PGE flushed the global translation")

  ------------------------------------------------------------ PGE = 0: G has no effect
  S.expect_ok(c:load_cr3(s1))
  read_is(c, GVA, f[1], M(1), mode .. ": s1 G=1 page with PGE=0")
  S.expect_ok(c:load_cr3(s2))
  read_is(c, GVA, f[2], M(2), mode .. ": with PGE=0 MOV CR3 flushed the G=1 translation")

  ------------------------------------------------------------ PGE 0 -> 1 flushes too
  S.expect_ok(c:load_cr3(s1))
  read_is(c, GVA, f[1], M(1), mode .. ": s1 page cached (as non-global)")
  read_is(c, NVA, f[3], M(3), mode .. ": s1 NVA cached")
  s1:map(NVA, f[2])                             -- stale from now on
  read_is(c, NVA, f[3], M(3), mode .. ": NVA stale")
  s1:map(GVA, f[4], { global = true })
  read_is(c, GVA, f[1], M(1), mode .. ": GVA stale")
  before = c:counters()
  S.expect_ok(c:set{ pge = true })
  delta_is(before, c:counters(), { tlb_flush_all = 1 }, mode .. ": PGE 0->1 is a full flush")
  read_is(c, NVA, f[2], M(2), mode .. ": setting CR4.PGE flushed the non-global entry")
  read_is(c, GVA, f[4], M(4), mode .. ": setting CR4.PGE flushed the G=1 entry cached under PGE=0")
  S.expect_ok(c:load_cr3(s2))
  read_is(c, GVA, f[4], M(4), mode .. ": now global again: survives the switch to s2")
  c:invlpg(GVA)
  read_is(c, GVA, f[2], M(2), mode .. ": INVLPG")

  ------------------------------------------------------------ G in a non-leaf entry is ignored
  S.expect_ok(c:load_cr3(s1))
  local pde = s1:entry(NVA, 2)
  S.expect_eq(pde & PTE.PS, 0, mode .. ": NVA's PDE references a page table")
  s1:set_entry(NVA, 2, pde | PTE.G)
  c:invlpg(NVA)
  read_is(c, NVA, f[2], M(2), mode .. ": s1 NVA through a PDE with G=1")
  S.expect_ok(c:load_cr3(s2))
  read_is(c, NVA, f[4], M(4), mode .. ": G in the PDE did not make the 4K translation global")

  ------------------------------------------------------------ a #PF invalidates a global entry too
  -- R/W 0 -> 1 on a global page: the stale global entry may fault once; the #PF
  -- removes it (4.10.4.1: a page fault invalidates the TLB entries for the page
  -- number, so that it does not recur), and the retry succeeds without INVLPG,
  -- also after a switch to a space whose PTE is the same.
  do
    local RVA = 0x00407000
    s1:map(RVA, f[1], { global = true, write = false, dirty = true })
    s2:map(RVA, f[1], { global = true, write = true, dirty = true })
    S.expect_ok(c:load_cr3(s1))
    read_is(c, RVA, f[1], nil, mode .. ": global RO page cached")
    S.expect_ok(c:load_cr3(s2))
    local w, fault = c:write(RVA, 0x55)
    S.expect_eq(w, nil, mode .. ": write through the stale global RO entry faults")
    S.expect_eq(fault.error_code, S.PF.P | S.PF.W, mode .. ": error code P|W")
    S.expect_eq(S.expect_ok(c:write(RVA, 0x55)), f[1], mode .. ": retry without INVLPG succeeds")
    vm:write_phys(f[1], M(1), 8)
  end

  ------------------------------------------------------------ kernel-half global page (long modes)
  if KVA[mode] then
    local kva = KVA[mode]
    s1:map(kva, f[3], { user = false, global = true })
    s2:map(kva, f[4], { user = false })
    S.expect_ok(c:load_cr3(s1))
    read_is(c, kva, f[3], M(3), mode .. ": kernel-half global page in s1")
    S.expect_ok(c:load_cr3(s2))
    read_is(c, kva, f[3], M(3), mode .. ": kernel-half global page survives MOV CR3")
    c:invlpg(kva)
    read_is(c, kva, f[4], M(4), mode .. ": INVLPG removed the kernel-half global page")
    S.expect_ok(c:load_cr3(s1))
    read_is(c, kva, f[3], M(3), mode .. ": cached again")
    S.expect_ok(c:set{ pge = false })
    S.expect_ok(c:load_cr3(s2))
    read_is(c, kva, f[4], M(4), mode .. ": PGE toggle flushed the kernel-half global page")
    S.expect_ok(c:set{ pge = true })
  end
end

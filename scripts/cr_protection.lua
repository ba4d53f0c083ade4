-- runs under: every policy
-- cr_protection.lua -- access rights and the control bits that shape them:
-- CR0.WP, CR4.SMEP, CR4.SMAP with RFLAGS.AC, IA32_EFER.NXE and XD (Intel SDM
-- vol. 3A 4.6, 4.7), in legacy32, pae, long4 and long5.
--
-- What it proves, per mode:
--  * CR0.WP = 1: a supervisor write to a read-only page (user or supervisor) is
--    #PF with error code 0x3 (P|W); CR0.WP = 0 lets it through and the data lands;
--    user writes to read-only pages fault (0x7) whatever WP says. A WP change acts
--    on the next access, also through a cached translation.
--  * Rights combine over the levels: R/W = 0 or U/S = 0 in a PDE restricts the
--    4 KiB pages below it even if their PTEs allow more.
--  * CR4.SMEP = 1: a supervisor fetch from a user page is #PF 0x11 (P|I/D);
--    supervisor fetches from supervisor pages, user fetches and supervisor reads
--    of user pages are unaffected.
--  * CR4.SMAP = 1: supervisor reads (0x1) and writes (0x3) of user pages fault
--    unless RFLAGS.AC = 1; user accesses and supervisor fetches are unaffected.
--  * XD (pae/long, EFER.NXE = 1): a fetch from a page with XD = 1 at any level
--    is #PF with I/D set (0x11 supervisor, 0x15 user); reads are fine. With
--    NXE = 0, bit 63 is reserved: #PF with RSVD (and no I/D unless SMEP = 1).
--  * The I/D bit is reported for a fetch only when SMEP = 1 or (PAE-style paging
--    and NXE = 1): legacy32 fetches from a not-present page fault with 0 (0x10
--    with SMEP); pae/long with NXE = 1 with 0x10.
-- Runs under every policy: a hypervisor must give the guest these rights whatever it
-- caches. One exception, in the NXE = 0 part: KVM's shadow MMU builds its sptes as if
-- EFER.NX were always 1 (its root role forces it), so the sptes of XD pages survive the
-- guest clearing NXE, and an access through one does not take the reserved-bit fault
-- x86 requires. The engine models KVM, the checker would report it, so that part runs
-- only where nothing shadows the guest's tables (bare metal, nested paging).
local S = shadowsim
local PTE, PF = S.PTE, S.PF

local function ok_is(gpa, what, first, fault)
  if first == nil then error(what .. ": expected success at gpa " .. S.hex(gpa) .. ", got " .. fault.text, 2) end
  if first ~= gpa then error(what .. ": expected gpa " .. S.hex(gpa) .. ", got " .. S.hex(first), 2) end
end

local pf_is = S.expect_fault

local CR0_WP, CR4_SMEP, CR4_SMAP, EFER_NXE = 1 << 16, 1 << 20, 1 << 21, 1 << 11

for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ mode = mode }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local wide = mode ~= "legacy32"
  local base = 0x00400000
  local pages = { "URO", "URW", "SRO", "SRW", "UNX", "SNX", "UX" }
  local va, gpa = {}, {}
  for i, name in ipairs(pages) do va[name] = base + (i - 1) * 0x1000; gpa[name] = vm:alloc_frame{} end
  s:map(va.URO, gpa.URO, { write = false, user = true })
  s:map(va.URW, gpa.URW, { write = true, user = true })
  s:map(va.SRO, gpa.SRO, { write = false, user = false })
  s:map(va.SRW, gpa.SRW, { write = true, user = false })
  if wide then
    s:map(va.UNX, gpa.UNX, { nx = true, user = true })
    s:map(va.SNX, gpa.SNX, { nx = true, user = false })
  end
  s:map(va.UX, gpa.UX)
  S.expect_ok(c:load_cr3(s))
  local r = c:regs()
  S.expect_eq(r.cr0 & CR0_WP, CR0_WP, mode .. ": CR0.WP set at boot")
  S.expect_eq(r.cr4 & (CR4_SMEP | CR4_SMAP), 0, mode .. ": SMEP/SMAP clear at boot")
  S.expect_eq(r.efer & EFER_NXE, EFER_NXE, mode .. ": EFER.NXE set at boot (nxe = true)")

  ---------------------------------------------------------------- CR0.WP
  pf_is(PF.P | PF.W, va.URO, mode .. ": WP=1 CPL0 write to user RO", c:write(va.URO, 1))
  pf_is(PF.P | PF.W, va.SRO, mode .. ": WP=1 CPL0 write to supervisor RO", c:write(va.SRO, 1))
  ok_is(gpa.URW, mode .. ": CPL0 write to user RW", c:write(va.URW, 1))
  ok_is(gpa.SRW, mode .. ": CPL0 write to supervisor RW", c:write(va.SRW, 1))
  S.expect_eq(S.expect_ok(c:set{ wp = false }), true, mode .. ": clear WP")
  S.expect_eq(c:regs().cr0 & CR0_WP, 0, mode .. ": CR0.WP clear")
  ok_is(gpa.URO + 8, mode .. ": WP=0 CPL0 write to user RO", c:write(va.URO + 8, 0x1234))
  ok_is(gpa.SRO + 8, mode .. ": WP=0 CPL0 write to supervisor RO", c:write(va.SRO + 8, 0x5678))
  S.expect_eq(vm:read_phys(gpa.URO + 8, 8), 0x1234, mode .. ": WP=0 write landed (user RO)")
  S.expect_eq(vm:read_phys(gpa.SRO + 8, 8), 0x5678, mode .. ": WP=0 write landed (supervisor RO)")
  pf_is(PF.P | PF.W | PF.U, va.URO, mode .. ": WP=0 user write to RO still faults", c:write(va.URO, 1, 8, 3))
  -- The page the supervisor wrote through WP = 0 is still a user page for reads (a
  -- shadow MMU that made it supervisor-only must fix the user read's fault).
  S.expect_read(c, va.URO + 8, gpa.URO + 8, 0x1234, mode .. ": WP=0: user read after the supervisor write", 3)
  S.expect_ok(c:write(va.SRO + 8, 0x9999))                 -- cached now, with D = 1
  S.expect_ok(c:set{ wp = true })
  pf_is(PF.P | PF.W, va.SRO + 8, mode .. ": WP=1 again acts on the cached translation", c:write(va.SRO + 8, 2))
  S.expect_eq(vm:read_phys(gpa.SRO + 8, 8), 0x9999, mode .. ": the refused write stored nothing")

  ---------------------------------------------------------------- rights combine over levels
  do
    local cva = 0x00800000                         -- its own page table
    local cf = vm:alloc_frame{}
    s:map(cva, cf, { write = true, user = true })
    local pde = s:entry(cva, 2)
    s:set_entry(cva, 2, pde & ~PTE.RW)
    pf_is(PF.P | PF.W | PF.U, cva, mode .. ": PDE R/W=0: user write", c:write(cva, 1, 8, 3))
    pf_is(PF.P | PF.W, cva, mode .. ": PDE R/W=0: CPL0 write with WP=1", c:write(cva, 1))
    ok_is(cf, mode .. ": PDE R/W=0: user read", c:translate(cva, "read", 3))
    S.expect_ok(c:set{ wp = false })
    ok_is(cf, mode .. ": PDE R/W=0: CPL0 write with WP=0", c:write(cva, 1))
    S.expect_ok(c:set{ wp = true })
    s:set_entry(cva, 2, pde & ~PTE.US)
    c:invlpg(cva)
    pf_is(PF.P | PF.U, cva, mode .. ": PDE U/S=0: user read", c:read(cva, 8, 3))
    ok_is(cf, mode .. ": PDE U/S=0: CPL0 write", c:write(cva, 1))
    s:set_entry(cva, 2, pde)
    c:invlpg(cva)
    ok_is(cf, mode .. ": PDE restored: user write", c:write(cva, 1, 8, 3))
  end

  ---------------------------------------------------------------- SMEP
  local fetch_np = (wide and PF.I) or 0     -- I/D on a not-present fetch, SMEP = 0
  pf_is(fetch_np, 0x00C00000, mode .. ": fetch from not-present page, SMEP=0", c:fetch(0x00C00000))
  pf_is(fetch_np | PF.U, 0x00C00000, mode .. ": user fetch from not-present page, SMEP=0", c:fetch(0x00C00000, 3))
  ok_is(gpa.UX, mode .. ": SMEP=0: CPL0 fetch from user page", c:fetch(va.UX))
  S.expect_ok(c:set{ smep = true })
  S.expect_eq(c:regs().cr4 & CR4_SMEP, CR4_SMEP, mode .. ": SMEP set")
  pf_is(PF.P | PF.I, va.UX, mode .. ": SMEP: CPL0 fetch from user page", c:fetch(va.UX))
  pf_is(PF.P | PF.I, va.URO, mode .. ": SMEP: CPL0 fetch from user RO page", c:fetch(va.URO))
  ok_is(gpa.SRW, mode .. ": SMEP: CPL0 fetch from supervisor page", c:fetch(va.SRW))
  ok_is(gpa.UX, mode .. ": SMEP: CPL3 fetch from user page", c:fetch(va.UX, 3))
  ok_is(gpa.UX + 8, mode .. ": SMEP: CPL0 read of user page", c:translate(va.UX + 8, "read", 0))
  ok_is(gpa.UX + 8, mode .. ": SMEP: CPL0 write of user page", c:write(va.UX + 8, 3))
  pf_is(PF.I, 0x00C00000, mode .. ": SMEP=1 reports I/D on a not-present fetch", c:fetch(0x00C00000))
  S.expect_ok(c:set{ smep = false })
  ok_is(gpa.UX, mode .. ": SMEP cleared: CPL0 fetch from user page", c:fetch(va.UX))

  ---------------------------------------------------------------- SMAP
  S.expect_ok(c:set{ smap = true })
  S.expect_eq(c:regs().cr4 & CR4_SMAP, CR4_SMAP, mode .. ": SMAP set")
  S.expect_eq(c:regs().ac, false, mode .. ": AC clear")
  pf_is(PF.P, va.URW, mode .. ": SMAP: CPL0 read of user page", c:read(va.URW))
  pf_is(PF.P | PF.W, va.URW, mode .. ": SMAP: CPL0 write of user page", c:write(va.URW, 1))
  pf_is(PF.P, va.URO + 16, mode .. ": SMAP: CPL0 read of user RO page", c:read(va.URO + 16))
  ok_is(gpa.URW, mode .. ": SMAP: CPL3 read of user page", c:translate(va.URW, "read", 3))
  ok_is(gpa.URW, mode .. ": SMAP: CPL3 write of user page", c:write(va.URW, 5, 8, 3))
  ok_is(gpa.SRW, mode .. ": SMAP: CPL0 read of supervisor page", c:translate(va.SRW, "read", 0))
  ok_is(gpa.UX, mode .. ": SMAP (no SMEP): CPL0 fetch from user page", c:fetch(va.UX))
  S.expect_ok(c:set{ ac = true })
  S.expect_eq(c:regs().ac, true, mode .. ": AC set")
  local v = S.expect_ok(c:read(va.URW))
  S.expect_eq(v, 5, mode .. ": SMAP+AC: CPL0 read of user page returns the data")
  ok_is(gpa.URW + 8, mode .. ": SMAP+AC: CPL0 write of user page", c:write(va.URW + 8, 6))
  pf_is(PF.P | PF.W, va.URO, mode .. ": SMAP+AC: CPL0 write to user RO still needs WP=0", c:write(va.URO, 1))
  -- With WP = 0 it goes through; once AC clears, SMAP must refuse the page again (a
  -- shadow MMU must not have turned it into a supervisor page to allow the write).
  S.expect_ok(c:set{ wp = false })
  ok_is(gpa.URO + 16, mode .. ": SMAP+AC, WP=0: CPL0 write to user RO", c:write(va.URO + 16, 7))
  S.expect_ok(c:set{ ac = false })
  pf_is(PF.P, va.URO + 16, mode .. ": SMAP, WP=0, AC cleared: CPL0 read of that user page", c:read(va.URO + 16))
  S.expect_ok(c:set{ wp = true, ac = true })
  S.expect_ok(c:set{ ac = false })
  pf_is(PF.P, va.URW, mode .. ": AC cleared: the cached translation is refused again", c:read(va.URW))
  S.expect_ok(c:set{ smap = false })
  ok_is(gpa.URW, mode .. ": SMAP cleared", c:translate(va.URW, "read"))

  ---------------------------------------------------------------- XD and EFER.NXE
  if wide then
    pf_is(PF.P | PF.I, va.UNX, mode .. ": CPL0 fetch from user XD page", c:fetch(va.UNX))
    pf_is(PF.P | PF.I | PF.U, va.UNX, mode .. ": CPL3 fetch from user XD page", c:fetch(va.UNX, 3))
    pf_is(PF.P | PF.I, va.SNX, mode .. ": CPL0 fetch from supervisor XD page", c:fetch(va.SNX))
    ok_is(gpa.UNX, mode .. ": read of XD page", c:translate(va.UNX, "read", 3))
    ok_is(gpa.UNX, mode .. ": write of XD page", c:write(va.UNX, 1, 8, 3))
    -- XD in a PDE covers the PTEs below.
    local xva = 0x01000000
    local xf = vm:alloc_frame{}
    s:map(xva, xf)
    ok_is(xf, mode .. ": fetch before PDE XD", c:fetch(xva, 3))
    s:set_entry(xva, 2, s:entry(xva, 2) | PTE.NX)
    c:invlpg(xva)
    pf_is(PF.P | PF.I | PF.U, xva, mode .. ": PDE XD blocks the fetch", c:fetch(xva, 3))
    ok_is(xf, mode .. ": PDE XD: read fine", c:translate(xva, "read", 3))
    -- NXE = 0: bit 63 is reserved (not under a shadow MMU: see the top of the file).
    if S.default_policy == "bare-metal" or S.default_policy == "tdp" then
      S.expect_ok(c:set{ nxe = false })
      S.expect_eq(c:regs().efer & EFER_NXE, 0, mode .. ": NXE clear")
      for _, p in ipairs{ va.UNX, va.SNX, xva } do c:invlpg(p) end
      pf_is(PF.P | PF.RSVD, va.UNX, mode .. ": NXE=0: read of an XD=1 page", c:read(va.UNX))
      pf_is(PF.P | PF.RSVD | PF.U, va.UNX, mode .. ": NXE=0: user fetch of an XD=1 page (no I/D)", c:fetch(va.UNX, 3))
      pf_is(PF.P | PF.RSVD | PF.W, xva, mode .. ": NXE=0: bit 63 in a PDE is reserved too", c:write(xva, 1))
      pf_is(0, 0x00C00000, mode .. ": NXE=0, SMEP=0: no I/D on a not-present fetch", c:fetch(0x00C00000))
      ok_is(gpa.UX, mode .. ": NXE=0: fetch from a page without bit 63", c:fetch(va.UX, 3))
      S.expect_ok(c:set{ smep = true })
      pf_is(PF.P | PF.RSVD | PF.I, va.SNX, mode .. ": NXE=0, SMEP=1: RSVD fetch reports I/D", c:fetch(va.SNX))
      S.expect_ok(c:set{ smep = false, nxe = true })
      c:invlpg(va.UNX)
      ok_is(gpa.UNX, mode .. ": NXE=1 again: read of XD page", c:translate(va.UNX, "read"))
      pf_is(PF.P | PF.I, va.UNX, mode .. ": NXE=1 again: fetch of XD page", c:fetch(va.UNX))
    end
  else
    S.expect_eq(S.expect_error("nx", function() s:map(va.UNX, gpa.UNX, { nx = true }) end) ~= nil, true,
                mode .. ": no XD in 32-bit paging")
  end
end

-- cpl_privilege.lua -- the current privilege level: what paging makes of CPL 1/2,
-- and the privileged paging instructions outside CPL 0 (Intel SDM vol. 3A 4.6;
-- vol. 2 MOV CR, WRMSR, INVLPG, INVPCID: "#GP(0) If the current privilege level
-- is not 0"), in legacy32, pae, long4 and long5.
--
-- What it proves, per mode:
--  * For paging, CPL 0, 1 and 2 are all supervisor mode and CPL 3 is user mode
--    (4.6): at CPL 1/2 supervisor pages are accessible, a write to a read-only
--    page follows CR0.WP (error code without U), SMAP applies; at CPL 3 the
--    supervisor page faults with U set. The vCPU's CPL is the default of accesses.
--  * MOV to CR3, MOV to CR4, MOV to CR0, WRMSR to IA32_EFER, INVLPG and INVPCID
--    executed at CPL 3 (and at CPL 1) are #GP(0) and change nothing: CR3, CR4,
--    CR0 and EFER keep their values, and no TLB entry is invalidated (a stale
--    translation stays in use).
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local PF = S.PF

local read_is = S.expect_read

local pf_is = S.expect_fault

local function gp_is(what, first, fault)
  if first ~= nil then error(what .. ": expected #GP(0), got success (" .. tostring(first) .. ")", 2) end
  if fault.kind ~= "gp" then error(what .. ": expected #GP(0), got " .. fault.text, 2) end
end

local delta_is = S.expect_delta

local SUP, USR, RO = 0x00400000, 0x00401000, 0x00402000

-- Control registers change at CPL 0 only: drop to CPL 0, change them, come back.
local function as_kernel(c, changes, cpl)
  S.expect_ok(c:set{ cpl = 0 })
  S.expect_ok(c:set(changes))
  S.expect_ok(c:set{ cpl = cpl })
end
local machines = {}

for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local f = {}
  for i = 1, 4 do f[i] = vm:alloc_frame{}; vm:write_phys(f[i], 0x3300 + i, 8) end
  s:map(SUP, f[1], { user = false, global = true })
  s:map(USR, f[2], { user = true })
  s:map(RO, f[3], { user = false, write = false })
  S.expect_ok(c:load_cr3(s))

  ---------------------------------------------------------------- CPL 1 and 2 are supervisor mode
  for _, cpl in ipairs{ 1, 2 } do
    S.expect_ok(c:set{ cpl = cpl })
    S.expect_eq(c:regs().cpl, cpl, mode .. ": CPL " .. cpl)
    read_is(c, SUP, f[1], 0x3301, mode .. ": CPL " .. cpl .. " reads a supervisor page (default CPL)")
    S.expect_eq(S.expect_ok(c:write(SUP, 0x3301)), f[1], mode .. ": CPL " .. cpl .. " writes a supervisor page")
    pf_is(PF.P | PF.W, RO, mode .. ": CPL " .. cpl .. " write to RO, WP=1: supervisor error code", c:write(RO, 1))
    as_kernel(c, { wp = false }, cpl)
    S.expect_eq(S.expect_ok(c:write(RO, 0x3303)), f[3], mode .. ": CPL " .. cpl .. " write to RO, WP=0")
    as_kernel(c, { wp = true, smap = true }, cpl)
    pf_is(PF.P, USR, mode .. ": CPL " .. cpl .. " read of a user page under SMAP", c:read(USR))
    as_kernel(c, { smap = false }, cpl)
    read_is(c, USR, f[2], 0x3302, mode .. ": CPL " .. cpl .. " read of a user page without SMAP")
  end
  S.expect_ok(c:set{ cpl = 3 })
  pf_is(PF.P | PF.U, SUP, mode .. ": CPL 3 (default) read of a supervisor page", c:read(SUP))
  read_is(c, USR, f[2], 0x3302, mode .. ": CPL 3 (default) read of a user page")
  S.expect_ok(c:set{ cpl = 0 })
  machines[mode] = { vm = vm, c = c, s = s, f = f }
end

---------------------------------------------------------------- privileged instructions at CPL 3 and 1
for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local c, s, f = machines[mode].c, machines[mode].s, machines[mode].f
  for _, cpl in ipairs{ 3, 1 } do
    local what = mode .. " CPL " .. cpl
    -- Stale translations that any flush would remove.
    read_is(c, USR, f[2], nil, what .. ": USR cached", 0)
    read_is(c, SUP, f[1], nil, what .. ": global SUP cached", 0)
    s:map(USR, f[4], { user = true })
    s:map(SUP, f[4], { user = false, global = true })
    local r0 = c:regs()
    S.expect_ok(c:set{ cpl = cpl })
    local before = c:counters()

    gp_is(what .. ": MOV to CR3", c:load_cr3(s))
    gp_is(what .. ": MOV to CR4 (PGE)", c:set{ pge = false })
    gp_is(what .. ": MOV to CR0 (WP)", c:set{ wp = false })
    gp_is(what .. ": WRMSR IA32_EFER (NXE)", c:set{ nxe = false })
    gp_is(what .. ": INVPCID type 2", c:invpcid(2))
    gp_is(what .. ": INVPCID type 0", c:invpcid(0, 0, USR))
    c:invlpg(USR)                                   -- INVLPG returns nothing: see gp below
    c:invlpg(SUP)
    delta_is(before, c:counters(), { gp = 8, tlb_flush_all = 0, tlb_flush_pcid = 0, cr3_loads = 0 },
             what .. ": 8 #GPs, no flush")

    local r = c:regs()
    S.expect_eq(r.cr3, r0.cr3, what .. ": CR3 unchanged")
    S.expect_eq(r.cr4, r0.cr4, what .. ": CR4 unchanged")
    S.expect_eq(r.cr0, r0.cr0, what .. ": CR0 unchanged")
    S.expect_eq(r.efer, r0.efer, what .. ": EFER unchanged")
    read_is(c, USR, f[2], nil, what .. ": stale USR entry survived", 0)
    read_is(c, SUP, f[1], nil, what .. ": stale global SUP entry survived", 0)

    S.expect_ok(c:set{ cpl = 0 })
    S.expect_ok(c:load_cr3(s))
    c:invlpg(SUP)
    read_is(c, USR, f[4], nil, what .. ": at CPL 0 MOV CR3 flushes", 0)
    read_is(c, SUP, f[4], nil, what .. ": at CPL 0 INVLPG works", 0)
    s:map(USR, f[2], { user = true })
    s:map(SUP, f[1], { user = false, global = true })
    S.expect_ok(c:load_cr3(s)); c:invlpg(SUP)
  end
end

-- x86_ref_selftest.lua -- hand-computed cases for x86_ref.lua.
-- Run: lua5.4 scripts/lib/x86_ref_selftest.lua   (from any directory)
-- Prints "N passed, 0 failed"; exits non-zero on any failure.

local dir = (arg and arg[0] or ""):match("^(.*)[/\\]") or "."
package.path = dir .. "/?.lua;" .. package.path
local ref = require("x86_ref")

-- Entry flag bits
local P, RW, US, A, D, PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
local XD = math.mininteger          -- bit 63
local PRU = P | RW | US             -- present, writable, user

-- Error-code bits
local EP, EW, EU, ER, EI = 1, 2, 4, 8, 16

local passed, failed = 0, 0

local function hex(v)
  if v == nil then return "nil" end
  return string.format("0x%x", v)
end

local function list_str(t)
  if t == nil then return "nil" end
  local s = {}
  for i = 1, #t do s[i] = hex(t[i]) end
  return "{" .. table.concat(s, ", ") .. "}"
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- exp = { outcome=..., gpa=..., ec=..., entries={...} }
-- entries omitted in exp means "unchanged".
local function case(name, args, exp)
  local input_entries = copy(args.entries)
  local ok, r = pcall(ref.walk, args)
  local problems = {}
  if not ok then
    problems[#problems + 1] = "raised: " .. tostring(r)
  else
    if r.outcome ~= exp.outcome then
      problems[#problems + 1] = "outcome " .. tostring(r.outcome) .. " ~= " .. exp.outcome
    end
    if exp.outcome == "ok" then
      if r.gpa ~= exp.gpa then
        problems[#problems + 1] = "gpa " .. hex(r.gpa) .. " ~= " .. hex(exp.gpa)
      end
    elseif r.gpa ~= nil then
      problems[#problems + 1] = "unexpected gpa " .. hex(r.gpa)
    end
    if exp.outcome == "pf" then
      if r.error_code ~= exp.ec then
        problems[#problems + 1] = "error_code " .. hex(r.error_code) .. " ~= " .. hex(exp.ec)
      end
    elseif r.error_code ~= nil then
      problems[#problems + 1] = "unexpected error_code " .. hex(r.error_code)
    end
    local want = exp.entries or input_entries
    local same = r.entries ~= nil and #r.entries == #want and r.entries ~= args.entries
    if same then
      for i = 1, #want do if r.entries[i] ~= want[i] then same = false end end
    end
    if not same then
      problems[#problems + 1] = "entries " .. list_str(r.entries) .. " ~= " .. list_str(want)
    end
    -- the input list must not have been modified
    for i = 1, #input_entries do
      if args.entries[i] ~= input_entries[i] then
        problems[#problems + 1] = "input entries modified"
        break
      end
    end
  end
  if #problems == 0 then
    passed = passed + 1
  else
    failed = failed + 1
    print("FAIL " .. name .. ": " .. table.concat(problems, "; "))
  end
end

local function must_error(name, args)
  local ok = pcall(ref.walk, args)
  if ok then
    failed = failed + 1
    print("FAIL " .. name .. ": expected a Lua error")
  else
    passed = passed + 1
  end
end

---------------------------------------------------------------------------
-- legacy32 (SDM 4.3)
---------------------------------------------------------------------------
case("legacy32 4K read ok", {
  mode = "legacy32", va = 0x12345678, access = "read", cpl = 0,
  entries = { 0x00123007, 0x00456007 } },
  { outcome = "ok", gpa = 0x00456678, entries = { 0x00123027, 0x00456027 } })

case("legacy32 4K user write ok sets D in PTE only", {
  mode = "legacy32", va = 0x12345678, access = "write", cpl = 3,
  entries = { 0x00123007, 0x00456007 } },
  { outcome = "ok", gpa = 0x00456678, entries = { 0x00123027, 0x00456067 } })

case("legacy32 4M PSE-36 write ok (M=40)", {
  mode = "legacy32", va = 0x12345678, access = "write", cpl = 0, cr4_pse = true,
  maxphyaddr = 40, entries = { 0x00C0A087, 0x11111111 } },
  { outcome = "ok", gpa = 0x500F45678, entries = { 0x00C0A0E7, 0x11111111 } })

case("legacy32 4M, 4M page with only PDE given", {
  mode = "legacy32", va = 0x003FFFFF, access = "read", cpl = 0, cr4_pse = true,
  entries = { 0xFFC00083 } },
  { outcome = "ok", gpa = 0xFFFFFFFF, entries = { 0xFFC000A3 } })

case("legacy32 PS ignored when CR4.PSE=0", {
  mode = "legacy32", va = 0x12345678, access = "read", cpl = 0, cr4_pse = false,
  entries = { 0x00123087, 0x00456003 } },
  { outcome = "ok", gpa = 0x00456678, entries = { 0x001230A7, 0x00456023 } })

case("legacy32 4M bit17 reserved when M=36", {
  mode = "legacy32", va = 0, access = "read", cpl = 0, cr4_pse = true,
  maxphyaddr = 36, entries = { 0x00C20083, 0 } },
  { outcome = "pf", ec = EP | ER })

case("legacy32 4M bit17 is address when M=40", {
  mode = "legacy32", va = 0, access = "read", cpl = 0, cr4_pse = true,
  maxphyaddr = 40, entries = { 0x00C20083, 0 } },
  { outcome = "ok", gpa = 0x1000C00000, entries = { 0x00C200A3, 0 } })

case("legacy32 4M bit21 always reserved (M=46)", {
  mode = "legacy32", va = 0, access = "read", cpl = 0, cr4_pse = true,
  entries = { 0x00E00083, 0 } },
  { outcome = "pf", ec = EP | ER })

case("legacy32 4M bits 20:13 reserved when M=32", {
  mode = "legacy32", va = 0, access = "read", cpl = 0, cr4_pse = true,
  maxphyaddr = 32, entries = { 0x00C02083, 0 } },
  { outcome = "pf", ec = EP | ER })

case("legacy32 PDE PS=0 has no reserved bits", {
  mode = "legacy32", va = 0x12345678, access = "read", cpl = 0, cr4_pse = true,
  maxphyaddr = 32, entries = { 0x00E0F007, 0xFFFFFFFF } },
  { outcome = "ok", gpa = 0xFFFFF678, entries = { 0x00E0F027, 0xFFFFFFFF } })

case("legacy32 not-present PTE: PDE gets A, PTE unchanged", {
  mode = "legacy32", va = 0x12345678, access = "read", cpl = 0,
  entries = { 0x00123007, 0x00456006 } },
  { outcome = "pf", ec = 0, entries = { 0x00123027, 0x00456006 } })

case("legacy32 not-present PDE ignores reserved bits", {
  mode = "legacy32", va = 0, access = "write", cpl = 3, cr4_pse = true,
  entries = { 0x00E00082, 0x00456007 } },
  { outcome = "pf", ec = EW | EU })

case("legacy32 user fetch of supervisor page: no I/D (NXE ignored)", {
  mode = "legacy32", va = 0x1000, access = "fetch", cpl = 3, efer_nxe = true,
  entries = { 0x00123007, 0x00456003 } },
  { outcome = "pf", ec = EP | EU, entries = { 0x00123027, 0x00456003 } })

case("legacy32 fetch with SMEP: I/D set", {
  mode = "legacy32", va = 0x1000, access = "fetch", cpl = 3, cr4_smep = true,
  entries = { 0x00123007, 0x00456003 } },
  { outcome = "pf", ec = EP | EU | EI, entries = { 0x00123027, 0x00456003 } })

case("legacy32 not-present fetch without SMEP: no I/D", {
  mode = "legacy32", va = 0x1000, access = "fetch", cpl = 0, efer_nxe = true,
  entries = { 0x00123006, 0 } },
  { outcome = "pf", ec = 0 })

case("legacy32 SMEP: supervisor fetch from user page", {
  mode = "legacy32", va = 0x1000, access = "fetch", cpl = 0, cr4_smep = true,
  entries = { 0x00123007, 0x00456005 } },
  { outcome = "pf", ec = EP | EI, entries = { 0x00123027, 0x00456005 } })

case("legacy32 SMAP: supervisor read of user page, AC=0", {
  mode = "legacy32", va = 0x1000, access = "read", cpl = 0, cr4_smap = true,
  entries = { 0x00123007, 0x00456005 } },
  { outcome = "pf", ec = EP, entries = { 0x00123027, 0x00456005 } })

---------------------------------------------------------------------------
-- PAE (SDM 4.4)
---------------------------------------------------------------------------
case("pae 4K read ok, PDPTE never modified", {
  mode = "pae", va = 0xC0201234, access = "read", cpl = 0, efer_nxe = true,
  entries = { 0x01000001, 0x02000007, XD | 0x03000007 } },
  { outcome = "ok", gpa = 0x03000234,
    entries = { 0x01000001, 0x02000027, XD | 0x03000027 } })

case("pae 2M write ok (CR4.PSE=0), PTE not needed", {
  mode = "pae", va = 0x00123456, access = "write", cpl = 0,
  entries = { 0x01000001, 0x40000087 } },
  { outcome = "ok", gpa = 0x40123456, entries = { 0x01000001, 0x400000E7 } })

case("pae 2M above 4G (M=46)", {
  mode = "pae", va = 0xFFFFFFFF, access = "read", cpl = 3,
  entries = { 0x01000001, 0x3FFFFFE00087 } },
  { outcome = "ok", gpa = 0x3FFFFFFFFFFF, entries = { 0x01000001, 0x3FFFFFE000A7 } })

case("pae PDPTE reserved bit 1 -> gp", {
  mode = "pae", va = 0, access = "read", cpl = 0,
  entries = { 0x01000003, 0x02000007, 0x03000007 } },
  { outcome = "gp" })

case("pae PDPTE bit 63 -> gp even with NXE", {
  mode = "pae", va = 0, access = "read", cpl = 0, efer_nxe = true,
  entries = { XD | 0x01000001, 0x02000007, 0x03000007 } },
  { outcome = "gp" })

case("pae PDPTE bit 5 (no A flag) -> gp", {
  mode = "pae", va = 0, access = "read", cpl = 0,
  entries = { 0x01000021, 0x02000007, 0x03000007 } },
  { outcome = "gp" })

case("pae PDPTE address bit >= M -> gp", {
  mode = "pae", va = 0, access = "read", cpl = 0, maxphyaddr = 36,
  entries = { 0x1001000001, 0x02000007, 0x03000007 } },
  { outcome = "gp" })

case("pae not-present PDPTE with reserved bits -> pf P=0", {
  mode = "pae", va = 0, access = "write", cpl = 0,
  entries = { 0x01000006 } },
  { outcome = "pf", ec = EW })

case("pae PDE bit 63 reserved without NXE", {
  mode = "pae", va = 0, access = "read", cpl = 0,
  entries = { 0x01000001, XD | 0x02000007, 0x03000007 } },
  { outcome = "pf", ec = EP | ER })

case("pae PTE bit 63 reserved without NXE: PDE gets A", {
  mode = "pae", va = 0, access = "fetch", cpl = 3,
  entries = { 0x01000001, 0x02000007, XD | 0x03000007 } },
  { outcome = "pf", ec = EP | EU | ER,
    entries = { 0x01000001, 0x02000027, XD | 0x03000007 } })

case("pae XD in PDE with NXE: supervisor fetch faults, I/D set", {
  mode = "pae", va = 0, access = "fetch", cpl = 0, efer_nxe = true,
  entries = { 0x01000001, XD | 0x02000007, 0x03000007 } },
  { outcome = "pf", ec = EP | EI,
    entries = { 0x01000001, XD | 0x02000027, 0x03000007 } })

case("pae XD with NXE: read is fine", {
  mode = "pae", va = 0x2ABC, access = "read", cpl = 3, efer_nxe = true,
  entries = { 0x01000001, XD | 0x02000007, 0x03000007 } },
  { outcome = "ok", gpa = 0x03000ABC,
    entries = { 0x01000001, XD | 0x02000027, 0x03000027 } })

case("pae 2M PDE bit 13 reserved", {
  mode = "pae", va = 0, access = "read", cpl = 0,
  entries = { 0x01000001, 0x40002087 } },
  { outcome = "pf", ec = EP | ER })

case("pae PDE bit >= M reserved (M=36)", {
  mode = "pae", va = 0, access = "read", cpl = 0, maxphyaddr = 36,
  entries = { 0x01000001, 0x10002000007, 0x03000007 } },
  { outcome = "pf", ec = EP | ER })

case("pae PTE bit 52 reserved (bits 62:M)", {
  mode = "pae", va = 0, access = "read", cpl = 0, maxphyaddr = 52,
  entries = { 0x01000001, 0x02000007, (1 << 52) | 0x03000007 } },
  { outcome = "pf", ec = EP | ER, entries = { 0x01000001, 0x02000027, (1 << 52) | 0x03000007 } })

---------------------------------------------------------------------------
-- 4-level paging (SDM 4.5)
---------------------------------------------------------------------------
local L4 = { 0x1000007, 0x2000007, 0x3000007, 0x4000007 }

case("long4 4K user write ok, A everywhere, D in PTE", {
  mode = "long4", va = 0x00007FFFFFFFF123, access = "write", cpl = 3,
  entries = L4 },
  { outcome = "ok", gpa = 0x4000123,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000067 } })

case("long4 1G page, lower entries unchanged", {
  mode = "long4", va = 0xFFFF80003FFFFFFF, access = "read", cpl = 0,
  entries = { 0x1000003, 0x40000083, 0x55, 0x66 } },
  { outcome = "ok", gpa = 0x7FFFFFFF,
    entries = { 0x1000023, 0x400000A3, 0x55, 0x66 } })

case("long4 2M page write", {
  mode = "long4", va = 0x1FFFFF, access = "write", cpl = 0,
  entries = { 0x1000003, 0x2000003, 0x7FE00083 } },
  { outcome = "ok", gpa = 0x7FFFFFFF,
    entries = { 0x1000023, 0x2000023, 0x7FE000E3 } })

case("long4 PS in PML4E reserved", {
  mode = "long4", va = 0, access = "read", cpl = 0,
  entries = { 0x1000087, 0x2000007, 0x3000007, 0x4000007 } },
  { outcome = "pf", ec = EP | ER })

case("long4 1G page bit 13 reserved: PML4E gets A", {
  mode = "long4", va = 0, access = "read", cpl = 0,
  entries = { 0x1000007, 0x40002087 } },
  { outcome = "pf", ec = EP | ER, entries = { 0x1000027, 0x40002087 } })

case("long4 1G page bit 29 reserved", {
  mode = "long4", va = 0, access = "read", cpl = 0,
  entries = { 0x1000007, 0x60000087 } },
  { outcome = "pf", ec = EP | ER, entries = { 0x1000027, 0x60000087 } })

case("long4 2M page bit 20 reserved: two levels get A", {
  mode = "long4", va = 0, access = "write", cpl = 3,
  entries = { 0x1000007, 0x2000007, 0x40100087 } },
  { outcome = "pf", ec = EP | EW | EU | ER,
    entries = { 0x1000027, 0x2000027, 0x40100087 } })

case("long4 PTE bit 46 reserved when M=46", {
  mode = "long4", va = 0, access = "read", cpl = 0,
  entries = { 0x1000007, 0x2000007, 0x3000007, (1 << 46) | 0x4000007 } },
  { outcome = "pf", ec = EP | ER,
    entries = { 0x1000027, 0x2000027, 0x3000027, (1 << 46) | 0x4000007 } })

case("long4 PTE bit 46 is address when M=52", {
  mode = "long4", va = 0, access = "read", cpl = 0, maxphyaddr = 52,
  entries = { 0x1000007, 0x2000007, 0x3000007, (1 << 46) | 0x4000007 } },
  { outcome = "ok", gpa = (1 << 46) | 0x4000000,
    entries = { 0x1000027, 0x2000027, 0x3000027, (1 << 46) | 0x4000027 } })

case("long4 bits 62:52 ignored (not reserved, not address)", {
  mode = "long4", va = 0x10, access = "read", cpl = 0, maxphyaddr = 52,
  entries = { (0x7FF << 52) | 0x1000007, 0x2000007, 0x3000007, (0x7FF << 52) | 0x4000007 } },
  { outcome = "ok", gpa = 0x4000010,
    entries = { (0x7FF << 52) | 0x1000027, 0x2000027, 0x3000027, (0x7FF << 52) | 0x4000027 } })

case("long4 PDPTE bit 51 reserved when M=46", {
  mode = "long4", va = 0, access = "read", cpl = 0,
  entries = { 0x1000007, (1 << 51) | 0x2000007, 0x3000007, 0x4000007 } },
  { outcome = "pf", ec = EP | ER,
    entries = { 0x1000027, (1 << 51) | 0x2000007, 0x3000007, 0x4000007 } })

case("long4 XD in PTE without NXE: reserved, no I/D", {
  mode = "long4", va = 0, access = "fetch", cpl = 3,
  entries = { 0x1000007, 0x2000007, 0x3000007, XD | 0x4000007 } },
  { outcome = "pf", ec = EP | EU | ER,
    entries = { 0x1000027, 0x2000027, 0x3000027, XD | 0x4000007 } })

case("long4 XD in PTE with NXE: user fetch faults, I/D", {
  mode = "long4", va = 0, access = "fetch", cpl = 3, efer_nxe = true,
  entries = { 0x1000007, 0x2000007, 0x3000007, XD | 0x4000007 } },
  { outcome = "pf", ec = EP | EU | EI,
    entries = { 0x1000027, 0x2000027, 0x3000027, XD | 0x4000007 } })

case("long4 XD in PML4E with NXE: supervisor fetch faults", {
  mode = "long4", va = 0, access = "fetch", cpl = 0, efer_nxe = true,
  entries = { XD | 0x1000003, 0x2000003, 0x3000003, 0x4000003 } },
  { outcome = "pf", ec = EP | EI,
    entries = { XD | 0x1000023, 0x2000023, 0x3000023, 0x4000003 } })

case("long4 no XD, NXE: user fetch ok", {
  mode = "long4", va = 0x7FF, access = "fetch", cpl = 3, efer_nxe = true,
  entries = L4 },
  { outcome = "ok", gpa = 0x40007FF,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000027 } })

case("long4 not-present PDE: upper two get A, PDE/PTE unchanged", {
  mode = "long4", va = 0, access = "write", cpl = 3,
  entries = { 0x1000007, 0x2000007, 0x3000006, 0x4000007 } },
  { outcome = "pf", ec = EW | EU,
    entries = { 0x1000027, 0x2000027, 0x3000006, 0x4000007 } })

case("long4 not-present PML4E: nothing changes", {
  mode = "long4", va = 0, access = "fetch", cpl = 0, efer_nxe = true,
  entries = { 0xFFFFFFFE } },
  { outcome = "pf", ec = EI })

case("long4 SMEP: supervisor fetch from user page", {
  mode = "long4", va = 0, access = "fetch", cpl = 0, cr4_smep = true,
  entries = L4 },
  { outcome = "pf", ec = EP | EI,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000007 } })

case("long4 SMEP: supervisor fetch from supervisor page ok", {
  mode = "long4", va = 0, access = "fetch", cpl = 0, cr4_smep = true,
  entries = { 0x1000007, 0x2000007, 0x3000003, 0x4000007 } },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000027, 0x2000027, 0x3000023, 0x4000027 } })

case("long4 no SMEP: supervisor fetch from user page ok", {
  mode = "long4", va = 0, access = "fetch", cpl = 0,
  entries = L4 },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000027 } })

case("long4 SMAP AC=0: supervisor read of user page faults", {
  mode = "long4", va = 0, access = "read", cpl = 0, cr4_smap = true,
  entries = L4 },
  { outcome = "pf", ec = EP,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000007 } })

case("long4 SMAP AC=1: supervisor read of user page ok", {
  mode = "long4", va = 0, access = "read", cpl = 0, cr4_smap = true, rflags_ac = true,
  entries = L4 },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000027 } })

case("long4 SMAP AC=0: supervisor write user page faults even WP=0", {
  mode = "long4", va = 0, access = "write", cpl = 0, cr4_smap = true,
  entries = L4 },
  { outcome = "pf", ec = EP | EW,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000007 } })

case("long4 SMAP AC=1 WP=1: write user read-only page faults", {
  mode = "long4", va = 0, access = "write", cpl = 0, cr4_smap = true,
  rflags_ac = true, cr0_wp = true,
  entries = { 0x1000007, 0x2000005, 0x3000007, 0x4000007 } },
  { outcome = "pf", ec = EP | EW,
    entries = { 0x1000027, 0x2000025, 0x3000027, 0x4000007 } })

case("long4 SMAP AC=1 WP=0: write user read-only page ok", {
  mode = "long4", va = 0, access = "write", cpl = 0, cr4_smap = true,
  rflags_ac = true,
  entries = { 0x1000007, 0x2000005, 0x3000007, 0x4000007 } },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000027, 0x2000025, 0x3000027, 0x4000067 } })

case("long4 SMAP does not affect supervisor pages", {
  mode = "long4", va = 0, access = "write", cpl = 0, cr4_smap = true, cr0_wp = true,
  entries = { 0x1000003, 0x2000007, 0x3000007, 0x4000007 } },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000023, 0x2000027, 0x3000027, 0x4000067 } })

case("long4 SMAP does not affect user-mode accesses", {
  mode = "long4", va = 0, access = "read", cpl = 3, cr4_smap = true,
  entries = L4 },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000027 } })

case("long4 WP=1: supervisor write to read-only page faults", {
  mode = "long4", va = 0, access = "write", cpl = 0, cr0_wp = true,
  entries = { 0x1000003, 0x2000003, 0x3000003, 0x4000001 } },
  { outcome = "pf", ec = EP | EW,
    entries = { 0x1000023, 0x2000023, 0x3000023, 0x4000001 } })

case("long4 WP=0: supervisor write to read-only page ok, D set", {
  mode = "long4", va = 0, access = "write", cpl = 0,
  entries = { 0x1000001, 0x2000003, 0x3000003, 0x4000001 } },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000021, 0x2000023, 0x3000023, 0x4000061 } })

case("long4 user write to read-only page faults even WP=0", {
  mode = "long4", va = 0, access = "write", cpl = 3,
  entries = { 0x1000007, 0x2000007, 0x3000005, 0x4000007 } },
  { outcome = "pf", ec = EP | EW | EU,
    entries = { 0x1000027, 0x2000027, 0x3000025, 0x4000007 } })

case("long4 user read of supervisor page (U/S=0 in PML4E) faults", {
  mode = "long4", va = 0, access = "read", cpl = 3,
  entries = { 0x1000003, 0x2000007, 0x3000007, 0x4000007 } },
  { outcome = "pf", ec = EP | EU,
    entries = { 0x1000023, 0x2000027, 0x3000027, 0x4000007 } })

case("long4 protection fault on 1G leaf: PML4E A only", {
  mode = "long4", va = 0, access = "read", cpl = 3,
  entries = { 0x1000007, 0x40000083 } },
  { outcome = "pf", ec = EP | EU, entries = { 0x1000027, 0x40000083 } })

case("long4 A/D already set stay set (bit 63 value)", {
  mode = "long4", va = 0xFFFFFFFFFFFFFFFF, access = "write", cpl = 0, efer_nxe = true,
  entries = { XD | 0x1000067, 0x2000067, 0x3000067, XD | 0x4000067 } },
  { outcome = "ok", gpa = 0x4000FFF,
    entries = { XD | 0x1000067, 0x2000067, 0x3000067, XD | 0x4000067 } })

case("long4 non-canonical -> gp", {
  mode = "long4", va = 0x0000800000000000, access = "read", cpl = 0,
  entries = L4 },
  { outcome = "gp" })

case("long4 non-canonical high -> gp", {
  mode = "long4", va = 0xFFFF7FFFFFFFFFFF, access = "read", cpl = 0,
  entries = L4 },
  { outcome = "gp" })

case("long4 canonical high half ok", {
  mode = "long4", va = 0xFFFF800000000ABC, access = "read", cpl = 0,
  entries = L4 },
  { outcome = "ok", gpa = 0x4000ABC,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000027 } })

---------------------------------------------------------------------------
-- 5-level paging (SDM 4.5)
---------------------------------------------------------------------------
local L5 = { 0x9000007, 0x1000007, 0x2000007, 0x3000007, 0x4000007 }

case("long5 4K read ok (va canonical only in 5-level)", {
  mode = "long5", va = 0x0000800000000123, access = "read", cpl = 3,
  entries = L5 },
  { outcome = "ok", gpa = 0x4000123,
    entries = { 0x9000027, 0x1000027, 0x2000027, 0x3000027, 0x4000027 } })

case("long5 1G page write", {
  mode = "long5", va = 0xFF00000012345678, access = "write", cpl = 0,
  entries = { 0x9000003, 0x1000003, 0xC0000083 } },
  { outcome = "ok", gpa = 0xD2345678,
    entries = { 0x9000023, 0x1000023, 0xC00000E3 } })

case("long5 PS in PML5E reserved", {
  mode = "long5", va = 0, access = "read", cpl = 0,
  entries = { 0x9000087, 0x1000007, 0x2000007, 0x3000007, 0x4000007 } },
  { outcome = "pf", ec = EP | ER })

case("long5 PS in PML4E reserved: PML5E gets A", {
  mode = "long5", va = 0, access = "read", cpl = 0,
  entries = { 0x9000007, 0x1000087, 0x2000007, 0x3000007, 0x4000007 } },
  { outcome = "pf", ec = EP | ER,
    entries = { 0x9000027, 0x1000087, 0x2000007, 0x3000007, 0x4000007 } })

case("long5 not-present PTE: four levels get A", {
  mode = "long5", va = 0, access = "read", cpl = 0,
  entries = { 0x9000007, 0x1000007, 0x2000007, 0x3000007, 0x4000006 } },
  { outcome = "pf", ec = 0,
    entries = { 0x9000027, 0x1000027, 0x2000027, 0x3000027, 0x4000006 } })

case("long5 non-canonical -> gp", {
  mode = "long5", va = 0x0100000000000000, access = "read", cpl = 0,
  entries = L5 },
  { outcome = "gp" })

case("long5 non-canonical (bits 63:57 set, bit 56 clear) -> gp", {
  mode = "long5", va = 0xFE00000000000000, access = "read", cpl = 0,
  entries = L5 },
  { outcome = "gp" })

---------------------------------------------------------------------------
-- Misc: CR4.PGE / G bit do not matter; bad arguments raise errors
---------------------------------------------------------------------------
case("long4 PGE + G bit: no effect", {
  mode = "long4", va = 0, access = "read", cpl = 0, cr4_pge = true,
  entries = { 0x1000007, 0x2000007, 0x3000007, 0x4000107 } },
  { outcome = "ok", gpa = 0x4000000,
    entries = { 0x1000027, 0x2000027, 0x3000027, 0x4000127 } })

must_error("bad mode", { mode = "long3", va = 0, access = "read", cpl = 0, entries = L4 })
must_error("bad access", { mode = "long4", va = 0, access = "exec", cpl = 0, entries = L4 })
must_error("bad cpl", { mode = "long4", va = 0, access = "read", cpl = 1, entries = L4 })
must_error("maxphyaddr 31", { mode = "long4", va = 0, access = "read", cpl = 0,
                              maxphyaddr = 31, entries = L4 })
must_error("maxphyaddr 53", { mode = "long4", va = 0, access = "read", cpl = 0,
                              maxphyaddr = 53, entries = L4 })
must_error("too few entries", { mode = "long4", va = 0, access = "read", cpl = 0,
                                entries = { 0x1000007, 0x2000007, 0x3000007 } })
must_error("too few entries pae", { mode = "pae", va = 0, access = "read", cpl = 0,
                                    entries = {} })

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)

-- x86_walk_matrix.lua: the permission matrix, in the style of kvm-unit-tests' access
-- test, checked against an independent reference (lib/x86_ref.lua, written from the
-- SDM without looking at the simulator).
--
-- Proves, for all four paging modes:
--  1. shadowsim.x86.walk agrees with the reference on every combination of access
--     kind, CPL, CR0.WP, CR4.SMEP, CR4.SMAP, RFLAGS.AC, EFER.NXE and the R/W, U/S, XD
--     bits of the leaf and of one upper level, for 4 KiB and large pages: outcome,
--     gpa, error code and the A/D bits left in every entry;
--  2. the same on seeded random entries (random present/reserved/PS/address bits,
--     MAXPHYADDR and addresses, including non-canonical ones);
--  3. a real vCPU, with the entries in guest memory, gives the same result on the
--     first access (TLB miss, walk) and on a repeat (TLB hit, or the re-walk a write
--     through a clean entry needs), and leaves the same A/D bits in memory.
-- Arguments: `-- random=N machine=N` to change the number of random/machine cases.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local ref = require("x86_ref")

local opts = { random = 20000, machine = 4000 }
for _, a in ipairs(S.args) do
  local k, v = a:match("^(%w+)=(%d+)$")
  if k and opts[k] then opts[k] = tonumber(v) end
end

local MODES = { "legacy32", "pae", "long4", "long5" }
local LEVELS = { legacy32 = 2, pae = 3, long4 = 4, long5 = 5 }
local P, RW, US, A, D, PS, NX = 1, 2, 4, 0x20, 0x40, 0x80, 1 << 63
local ACCESSES = { "read", "write", "fetch" }

local failures, checked = 0, 0
local function describe(c)
  local parts = {}
  for _, k in ipairs({ "mode", "access", "cpl", "cr0_wp", "cr4_pse", "cr4_smep", "cr4_smap", "efer_nxe",
                       "rflags_ac", "maxphyaddr" }) do
    if c[k] ~= nil then parts[#parts + 1] = k .. "=" .. tostring(c[k]) end
  end
  parts[#parts + 1] = "va=" .. S.hex(c.va)
  local es = {}
  for i, e in ipairs(c.entries) do es[i] = S.hex(e) end
  parts[#parts + 1] = "entries={" .. table.concat(es, ",") .. "}"
  return table.concat(parts, " ")
end

local function same(a, b)
  if a.outcome ~= b.outcome then return false, "outcome " .. tostring(a.outcome) .. " vs " .. tostring(b.outcome) end
  if a.outcome == "ok" and a.gpa ~= b.gpa then return false, "gpa " .. S.hex(a.gpa) .. " vs " .. S.hex(b.gpa) end
  if a.outcome == "pf" and a.error_code ~= b.error_code then
    return false, "error code " .. S.hex(a.error_code) .. " vs " .. S.hex(b.error_code)
  end
  for i = 1, #b.entries do
    if a.entries[i] ~= b.entries[i] then
      return false, ("entry %d after the access: %s vs %s"):format(i, S.hex(a.entries[i]), S.hex(b.entries[i]))
    end
  end
  return true
end

local function report(where, case, why)
  failures = failures + 1
  if failures <= 10 then print(("MISMATCH (%s): %s\n  simulator vs reference: %s"):format(where, describe(case), why)) end
end

local function compare(case)
  checked = checked + 1
  local got = S.x86.walk(case)
  local want = ref.walk(case)
  local ok, why = same(got, want)
  if not ok then report("x86.walk", case, why) end
  return want
end

-- Address bits for an entry at `level` (1 = PTE) that maps or points somewhere valid.
local function frame_bits(mode, level, large)
  if mode == "legacy32" then return large and 0x00C00000 or 0x00123000 end
  if large then return level == 3 and 0x40000000 or 0x00600000 end
  return 0x00123000
end

---------------------------------------------------------------------------------------
-- 1. The structured matrix: every rights combination on the leaf and one upper level.
---------------------------------------------------------------------------------------
local function controls_combinations()
  local list = {}
  for bits = 0, 31 do
    list[#list + 1] = { cr0_wp = bits & 1 ~= 0, cr4_smep = bits & 2 ~= 0, cr4_smap = bits & 4 ~= 0,
                        rflags_ac = bits & 8 ~= 0, efer_nxe = bits & 16 ~= 0 }
  end
  return list
end
local CONTROLS = controls_combinations()

for _, mode in ipairs(MODES) do
  local levels = LEVELS[mode]
  local wide = mode ~= "legacy32"
  for _, large in ipairs({ false, true }) do
    -- Leaf level: the PTE, or the PDE for a 2/4 MiB page.
    local leaf = large and 2 or 1
    local upper = leaf + 1            -- the level whose rights are varied with the leaf's
    if mode == "pae" and upper == 3 then upper = 2; leaf = 2 end  -- a PDPTE has no rights bits
    for flagbits = 0, 63 do
      local leaf_flags = P | A | ((flagbits & 1 ~= 0) and RW or 0) | ((flagbits & 2 ~= 0) and US or 0)
      local upper_flags = P | ((flagbits & 8 ~= 0) and RW or 0) | ((flagbits & 16 ~= 0) and US or 0)
      local leaf_nx = wide and (flagbits & 4 ~= 0)
      local upper_nx = wide and (flagbits & 32 ~= 0)
      if (not wide) and (flagbits & 36 ~= 0) then goto next_flags end
      for _, access in ipairs(ACCESSES) do
        for _, cpl in ipairs({ 0, 3 }) do
          for _, ctl in ipairs(CONTROLS) do
            local entries = {}
            for lvl = levels, 1, -1 do
              local e
              if lvl == leaf then
                e = frame_bits(mode, lvl, large) | leaf_flags | (large and PS or 0)
                if leaf_nx and ctl.efer_nxe then e = e | NX end
              elseif lvl == upper and upper ~= leaf then
                e = frame_bits(mode, lvl, false) | upper_flags
                if upper_nx and ctl.efer_nxe then e = e | NX end
              elseif lvl > leaf then
                e = frame_bits(mode, lvl, false) | P | RW | US
                if mode == "pae" and lvl == 3 then e = frame_bits(mode, lvl, false) | P end
              else
                e = 0   -- below the leaf: ignored
              end
              entries[#entries + 1] = e
            end
            compare{ mode = mode, va = 0x00401234, access = access, cpl = cpl, cr0_wp = ctl.cr0_wp,
                     cr4_pse = mode == "legacy32" and large, cr4_smep = ctl.cr4_smep, cr4_smap = ctl.cr4_smap,
                     rflags_ac = ctl.rflags_ac, efer_nxe = ctl.efer_nxe, entries = entries }
          end
        end
      end
      ::next_flags::
    end
  end
end
local structured = checked

---------------------------------------------------------------------------------------
-- 2. Seeded random entries.
---------------------------------------------------------------------------------------
local function chance(p) return S.random() < p end

local function random_entry(mode, maxphy)
  local e = 0
  if mode == "legacy32" then
    e = S.random(0, 0xFFFFF) << 12
    if chance(0.3) then e = e | (S.random(0, 0x1FF) << 13) end   -- PSE-36 / reserved bits
  else
    e = S.random(0, (1 << (maxphy - 12)) - 1) << 12
    if maxphy < 52 and chance(0.1) then e = e | (1 << S.random(maxphy, 51)) end   -- above MAXPHYADDR
    if chance(0.1) then e = e | (1 << S.random(52, 62)) end       -- ignored or reserved
    if chance(0.3) then e = e | NX end
    if chance(0.15) then e = e | (1 << S.random(13, 29)) end      -- large-page reserved bits
  end
  if chance(0.9) then e = e | P end
  if chance(0.7) then e = e | RW end
  if chance(0.7) then e = e | US end
  if chance(0.5) then e = e | A end
  if chance(0.5) then e = e | D end
  if chance(0.25) then e = e | PS end
  if chance(0.2) then e = e | (1 << 8) end                        -- G
  if not (mode == "legacy32") and chance(0.05) then e = e | (1 << S.random(1, 8)) end
  return e
end

local function random_va(mode)
  if mode == "legacy32" or mode == "pae" then return S.random(0, 0xFFFFFFFF) end
  local bits = mode == "long4" and 48 or 57
  local low = S.random(0, (1 << (bits - 1)) - 1)
  if chance(0.5) then low = low | (-1 << (bits - 1)) end          -- upper half
  if chance(0.05) then low = low ~ (1 << S.random(bits, 63)) end  -- non-canonical
  return low
end

local MAXPHY = { 36, 39, 40, 42, 46, 52 }
for i = 1, opts.random do
  local mode = MODES[(i % 4) + 1]
  local maxphy = mode == "legacy32" and MAXPHY[S.random(1, 4)] or MAXPHY[S.random(1, #MAXPHY)]
  local entries = {}
  for lvl = 1, LEVELS[mode] do entries[lvl] = random_entry(mode, maxphy) end
  compare{ mode = mode, va = random_va(mode), access = ACCESSES[S.random(1, 3)], cpl = chance(0.5) and 3 or 0,
           cr0_wp = chance(0.5), cr4_pse = chance(0.5), cr4_pge = chance(0.5), cr4_smep = chance(0.5),
           cr4_smap = chance(0.5), efer_nxe = chance(0.5), rflags_ac = chance(0.5), maxphyaddr = maxphy,
           entries = entries }
end
local randomized = checked - structured

---------------------------------------------------------------------------------------
-- 3. The machine path: the same kind of cases through a vCPU and guest memory.
---------------------------------------------------------------------------------------
local machine_checked = 0
for _, mode in ipairs(MODES) do
  local vm = S.vm{ policy = "bare-metal",  mode = mode, memory = "64M", maxphyaddr = 46, pse = true }
  local cpu = vm.vcpu[1]
  local levels = LEVELS[mode]
  local esize = mode == "legacy32" and 4 or 8
  local space = vm:space()
  -- A private chain of tables for the test address: tables[L] is the table at level L.
  local tables = {}
  tables[levels] = space.cr3
  for lvl = levels - 1, 1, -1 do tables[lvl] = vm:alloc_frame() end
  local data4k = vm:alloc_frame()
  local va = mode == "legacy32" and 0x00801234 or (mode == "pae" and 0x40201234 or 0x0000123440201234)
  local function index(lvl)
    if mode == "legacy32" then return (va >> (12 + 10 * (lvl - 1))) & 0x3FF end
    if mode == "pae" and lvl == 3 then return (va >> 30) & 3 end
    return (va >> (12 + 9 * (lvl - 1))) & 0x1FF
  end
  local function entry_gpa(lvl) return tables[lvl] + index(lvl) * esize end
  S.expect_ok(cpu:load_cr3(space))

  for n = 1, opts.machine // 4 do
    -- Rights and A/D at random, P mostly set, a large leaf sometimes.
    local large_level = nil
    if chance(0.3) then large_level = (mode ~= "legacy32" and mode ~= "pae" and chance(0.3)) and 3 or 2 end
    local entries = {}
    for lvl = levels, 1, -1 do
      local e
      if mode == "pae" and lvl == 3 then
        e = tables[2] | P
        if chance(0.03) then e = e | RW end                      -- reserved in a PDPTE: #GP at load
      elseif large_level and lvl == large_level then
        e = (lvl == 3 and 0 or 0x00C00000) | PS
      elseif large_level and lvl < large_level then
        e = 0
      else
        e = lvl == 1 and data4k or tables[lvl - 1]
      end
      if not (mode == "pae" and lvl == 3) and (not large_level or lvl >= large_level) then
        if chance(0.95) then e = e | P end
        if chance(0.75) then e = e | RW end
        if chance(0.75) then e = e | US end
        if chance(0.4) then e = e | A end
        if chance(0.4) then e = e | D end
        if mode ~= "legacy32" and chance(0.2) then e = e | NX end
        if chance(0.03) and mode ~= "legacy32" then e = e | (1 << 51) end   -- reserved at M = 46
      end
      entries[#entries + 1] = e
    end
    local ctl = { wp = chance(0.5), smep = chance(0.5), smap = chance(0.5), nxe = mode ~= "legacy32" and true or chance(0.5),
                  ac = chance(0.5) }
    local access = ACCESSES[S.random(1, 3)]
    local cpl = chance(0.5) and 3 or 0
    local case = { mode = mode, va = va, access = access, cpl = cpl, cr0_wp = ctl.wp, cr4_pse = true,
                   cr4_smep = ctl.smep, cr4_smap = ctl.smap, efer_nxe = ctl.nxe, rflags_ac = ctl.ac,
                   maxphyaddr = 46, entries = entries }
    -- In PAE mode MOV to CR4 reloads the PDPTEs: leave a valid one there first.
    if mode == "pae" then vm:write_phys(entry_gpa(3), tables[2] | P, 8) end
    S.expect_ok(cpu:set{ wp = ctl.wp, smep = ctl.smep, smap = ctl.smap, nxe = ctl.nxe, ac = ctl.ac, cpl = 0 })
    for i, e in ipairs(entries) do vm:write_phys(entry_gpa(levels - i + 1), e, esize) end
    cpu:invlpg(va)

    local function read_entries()
      local list = {}
      for i = 1, levels do list[i] = vm:read_phys(entry_gpa(levels - i + 1), esize) end
      return list
    end
    local function machine_access()
      if mode == "pae" then
        local ok, fault = cpu:load_cr3(space)
        if not ok then return { outcome = fault.kind, entries = read_entries() } end
      end
      local first, second
      if access == "read" then first, second = cpu:read(va, 1, cpl)
      elseif access == "write" then first, second = cpu:write(va, 0x5A, 1, cpl)
      else first, second = cpu:fetch(va, cpl) end
      local r = {}
      if first == nil then
        r.outcome, r.error_code = second.kind, second.error_code
      else
        r.outcome, r.gpa = "ok", access == "read" and second or first
      end
      r.entries = read_entries()
      return r
    end

    for attempt = 1, 2 do
      local want = ref.walk(case)
      local got = machine_access()
      machine_checked = machine_checked + 1
      -- The machine reads and writes memory through the large page too: only check
      -- pages that exist in this 64 MiB guest.
      local ok, why = same(got, want)
      if not ok then report(("machine, access %d"):format(attempt), case, why) end
      case.entries = want.entries   -- the repeat starts from what the first access left
    end
  end
end

print(("x86 walk matrix: %d structured + %d random one-shot walks, %d machine accesses; %d mismatches")
  :format(structured, randomized, machine_checked, failures))
S.record("walk_matrix", { structured = structured, random = randomized, machine = machine_checked, mismatches = failures })
S.expect_eq(failures, 0, "mismatches with the reference walker")

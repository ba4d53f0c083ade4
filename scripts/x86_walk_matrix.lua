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
--     MAXPHYADDR and addresses, including non-canonical ones).
-- The same cases through a real vCPU under every policy: x86_rights_machine.lua.
-- Arguments: `-- random=N` to change the number of random cases.
local S = shadowsim
local ref = require("x86_ref")
local W = require("walk_cases")

local opts = { random = 20000 }
for _, a in ipairs(S.args) do
  local k, v = a:match("^(%w+)=(%d+)$")
  if k and opts[k] then opts[k] = tonumber(v) end
end

local MODES, LEVELS, ACCESSES = W.MODES, W.LEVELS, W.ACCESSES
local P, RW, US, A, D, PS, NX = W.P, W.RW, W.US, W.A, W.D, W.PS, W.NX
local chance = W.chance
local mismatches = W.reporter()
local checked = 0

local function compare(case)
  checked = checked + 1
  local got = S.x86.walk(case)
  local want = ref.walk(case)
  local ok, why = W.same(got, want)
  if not ok then mismatches.report("x86.walk", case, why) end
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

print(("x86 walk matrix: %d structured + %d random one-shot walks; %d mismatches")
  :format(structured, randomized, mismatches.failures))
S.record("walk_matrix", { structured = structured, random = randomized, mismatches = mismatches.failures })
S.expect_eq(mismatches.failures, 0, "mismatches with the reference walker")

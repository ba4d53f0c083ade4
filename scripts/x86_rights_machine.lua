-- runs under: every policy
-- x86_rights_machine.lua: the rights matrix through a real vCPU, under every policy,
-- against the independent reference walker (lib/x86_ref.lua).
--
-- For each paging mode, seeded random cases: the entries of one address at every level
-- (rights, A/D, XD, present bits, sometimes a reserved bit or a large leaf), and the
-- controls CR0.WP, CR4.SMEP, CR4.SMAP, RFLAGS.AC and EFER.NXE changed between accesses
-- (every combination comes up). The guest writes the entries itself, with stores
-- through its physmap a shadow MMU must trap, then INVLPGs the address; the access and
-- its repeat (a TLB hit, or the re-walk a write through a clean entry needs) must give
-- the reference's outcome, gpa or error code, and leave the same A/D bits in memory.
-- Arguments: `-- machine=N` (cases per run, split over the four modes).
local S = shadowsim
local ref = require("x86_ref")
local W = require("walk_cases")

local opts = { machine = 2000 }
for _, a in ipairs(S.args) do
  local k, v = a:match("^(%w+)=(%d+)$")
  if k and opts[k] then opts[k] = tonumber(v) end
end

local MODES, LEVELS, ACCESSES = W.MODES, W.LEVELS, W.ACCESSES
local P, RW, US, A, D, PS, NX = W.P, W.RW, W.US, W.A, W.D, W.PS, W.NX
local chance = W.chance
local mismatches = W.reporter()

---------------------------------------------------------------------------------------
local machine_checked = 0
for _, mode in ipairs(MODES) do
  local vm = S.vm{ mode = mode, memory = "64M", maxphyaddr = 46, pse = true }
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
  -- A guest store, at CPL 0 through the physmap: the path a shadow MMU write-protects.
  local function store_entry(lvl, e)
    local ok, fault = cpu:write(vm:physmap(entry_gpa(lvl)), e, esize, 0)
    if ok == nil then error(mode .. ": the entry store faulted: " .. fault.text) end
  end
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
    if mode == "pae" then store_entry(3, tables[2] | P) end
    S.expect_ok(cpu:set{ wp = ctl.wp, smep = ctl.smep, smap = ctl.smap, nxe = ctl.nxe, ac = ctl.ac, cpl = 0 })
    for i, e in ipairs(entries) do store_entry(levels - i + 1, e) end
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
      local ok, why = W.same(got, want)
      if not ok then mismatches.report(("machine, access %d"):format(attempt), case, why) end
      case.entries = want.entries   -- the repeat starts from what the first access left
    end
  end
end

print(("x86 rights through a vCPU under %s: %d accesses; %d mismatches")
  :format(S.default_policy, machine_checked, mismatches.failures))
S.record("rights_machine", { machine = machine_checked, mismatches = mismatches.failures })
S.expect_eq(mismatches.failures, 0, "mismatches with the reference walker")

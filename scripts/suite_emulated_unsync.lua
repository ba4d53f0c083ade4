-- runs under: every policy
--
-- suite_emulated_unsync.lua: guest page-table writes of every kind, compared result by
-- result -- and A/D flag by A/D flag -- with an identical bare-metal guest, in all four
-- paging modes. Two guests are built identically: one with policy "bare-metal" (the x86
-- reference), one under --policy; every operation is mirrored on both. Two processes
-- on two vCPUs; each process has pages in two page tables, and user-writable aliases
-- of its first page table and of its page directory (so user code can store into its
-- own paging structures). Seeded random operations:
--  * kernel stores to a leaf table in use, through the physmap (a shadow MMU lets the
--    table go unsync, or emulates the store, depending on the policy);
--  * user-mode (CPL 3) stores of PTEs through the page-table alias;
--  * kernel stores to the page directory (upper level: always emulated) -- retargeting a
--    PDE to another table, back, clearing P or A -- and user-mode stores of PDEs
--    through the page-directory alias;
--  * CR3 switches; reads, writes and fetches at CPL 0 and 3.
-- Every change is followed, on every vCPU running that process, by INVLPG of each
-- address it affects, a CR3 reload or a PGE toggle (the guest's TLB shootdown), so
-- nothing may be stale: every access must give the same outcome, error code, gpa and
-- value on both guests, and afterwards every entry on its path must hold the same value
-- (A and D set as hardware sets them). All entries of both processes are compared every
-- 16 operations. Arguments: `-- ops=N` (default 500 per mode).
local S = shadowsim
local mirror = require("mirror")
local P = S.PTE

local ops = 500
for _, a in ipairs(S.args) do ops = tonumber(a:match("^ops=(%d+)$")) or ops end

local VCPUS, PROCS = 2, 2
local mismatches, compared = 0, 0

local same, show = mirror.same, mirror.show

local function report(mode, what, a, b)
  mismatches = mismatches + 1
  if mismatches <= 10 then
    print(("MISMATCH %s %s: bare metal [%s], %s [%s]"):format(mode, what, a, S.default_policy, b))
  end
end

for mi, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local wide = mode ~= "legacy32"
  local esz = wide and 8 or 4
  local span = wide and 0x200000 or 0x400000
  local levels = ({ legacy32 = 2, pae = 3, long4 = 4, long5 = 5 })[mode]
  local ADDR = wide and 0x000FFFFFFFFFF000 or 0xFFFFF000
  local R1 = 0x00400000
  local R2 = R1 + 2 * span
  local ALIAS_PT, ALIAS_PD = R1 + 6 * span, R1 + 6 * span + 0x1000
  local regions = { R1, R2 }
  local pages = { [R1] = {}, [R2] = {} }
  for i = 0, 7 do pages[R1][#pages[R1] + 1] = R1 + i * 0x1000 end
  for i = 0, 3 do pages[R2][#pages[R2] + 1] = R2 + i * 0x1000 end
  local all = {}
  for _, r in ipairs(regions) do for _, va in ipairs(pages[r]) do all[#all + 1] = va end end

  -- The two guests, built identically.
  local guests = {}
  for gi, policy in ipairs{ "bare-metal", S.default_policy } do
    local vm = S.vm{ mode = mode, vcpus = VCPUS, memory = "64M", policy = policy, name = mode .. "-" .. gi }
    local g = { vm = vm, spaces = {}, frames = {}, home = {}, alt = {} }
    for i = 1, 16 do
      g.frames[i] = vm:alloc_frame()
      vm:write_phys(g.frames[i], (0xE1 << 48) | (mi << 40) | i, 8)
    end
    for p = 1, PROCS do
      local s = vm:space()
      g.spaces[p] = s
      for i, va in ipairs(all) do s:map(va, g.frames[(i + p) % 16 + 1]) end
      g.home[p] = { [R1] = s:entry(R1, 2), [R2] = s:entry(R2, 2) }
      -- Another page table for each region, prepared with plain stores.
      g.alt[p] = {}
      for ri, r in ipairs(regions) do
        local t = vm:alloc_frame()
        for i = 0, 2 do
          vm.vcpu[1]:write(vm:physmap(t + i * esz), g.frames[(i * 5 + ri + p) % 16 + 1] | P.P | P.RW | P.US, esz, 0)
        end
        g.alt[p][r] = t
      end
      local _, pde_gpa = s:entry(R1, 2)
      s:map(ALIAS_PT, g.home[p][R1] & ADDR)                   -- the first page table, user-writable
      s:map(ALIAS_PD, pde_gpa & ~0xFFF)                       -- the page directory, user-writable
    end
    guests[gi] = g
  end
  local on = {}
  for v = 1, VCPUS do on[v] = v % PROCS + 1 end
  for _, g in ipairs(guests) do
    for v = 1, VCPUS do S.expect_ok(g.vm.vcpu[v]:load_cr3(g.spaces[on[v]])) end
  end

  -- Do f(guest) on both guests and compare what it returns.
  local function both(what, f)
    local r = {}
    for gi, g in ipairs(guests) do r[gi] = table.pack(f(g)) end
    compared = compared + 1
    if not same(r[1], r[2]) then report(mode, what, show(r[1]), show(r[2])) end
  end

  -- Compare the entries on the path of va in process p.
  local function compare_path(p, va, what)
    for l = levels, 1, -1 do
      local a = guests[1].spaces[p]:entry(va, l)
      local b = guests[2].spaces[p]:entry(va, l)
      compared = compared + 1
      if a ~= b then report(mode, ("%s: process %d level-%d entry of %s"):format(what, p, l, S.hex(va)), S.hex(a), S.hex(b)) end
    end
  end

  local function compare_all(what)
    for p = 1, PROCS do
      for _, va in ipairs(all) do compare_path(p, va, what) end
      compare_path(p, ALIAS_PT, what); compare_path(p, ALIAS_PD, what)
    end
  end

  -- The guest's shootdown of `vas` in process p: on every vCPU running p.
  local function shootdown(p, vas) mirror.shootdown(guests, on, p, vas) end

  -- A random PTE value (frame index chosen by the caller; same on both guests).
  local function pte_value(g, fi, bits)
    if bits == 0 then return 0 end
    return g.frames[fi] | bits
  end
  local function random_pte_bits()
    if S.random() < 0.12 then return 0 end
    local b = P.P
    if S.random() < 0.7 then b = b | P.RW end
    if S.random() < 0.85 then b = b | P.US end
    if S.random() < 0.5 then b = b | P.A end
    if S.random() < 0.3 then b = b | P.D end
    if wide and S.random() < 0.15 then b = b | P.NX end
    return b
  end
  -- A PDE for region r of process p: home table, the other table, or not present;
  -- A set or clear.
  local function pde_value(g, p, r, choice, accessed)
    if choice == 3 then return 0 end
    local t = choice == 1 and (g.home[p][r] & ADDR) or g.alt[p][r]
    return t | P.P | P.RW | P.US | (accessed and P.A or 0)
  end
  local function pde_index(va) return wide and (va >> 21) & 511 or va >> 22 end
  local function runner(p)
    for v = 1, VCPUS do if on[v] == p then return v end end
  end

  for step = 1, ops do
    if step % 16 == 0 then compare_all(("step %d"):format(step)) end
    local r = S.random(1, 100)
    local v = S.random(1, VCPUS)
    local p = S.random(1, PROCS)
    if r <= 15 then
      -- A kernel store of a PTE through the physmap (the table is in use).
      local reg = regions[S.random(1, 2)]
      local va = pages[reg][S.random(1, #pages[reg])]
      local fi, bits = S.random(1, 16), random_pte_bits()
      if guests[1].spaces[p]:entry(va, 2) & P.P ~= 0 then
        for _, g in ipairs(guests) do
          g.spaces[p]:set_entry(va, 1, pte_value(g, fi, bits), { by = g.vm.vcpu[v] })
        end
        shootdown(p, { va })
      end
    elseif r <= 27 then
      -- A user-mode store of a PTE through the alias of the first page table.
      local w = runner(p)
      if w then
        local i = S.random(0, 7)
        local fi, bits = S.random(1, 16), random_pte_bits()
        both(("vcpu %d user store of PTE %d of process %d"):format(w, i, p), function(g)
          return g.vm.vcpu[w]:write(ALIAS_PT + i * esz, pte_value(g, fi, bits), esz, 3)
        end)
        shootdown(p, { R1 + i * 0x1000 })
      end
    elseif r <= 34 then
      -- A kernel store of a PDE (upper level) through the physmap.
      local reg = regions[S.random(1, 2)]
      local choice, accessed = S.random(1, 3), S.random() < 0.5
      for _, g in ipairs(guests) do
        g.spaces[p]:set_entry(reg, 2, pde_value(g, p, reg, choice, accessed), { by = g.vm.vcpu[v] })
      end
      shootdown(p, pages[reg])
    elseif r <= 39 then
      -- A user-mode store of a PDE through the page-directory alias.
      local w = runner(p)
      if w then
        local reg = regions[S.random(1, 2)]
        local choice, accessed = S.random(1, 3), S.random() < 0.5
        both(("vcpu %d user store of the PDE of %s, process %d"):format(w, S.hex(reg), p), function(g)
          return g.vm.vcpu[w]:write(ALIAS_PD + pde_index(reg) * esz, pde_value(g, p, reg, choice, accessed), esz, 3)
        end)
        shootdown(p, pages[reg])
      end
    elseif r <= 47 then
      on[v] = p
      both(("vcpu %d CR3 <- process %d"):format(v, p), function(g) return g.vm.vcpu[v]:load_cr3(g.spaces[p]) end)
    else
      -- An access by vCPU v in the process it runs.
      local va = all[S.random(1, #all)] + S.random(0, 511) * 8
      if S.random() < 0.05 then va = (S.random() < 0.5 and ALIAS_PT or ALIAS_PD) + S.random(0, 511) * 8 end
      local cpl = S.random() < 0.7 and 3 or 0
      local kind = S.random(1, 10)
      -- Data stores only (never into the aliases: those are the store operations above).
      if kind > 5 and kind <= 8 and va >= ALIAS_PT then va = all[1] end
      local what = ("step %d vcpu %d %s %s cpl %d"):format(step, v, kind <= 5 and "read" or kind <= 8 and "write" or "fetch",
                                                         S.hex(va), cpl)
      if kind <= 5 then
        both(what, function(g) return g.vm.vcpu[v]:read(va, 8, cpl) end)
      elseif kind <= 8 then
        local value = S.random(0, 1 << 40)
        both(what, function(g) return g.vm.vcpu[v]:write(va, value, 8, cpl) end)
      else
        both(what, function(g) return g.vm.vcpu[v]:fetch(va, cpl) end)
      end
      compare_path(on[v], va, what)
    end
  end
  compare_all("the end")
  S.record("emulated_unsync_" .. mode, guests[2].vm:counters())
end

print(("suite_emulated_unsync: policy %s: %d results and entries compared with bare metal, %d mismatches")
      :format(S.default_policy, compared, mismatches))
S.expect_eq(mismatches, 0, "results and entries that differ from bare metal")

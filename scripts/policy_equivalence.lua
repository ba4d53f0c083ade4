-- runs under: every policy
--
-- policy_equivalence.lua: a shadow MMU must be invisible to a guest that invalidates
-- what it changes. Two identical guests run the same seeded random operations: one on
-- bare metal (the x86 reference), one under the policy given by --policy. Operations:
-- map, remap, protect and unmap pages (4 KiB and large) in several processes, each
-- change followed, on every vCPU running that process, by INVLPG, a CR3 reload or a
-- PGE toggle (a TLB shootdown);
-- CR3 switches between processes; reads, writes and fetches at CPL 0 and 3. Since
-- nothing is left stale, every access must give the same outcome, error code, gpa and
-- value on both guests, in every paging mode. Every 25 operations the shadow MMU's
-- invariants (reference §10: exact reverse and parent maps, no hidden unsync page,
-- synced tables never writable, gauges equal what they count) are verified.
-- Arguments: `-- ops=N` (default 1500 per mode), `budget=N` (shadow pages; small
-- budgets make the MMU recycle constantly).
local S = shadowsim
local mirror = require("mirror")

local ops, budget = 1500, nil
for _, a in ipairs(S.args) do
  ops = tonumber(a:match("^ops=(%d+)$")) or ops
  budget = tonumber(a:match("^budget=(%d+)$")) or budget
end

local MODES = { "legacy32", "pae", "long4", "long5" }
local VCPUS, PROCS = 2, 3
local mismatches, compared = 0, 0

local same, show = mirror.same, mirror.show

for _, mode in ipairs(MODES) do
  local wide = mode ~= "legacy32"
  local large = mode == "legacy32" and "4m" or "2m"
  local large_bytes = mode == "legacy32" and 4 * S.MiB or 2 * S.MiB
  -- The two guests, built identically.
  local guests = {}
  for i, policy in ipairs({ "bare-metal", S.default_policy }) do
    local vm = S.vm{ mode = mode, vcpus = VCPUS, memory = "64M", policy = policy, name = mode .. "-" .. policy,
                     shadow_pages = policy ~= "bare-metal" and budget or nil }
    local g = { vm = vm, spaces = {}, frames = {} }
    for p = 1, PROCS do g.spaces[p] = vm:space() end
    for f = 1, 24 do g.frames[f] = vm:alloc_frame() end
    g.large_frame = 16 * S.MiB                      -- large pages map RAM at 16 MiB
    guests[i] = g
  end
  local on = {}                                     -- process each vCPU runs
  for v = 1, VCPUS do on[v] = 1 end
  for _, g in ipairs(guests) do
    for v = 1, VCPUS do S.expect_ok(g.vm.vcpu[v]:load_cr3(g.spaces[1])) end
  end

  -- Small pages in two page tables and a large region.
  local pages = {}
  for i = 0, 7 do pages[#pages + 1] = 0x00400000 + i * 0x1000 end
  for i = 0, 3 do pages[#pages + 1] = 0x00A00000 + i * 0x1000 end
  local large_va = 0x01000000                       -- 16 MiB, aligned for 2 and 4 MiB
  local large_mapped = {}

  -- Do `f(guest)` on both guests; compare what it returns.
  local function both(what, f)
    local results = {}
    for i, g in ipairs(guests) do results[i] = table.pack(f(g)) end
    compared = compared + 1
    if not same(results[1], results[2]) then
      mismatches = mismatches + 1
      if mismatches <= 10 then
        print(("MISMATCH %s %s: bare metal [%s], %s [%s]"):format(mode, what, show(results[1]),
              S.default_policy, show(results[2])))
      end
    end
  end

  -- Invalidate va on every vCPU that runs process p (the guest's TLB shootdown), by
  -- INVLPG, by reloading CR3, or by toggling CR4.PGE (a flush of everything).
  local function shootdown(p, va) mirror.shootdown(guests, on, p, { va }) end

  for step = 1, ops do
    if step % 25 == 0 then
      local problems = guests[2].vm:verify()
      if #problems > 0 then error(("%s step %d: shadow MMU invariant broken: %s"):format(mode, step, problems[1])) end
    end
    local r = S.random(1, 100)
    local v = S.random(1, VCPUS)
    if r <= 20 then
      -- Map or remap a small page.
      local p, va = S.random(1, PROCS), pages[S.random(1, #pages)]
      local f = S.random(1, 24)
      local attrs = { write = S.random() < 0.7, user = S.random() < 0.8, nx = wide and S.random() < 0.2 }
      for _, g in ipairs(guests) do
        attrs.by = g.vm.vcpu[v]
        g.spaces[p]:map(va, g.frames[f], attrs)
      end
      shootdown(p, va)
    elseif r <= 27 then
      local p, va = S.random(1, PROCS), pages[S.random(1, #pages)]
      for _, g in ipairs(guests) do g.spaces[p]:unmap(va, { by = g.vm.vcpu[v] }) end
      shootdown(p, va)
    elseif r <= 30 then
      -- A large page, or its removal.
      local p = S.random(1, PROCS)
      if large_mapped[p] then
        for _, g in ipairs(guests) do g.spaces[p]:unmap(large_va, { by = g.vm.vcpu[v] }) end
        large_mapped[p] = nil
        shootdown(p, large_va)
      elseif S.random() < 0.5 then
        -- Only where no page table sits in the way yet.
        local free = true
        for _, g in ipairs(guests) do
          local e = g.spaces[p]:entry(large_va, 2)
          if e and e ~= 0 then free = false end
        end
        if free then
          for _, g in ipairs(guests) do
            g.spaces[p]:map(large_va, g.large_frame, { size = large, user = true, by = g.vm.vcpu[v] })
          end
          large_mapped[p] = true
          shootdown(p, large_va)
        end
      end
    elseif r <= 40 then
      local p = S.random(1, PROCS)
      on[v] = p
      both("vcpu " .. v .. " CR3 <- process " .. p, function(g) return g.vm.vcpu[v]:load_cr3(g.spaces[p]) end)
    else
      -- An access.
      local va
      if S.random() < 0.1 and large_mapped[on[v]] then
        va = large_va + S.random(0, large_bytes // 8 - 1) * 8
      else
        va = pages[S.random(1, #pages)] + S.random(0, 511) * 8
      end
      local cpl = S.random() < 0.6 and 3 or 0
      local kind = S.random(1, 10)
      if kind <= 5 then
        both(("vcpu %d read %s cpl %d"):format(v, S.hex(va), cpl), function(g) return g.vm.vcpu[v]:read(va, 8, cpl) end)
      elseif kind <= 9 then
        local value = S.random(0, 1 << 40)
        both(("vcpu %d write %s cpl %d"):format(v, S.hex(va), cpl),
             function(g) return g.vm.vcpu[v]:write(va, value, 8, cpl) end)
      else
        both(("vcpu %d fetch %s cpl %d"):format(v, S.hex(va), cpl), function(g) return g.vm.vcpu[v]:fetch(va, cpl) end)
      end
    end
  end
  S.record("equivalence_" .. mode, guests[2].vm:counters())
end

print(("policy %s: %d results compared with bare metal, %d mismatches"):format(S.default_policy, compared, mismatches))
S.expect_eq(mismatches, 0, "results that differ from bare metal")

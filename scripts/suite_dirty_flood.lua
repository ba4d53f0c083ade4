-- runs under: every policy
--
-- suite_dirty_flood.lua: accessed/dirty flags, write flooding and misaligned
-- page-table stores, in all four paging modes.
--  1. Dirty bits: a clean writable page read first (A set, D clear), then written (D
--     set: the write must walk again although the translation is cached); D cleared
--     by the guest + INVLPG, then written again (D set again); A and D both cleared +
--     INVLPG: a read sets A only, a write then sets D; a first access that is a write
--     sets both. A cleared in a PDE (same table) + INVLPG: the next access sets it (INVLPG
--     also empties the paging-structure caches, so the walk reads the PDE). A page
--     cached clean by vCPU 2, dirtied by vCPU 1, cleaned + INVLPG on both: vCPU 2's
--     write sets D.
--  2. Flooding: 16 consecutive stores making PDEs present (each pointing at a
--     prepared page table), accessed with no invalidation (not present -> present);
--     20 consecutive rewrites of one PDE alternating between two tables, then INVLPG;
--     30 consecutive remaps in one page table, then a flushing MOV to CR3; a PD
--     flooded while vCPU 2 runs the space, then INVLPG on both.
--  3. Misaligned stores through the physmap: a 2-byte store into the middle of a PTE
--     (frame bits 24..39; in legacy32 it straddles into the next PTE's flags, making it
--     read-only); a 2-byte store straddling two 64-bit PTEs (NX on one, read-only on the
--     next); an 8-byte store at +4 across two 64-bit PTEs; a 2-byte store into the
--     middle of a PDE (retargets it); a 1-byte store clearing R/W. Each followed by
--     INVLPG of the affected addresses, after which the accesses must match the tables.
local S = shadowsim
local P, PF = S.PTE, S.PF
local expect_ok, expect_eq = S.expect_ok, S.expect_eq

local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

for mi, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ mode = mode, vcpus = 2, memory = "64M" }
  local c, c2 = vm.vcpu[1], vm.vcpu[2]
  local wide = mode ~= "legacy32"
  local esz = wide and 8 or 4
  local span = wide and 0x200000 or 0x400000
  local ADDR = wide and 0x000FFFFFFFFFF000 or 0xFFFFF000
  local TABLE = P.P | P.RW | P.US
  local marker = {}
  local function mark(f)
    marker[f] = (0xD127 << 32) | (mi << 28) | f
    vm:write_phys(f, marker[f], 8)
    return f
  end
  local function frame() return mark(vm:alloc_frame()) end
  local f = {}
  for i = 1, 24 do f[i] = frame() end
  local s = vm:space()

  -- A user read of va must reach what the tables give (or fault when unmapped).
  local function sees(cpu, va, what)
    local e, level = s:leaf(va)
    if e == nil then faults(PF.U, what, cpu:read(va, 8, 3)); return end
    expect_eq(level, 1, what .. ": a 4 KiB leaf")
    local fr = e & ADDR
    local v, pa = cpu:read(va, 8, 3)
    if v == nil then error(("%s: read of %s faulted: %s"):format(what, S.hex(va), pa.text), 2) end
    if pa ~= fr or v ~= marker[fr] then
      error(("%s: read of %s reached %s (%s), expected %s"):format(what, S.hex(va), S.hex(pa), S.hex(v), S.hex(fr)), 2)
    end
  end
  local function pte(va) return (s:entry(va, 1)) end
  local function flags(va, what, want)
    expect_eq(pte(va) & (P.A | P.D), want, what)
  end

  ---------------------------------------------------------------- 1. dirty bits
  local D = { 0x00400000, 0x00401000, 0x00402000, 0x00403000 }
  for i, va in ipairs(D) do s:map(va, f[i]) end                 -- A and D clear
  expect_ok(c:load_cr3(s))
  expect_ok(c2:load_cr3(s))
  local m = mode .. " 1: "
  sees(c, D[1], m .. "read of a clean page")
  flags(D[1], m .. "a read sets A only", P.A)
  expect_ok(c:write(D[1], marker[f[1]], 8, 3))
  flags(D[1], m .. "a write after the read sets D", P.A | P.D)
  s:map(D[1], f[1], { accessed = true })                        -- the guest cleans D
  expect_ok(c:invlpg(D[1]))
  sees(c, D[1], m .. "read after cleaning D")
  flags(D[1], m .. "still clean after the read", P.A)
  expect_ok(c:write(D[1], marker[f[1]], 8, 3))
  flags(D[1], m .. "D set again", P.A | P.D)
  s:map(D[1], f[1])                                             -- A and D cleared
  expect_ok(c:invlpg(D[1]))
  sees(c, D[1], m .. "read after clearing A and D")
  flags(D[1], m .. "A set again by the read, D clear", P.A)
  expect_ok(c:write(D[1], marker[f[1]], 8, 3))
  flags(D[1], m .. "D set by the write", P.A | P.D)
  expect_ok(c:write(D[2], marker[f[2]], 8, 3))
  flags(D[2], m .. "a first access that writes sets A and D", P.A | P.D)
  -- A cleared in the PDE, same table.
  local pde = s:entry(D[3], 2)
  s:set_entry(D[3], 2, pde & ~P.A)
  expect_ok(c:invlpg(D[3]))
  sees(c, D[3], m .. "read after clearing A in the PDE")
  expect_eq(s:entry(D[3], 2) & P.A, P.A, m .. "A set again in the PDE")
  -- Two vCPUs.
  sees(c2, D[4], m .. "vCPU 2 caches a clean page")
  expect_ok(c:write(D[4], marker[f[4]], 8, 3))
  flags(D[4], m .. "vCPU 1 dirtied it", P.A | P.D)
  s:map(D[4], f[4], { accessed = true })
  expect_ok(c:invlpg(D[4])); expect_ok(c2:invlpg(D[4]))
  sees(c2, D[4], m .. "vCPU 2 reads the cleaned page")
  expect_ok(c2:write(D[4], marker[f[4]], 8, 3))
  flags(D[4], m .. "vCPU 2's write set D", P.A | P.D)
  expect_ok(c:write(D[4], marker[f[4]], 8, 3))
  flags(D[4], m .. "vCPU 1's write", P.A | P.D)

  ---------------------------------------------------------------- 2. flooding
  m = mode .. " 2: "
  -- Prepared page tables (plain frames until a PDE points at them).
  local function table_with(pages)
    local t = vm:alloc_frame()
    for i, fr in pairs(pages) do expect_ok(c:write(vm:physmap(t + i * esz), fr | TABLE, esz, 0)) end
    return t
  end
  local base = 0x01000000                                       -- PDEs from here on are absent
  local n_tables = 16
  local tables = {}
  for k = 1, n_tables do tables[k] = table_with({ [0] = f[k % #f + 1], [1] = f[(k + 3) % #f + 1] }) end
  for k = 1, n_tables do                                        -- 16 consecutive PDE stores
    s:set_entry(base + (k - 1) * span, 2, tables[k] | TABLE)
  end
  for k = 1, n_tables do
    local va = base + (k - 1) * span
    sees(c, va, m .. "flooded PDE " .. k .. ", no invalidation")
    sees(c, va + 0x1000, m .. "flooded PDE " .. k .. ", second page")
    sees(c, va + 0x2000, m .. "flooded PDE " .. k .. ", absent page")
  end
  -- One PDE rewritten 20 times, then INVLPG.
  local one = base
  for r = 1, 20 do s:set_entry(one, 2, tables[r % 2 == 1 and 2 or 3] | TABLE) end
  expect_ok(c:invlpg(one)); expect_ok(c:invlpg(one + 0x1000))
  sees(c, one, m .. "after 20 rewrites of one PDE")
  sees(c, one + 0x1000, m .. "after 20 rewrites of one PDE, second page")
  -- 30 consecutive remaps in one page table, then a flushing MOV to CR3.
  local L = {}
  for i = 0, 7 do L[#L + 1] = 0x00600000 + i * 0x1000; s:map(L[#L], f[i + 1]) end
  for _, va in ipairs(L) do sees(c, va, m .. "leaf table before flooding") end
  for r = 1, 30 do s:map(L[r % #L + 1], f[(r * 7) % #f + 1]) end
  expect_ok(c:load_cr3(s))
  for _, va in ipairs(L) do sees(c, va, m .. "leaf table after 30 remaps and MOV to CR3") end
  -- A page directory flooded while vCPU 2 runs the space.
  for k = 1, 4 do                                               -- vCPU 2 caches them
    expect_ok(c2:invlpg(base + (k - 1) * span))
    sees(c2, base + (k - 1) * span, m .. "vCPU 2 before the flood")
  end
  for r = 1, 12 do
    local k = (r - 1) % 4 + 1
    s:set_entry(base + (k - 1) * span, 2, tables[(r + 4) % n_tables + 1] | TABLE, { by = c })
  end
  for k = 1, 4 do
    local va = base + (k - 1) * span
    for _, cpu in ipairs{ c, c2 } do
      expect_ok(cpu:invlpg(va)); expect_ok(cpu:invlpg(va + 0x1000))
      sees(cpu, va, m .. "vCPU " .. cpu:index() .. " after the flood, PDE " .. k)
      sees(cpu, va + 0x1000, m .. "vCPU " .. cpu:index() .. " after the flood, PDE " .. k .. " second page")
    end
  end

  ---------------------------------------------------------------- 3. misaligned stores
  m = mode .. " 3: "
  local M = { 0x00800000, 0x00801000, 0x00802000, 0x00803000 }
  for i, va in ipairs(M) do s:map(va, f[10 + i]) end
  for _, va in ipairs(M) do sees(c, va, m .. "before"); sees(c2, va, m .. "vCPU 2 before") end
  local function entry_gpa(va, level) return select(2, s:entry(va, level)) end
  local function invalidate(list)
    for _, va in ipairs(list) do expect_ok(c:invlpg(va)); expect_ok(c2:invlpg(va)) end
  end
  -- (a) 2 bytes at +3: frame bits 24..39 (legacy32: byte 3, then byte 0 of the next PTE).
  local fr = pte(M[1]) & ADDR
  mark(fr + 0x1000000)                                          -- the frame 16 MiB up
  local lo = 0x01                                               -- frame bits 24.. := 1
  local hi = wide and ((pte(M[1]) >> 32) & 0xFF) or (pte(M[2]) & 0xFF & ~P.RW)
  expect_ok(c:write(vm:physmap(entry_gpa(M[1], 1)) + 3, lo | (hi << 8), 2))
  expect_eq(pte(M[1]) & ADDR, fr + 0x1000000, m .. "(a) the PTE's frame moved 16 MiB up")
  invalidate{ M[1], M[2] }
  sees(c, M[1], m .. "(a) after the misaligned store")
  sees(c2, M[1], m .. "(a) vCPU 2 after the misaligned store")
  sees(c, M[2], m .. "(a) the next page")
  if not wide then
    faults(PF.P | PF.W | PF.U, m .. "(a) the next PTE became read-only", c:write(M[2], 1, 8, 3))
    faults(PF.P | PF.W | PF.U, m .. "(a) vCPU 2: the next PTE became read-only", c2:write(M[2], 1, 8, 3))
  end
  -- (b) 64-bit entries: 2 bytes at +7 straddle two PTEs: NX on one, R/W clear on the next.
  if wide then
    expect_ok(c:write(vm:physmap(entry_gpa(M[2], 1)) + 7, 0x80 | ((pte(M[3]) & 0xFF & ~P.RW) << 8), 2))
    expect_eq(pte(M[2]) & P.NX, P.NX, m .. "(b) NX set by the straddling store")
    expect_eq(pte(M[3]) & P.RW, 0, m .. "(b) R/W cleared by the straddling store")
    invalidate{ M[2], M[3] }
    faults(PF.P | PF.U | PF.I, m .. "(b) fetch from the NX page", c:fetch(M[2], 3))
    faults(PF.P | PF.U | PF.I, m .. "(b) vCPU 2: fetch from the NX page", c2:fetch(M[2], 3))
    sees(c, M[2], m .. "(b) the NX page reads")
    faults(PF.P | PF.W | PF.U, m .. "(b) the read-only page", c:write(M[3], 1, 8, 3))
    faults(PF.P | PF.W | PF.U, m .. "(b) vCPU 2: the read-only page", c2:write(M[3], 1, 8, 3))
    sees(c2, M[3], m .. "(b) the read-only page reads")
    -- (c) 8 bytes at +4: the high half of one PTE and the low half of the next.
    local new_low = f[20] | TABLE | P.A
    expect_ok(c:write(vm:physmap(entry_gpa(M[3], 1)) + 4, (pte(M[3]) >> 32) | (new_low << 32), 8))
    expect_eq(pte(M[4]) & ADDR, f[20], m .. "(c) the next PTE now maps another frame")
    invalidate{ M[3], M[4] }
    sees(c, M[4], m .. "(c) after the 8-byte store at +4")
    sees(c2, M[4], m .. "(c) vCPU 2 after the 8-byte store at +4")
    sees(c, M[3], m .. "(c) the PTE whose high half was rewritten")
  end
  -- (d) 2 bytes at +1 of a PDE: retarget it to another page table.
  local pdva = M[1]
  local old_pde, pde_gpa = s:entry(pdva, 2)
  local other = table_with({ [0] = f[21], [1] = f[22], [2] = f[23], [3] = f[24] })
  S.expect((old_pde & ADDR) >> 24 == other >> 24, m .. "(d) both tables below the same 16 MiB")
  local new_pde = (old_pde & ~0xFFFF00) | (other & 0xFFFF00)
  expect_ok(c:write(vm:physmap(pde_gpa) + 1, (new_pde >> 8) & 0xFFFF, 2))
  expect_eq(s:entry(pdva, 2) & ADDR, other, m .. "(d) the PDE points at the other table")
  invalidate(M)
  for _, va in ipairs(M) do
    sees(c, va, m .. "(d) through the retargeted PDE " .. S.hex(va))
    sees(c2, va, m .. "(d) vCPU 2 through the retargeted PDE " .. S.hex(va))
  end
  -- (e) 1 byte: clear R/W of a PTE.
  local g = entry_gpa(M[2], 1)
  expect_ok(c:write(vm:physmap(g), vm:read_phys(g, 1) & ~P.RW, 1))
  invalidate{ M[2] }
  faults(PF.P | PF.W | PF.U, m .. "(e) R/W cleared by a 1-byte store", c:write(M[2], 1, 8, 3))
  sees(c, M[2], m .. "(e) still readable")
  -- and set again, 1 byte, with A and D: the write works.
  expect_ok(c:write(vm:physmap(g), vm:read_phys(g, 1) | P.RW | P.A | P.D, 1))
  invalidate{ M[2] }
  expect_ok(c2:write(M[2], marker[pte(M[2]) & ADDR], 8, 3))
  sees(c2, M[2], m .. "(e) writable again")
  -- Everything, after a flushing MOV to CR3 on both vCPUs.
  expect_ok(c:load_cr3(s)); expect_ok(c2:load_cr3(s))
  for _, va in ipairs(M) do sees(c, va, m .. "at the end " .. S.hex(va)); sees(c2, va, m .. "vCPU 2 at the end " .. S.hex(va)) end
  for _, va in ipairs(D) do sees(c, va, m .. "at the end " .. S.hex(va)) end
  for _, va in ipairs(L) do sees(c2, va, m .. "at the end " .. S.hex(va)) end
end
print("suite_dirty_flood: ok under " .. S.default_policy)

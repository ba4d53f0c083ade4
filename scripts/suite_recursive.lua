-- runs under: every policy
--
-- suite_recursive.lua: recursive ("self-map") page tables, in all four paging modes.
-- One guest frame is used as a table at two levels: the top-level table holds an
-- entry pointing at itself (long4: PML4[493], the classic 0xFFFFF680_00000000 window;
-- long5: PML5[493]), or a page directory holds a PDE pointing at itself (legacy32:
-- PD[767]; pae: PD0[500], the page directory of the first GiB). Through that window
-- every paging-structure entry of the space has a virtual address (supervisor,
-- writable), so the kernel reads and writes its tables with plain stores -- stores a
-- shadow MMU must trap although they do not go through the physmap.
--  1. Reads of tables through the self-map: each entry on the path of a few addresses
--     (PTE, PDE, ... and the self entry itself) reads as the tables hold it, at the
--     gpa where it lives; user mode faults on the window (supervisor).
--  2. PTE edits through the self-map: remap (present -> present) + INVLPG, a new PTE
--     (not present -> present, no invalidation), unmap + INVLPG.
--  3. PDE edits through the self-map: a PDE retargeted to another page table (+ INVLPG
--     of the address and of the table's window address), then restored.
--  4. New tables through the self-map, with no invalidation at all (every change is
--     not present -> present): a PDE to a fresh table, then a PTE in it through its
--     window address; in long modes also a PDPTE to a fresh page directory.
--  5. The top-level entry of a region cleared through the full recursion + INVLPGs
--     (the region faults), then restored (not present -> present: seen at once).
--  6. Another vCPU edits PTEs through its own self-map view; each vCPU sees them after
--     its INVLPG. Then a second space with its own self-map: after each flushing CR3
--     switch the window shows the running space's tables.
local S = shadowsim
local P, PF = S.PTE, S.PF
local expect_ok, expect_eq = S.expect_ok, S.expect_eq

local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

for mi, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ mode = mode, vcpus = 2, memory = "64M" }
  local c, c2 = vm.vcpu[1], vm.vcpu[2]
  local wide = mode ~= "legacy32"
  local esz = wide and 8 or 4
  local levels = ({ legacy32 = 2, pae = 3, long4 = 4, long5 = 5 })[mode]
  local span = wide and 0x200000 or 0x400000                   -- what one PDE maps
  local ADDR = wide and 0x000FFFFFFFFFF000 or 0xFFFFF000
  local TABLE = P.P | P.RW | P.US
  local marker = {}
  local f = {}
  for i = 1, 16 do
    f[i] = vm:alloc_frame()
    marker[f[i]] = (0x5E1F << 32) | (mi << 24) | i
    vm:write_phys(f[i], marker[f[i]], 8)
  end

  -- The window: R and the virtual address of the level-L entry for va.
  local R, rva
  if mode == "legacy32" then
    R = 767
    rva = function(va, L)
      if L == 1 then return (R << 22) | ((va >> 10) & 0x3FFFFC) end
      return (R << 22) | (R << 12) | ((va >> 22) * 4)
    end
  elseif mode == "pae" then
    R = 500                                                    -- in PD0: first GiB only
    rva = function(va, L)
      assert(va < 0x40000000)
      if L == 1 then return (R << 21) | ((va >> 9) & 0x1FFFF8) end
      return (R << 21) | (R << 12) | (((va >> 21) & 511) * 8)
    end
  else
    R = 493
    local top = levels * 9 + 12 - 1                          -- 47 or 56: the sign bit
    rva = function(va, L)
      local out = 0
      for pos = levels, 1, -1 do
        local i = pos > levels - L and R or (va >> (12 + 9 * (pos + L - 1))) & 511
        out = out | (i << (12 + 9 * (pos - 1)))
      end
      out = out | (((va >> (12 + 9 * (L - 1))) & 511) * 8)
      if (out >> top) & 1 == 1 then out = out | (-1 << top) end
      return out
    end
  end
  local window_levels = mode == "pae" and 2 or levels          -- levels reachable through it

  local function selfmap(s)
    if mode == "legacy32" then
      s:set_entry(R << 22, 2, s.cr3 | P.P | P.RW)
    elseif mode == "pae" then
      local pd0 = s:entry(0, 3) & ADDR
      s:set_entry(R << 21, 2, pd0 | P.P | P.RW)
    else
      local base = rva(0, levels) & ~0xFFF                       -- any address with top index R
      s:set_entry(base, levels, s.cr3 | P.P | P.RW)
    end
  end

  -- The entry at level L for va, read through the window, must be what the tables hold.
  local function window_reads(cpu, s, va, L, what)
    local want, gpa = s:entry(va, L)
    local v, pa = cpu:read(rva(va, L), esz, 0)
    if v == nil then error(("%s: window read of %s faulted: %s"):format(what, S.hex(rva(va, L)), pa.text), 2) end
    local now = s:entry(va, L)
    if pa ~= gpa then error(("%s: window read reached %s, expected the entry at %s"):format(what, S.hex(pa), S.hex(gpa)), 2) end
    if v ~= want and v ~= now then
      error(("%s: window read gave %s, the tables hold %s"):format(what, S.hex(v), S.hex(now)), 2)
    end
    return v
  end

  -- A user read of va must reach the frame its tables give (or fault when unmapped).
  local function sees(cpu, s, va, what)
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

  -- A store of an entry through the window, at CPL 0.
  local function store(cpu, va, L, value)
    expect_ok(cpu:write(rva(va, L), value, esz, 0))
  end

  local VA1, VA2, VA5 = 0x00400000, 0x00401000, 0x00405000     -- one page table
  local VA3 = VA1 + 4 * span                                    -- another, same index as VA1
  local VA6 = VA1 + 8 * span                                    -- no table yet
  local VA7 = ({ long4 = 0x0000008000000000, long5 = 0x0001000000000000 })[mode]  -- another top-level entry
  local VA8 = mode ~= "legacy32" and VA1 + 0x40000000 or nil    -- 64-bit entries: another PDPTE slot

  local A = vm:space()
  A:map(VA1, f[1]); A:map(VA2, f[2]); A:map(VA3, f[3])
  if VA7 then A:map(VA7, f[9]) end
  selfmap(A)
  expect_ok(c:load_cr3(A))
  local all = { VA1, VA2, VA3, VA5, VA6 }
  if VA7 then all[#all + 1] = VA7 end
  local function sees_all(cpu, s, what)
    for _, va in ipairs(all) do sees(cpu, s, va, what .. " " .. S.hex(va)) end
  end
  sees_all(c, A, mode .. " start")

  ---------------------------------------------------------------- 1. reads through the window
  for _, va in ipairs{ VA1, VA2, VA3 } do
    for L = 1, window_levels do window_reads(c, A, va, L, ("%s 1: %s level %d"):format(mode, S.hex(va), L)) end
  end
  local selfva = mode == "legacy32" and (R << 22) or mode == "pae" and (R << 21) or rva(0, levels)
  local self_entry = window_reads(c, A, selfva, window_levels, mode .. " 1: the self entry")
  expect_eq(self_entry & ADDR, mode == "pae" and (A:entry(0, 3) & ADDR) or A.cr3, mode .. " 1: the self entry points at its own table")
  faults(PF.P | PF.U, mode .. " 1: user read of the window", c:read(rva(VA1, 1), esz, 3))

  ---------------------------------------------------------------- 2. PTE edits through the window
  store(c, VA1, 1, f[4] | TABLE | P.A)                          -- remap
  expect_ok(c:invlpg(VA1))
  sees(c, A, VA1, mode .. " 2: remapped through the window")
  store(c, VA5, 1, f[5] | TABLE)                                -- not present -> present
  sees(c, A, VA5, mode .. " 2: new PTE through the window, no invalidation")
  store(c, VA2, 1, 0)                                           -- unmap
  expect_ok(c:invlpg(VA2))
  sees(c, A, VA2, mode .. " 2: unmapped through the window")
  for _, va in ipairs{ VA1, VA2, VA5 } do window_reads(c, A, va, 1, mode .. " 2: PTE " .. S.hex(va) .. " read back") end
  store(c, VA2, 1, f[2] | TABLE)                                -- not present -> present again
  sees(c, A, VA2, mode .. " 2: VA2 mapped again")

  ---------------------------------------------------------------- 3. a PDE retargeted through the window
  local home, far = A:entry(VA1, 2), A:entry(VA3, 2)
  store(c, VA1, 2, far)
  expect_ok(c:invlpg(VA1)); expect_ok(c:invlpg(VA2)); expect_ok(c:invlpg(VA5))
  expect_ok(c:invlpg(rva(VA1, 1)))
  sees(c, A, VA1, mode .. " 3: VA1 through VA3's table")
  sees(c, A, VA2, mode .. " 3: VA2 through VA3's table (absent there)")
  window_reads(c, A, VA1, 1, mode .. " 3: the window shows VA3's table")
  store(c, VA1, 2, home)
  expect_ok(c:invlpg(VA1)); expect_ok(c:invlpg(VA2))
  expect_ok(c:invlpg(rva(VA1, 1)))
  sees(c, A, VA1, mode .. " 3: restored")
  sees(c, A, VA2, mode .. " 3: restored, VA2")
  window_reads(c, A, VA2, 1, mode .. " 3: the window shows VA1's table again")

  ---------------------------------------------------------------- 4. new tables through the window
  local t = vm:alloc_frame()
  store(c, VA6, 2, t | TABLE)                                   -- not present -> present
  store(c, VA6, 1, f[6] | TABLE)                                -- into the new table, through its window
  sees(c, A, VA6, mode .. " 4: a table made through the window")
  window_reads(c, A, VA6, 1, mode .. " 4: its PTE through the window")
  if VA8 and mode ~= "pae" then
    local pd, pt = vm:alloc_frame(), vm:alloc_frame()
    store(c, VA8, 3, pd | TABLE)
    store(c, VA8, 2, pt | TABLE)
    store(c, VA8, 1, f[8] | TABLE)
    sees(c, A, VA8, mode .. " 4: a page directory and a table made through the window")
    all[#all + 1] = VA8
  end

  ---------------------------------------------------------------- 5. a top-level entry through the full recursion
  if VA7 then
    local e = A:entry(VA7, levels)
    store(c, VA7, levels, 0)
    expect_ok(c:invlpg(VA7))
    for L = 1, levels - 1 do expect_ok(c:invlpg(rva(VA7, L))) end
    sees(c, A, VA7, mode .. " 5: top-level entry cleared")
    store(c, VA7, levels, e)                                    -- not present -> present
    sees(c, A, VA7, mode .. " 5: top-level entry restored")
    window_reads(c, A, VA7, 1, mode .. " 5: VA7's PTE through the window")
  end

  ---------------------------------------------------------------- 6. two vCPUs, two spaces
  expect_ok(c2:load_cr3(A))
  sees_all(c2, A, mode .. " 6: vCPU 2")
  store(c2, VA3, 1, f[7] | TABLE | P.A)
  store(c2, VA1, 1, f[1] | TABLE)
  expect_ok(c2:invlpg(VA3)); expect_ok(c2:invlpg(VA1))
  sees_all(c2, A, mode .. " 6: vCPU 2 after its own edits")
  expect_ok(c:invlpg(VA3)); expect_ok(c:invlpg(VA1))
  sees_all(c, A, mode .. " 6: vCPU 1 after INVLPG")
  expect_ok(c:load_cr3(A))
  sees_all(c, A, mode .. " 6: vCPU 1 after MOV to CR3")

  local B = vm:space()
  B:map(VA1, f[10]); B:map(VA2, f[11]); B:map(VA3, f[12])
  selfmap(B)
  for round = 1, 3 do
    expect_ok(c:load_cr3(B))
    sees_all(c, B, mode .. " 6: B, round " .. round)
    for _, va in ipairs{ VA1, VA2, VA3 } do window_reads(c, B, va, 1, mode .. " 6: B's window, round " .. round) end
    store(c, VA2, 1, f[12 + round] | TABLE)                     -- B edits itself
    expect_ok(c:invlpg(VA2))
    sees(c, B, VA2, mode .. " 6: B after its edit, round " .. round)
    expect_ok(c:load_cr3(A))
    sees_all(c, A, mode .. " 6: A, round " .. round)
    for _, va in ipairs{ VA1, VA2, VA3 } do window_reads(c, A, va, 1, mode .. " 6: A's window, round " .. round) end
    store(c, VA1, 1, f[round % 2 == 1 and 4 or 1] | TABLE)      -- A edits itself
    expect_ok(c:invlpg(VA1))
    sees(c, A, VA1, mode .. " 6: A after its edit, round " .. round)
    B:map(VA3, f[12 - round], { by = c })                       -- A edits B through the physmap
  end
  expect_ok(c2:load_cr3(B))
  sees_all(c2, B, mode .. " 6: vCPU 2 on B")
  expect_ok(c2:load_cr3(A))
  sees_all(c2, A, mode .. " 6: vCPU 2 back on A")
end
print("suite_recursive: ok under " .. S.default_policy)

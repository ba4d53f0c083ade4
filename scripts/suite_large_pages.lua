-- runs under: every policy
--
-- suite_large_pages.lua: large guest pages -- 4 MiB (legacy32), 2 MiB (pae, long4,
-- long5) and 1 GiB (long4, long5) -- on two guests per mode: host pages of 4 KiB (the
-- default: a shadow MMU maps a large guest page with small sptes) and of 2 MiB. For
-- each large page size:
--  1. Translation of offsets across the page; A set, D clear after reads; a write sets D
--     in the mapping entry (PDE / PDPTE); after the guest clears D and INVLPGs an
--     interior address, a write sets it again.
--  2. Remap to another frame + INVLPG of an interior address (x86: INVLPG of any
--     address in a large page removes every entry for it): every offset must see the
--     new frame. Read-only remap + INVLPG: a user write faults; writable again +
--     INVLPG: the write works and sets D.
--  3. Splitting in place: the mapping entry is replaced by a table of smaller pages
--     (some keep the old frames, some move, one is a hole) and each page that is then
--     used is INVLPG'd; a page of the new table is edited and INVLPG'd. Merging in
--     place: the table is replaced by a large page and the used pages INVLPG'd, then
--     CR3 is reloaded; the old table's frame is freed and reused as user data.
--  4. Splitting and merging the way the SDM recommends (4.10.4.2): clear P, INVLPG,
--     install the new entry (not present -> present): no further invalidation needed.
--  5. Another vCPU with the large page cached sees a remap after its own INVLPG.
--  6. A 4 KiB frame inside the large page becomes a page table of another range; a store
--     through the large page into it changes that range's translation.
local S = shadowsim
local P, PF = S.PTE, S.PF
local expect_ok = S.expect_ok

local data = {}                                   -- gpa -> the 8 bytes the scenario put there

local function put(vm, gpa, value)
  vm:write_phys(gpa, value, 8)
  data[gpa] = value
end

local function reads(c, va, gpa, what, cpl) return S.expect_read(c, va, gpa, nil, what, cpl or 3) end

local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

-- One large page size on one guest.
-- cfg: size, bytes, level (of the mapping entry), child (bytes of the pages of a split),
--      va, g1, g2 (frames aligned to the size), tag
local function large(vm, s, cfg, what)
  local c, c2 = vm.vcpu[1], vm.vcpu[2]
  local esz = vm.mode == "legacy32" and 4 or 8
  local va, n, cb, L = cfg.va, cfg.bytes, cfg.child, cfg.level
  local G1, G2 = cfg.g1, cfg.g2
  local LARGE = P.P | P.RW | P.US | P.PS
  local offs = { 0, 0x1238, n // 2 + 0x5670, n - 8 }
  for i, off in ipairs(offs) do
    put(vm, G1 + off, cfg.tag | 0x100 | i)
    put(vm, G2 + off, cfg.tag | 0x200 | i)
  end
  local K = n // cb                               -- entries of a split table
  local used = { 0, 1, 5, K - 1 }                 -- child pages used after a split
  local hole = 2                                  -- left not present
  for _, i in ipairs(used) do
    put(vm, G1 + i * cb + 0x10, cfg.tag | 0x1000 | i)
    put(vm, G2 + i * cb + 0x10, cfg.tag | 0x2000 | i)
  end
  local function mapping_entry() return (s:entry(va, L)) end

  ---------------------------------------------------------------- 1. offsets, A and D
  s:map(va, G1, { size = cfg.size })
  expect_ok(c:load_cr3(s))
  for _, off in ipairs(offs) do reads(c, va + off, G1 + off, what .. " 1: offset " .. S.hex(off)) end
  S.expect_eq(mapping_entry() & (P.A | P.D), P.A, what .. " 1: A set, D clear after reads")
  expect_ok(c:write(va + offs[3], data[G1 + offs[3]], 8, 3))
  S.expect_eq(mapping_entry() & P.D, P.D, what .. " 1: a write set D in the mapping entry")
  s:map(va, G1, { size = cfg.size, accessed = true })           -- the guest cleans D
  expect_ok(c:invlpg(va + offs[4]))
  reads(c, va + offs[2], G1 + offs[2], what .. " 1: read after cleaning D")
  expect_ok(c:write(va + offs[2], data[G1 + offs[2]], 8, 3))
  S.expect_eq(mapping_entry() & P.D, P.D, what .. " 1: the write after cleaning D set it again")

  ---------------------------------------------------------------- 2. remaps
  s:map(va, G2, { size = cfg.size })
  expect_ok(c:invlpg(va + offs[3]))
  for _, off in ipairs(offs) do reads(c, va + off, G2 + off, what .. " 2: remapped, offset " .. S.hex(off)) end
  s:map(va, G2, { size = cfg.size, write = false, accessed = true })
  expect_ok(c:invlpg(va + offs[2]))
  faults(PF.P | PF.W | PF.U, what .. " 2: write to the read-only large page", c:write(va + offs[4], 1, 8, 3))
  reads(c, va + offs[4], G2 + offs[4], what .. " 2: read of the read-only large page")
  s:map(va, G2, { size = cfg.size, accessed = true })
  expect_ok(c:invlpg(va + offs[4]))
  expect_ok(c:write(va + offs[4], data[G2 + offs[4]], 8, 3))
  S.expect_eq(mapping_entry() & P.D, P.D, what .. " 2: writable again, the write set D")

  ---------------------------------------------------------------- 3. split and merge in place
  -- A child table: even pages keep G2's frames, odd ones move to G1's; `hole` is absent.
  local function target(i) return (i % 2 == 0 and G2 or G1) + i * cb end
  local function child_entry(i) return target(i) | P.P | P.RW | P.US | (cb > 0x1000 and P.PS or 0) end
  local function build_child()
    local t = vm:alloc_frame()
    for _, i in ipairs(used) do expect_ok(c:write(vm:physmap(t + i * esz), child_entry(i), esz, 0)) end
    return t
  end
  local function check_child(step)
    for _, i in ipairs(used) do reads(c, va + i * cb + 0x10, target(i) + 0x10, what .. step .. " page " .. i) end
    faults(PF.U, what .. step .. " the hole", c:read(va + hole * cb + 0x10, 8, 3))
  end
  for _, i in ipairs(used) do reads(c, va + i * cb + 0x10, G2 + i * cb + 0x10, what .. " 3: before the split, page " .. i) end
  local t = build_child()
  s:set_entry(va, L, t | P.P | P.RW | P.US)
  for _, i in ipairs(used) do expect_ok(c:invlpg(va + i * cb)) end
  expect_ok(c:invlpg(va + hole * cb))
  check_child(" 3: split in place")
  -- An edit of the new table: page 1 back to G2's frame.
  expect_ok(c:write(vm:physmap(t + 1 * esz), (G2 + cb) | P.P | P.RW | P.US | (cb > 0x1000 and P.PS or 0), esz, 0))
  expect_ok(c:invlpg(va + cb))
  reads(c, va + cb + 0x10, G2 + cb + 0x10, what .. " 3: page 1 of the split table, edited")
  expect_ok(c:write(vm:physmap(t + 1 * esz), child_entry(1), esz, 0))
  expect_ok(c:invlpg(va + cb))
  expect_ok(c:write(va + cb + 0x10, data[target(1) + 0x10], 8, 3))
  S.expect_eq(vm:read_phys(t + 1 * esz, esz) & P.D, P.D, what .. " 3: a write set D in the child entry")
  -- Merge in place.
  s:set_entry(va, L, G1 | LARGE)
  for _, i in ipairs(used) do expect_ok(c:invlpg(va + i * cb)) end
  for _, i in ipairs(used) do reads(c, va + i * cb + 0x10, G1 + i * cb + 0x10, what .. " 3: merged, page " .. i) end
  expect_ok(c:load_cr3(s))
  for _, off in ipairs(offs) do reads(c, va + off, G1 + off, what .. " 3: merged, after MOV to CR3, offset " .. S.hex(off)) end
  expect_ok(c:write(va + offs[3], data[G1 + offs[3]], 8, 3))
  S.expect_eq(mapping_entry() & (P.A | P.D), P.A | P.D, what .. " 3: merged, A and D set")
  -- The old table's frame becomes user data.
  vm:free_frame(t)
  local d = vm:alloc_frame()
  S.expect_eq(d, t, what .. " 3: the freed table frame is reused")
  s:map(cfg.data_va, d)
  expect_ok(c:write(cfg.data_va + 8, 0xDA7A, 8, 3))
  expect_ok(c:write(cfg.data_va + 8 * 3, 0xDA7B, 8, 3))
  S.expect_eq(select(1, c:read(cfg.data_va + 8, 8, 3)), 0xDA7A, what .. " 3: the reused frame holds user data")
  S.expect_eq(vm:read_phys(d + 8 * 3, 8), 0xDA7B, what .. " 3: the stores reached the reused frame")

  ---------------------------------------------------------------- 4. split and merge the SDM way
  s:set_entry(va, L, G1 | LARGE & ~P.P)                         -- clear P
  expect_ok(c:invlpg(va + offs[2]))
  faults(PF.U, what .. " 4: P cleared", c:read(va + offs[3], 8, 3))
  local t2 = build_child()
  s:set_entry(va, L, t2 | P.P | P.RW | P.US)                    -- not present -> present
  check_child(" 4: split, no invalidation after the new entry")
  s:set_entry(va, L, t2 | P.RW | P.US)                          -- clear P
  for _, i in ipairs(used) do expect_ok(c:invlpg(va + i * cb)) end
  s:set_entry(va, L, G2 | LARGE)                                -- not present -> present
  for _, off in ipairs(offs) do reads(c, va + off, G2 + off, what .. " 4: merged, offset " .. S.hex(off)) end
  for _, i in ipairs(used) do reads(c, va + i * cb + 0x10, G2 + i * cb + 0x10, what .. " 4: merged, page " .. i) end

  ---------------------------------------------------------------- 5. another vCPU
  expect_ok(c2:load_cr3(s))
  reads(c2, va + offs[2], G2 + offs[2], what .. " 5: vCPU 2 caches the large page")
  s:map(va, G1, { size = cfg.size, by = c })
  expect_ok(c:invlpg(va))
  expect_ok(c2:invlpg(va + offs[4]))
  for _, off in ipairs(offs) do
    reads(c2, va + off, G1 + off, what .. " 5: vCPU 2 after its INVLPG, offset " .. S.hex(off))
    reads(c, va + off, G1 + off, what .. " 5: vCPU 1, offset " .. S.hex(off))
  end
  expect_ok(c2:load_cr3(vm.kernel))

  ---------------------------------------------------------------- 6. a frame inside it becomes a page table
  -- A 4 KiB frame of the large page (written through it: writable, D set) becomes the
  -- page table of another range. Shadowing that table must take write access away
  -- from every mapping of the frame, large ones that cover it included, so that a later
  -- store through the large page into the table is seen: after an INVLPG, the range
  -- translates as the table now says.
  local TF = G1 + 3 * 0x1000                      -- a frame no host store touched
  local KF, MF = vm:alloc_frame(), vm:alloc_frame()
  local Y = 0x02000000
  local PTEF = P.P | P.RW | P.US | P.A | P.D
  expect_ok(c:write(va + 3 * 0x1000, KF | PTEF, esz, 3))
  s:map(Y, vm:alloc_frame())                      -- Y's upper tables
  s:set_entry(Y, 2, TF | P.P | P.RW | P.US | P.A, { by = c })
  expect_ok(c:invlpg(Y))
  reads(c, Y, KF, what .. " 6: Y through the table inside the large page")
  expect_ok(c:write(va + 3 * 0x1000, MF | PTEF, esz, 3))
  expect_ok(c:invlpg(Y))
  reads(c, Y, MF, what .. " 6: a store through the large page changed the table")
  s:set_entry(Y, 2, 0, { by = c })
  expect_ok(c:invlpg(Y))
end

local CFG = {
  legacy32 = { { size = "4m", bytes = 4 * S.MiB, level = 2, child = 0x1000, va = 0x00800000,
                 g1 = 0x01000000, g2 = 0x01400000, data_va = 0x00400000 } },
  pae = { { size = "2m", bytes = 2 * S.MiB, level = 2, child = 0x1000, va = 0x00800000,
            g1 = 0x01000000, g2 = 0x01200000, data_va = 0x00400000 } },
}
for _, mode in ipairs{ "long4", "long5" } do
  CFG[mode] = {
    { size = "2m", bytes = 2 * S.MiB, level = 2, child = 0x1000, va = 0x00800000,
      g1 = 0x01000000, g2 = 0x01200000, data_va = 0x00400000 },
    { size = "1g", bytes = S.GiB, level = 3, child = 2 * S.MiB, va = 0x0000004080000000,
      g1 = 0x40000000, g2 = 0x80000000, data_va = 0x00401000 },
  }
end

for mi, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  for hi, host in ipairs{ "4k", "2m" } do
    local vm = S.vm{ mode = mode, vcpus = 2, host_pages = host, memory = (mode == "long4" or mode == "long5") and "3G" or "64M" }
    local s = vm:space()
    for ci, cfg in ipairs(CFG[mode]) do
      cfg.tag = (mi << 40) | (hi << 36) | (ci << 32)
      large(vm, s, cfg, ("%s host %s %s"):format(mode, host, cfg.size))
    end
  end
end
print("suite_large_pages: ok under " .. S.default_policy)

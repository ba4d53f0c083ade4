-- large_pages.lua -- 4 MiB (32-bit paging, CR4.PSE), 2 MiB (PAE, 4/5-level) and
-- 1 GiB (4/5-level) pages (Intel SDM vol. 3A 4.3, 4.4.2, 4.5.4, 4.8, 4.10.2.3,
-- 4.10.4.1), in all four modes.
--
-- What it proves, for each large page size the mode has:
--  * Every address inside the page translates to page base + offset (first byte,
--    an interior byte, the last 8 bytes), and the data comes from there.
--  * One TLB entry serves the whole page: after the first access, accesses at
--    other offsets are hits with no walk.
--  * The mapping entry is the PDE (4M/2M) or PDPTE (1G): s:leaf reports that level,
--    there is no PTE; a read sets A in it (and in every entry above), not D;
--    a write sets D in it.
--  * After the PDE/PDPTE is changed, the stale translation is used; INVLPG of an
--    address outside the page leaves it; INVLPG of ANY address inside the page
--    (not only its base) removes it.
--  * A global large page survives MOV to CR3; INVLPG of an interior address removes
--    it. A #PF caused by a stale large entry removes it (the retry succeeds).
--  * Reserved bits of a large-page entry give #PF with P|RSVD (4M: bit 21; 2M:
--    bits 20:13; 1G: bits 29:13), with W/U as the access says.
--  * PSE-36: a 4 MiB PDE's bits 20:13 are physical-address bits 39:32 below
--    MAXPHYADDR (M = 46, 40) and reserved above it (M = 36: bits 20:17); bit 21 is
--    always reserved.
--  * 32-bit paging with CR4.PSE = 0 ignores PS: the PDE references a page table.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local PTE, PF = S.PTE, S.PF

local read_is = S.expect_read

local pf_is = S.expect_fault

local delta_is = S.expect_delta

-- One large-page size in one mode.
-- cfg: mode, size ("4m"|"2m"|"1g"), bytes, level (of the mapping entry), va,
--      gpa1, gpa2 (two page-aligned frames), rsvd (a reserved-bit mask), memory
local function large(cfg)
  local what = cfg.mode .. "/" .. cfg.size
  local vm = S.vm{ policy = "bare-metal",  mode = cfg.mode, memory = cfg.memory }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local va, n = cfg.va, cfg.bytes
  local offsets = { 0, 0x1238, n // 2 + 0x5670, n - 8 }
  for i, off in ipairs(offsets) do
    vm:write_phys(cfg.gpa1 + off, 0x100 + i, 8)
    vm:write_phys(cfg.gpa2 + off, 0x200 + i, 8)
  end
  s:map(va, cfg.gpa1, { size = cfg.size })
  S.expect_ok(c:load_cr3(s))

  local e, level = s:leaf(va + n - 1)
  S.expect_eq(level, cfg.level, what .. ": leaf level")
  S.expect_eq(e & PTE.PS, PTE.PS, what .. ": PS set in the mapping entry")
  S.expect_eq(s:entry(va, 1), nil, what .. ": no PTE under a large page")
  S.expect_eq(e & (PTE.A | PTE.D), 0, what .. ": A and D clear after map")

  -- Translation of every offset; one walk for the whole page.
  local before = c:counters()
  for i, off in ipairs(offsets) do
    read_is(c, va + off, cfg.gpa1 + off, 0x100 + i, what .. ": offset " .. S.hex(off))
  end
  delta_is(before, c:counters(), { walks = 1, tlb_misses = 1, tlb_hits = #offsets - 1 }, what .. ": one walk for the page")
  S.expect_eq(S.expect_ok(c:translate(va + n - 1, "fetch")), cfg.gpa1 + n - 1, what .. ": fetch of the last byte")

  -- A in every entry of the path, D nowhere (read only so far).
  for l = cfg.levels, cfg.level, -1 do
    local v = s:entry(va, l)
    if not (cfg.mode == "pae" and l == 3) then          -- PAE PDPTEs have no A flag
      S.expect_eq(v & PTE.A, PTE.A, what .. ": A set at level " .. l)
    end
  end
  S.expect_eq(s:entry(va, cfg.level) & PTE.D, 0, what .. ": D clear after reads")
  S.expect_ok(c:write(va + offsets[3], 0xD1D1))
  S.expect_eq(s:entry(va, cfg.level) & (PTE.A | PTE.D), PTE.A | PTE.D, what .. ": D set in the mapping entry by a write")
  S.expect_eq(vm:read_phys(cfg.gpa1 + offsets[3], 8), 0xD1D1, what .. ": the write landed at base + offset")
  vm:write_phys(cfg.gpa1 + offsets[3], 0x103, 8)

  -- Stale after remap; INVLPG outside the page keeps it; INVLPG inside removes it.
  local probes = { offsets[2] + 0x10, n - 1, 0x1000 }   -- INVLPG addresses inside the page
  for round, inv in ipairs(probes) do
    local to, from = (round % 2 == 1) and cfg.gpa2 or cfg.gpa1, (round % 2 == 1) and cfg.gpa1 or cfg.gpa2
    local mark = (round % 2 == 1) and 0x200 or 0x100
    read_is(c, va, from, nil, what .. ": round " .. round .. " cached")
    s:map(va, to, { size = cfg.size })
    read_is(c, va + offsets[4], from + offsets[4], nil, what .. ": round " .. round .. " stale after remap")
    c:invlpg(va + n)                                      -- the next page
    c:invlpg(va - 0x1000)                                 -- the page before
    read_is(c, va + offsets[2], from + offsets[2], nil, what .. ": round " .. round .. " INVLPG outside keeps it")
    c:invlpg(va + inv)
    read_is(c, va + offsets[4], to + offsets[4], mark + 4, what .. ": round " .. round .. " INVLPG of " .. S.hex(va + inv) .. " removed it")
  end

  -- Reserved bits in the mapping entry.
  local good = s:entry(va, cfg.level)
  s:set_entry(va, cfg.level, good | cfg.rsvd)
  c:invlpg(va)
  pf_is(PF.P | PF.RSVD, va + 8, what .. ": reserved bit, read", c:read(va + 8))
  pf_is(PF.P | PF.RSVD | PF.W, va + 8, what .. ": reserved bit, write", c:write(va + 8, 0))
  pf_is(PF.P | PF.RSVD | PF.U, va + 8, what .. ": reserved bit, CPL3 read", c:read(va + 8, 8, 3))
  s:set_entry(va, cfg.level, good)
  read_is(c, va + 8, cfg.gpa2 + 8, 0, what .. ": entry without the reserved bit works again (round 3 left gpa2)")

  -- A global large page survives MOV to CR3 into a space that maps it elsewhere;
  -- INVLPG of an interior address removes it.
  local s2 = vm:space{}
  s2:map(va, cfg.gpa1, { size = cfg.size })
  s:map(va, cfg.gpa2, { size = cfg.size, global = true })
  c:invlpg(va)
  read_is(c, va + offsets[2], cfg.gpa2 + offsets[2], 0x202, what .. ": global large page")
  S.expect_ok(c:load_cr3(s2))
  read_is(c, va + offsets[4], cfg.gpa2 + offsets[4], 0x204, what .. ": global large page survives MOV CR3")
  c:invlpg(va + n - 0x1000)
  read_is(c, va + offsets[4], cfg.gpa1 + offsets[4], 0x104, what .. ": INVLPG of its last 4K page removed it")

  -- A #PF through a stale large entry (R/W 0 -> 1) invalidates it: the retry works.
  s2:map(va, cfg.gpa1, { size = cfg.size, write = false, dirty = true })
  c:invlpg(va)
  read_is(c, va + offsets[2], cfg.gpa1 + offsets[2], 0x102, what .. ": read-only large page cached")
  s2:map(va, cfg.gpa1, { size = cfg.size, write = true, dirty = true })
  pf_is(PF.P | PF.W, va + offsets[3], what .. ": write through the stale RO large entry", c:write(va + offsets[3], 0x103))
  S.expect_eq(S.expect_ok(c:write(va + offsets[3], 0x103)), cfg.gpa1 + offsets[3],
              what .. ": retry without INVLPG (the #PF removed the large entry)")
  S.expect_ok(c:load_cr3(s))
  return vm, c, s
end

large{ mode = "legacy32", size = "4m", bytes = 4 * S.MiB, level = 2, levels = 2, va = 0x00800000,
       gpa1 = 0x01000000, gpa2 = 0x01400000, rsvd = 1 << 21 }
large{ mode = "pae", size = "2m", bytes = 2 * S.MiB, level = 2, levels = 3, va = 0x00800000,
       gpa1 = 0x01000000, gpa2 = 0x01200000, rsvd = 1 << 13 }
for _, mode in ipairs{ "long4", "long5" } do
  local levels = mode == "long4" and 4 or 5
  large{ mode = mode, size = "2m", bytes = 2 * S.MiB, level = 2, levels = levels, va = 0x00800000,
         gpa1 = 0x01000000, gpa2 = 0x01200000, rsvd = 1 << 20 }
  large{ mode = mode, size = "1g", bytes = S.GiB, level = 3, levels = levels, va = 0x80000000,
         gpa1 = 0x40000000, gpa2 = 0, rsvd = 1 << 13, memory = "2G" }
  large{ mode = mode, size = "1g", bytes = S.GiB, level = 3, levels = levels, va = 0x00007F8040000000,
         gpa1 = 0, gpa2 = 0x40000000, rsvd = 1 << 29, memory = "2G" }
end

------------------------------------------------------------------ 32-bit paging, PSE-36
-- A 4 MiB PDE carries physical-address bits 39:32 in bits 20:13 (up to MAXPHYADDR,
-- at most 40); the bits above MAXPHYADDR (20:M-19) and bit 21 are reserved. The
-- guest has no RAM up there, so this is checked with translations (no data moved).
for _, m in ipairs{ 46, 40, 36 } do
  local vm = S.vm{ policy = "bare-metal",  mode = "legacy32", maxphyaddr = m }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local va = 0x00C00000
  s:map(va, 0x00400000, { size = "4m" })
  S.expect_ok(c:load_cr3(s))
  local pde = s:entry(va, 2)
  local top = math.min(m, 40) - 32                 -- address bits the PDE can carry above 4 GiB
  for bit = 13, 21 do
    s:set_entry(va, 2, pde | (1 << bit))
    c:invlpg(va)
    local what = "legacy32 M=" .. m .. ": 4M PDE bit " .. bit
    if bit < 13 + top then
      local gpa = S.expect_ok(c:translate(va + 0x12345, "read"))
      S.expect_eq(gpa, (1 << (32 + bit - 13)) | 0x00400000 | 0x12345, what .. " is physical-address bit " .. (32 + bit - 13))
    else
      pf_is(PF.P | PF.RSVD, va + 0x12345, what .. " is reserved", c:translate(va + 0x12345, "read"))
    end
  end
  s:set_entry(va, 2, pde | (0xFF << 13) & ~(1 << 21))
  c:invlpg(va)
  if top == 8 then
    S.expect_eq(S.expect_ok(c:translate(va + 8, "write")), 0xFF00400008, "legacy32 M=" .. m .. ": PDE bits 20:13 all set")
  end
end

------------------------------------------------------------------ 32-bit paging, CR4.PSE = 0
do
  local vm = S.vm{ policy = "bare-metal",  mode = "legacy32" }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local va, big = 0x00800000, 0x01000000
  local f = vm:alloc_frame{}
  vm:write_phys(f + 0x10, 0xF00D, 8)
  vm:write_phys(big + 5 * 0x1000 + 0x10, 0xBAD, 8)
  s:map(va, big, { size = "4m" })
  S.expect_ok(c:load_cr3(s))
  read_is(c, va + 5 * 0x1000 + 0x10, big + 5 * 0x1000 + 0x10, 0xBAD, "legacy32 PSE=1: 4M page")
  S.expect_ok(c:set{ pse = false })
  c:invlpg(va)
  -- PS is ignored: the PDE now references a "page table" at 0x01000000, whose
  -- entry 5 is zero -> not present.
  pf_is(0, va + 5 * 0x1000 + 0x10, "legacy32 PSE=0: PDE read as a page-table pointer",
        c:read(va + 5 * 0x1000 + 0x10))
  vm:write_phys(big + 5 * 4, f | PTE.P | PTE.RW, 4)     -- PTE 5 of that "table"
  read_is(c, va + 5 * 0x1000 + 0x10, f + 0x10, 0xF00D, "legacy32 PSE=0: translated through PTE 5")
  S.expect_eq(vm:read_phys(big + 5 * 4, 4) & PTE.A, PTE.A, "legacy32 PSE=0: A set in that PTE")
  -- Back to PSE = 1: the PDE maps the 4 MiB page again once the 4 KiB entry of
  -- that page number is invalidated (the MOV to CR4 for PSE need not flush).
  S.expect_ok(c:set{ pse = true })
  c:invlpg(va + 5 * 0x1000)
  read_is(c, va + 5 * 0x1000 + 0x10, big + 5 * 0x1000 + 0x10, 0xBAD, "legacy32 PSE=1 again: 4M page")
end

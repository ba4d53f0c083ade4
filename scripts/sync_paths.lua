-- runs under: every policy
--
-- sync_paths.lua: guest operations on the paths where shadow-MMU sync bugs have lived
-- (reference §11), each followed by the accesses x86 requires to see the change. With
-- the checker on, any stale or wrong result is reported by the checker itself.
--  1. B1, sync before link: a table gets edits (two present PTEs remapped, no flush),
--     then a new (non-present -> present) PDE points at it; accesses through the new
--     PDE, with no flush, must see both edits.
--  2. INVLPG kills a global translation in every PCID (long modes, PCIDs on): a global
--     mapping cached under PCID 1 is remapped while running PCID 2, INVLPG'd there, and
--     the switch back to PCID 1 is a no-flush one; the access must see the new frame.
--  3. Upper-level tables: a PDE is retargeted to another page table and INVLPG'd; the
--     access must use the new table.
--  4. A page table mapped writable in a data range (B3): stores through that alias are
--     page-table stores; after INVLPG the guest must see them.
--  5. Dirty bits: a clean writable page read first, then written: the write sets D.
--  6. Remote flushes: vCPU 2 has a translation cached; vCPU 1 remaps and both INVLPG;
--     both see the new frame.
--  7. A frame becomes a page table while another vCPU has a writable mapping of it
--     cached (B3's cousin): once the table is shadowed, that vCPU's stores through
--     its data mapping must still reach the shadow, so the write protection must be
--     flushed from its TLB.
--  8. A live page table cleared with a string store (fill, as a kernel clears a frame it
--     reuses): after INVLPG the cleared entries are not present any more.
local S = shadowsim
local P = S.PTE
local expect_eq, expect_ok = S.expect_eq, S.expect_ok

local function guest(mode, vcpus)
  local vm = S.vm{ mode = mode, vcpus = vcpus or 1, memory = "64M" }
  local f = {}
  for i = 1, 8 do f[i] = vm:alloc_frame() end
  return vm, vm.vcpu[1], f
end

local function reads(cpu, va, gpa, what) return S.expect_read(cpu, va, gpa, nil, what, 3) end

for _, mode in ipairs({ "legacy32", "pae", "long4", "long5" }) do
  local span = mode == "legacy32" and 0x400000 or 0x200000       -- what one PDE maps

  -- 1. B1
  do
    local vm, c, f = guest(mode)
    local s = vm:space()
    local VA1, VA2 = 0x10000000, 0x10000000 + 4 * span
    s:map(VA1, f[1])
    s:map(VA1 + 0x1000, f[5])
    expect_ok(c:load_cr3(s))
    reads(c, VA1, f[1], mode .. " B1: first mapping")
    reads(c, VA1 + 0x1000, f[5], mode .. " B1: second mapping")
    s:map(VA1, f[2])                                   -- edit two present PTEs, no flush
    s:map(VA1 + 0x1000, f[6])
    local pde = s:entry(VA1, 2)
    s:set_entry(VA2, 2, pde)                           -- a new PDE to the same table
    -- The first access links the table (and fills its own entry); the second uses an
    -- entry the link must have synced.
    reads(c, VA2, f[2], mode .. " B1: through the new PDE, the first edited PTE")
    reads(c, VA2 + 0x1000, f[6], mode .. " B1: through the new PDE, the second edited PTE")
  end

  -- 3. upper-level tables
  do
    local vm, c, f = guest(mode)
    local s = vm:space()
    local VA = 0x20000000
    s:map(VA, f[1])
    s:map(VA + 4 * span, f[2])                         -- another table, same index
    expect_ok(c:load_cr3(s))
    reads(c, VA, f[1], mode .. " PDE: old table")
    s:set_entry(VA, 2, (s:entry(VA + 4 * span, 2)))    -- retarget the PDE
    c:invlpg(VA)
    reads(c, VA, f[2], mode .. " PDE: new table after INVLPG")
  end

  -- 4. a page table mapped writable in a data range
  do
    local vm, c, f = guest(mode)
    local s = vm:space()
    local VA, ALIAS = 0x30000000, 0x38000000
    s:map(VA, f[1])
    local _, pte_gpa = s:entry(VA, 1)
    local pt = pte_gpa & ~0xFFF
    s:map(ALIAS, pt, { write = true, user = true })     -- the table, as data
    expect_ok(c:load_cr3(s))
    reads(c, VA, f[1], mode .. " alias: before")
    local entry = f[3] | P.P | P.RW | P.US | P.A
    local size = mode == "legacy32" and 4 or 8
    expect_ok(c:write(ALIAS + (pte_gpa & 0xFFF), entry, size, 3))   -- store through the alias
    c:invlpg(VA)
    reads(c, VA, f[3], mode .. " alias: after a store through it and INVLPG")
    c:invlpg(ALIAS)
    expect_ok(c:write(ALIAS + (pte_gpa & 0xFFF), f[4] | P.P | P.RW | P.US | P.A, size, 3))
    expect_ok(c:load_cr3(s))
    reads(c, VA, f[4], mode .. " alias: after a second store and a CR3 reload")
  end

  -- 5. dirty bits
  do
    local vm, c, f = guest(mode)
    local s = vm:space()
    local VA = 0x40000000
    s:map(VA, f[1], { accessed = true })
    expect_ok(c:load_cr3(s))
    reads(c, VA, f[1], mode .. " D: read")
    expect_eq(s:entry(VA, 1) & P.D, 0, mode .. " D: clear after a read")
    expect_ok(c:write(VA, 7, 8, 3))
    expect_eq(s:entry(VA, 1) & P.D, P.D, mode .. " D: set by the write")
    s:map(VA, f[1], { accessed = true })               -- clean again, then invalidate
    c:invlpg(VA)
    expect_ok(c:write(VA, 8, 8, 3))
    expect_eq(s:entry(VA, 1) & P.D, P.D, mode .. " D: set again after INVLPG")
  end

  -- 6. remote flushes
  do
    local vm, c, f = guest(mode, 2)
    local c2 = vm.vcpu[2]
    local s = vm:space()
    local VA = 0x50000000
    s:map(VA, f[1])
    expect_ok(c:load_cr3(s))
    expect_ok(c2:load_cr3(s))
    reads(c2, VA, f[1], mode .. " remote: vCPU 2 before")
    s:map(VA, f[2], { by = c })
    c:invlpg(VA)
    c2:invlpg(VA)
    reads(c2, VA, f[2], mode .. " remote: vCPU 2 after both INVLPG")
    reads(c, VA, f[2], mode .. " remote: vCPU 1 after")
  end

  -- 7. a frame becomes a page table under another vCPU's writable mapping
  do
    local vm, c, f = guest(mode, 2)
    local c2 = vm.vcpu[2]
    local s = vm:space()
    local DATA, TABLE = 0x58000000, 0x5C000000
    local frame = vm:alloc_frame()
    s:map(DATA, frame, { write = true, user = true })
    expect_ok(c:load_cr3(s))
    expect_ok(c2:load_cr3(s))
    expect_ok(c2:write(DATA, 0, 8, 3))                     -- vCPU 2 caches DATA, writable
    local size = mode == "legacy32" and 4 or 8
    s:map(TABLE + span, f[7])                           -- make sure TABLE's PDE's table exists
    s:set_entry(TABLE, 2, frame | P.P | P.RW | P.US)    -- the frame becomes TABLE's page table
    vm:write_phys(frame, f[1] | P.P | P.RW | P.US | P.A, size)
    reads(c, TABLE, f[1], mode .. " new table: first translation")   -- vCPU 1 shadows it
    expect_ok(c2:write(DATA, f[2] | P.P | P.RW | P.US | P.A, size, 3))   -- vCPU 2 edits it as data
    c:invlpg(TABLE)
    reads(c, TABLE, f[2], mode .. " new table: vCPU 2's store seen after INVLPG")
  end

  -- 8. a page table cleared with a string store
  do
    local vm, c, f = guest(mode)
    local s = vm:space()
    local VA = 0x5E000000
    s:map(VA, f[1])
    s:map(VA + 0x1000, f[2])
    expect_ok(c:load_cr3(s))
    reads(c, VA, f[1], mode .. " cleared table: before")
    reads(c, VA + 0x1000, f[2], mode .. " cleared table: second page before")
    local _, pte_gpa = s:entry(VA, 1)
    expect_ok(c:fill(vm:physmap(pte_gpa & ~0xFFF), 4096, 0))
    c:invlpg(VA)
    c:invlpg(VA + 0x1000)
    S.expect_pf(nil, c:read(VA, 8, 3))
    S.expect_pf(nil, c:read(VA + 0x1000, 8, 3))
  end

  -- 2. global translations and PCIDs
  if mode == "long4" or mode == "long5" then
    local vm, c, f = guest(mode)
    local A, B = vm:space(), vm:space()
    local VA = 0x60000000
    A:map(VA, f[1], { global = true })
    expect_ok(c:set{ pcide = false })
    expect_ok(c:load_cr3(A))
    expect_ok(c:set{ pcide = true })
    expect_ok(c:load_cr3(A, { pcid = 1 }))
    reads(c, VA, f[1], mode .. " global: cached in PCID 1")
    expect_ok(c:load_cr3(B, { pcid = 2 }))
    A:map(VA, f[2], { global = true })                 -- A's table, edited from B
    c:invlpg(VA)                                       -- kills the global entry everywhere
    expect_ok(c:load_cr3(A, { pcid = 1, noflush = true }))
    reads(c, VA, f[2], mode .. " global: after INVLPG in another PCID")
  end
end
print("sync paths: ok under " .. S.default_policy)

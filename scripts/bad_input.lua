-- bad_input.lua -- misuse of the scenario API is a clear Lua error (not a fault,
-- not a silent success, not a crash).
--
-- What it proves: each of these raises an error whose message names the problem:
--  * shadowsim.vm: unknown option, unknown mode, more than 1 GiB in a 32-bit mode,
--    a size that is not a multiple of 4 KiB or not a size at all, vcpus 0 or 257,
--    maxphyaddr outside 32..52, tlb_entries not a power of two;
--  * access sizes other than 1/2/4/8 (reads, writes, read_phys/write_phys);
--  * a CPL outside 0..3 (read/write/fetch/translate/set), an unknown access kind;
--  * a linear address above 32 bits in legacy32/pae (accesses, INVLPG, map), a
--    CR3 above 32 bits there, a 32-bit entry value above 32 bits;
--  * map: unaligned va or gpa (4k and 2m), a gpa at/after the end of guest memory,
--    page sizes the mode does not have (1g in pae and legacy32, 2m in legacy32,
--    4m in long4/pae), 4m without CR4.PSE, nx without NXE or in 32-bit paging,
--    a non-canonical va, an unknown option or size;
--  * set_entry/entry on a missing table or a bad level; physmap/read_phys beyond
--    memory; free_frame of an unaligned or unallocated frame; load_cr3 with a
--    non-space, a PCID out of range or on top of CR3[11:0], a space of another
--    VM; INVPCID with an unknown type name; shadowsim.x86.walk without a mode,
--    with cpl 1, or with too many entries;
--  * a walk (or s:entry) that reaches a paging structure outside guest memory.
local S = shadowsim

local function err(text, f, ...)
  -- expect_error, reported at this scenario's line.
  local ok, e = pcall(f, ...)
  if ok then error("expected an error containing \"" .. text .. "\", got none", 2) end
  if not string.find(tostring(e), text, 1, true) then
    error("expected an error containing \"" .. text .. "\", got \"" .. tostring(e) .. "\"", 2)
  end
end

---------------------------------------------------------------- shadowsim.vm
err("unknown option 'bogus'", S.vm, { bogus = 1 })
err("option 'mode' must be one of", S.vm, { mode = "long3" })
err("at most 1 GiB", S.vm, { mode = "legacy32", memory = "2G" })
err("at most 1 GiB", S.vm, { mode = "pae", memory = S.GiB + 4096 })
err("multiple of 4 KiB", S.vm, { memory = 12345 })
err("cannot read \"64X\" as a size", S.vm, { memory = "64X" })
err("option 'vcpus' must be 1", S.vm, { vcpus = 0 })
err("option 'vcpus' must be 1", S.vm, { vcpus = 257 })
err("option 'maxphyaddr' must be 32", S.vm, { maxphyaddr = 60 })
err("option 'maxphyaddr' must be 32", S.vm, { maxphyaddr = 31 })
err("power of two", S.vm, { tlb_entries = 100 })

local vm = S.vm{ mode = "long4" }
local c = vm.vcpu[1]
local s = vm:space{}
local f = vm:alloc_frame{}
s:map(0x00400000, f)
S.expect_ok(c:load_cr3(s))

---------------------------------------------------------------- sizes, CPLs, kinds
err("size must be 1, 2, 4 or 8, got 3", c.read, c, 0x00400000, 3)
err("size must be 1, 2, 4 or 8, got 16", c.write, c, 0x00400000, 0, 16)
err("size must be 1, 2, 4 or 8, got 0", vm.read_phys, vm, f, 0)
err("size must be 1, 2, 4 or 8, got 5", vm.write_phys, vm, f, 0, 5)
err("cpl must be 0…3, got 5", c.read, c, 0x00400000, 8, 5)
err("cpl must be 0…3, got -1", c.write, c, 0x00400000, 0, 8, -1)
err("cpl must be 0…3, got 4", c.fetch, c, 0x00400000, 4)
err("cpl must be 0…3, got 5", c.translate, c, 0x00400000, "read", 5)
err("option 'cpl' must be 0…3, got 5", c.set, c, { cpl = 5 })
err("unknown option 'foo'", c.set, c, { foo = true })
err("access must be \"read\", \"write\" or \"fetch\"", c.translate, c, 0x00400000, "exec")
err("count must be", c.fill, c, 0x00400000, -1)
S.expect_eq(c:regs().cpl, 0, "CPL unchanged by the bad set")

---------------------------------------------------------------- map
err("va 0x401001 is not aligned to a 4k page", s.map, s, 0x00401001, f)
err("gpa 0x" .. string.format("%x", f + 8) .. " is not aligned to a 4k page", s.map, s, 0x00401000, f + 8)
err("is not aligned to a 2m page", s.map, s, 0x00201000, 0x00200000, { size = "2m" })
err("is not aligned to a 2m page", s.map, s, 0x00200000, 0x00201000, { size = "2m" })
err("beyond guest memory", s.map, s, 0x00401000, vm.memory)
err("beyond guest memory", s.map, s, 0x00401000, vm.memory + 0x10000)
err("beyond guest memory", s.map, s, 0x40000000, 0x40000000, { size = "1g" })   -- 64 MiB guest
err("long4 paging has no 4m pages", s.map, s, 0x00800000, 0x00800000, { size = "4m" })
err("option 'size' must be one of", s.map, s, 0x00401000, f, { size = "3k" })
err("unknown option 'foo'", s.map, s, 0x00401000, f, { foo = 1 })
err("not canonical", s.map, s, 0x0000800000000000, f)
err("level must be 1…4", s.entry, s, 0x00400000, 5)
err("level must be 1…4", s.entry, s, 0x00400000, 0)
err("no PTE for", s.set_entry, s, 0x7F0000000000, 1, 0)
err("beyond guest memory", vm.physmap, vm, vm.memory)
err("beyond guest memory", vm.read_phys, vm, vm.memory - 4, 8)
err("beyond guest memory", vm.write_phys, vm, vm.memory, 1)
err("not 4 KiB aligned", vm.free_frame, vm, f + 1)
err("is not allocated", vm.free_frame, vm, 0x5000)
do
  local g = vm:alloc_frame{}
  vm:free_frame(g)
  err("is not allocated", vm.free_frame, vm, g)   -- double free
end
do
  local vn = S.vm{ nxe = false }
  local t = vn:space{}
  err("nx needs EFER.NXE", t.map, t, 0x00400000, 0x00400000, { nx = true })
end

---------------------------------------------------------------- control instructions
err("address space or integer expected", c.load_cr3, c, "cr3")
err("option 'pcid' must be 0…4095", c.load_cr3, c, s, { pcid = 4096 })
err("bits 11:0 are already set", c.load_cr3, c, s.cr3 | 1, { pcid = 2 })
err("type must be 0…3 or one of", c.invpcid, c, "everything")
do
  local other = S.vm{}
  err("belongs to another VM", c.load_cr3, c, other:space{})
  err("belongs to another VM", s.map, s, 0x00402000, f, { by = other.vcpu[1] })
end
S.expect_eq(c:regs().cr3, s.cr3, "CR3 unchanged by the bad load_cr3 calls")

---------------------------------------------------------------- shadowsim.x86.walk
err("option 'mode' is required", S.x86.walk, { va = 0, access = "read", entries = { 1 } })
err("option 'cpl' must be 0 or 3", S.x86.walk, { mode = "long4", va = 0, access = "read", cpl = 1, entries = { 1 } })
err("takes 1…4 entries", S.x86.walk, { mode = "long4", va = 0, access = "read", entries = { 1, 1, 1, 1, 1 } })

---------------------------------------------------------------- 32-bit modes
for _, mode in ipairs{ "legacy32", "pae" } do
  local v = S.vm{ mode = mode }
  local k = v.vcpu[1]
  local t = v:space{}
  local g = v:alloc_frame{}
  err("does not fit the 32 bits", k.read, k, 1 << 32)
  err("does not fit the 32 bits", k.write, k, 0x100000000, 0)
  err("does not fit the 32 bits", k.fetch, k, 0xFFFFFFFF00000000)
  err("does not fit the 32 bits", k.translate, k, 1 << 32, "read")
  err("does not fit the 32 bits", k.invlpg, k, 1 << 32)
  err("does not fit the 32 bits", t.map, t, 1 << 32, g)
  err("does not fit the 32 bits", k.load_cr3, k, 1 << 32)
  err(mode .. " paging has no 1g pages", t.map, t, 0x40000000, 0, { size = "1g" })
  if mode == "legacy32" then
    err("legacy32 paging has no 2m pages", t.map, t, 0x00400000, 0x00400000, { size = "2m" })
    err("nx needs EFER.NXE and PAE-style paging", t.map, t, 0x00400000, g, { nx = true })
    t:map(0x00400000, g)
    err("does not fit a 32-bit entry", t.set_entry, t, 0x00400000, 1, 1 << 32)
  else
    err("pae paging has no 4m pages", t.map, t, 0x00400000, 0x00400000, { size = "4m" })
  end
end
do
  local v = S.vm{ mode = "legacy32", pse = false }
  local t = v:space{}
  err("4m pages need CR4.PSE", t.map, t, 0x00400000, 0x00400000, { size = "4m" })
end

---------------------------------------------------------------- paging structures outside guest memory
-- A walk that reaches an entry outside guest memory is an error of the scenario.
-- (The page table is put at 128 MiB: outside this 64 MiB guest, but close enough
-- that a simulator without the bounds check reads zeros instead of crashing.)
local pde = s:entry(0x00400000, 2)
s:set_entry(0x00400000, 2, (pde & 0xFFF) | 0x08000000)
c:invlpg(0x00400000)
err("beyond guest memory", c.read, c, 0x00400000)
err("beyond guest memory", c.translate, c, 0x00400000, "write", 3)
err("beyond guest memory", s.map, s, 0x00401000, f)
-- So is inspecting that path from the scenario: s:entry and s:leaf follow the PDE.
err("beyond guest memory", s.entry, s, 0x00400000, 1)
err("beyond guest memory", s.leaf, s, 0x00400000)

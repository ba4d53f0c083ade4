-- runs under: every policy
--
-- suite_introspection.lua: what vm:shadow_pages() and vm:sptes(gfn) show, and that
-- shadowsim.mark records phases, under every policy with the checker.
--  1. A page mapped and read: under a policy that shadows guest tables, its page table
--     has a level-1 shadow page (gfn = the table's frame, 8-byte entries, synced, age
--     order oldest first) whose one parent is the level-2 page's spte for it; the frame
--     is mapped by one spte of that page (others may map it through the kernel's
--     physmap), read-only while the PTE is clean (KVM's rule), user, executable, accessed. Nested paging and bare metal keep no shadow of guest tables.
--  2. A write: the spte becomes writable (the PTE is now dirty).
--  3. Under kvm-unsync, a store to the PTE of a shadowed table leaves it "unsync", and
--     the root's path has unsync children; a flushing CR3 load syncs it again.
local S = shadowsim
local expect_eq, expect_ok, expect = S.expect_eq, S.expect_ok, S.expect

local vm = S.vm{ mode = "long4", vcpus = 1, memory = "64M" }
local cpu = vm.vcpu[1]
local shadows = vm.policy ~= "bare-metal" and vm.policy ~= "tdp"

S.mark("map and read")
local space = vm:space()
local VA, frame = 0x400000, vm:alloc_frame()
space:map(VA, frame, { dirty = false })
expect_ok(cpu:load_cr3(space))
cpu:set{ cpl = 3 }
expect_ok(cpu:read(VA))
local pte_value, table_gpa = space:entry(VA, 1)
local table_gfn = table_gpa >> 12

local pages = vm:shadow_pages()
local by_handle, leaf = {}, nil
for i, p in ipairs(pages) do
  by_handle[p.handle] = p
  if p.age then expect(i == 1 or not pages[i - 1].age or pages[i - 1].age < p.age, "age order, oldest first") end
  if p.gfn == table_gfn and p.level == 1 and not p.direct then leaf = p end
end
-- The sptes of the frame in the process's page-table shadow (not the physmap's).
local function user_sptes()
  local out = {}
  for _, e in ipairs(vm:sptes(frame >> 12)) do
    if leaf and e.handle == leaf.handle then out[#out + 1] = e end
  end
  return out
end
local sptes = user_sptes()
if shadows then
  expect(leaf ~= nil, "a level-1 shadow page for the page table")
  expect_eq(leaf.role:sub(1, 11), "l1 8-byte q", "the role as KVM prints it")
  expect_eq(leaf.sync, "sync", "a new page is synced")
  expect_eq(#leaf.parents, 1, "one parent spte")
  local parent = by_handle[leaf.parents[1].handle]
  expect_eq(parent.level, 2, "its parent is the level-2 page")
  expect_eq(leaf.parents[1].index, (VA >> 21) & 511, "at the index of the address")
  expect_eq(#sptes, 1, "one spte of the page table's shadow maps the frame")
  expect_eq(sptes[1].index, (VA >> 12) & 511, "at the index of the address")
  expect_eq(sptes[1].writable, false, "read-only while the PTE is clean")
  expect(sptes[1].user and sptes[1].executable and sptes[1].accessed, "user, executable, accessed")
else
  expect_eq(leaf, nil, "no shadow of a guest table under " .. vm.policy)
  expect_eq(#vm:sptes(frame >> 12), 0, "no spte maps a guest frame under " .. vm.policy)
end

S.mark("write")
expect_ok(cpu:write(VA, 7))
if shadows then
  sptes = user_sptes()
  expect_eq(#sptes, 1, "still one spte")
  expect_eq(sptes[1].writable, true, "writable once the PTE is dirty")
end

S.mark("unsync")
if vm.policy == "kvm-unsync" then
  -- A store to a PTE of the shadowed table (another page of it) unsyncs it.
  local other = vm:alloc_frame()
  cpu:set{ cpl = 0 }
  space:map(VA + 0x1000, other)
  local function find()
    for _, p in ipairs(vm:shadow_pages()) do
      if p.gfn == table_gfn and p.level == 1 then return p end
    end
  end
  expect_eq(find().sync, "unsync", "a store to a shadowed PTE leaves the table unsync")
  local root_path_unsync = false
  for _, p in ipairs(vm:shadow_pages()) do
    if p.level == 2 and p.unsync_children > 0 then root_path_unsync = true end
  end
  expect(root_path_unsync, "its parent counts an unsync child")
  expect_ok(cpu:load_cr3(space))
  expect_eq(find().sync, "sync", "a flushing CR3 load syncs it")
end

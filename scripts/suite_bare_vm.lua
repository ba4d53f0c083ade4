-- runs under: every policy
--
-- suite_bare_vm.lua: shadowsim.vm{ boot = false } loads no CR3, so the shadow state is
-- exactly what the scenario builds, under every policy with the checker.
--  1. Until a CR3 is loaded the hypervisor has nothing: no exits, no shadow pages; the
--     loader wrote the scenario's tables.
--  2. The first CR3 load and access build a root for the scenario's space only: no
--     shadow page of the boot tables exists, and the space's top page is the only root
--     and the oldest page (the first to be recycled).
--  3. From then on the kernel's stores are guest stores through the physmap, so a new
--     mapping in the loaded space is tracked like any other (the new page-table frame
--     gets shadowed when used), and a VM made with boot (the default) does have the
--     boot root.
local S = shadowsim
local expect_ok, expect_eq, expect = S.expect_ok, S.expect_eq, S.expect
local shadows_tables = S.default_policy ~= "bare-metal" and S.default_policy ~= "tdp"

local vm = S.vm{ mode = "long4", memory = "64M", boot = false }
local cpu = vm.vcpu[1]
expect_eq(cpu:regs().cr3, 0, "no CR3 loaded")
local space = vm:space()
local VA, frame = 0x400000, vm:alloc_frame()
space:map(VA, frame)
local c = vm:counters()
expect_eq(c.exits, 0, "no exit before a CR3 load")
expect_eq(c.writes, 0, "the loader wrote the tables, not a vCPU")
expect_eq(#vm:shadow_pages(), 0, "no shadow page before a CR3 load")

expect_ok(cpu:load_cr3(space))
expect_ok(cpu:read(VA, 8, 3))
local pages = vm:shadow_pages()
local boot_root = vm.kernel.cr3 >> 12
if shadows_tables then
  local roots = 0
  for _, p in ipairs(pages) do
    expect(p.gfn ~= boot_root or p.level ~= 4, "no shadow of the boot tables' top page")
    if p.root_count > 0 then roots = roots + 1; expect_eq(p.gfn, space.cr3 >> 12, "the root is the space's") end
  end
  expect_eq(roots, 1, "one root")
  expect_eq(pages[1].gfn, space.cr3 >> 12, "the oldest page is the space's top page")
  expect_eq(pages[1].age, 1, "first on the active list")
else
  expect_eq(#pages, 0, "no shadow pages under " .. vm.policy)
end

-- 3. Stores are guest stores now (update hypercalls under a paravirtual MMU): mapping
-- a second page in a new page table.
local before = vm:counters()
local VA2, frame2 = 0x40000000, vm:alloc_frame()
space:map(VA2, frame2)
local after = vm:counters()
if vm.policy == "pv-mmu" then
  expect_eq(after.exits_hypercall - before.exits_hypercall, 3, "the kernel's three stores (two new tables, the leaf) are update hypercalls now")
  expect_eq(after.pv_updates - before.pv_updates, 3, "one entry each")
else
  expect(after.writes > before.writes, "the kernel stores through the physmap now")
end
expect_ok(cpu:read(VA2, 8, 3))

-- A VM with boot has the boot root.
if shadows_tables then
  local booted = S.vm{ mode = "long4", memory = "64M" }
  expect_ok(booted.vcpu[1]:read(booted:physmap(0x1000)))
  local found = false
  for _, p in ipairs(booted:shadow_pages()) do
    if p.level == 4 and p.gfn == booted.kernel.cr3 >> 12 then found = true end
  end
  expect(found, "a booted VM shadows the boot tables' top page")
end

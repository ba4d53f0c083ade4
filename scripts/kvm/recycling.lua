-- runs under: every policy
-- recycling.lua: a VM whose shadow-page budget is smaller than its working set, for
-- running side by side with the host's KVM (`--backend kvm` sets KVM_SET_NR_MMU_PAGES to
-- the same budget). Processes are created and touched until the oldest shadow pages are
-- recycled, then the first ones run again and are rebuilt.
local S = shadowsim
local vm = S.vm{ mode = "long4", vcpus = 1, memory = "64M", shadow_pages = 64 }
local cpu = vm.vcpu[1]
local base = 0x20000000

local function load(space)
  cpu:set{ cpl = 0 }; S.expect_ok(cpu:load_cr3(space)); cpu:set{ cpl = 3 }
end

local spaces = {}
S.mark("fill the budget")
for p = 1, 12 do
  local space = vm:space()
  for i = 0, 3 do space:map(base + i * 0x200000, vm:alloc_frame()) end
  load(space)
  for i = 0, 3 do S.expect_ok(cpu:read(base + i * 0x200000)) end
  spaces[p] = space
end

S.mark("the oldest come back")
for p = 1, 4 do
  load(spaces[p])
  for i = 0, 3 do S.expect_ok(cpu:write(base + i * 0x200000, p)) end
end
if vm.policy ~= "tdp" and vm.policy ~= "bare-metal" then
  S.expect(vm:counters().mmu_recycled > 0, "the budget made the MMU recycle")
end

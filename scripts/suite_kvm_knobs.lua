-- runs under: every policy
--
-- suite_kvm_knobs.lua: knobs KVM has, with exact effects, under the checker.
--  1. prev_roots (KVM_MMU_NUM_PREV_ROOTS): after switching A -> B -> C, A's root is
--     still held (root count 1) with three cached roots, and released with one. The
--     list policies free cached roots at every CR3 load (as KVM did before it cached
--     them), so only the second half holds for them.
--  2. A halted vCPU: a remote flush interrupts only running vCPUs (remote_flush_targets
--     counts the IPIs; the halted one flushes on its next entry).
--  3. Host invalidation of a gfn (the MMU notifier): every spte (or EPT entry) mapping
--     the frame goes, every vCPU flushes once, the next access faults it back in and
--     reads the same data.
--  4. An address space without the kernel half (a KPTI user table): user pages work,
--     the physmap is not mapped (#PF, not present, supervisor read).
local S = shadowsim
local expect_ok, expect_eq, expect_delta, expect = S.expect_ok, S.expect_eq, S.expect_delta, S.expect
local hyper = S.default_policy ~= "bare-metal"

local function shadows(vm) return vm.policy ~= "bare-metal" and vm.policy ~= "tdp" end

-- 1. Cached roots.
for _, cached in ipairs{ 3, 1 } do
  local vm = S.vm{ mode = "long4", memory = "64M", prev_roots = cached }
  local cpu = vm.vcpu[1]
  local spaces = { vm:space(), vm:space(), vm:space() }
  for _, s in ipairs(spaces) do expect_ok(cpu:load_cr3(s)); expect_ok(cpu:read(vm:physmap(0x1000))) end
  if shadows(vm) then
    local held
    for _, p in ipairs(vm:shadow_pages()) do
      if p.level == 4 and p.gfn == spaces[1].cr3 >> 12 then held = p.root_count end
    end
    local caches = vm.policy ~= "global-list" and vm.policy ~= "vm-list"
    expect_eq(held, (cached >= 2 and caches) and 1 or 0, ("A's root with %d cached roots"):format(cached))
  end
end

-- 2 and 3. Two vCPUs in one space; the host invalidates a frame they use.
for _, halted in ipairs{ false, true } do
  local vm = S.vm{ mode = "long4", vcpus = 2, memory = "64M" }
  local c1, c2 = vm.vcpu[1], vm.vcpu[2]
  local space = vm:space()
  local VA, frame = 0x400000, vm:alloc_frame()
  space:map(VA, frame)
  expect_ok(c1:write(vm:physmap(frame), 0x5A5A))
  for _, c in ipairs{ c1, c2 } do expect_ok(c:load_cr3(space)); expect_eq(c:read(VA, 8, 3), 0x5A5A, "the data") end
  c2:set{ running = not halted }
  local sptes = #vm:sptes(frame >> 12)
  local before = vm:counters()
  local dropped = vm:invalidate_gfns(frame >> 12, 1)
  local after = vm:counters()
  if shadows(vm) then
    expect(sptes >= 1, "the frame was mapped by an spte")
    expect_eq(dropped, sptes, "every spte that mapped it dropped")
    expect_eq(#vm:sptes(frame >> 12), 0, "none left")
  elseif vm.policy == "tdp" then
    expect_eq(dropped, 1, "the EPT entry dropped")
    expect_eq((before.pages_4k + before.pages_2m) - (after.pages_4k + after.pages_2m), 1, "one EPT leaf fewer")
  else
    expect_eq(dropped, 0, "no hypervisor, nothing to drop")
  end
  if hyper then
    expect_delta(before, after, { remote_tlb_flush_requests = 1, remote_tlb_flush = 1,
                                  remote_flush_targets = halted and 1 or 2 },
      halted and "one running vCPU interrupted" or "both vCPUs interrupted")
    before = vm:counters()
    expect_eq(c2:read(VA, 8, 3), 0x5A5A, "faulted back in with the same data")
    expect_delta(before, vm:counters(), { pf_taken = 1, ept_violations = vm.policy == "tdp" and 1 or 0 },
      "one fault to map the frame again")
  end
end

-- 4. A KPTI user table.
local vm = S.vm{ mode = "long4", memory = "64M" }
local cpu = vm.vcpu[1]
local user = vm:space{ kernel_half = false }
local VA, frame = 0x400000, vm:alloc_frame()
user:map(VA, frame)
expect_ok(cpu:load_cr3(user))
expect_ok(cpu:read(VA, 8, 3))
-- The physmap's global TLB entries would still serve it (x86 keeps them across CR3
-- loads): toggling CR4.PGE flushes them first.
cpu:set{ cpl = 0, pge = false }
cpu:set{ pge = true }
S.expect_fault(0, vm:physmap(frame), "the physmap is not in a user table", cpu:read(vm:physmap(frame), 8, 0))

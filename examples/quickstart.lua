-- quickstart.lua: two processes on one vCPU of a 4-level-paging guest.
--
-- Shows what ShadowSim models: page tables built with guest stores, CR3 ping-pong
-- between two address spaces, a PTE rewrite that the TLB does not see until INVLPG
-- (the stale translation x86 allows), a write fault with its error code, and the
-- counters. Every printed value is also checked, so this file is a test too.
local S = shadowsim
local hex, expect_eq, expect_ok, expect_pf, expect_gp = S.hex, S.expect_eq, S.expect_ok, S.expect_pf, S.expect_gp

local vm = S.vm{ mode = "long4", vcpus = 1, memory = "256M", policy = "kvm-unsync" }
local cpu = vm.vcpu[1]
print(("%s: %s paging, %d MiB, CR3 %s (kernel tables)"):format(vm.name, vm.mode, vm.memory >> 20, hex(cpu:regs().cr3)))

-- Two processes, each with its own top-level table and the shared kernel half.
local procA, procB = vm:space(), vm:space()
local VA = 0x400000                              -- the same user address in both
local frameA, frameB, frameC = vm:alloc_frame(), vm:alloc_frame(), vm:alloc_frame()
procA:map(VA, frameA)                            -- page-table stores by vcpu[1]
procB:map(VA, frameB, { write = false })         -- read-only in B
print(("process A: CR3 %s maps %s -> %s"):format(hex(procA.cr3), hex(VA), hex(frameA)))
print(("process B: CR3 %s maps %s -> %s (read-only)"):format(hex(procB.cr3), hex(VA), hex(frameB)))

-- The kernel switches tasks at CPL 0 (MOV to CR3 is privileged); processes run at CPL 3.
local function switch_to(space)
  cpu:set{ cpl = 0 }
  expect_ok(cpu:load_cr3(space))
  cpu:set{ cpl = 3 }
end

-- CR3 ping-pong: each process sees its own frame at the same virtual address.
for round = 1, 3 do
  switch_to(procA)
  expect_ok(cpu:write(VA, 0xA000 + round))
  switch_to(procB)
  local value, gpa = expect_ok(cpu:read(VA))
  expect_eq(gpa, frameB, "B's frame")
end
switch_to(procA)
local value, gpa = cpu:read(VA)
print(("after 3 switches, A reads %s from gpa %s"):format(hex(value), hex(gpa)))
expect_eq(value, 0xA003, "A's last write")

-- B writes to its read-only page: #PF with P|W|U.
switch_to(procB)
local fault = expect_pf(S.PF.P | S.PF.W | S.PF.U, cpu:write(VA, 1))
print("B writes its read-only page: " .. fault.text)

-- Rewrite A's PTE to point at frame C, without telling the TLB.
switch_to(procA)
cpu:read(VA)                                     -- the TLB now caches VA -> frameA
procA:map(VA, frameC)                            -- a guest store to A's PTE (by the kernel)
local _, stale = cpu:read(VA)
print(("PTE now says %s, but the TLB still gives %s (stale, as x86 allows)"):format(hex(frameC), hex(stale)))
expect_eq(stale, frameA, "stale translation until invalidation")
expect_gp(cpu:invlpg(VA))                        -- INVLPG is privileged too
cpu:set{ cpl = 0 }
cpu:invlpg(VA)
local _, fresh = cpu:read(VA, 8, 3)
print(("after INVLPG: %s"):format(hex(fresh)))
expect_eq(fresh, frameC, "fresh translation after INVLPG")

-- What hardware left in A's PTE: accessed and dirty, as the walks set them.
local pte = procA:entry(VA, 1)
print(("A's PTE: %s (A=%d D=%d)"):format(hex(pte), (pte >> 5) & 1, (pte >> 6) & 1))

local c = cpu:counters()
print(("counters: %d reads, %d writes, %d TLB hits, %d misses, %d walks, %d page faults, %d CR3 loads, %d INVLPG")
  :format(c.reads, c.writes, c.tlb_hits, c.tlb_misses, c.walks,
          c.pf_not_present + c.pf_protection + c.pf_reserved, c.cr3_loads, c.invlpg))
local m = vm:counters()
print(("shadow MMU (%s): %d exits, %d shadow page faults (%d fixed, %d injected), %d pages unsync, %d shadow pages, %d pages synced")
  :format(vm.policy, m.exits, m.pf_taken, m.pf_fixed, m.pf_guest, m.mmu_unsync, m.shadow_pages, m.pages_synced))

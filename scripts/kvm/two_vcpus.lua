-- runs under: every policy
-- two_vcpus.lua: remote flushes and a shared address space on two vCPUs, for running side
-- by side with the host's KVM (`shadowsim run scripts/kvm/two_vcpus.lua --backend kvm`).
local S = shadowsim
local vm = S.vm{ mode = "long4", vcpus = 2, memory = "64M" }
local c1, c2 = vm.vcpu[1], vm.vcpu[2]
local P = vm:space()
local base = 0x20000000
local f = {}
for i = 1, 12 do f[i] = vm:alloc_frame() end

local function load(cpu, space)
  cpu:set{ cpl = 0 }; S.expect_ok(cpu:load_cr3(space)); cpu:set{ cpl = 3 }
end

S.mark("both vCPUs on one space")
for i = 0, 3 do P:map(base + i * 4096, f[i + 1]) end
load(c1, P); load(c2, P)
S.expect_ok(c1:read(base)); S.expect_ok(c2:read(base + 4096))
S.expect_ok(c2:write(base + 2 * 4096, 5))

S.mark("one vCPU changes a shared leaf table")
P:map(base + 4 * 4096, f[5], { by = c1 })        -- the leaf table goes unsync
P:map(base, f[6], { by = c1 })                   -- a live PTE changes
local _, seen = c2:read(base)
S.expect(seen == f[1] or seen == f[6], "c2 sees the old frame (x86 allows it until INVLPG) or the new one")
c2:set{ cpl = 0 }; c2:invlpg(base); c2:set{ cpl = 3 }
local _, fresh = c2:read(base)
S.expect_eq(fresh, f[6], "c2 after its INVLPG")

S.mark("unmap and shootdown")
P:unmap(base + 4096, { by = c1 })
c1:set{ cpl = 0 }; c1:invlpg(base + 4096); c1:set{ cpl = 3 }
c2:set{ cpl = 0 }; c2:invlpg(base + 4096); c2:set{ cpl = 3 }
S.expect_pf(S.PF.U, c2:read(base + 4096))

S.mark("a second space on vCPU 2")
local Q = vm:space{ by = c2 }
Q:map(base, f[7], { by = c2 })
load(c2, Q)
S.expect_ok(c2:write(base, 9))
load(c2, P)
S.expect_ok(c2:read(base + 2 * 4096))

S.mark("emulated stores")
-- Stores the hypervisor's instruction emulator makes (CPL 0 code on kvm-pvm): through
-- write tracking, not a fault; on a shadowed table they update or zap sptes.
local _, pte_gpa = P:entry(base + 3 * 4096, 1)
S.expect_ok(c1:write(vm:physmap(pte_gpa), f[8] | 0x67, 8, 0, { emulated = true }))
local _, gpa = S.expect_ok(c1:read(base + 3 * 4096))
S.expect_eq(gpa, f[8], "the emulated PTE store took effect")
S.expect_ok(c1:fill(vm:physmap(f[9]), 4096, 0, 0, { emulated = true }))

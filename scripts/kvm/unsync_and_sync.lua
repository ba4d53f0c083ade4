-- runs under: every policy
-- unsync_and_sync.lua: the shadow MMU's sync machinery, phase by phase, for running side
-- by side with the host's KVM (`shadowsim run scripts/kvm/unsync_and_sync.lua --backend kvm`).
-- Every phase is one behaviour of KVM's unsync scheme; the guest's page-table stores are
-- CPL 3 stores through the physmap under --backend kvm (on kvm-pvm, CPL 0 code is emulated).
local S = shadowsim
local vm = S.vm{ mode = "long4", vcpus = 1, memory = "64M" }
local cpu = vm.vcpu[1]
local A, B = vm:space(), vm:space()
local base = 0x10000000
local frames = {}
for i = 1, 16 do frames[i] = vm:alloc_frame() end

local function switch_to(space)
  cpu:set{ cpl = 0 }
  S.expect_ok(cpu:load_cr3(space))
  cpu:set{ cpl = 3 }
end

S.mark("first touches")
for i = 0, 7 do A:map(base + i * 4096, frames[i + 1]) end
switch_to(A)
S.expect_ok(cpu:read(base))                      -- shadow fault; prefetch maps the group of 8
S.expect_ok(cpu:read(base + 4096))               -- prefetched: no fault
S.expect_ok(cpu:write(base + 2 * 4096, 7))       -- D=0 gave a read-only spte: a write fault

S.mark("store unsyncs the leaf table")
A:map(base + 8 * 4096, frames[9])                -- a store to a shadowed leaf table
A:map(base + 9 * 4096, frames[10])               -- already unsync: no exit

S.mark("stale until INVLPG")
A:map(base, frames[11])                          -- rewrite a live PTE in the unsync table
local _, seen = cpu:read(base)
-- x86 allows the old translation until INVLPG; KVM's unsync table keeps it (a policy that
-- emulates the store updates the spte at once).
S.expect(seen == frames[1] or seen == frames[11], "the old or the new frame")
cpu:set{ cpl = 0 }; cpu:invlpg(base); cpu:set{ cpl = 3 }
local _, fresh = cpu:read(base)
S.expect_eq(fresh, frames[11], "the new frame after INVLPG")

S.mark("CR3 switches sync")
switch_to(B)
B:map(base, frames[12])
S.expect_ok(cpu:read(base))
A:map(base + 4096, frames[13])                   -- A's table changes while B runs
switch_to(A)                                     -- the sync at the root load
local _, gpa = cpu:read(base + 4096)
S.expect_eq(gpa, frames[13], "synced at CR3 load")
switch_to(B)
switch_to(A)

S.mark("upper-level stores are emulated")
A:map(base + 0x200000, frames[14])               -- a new page table: a store to the PD
S.expect_ok(cpu:read(base + 0x200000))
A:map(base + 0x400000, frames[15])
A:map(base + 0x600000, frames[16])

S.mark("a fault the guest sees")
A:map(base + 0x800000, frames[1], { write = false })
S.expect_pf(S.PF.P | S.PF.W | S.PF.U, cpu:write(base + 0x800000, 1))
S.expect_pf(S.PF.U, cpu:read(base + 0xA00000))

-- runs under: every policy
-- linux_processes.lua: the Linux model's process calls on two vCPUs, phase by phase, for
-- running side by side with the host's KVM (`shadowsim run scripts/kvm/linux_processes.lua
-- --backend kvm`): demand paging, a thread on the other CPU, fork with copy-on-write,
-- munmap's shootdown, exec. The host's KVM offers no PCID here, so the model runs
-- without (every switch between address spaces flushes).
local S = shadowsim
local vm = S.vm{ vcpus = 2, memory = "256M" }
local linux = S.linux(vm, { pcid = false })

S.mark("demand paging")
local p = linux:spawn{ cpu = 0 }
local heap = linux:mmap(p, 32 * 4096, { prot = "rw" })
for i = 0, 31 do S.expect_eq(linux:touch(p, heap + i * 4096, "write"), "anonymous_new", "first write") end
for i = 0, 31, 4 do S.expect_eq(linux:touch(p, heap + i * 4096, "read"), "hit", "mapped") end

S.mark("a thread on the other CPU")
local t = linux:thread(p)
linux:switch(1, t)
for i = 0, 31, 8 do S.expect_eq(linux:touch(t, heap + i * 4096, "read"), "hit", "shared mm") end

S.mark("fork and copy-on-write")
local c = linux:fork(p)
linux:switch(0, c)
S.expect_eq(linux:touch(c, heap, "read"), "hit", "the child sees the parent's page")
S.expect_eq(linux:touch(c, heap, "write"), "copy_on_write", "the child's copy")
linux:switch(0, p)
S.expect_eq(linux:touch(p, heap + 4096, "write"), "copy_on_write", "the parent's copy")

S.mark("munmap with a shootdown")
linux:munmap(p, heap + 16 * 4096, 8 * 4096)
S.expect_eq(linux:touch(t, heap + 8 * 4096, "read"), "hit", "the rest stays mapped on the other CPU")

S.mark("exec")
linux:switch(0, c)
linux:exec(c)
S.expect_eq(linux:touch(c, 0x400000, "exec"), "anonymous_zero_page", "a fresh image")

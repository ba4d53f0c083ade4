-- runs under: every policy
-- suite_linux_model.lua -- the Linux model (shadowsim.linux) at the level of a kernel:
-- processes with threads on two vCPUs, demand paging, fork and copy-on-write, munmap
-- and mprotect with their shootdowns, exec and exit. Every page-table store the model
-- makes is a guest store and every flush its instruction, so under a shadow MMU this
-- drives unsync, write protection, remote flushes and root switches as Linux would;
-- the checker judges every access. The model's own counts are checked as well.
local S = shadowsim
local vm = S.vm{ vcpus = 2, memory = "256M" }
local linux = S.linux(vm)

-- A process and a thread of it on the other CPU.
local p = linux:spawn{ cpu = 0 }
local heap = linux:mmap(p, 64 * 4096, { prot = "rw" })
for i = 0, 63 do assert(linux:touch(p, heap + i * 4096, "write") == "anonymous_new") end
local t = linux:thread(p)
linux:switch(1, t)
assert(linux:current(1) == t)
for i = 0, 63, 8 do assert(linux:touch(t, heap + i * 4096, "read") == "hit") end

-- munmap of 16 pages from CPU 0: a 16-page flush here and a shootdown on CPU 1.
local before = linux:stats().counters.invlpg
linux:munmap(p, heap, 16 * 4096)
assert(linux:touch(t, heap, "read") == "anonymous_zero_page", "the thread sees the unmap (a fault, then a fresh area)")
assert(linux:stats().counters.invlpg >= before + 32, "16 INVLPGs on each CPU")

-- mprotect read-only, then a write is refused (SIGSEGV in Linux) and nothing changes.
linux:mprotect(p, heap + 16 * 4096, 16 * 4096, "r")
assert(linux:touch(t, heap + 16 * 4096, "write") == "refused")
linux:mprotect(p, heap + 16 * 4096, 16 * 4096, "rw")
assert(linux:touch(t, heap + 16 * 4096, "write") == "hit", "its own pages are writable again at once")

-- fork: both copies read-only; writes copy or reuse.
local c = linux:fork(p)
linux:switch(1, c)
assert(linux:touch(c, heap + 40 * 4096, "write") == "copy_on_write")
assert(linux:touch(p, heap + 40 * 4096, "write") == "reuse", "the parent's page is its own again")
assert(linux:touch(c, heap + 40 * 4096, "read") == "hit")

-- A file mapped by two processes: one page-cache frame, pages mapped around a read.
local lib1 = linux:mmap(p, 32 * 4096, { prot = "rx", file = "libdemo.so" })
local lib2 = linux:mmap(c, 32 * 4096, { prot = "rx", file = "libdemo.so" })
assert(linux:touch(p, lib1 + 4096, "exec") == "file_read")
assert(linux:touch(p, lib1 + 9 * 4096, "exec") == "hit", "mapped around the first fault")
assert(linux:touch(c, lib2 + 4096, "exec") == "file_read")

-- Several processes on one CPU: ASIDs are recycled round robin.
local others = {}
for i = 1, 6 do
  local q = linux:spawn{ cpu = 0 }
  local a = linux:mmap(q, 4096, { prot = "rw" })
  assert(linux:touch(q, a, "write") == "anonymous_new")
  others[i] = q
end
assert(linux:touch(p, heap + 20 * 4096, "read") == "hit", "switched back in, with a flush: its ASID was reused")

-- exec and exit tear address spaces down; the thread goes with its process.
linux:exec(c)
assert(linux:touch(c, 0x400000, "exec") == "anonymous_zero_page", "a page no traced call mapped")
linux:exit(c)
for _, q in ipairs(others) do linux:exit(q) end
linux:exit(t)
linux:exit(p)

local s = linux:stats()
assert(s.counters.forks == 1 and s.counters.threads_created == 1 and s.counters.execs == 1 and s.counters.exits == 9)
assert(s.faults.copy_on_write == 1 and s.faults.reuse == 1 and s.faults.refused == 1)
assert(s.counters.page_tables_freed > 20)
local switches = 0
for _, f in ipairs(s.flushes) do if f.reason == "task_switch" then switches = switches + f.count end end
assert(switches >= 8)
local counters = vm:counters()
if S.default_policy ~= "bare-metal" and S.default_policy ~= "tdp" then
  -- Page-table stores trap (wp-emulate emulates them), unsync the tables, or (pv-mmu)
  -- arrive as update hypercalls.
  assert(counters.exits_cr3 > 0 and counters.mmu_pte_write + counters.mmu_unsync_events + counters.pv_updates > 0,
         "the guest's work reached the shadow MMU")
end

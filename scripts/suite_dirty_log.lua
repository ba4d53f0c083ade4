-- runs under: every policy
--
-- suite_dirty_log.lua: dirty logging (live migration's view of guest memory) under
-- every policy with the checker, two vCPUs in one address space.
--  1. Pages mapped and written before logging starts are not in the log.
--  2. After logging starts, a write to a page already mapped writable faults once more
--     (its spte or EPT entry lost write permission) and logs the frame; reads log
--     nothing; a second write to the same page costs nothing more.
--  3. Collecting returns exactly the written frames, in order, and protects them again:
--     the next write faults and logs again; a frame written by the other vCPU is
--     logged too.
--  4. A large guest page is mapped at 4 KiB while logging, so only the 4 KiB part
--     written is logged.
--  5. So it is with 2 MiB host pages (whose EPT entries could otherwise map it whole):
--     two writes to two 4 KiB parts of one 2 MiB page log both frames.
local S = shadowsim
local expect_ok, expect_eq, expect_delta = S.expect_ok, S.expect_eq, S.expect_delta

local vm = S.vm{ mode = "long4", vcpus = 2, memory = "64M" }
local c1, c2 = vm.vcpu[1], vm.vcpu[2]
local hyper = vm.policy ~= "bare-metal"
local space = vm:space()
local BASE, frames = 0x400000, {}
for i = 1, 4 do
  frames[i] = vm:alloc_frame()
  space:map(BASE + (i - 1) * 0x1000, frames[i])
end
local LARGE, large_frame = 0x40000000, 0x1000000                 -- a 2 MiB guest page
space:map(LARGE, large_frame, { size = "2m" })
for _, c in ipairs{ c1, c2 } do expect_ok(c:load_cr3(space)) end
c1:set{ cpl = 3 }; c2:set{ cpl = 3 }
for i = 1, 4 do expect_ok(c1:write(BASE + (i - 1) * 0x1000, i)) end
expect_ok(c1:write(LARGE, 1))

-- 1.
vm:dirty_log(true)
expect_eq(#vm:collect_dirty_log(), 0, "nothing logged before writes")

-- 2.
local before = vm:counters()
expect_eq(c1:read(BASE), 1, "a read")
expect_delta(before, vm:counters(), { pf_taken = 0 }, "a read through a write-protected spte needs no fault")
before = vm:counters()
expect_ok(c1:write(BASE, 10))
expect_delta(before, vm:counters(), { pf_taken = hyper and 1 or 0 }, "the first write after logging starts faults")
before = vm:counters()
expect_ok(c1:write(BASE + 8, 11))
expect_delta(before, vm:counters(), { pf_taken = 0 }, "the second write does not")
expect_ok(c2:write(BASE + 0x2000, 12))

-- 3.
local log = vm:collect_dirty_log()
if hyper then
  expect_eq(#log, 2, "two frames written")
  expect_eq(log[1], frames[1] >> 12, "the first frame")
  expect_eq(log[2], frames[3] >> 12, "the frame the other vCPU wrote")
else
  expect_eq(#log, 0, "bare metal logs nothing")
end
expect_eq(#vm:collect_dirty_log(), 0, "collecting clears the log")
before = vm:counters()
expect_ok(c1:write(BASE, 13))
expect_delta(before, vm:counters(), { pf_taken = hyper and 1 or 0 }, "protected again after collection")
log = vm:collect_dirty_log()
expect_eq(#log, hyper and 1 or 0, "logged again")

-- 4.
expect_ok(c1:write(LARGE + 0x5008, 2))
log = vm:collect_dirty_log()
if hyper then
  expect_eq(#log, 1, "one 4 KiB frame of the large page")
  expect_eq(log[1], (large_frame + 0x5000) >> 12, "the frame written")
end
vm:dirty_log(false)
expect_ok(c1:write(BASE + 0x3000, 14))
expect_eq(#vm:collect_dirty_log(), 0, "nothing logged once logging stops")

-- 5.
local vm2 = S.vm{ mode = "long4", vcpus = 1, memory = "64M", host_pages = "2m" }
local space2, c3 = vm2:space(), vm2.vcpu[1]
space2:map(LARGE, large_frame, { size = "2m" })
expect_ok(c3:load_cr3(space2))
c3:set{ cpl = 3 }
expect_ok(c3:write(LARGE, 1))
vm2:dirty_log(true)
expect_ok(c3:write(LARGE + 0x5008, 2))
expect_ok(c3:write(LARGE + 0x6008, 3))
log = vm2:collect_dirty_log()
if hyper then
  expect_eq(#log, 2, "2 MiB host pages: both 4 KiB frames written are logged")
  expect_eq(log[1], (large_frame + 0x5000) >> 12, "2 MiB host pages: the first frame")
  expect_eq(log[2], (large_frame + 0x6000) >> 12, "2 MiB host pages: the second frame")
else
  expect_eq(#log, 0, "bare metal logs nothing")
end

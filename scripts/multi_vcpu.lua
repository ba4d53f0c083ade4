-- multi_vcpu.lua -- TLBs are per logical processor (Intel SDM vol. 3A 4.10, 4.10.5
-- "Propagation of paging-structure changes to multiple processors"), in legacy32,
-- pae, long4 and long5 with two vCPUs.
--
-- What it proves, per mode:
--  * vCPU 2's TLB is independent of vCPU 1's: after a PTE change, INVLPG, a
--    flushing MOV to CR3, a CR4.PGE toggle, INVPCID type 2 or a #PF on vCPU 1,
--    vCPU 2 still uses its own stale entry (it needs its own invalidation -- the
--    TLB shootdown of 4.10.5), and vice versa.
--  * Paging memory is shared: page-table edits made by vCPU 2 (map, set_entry,
--    new tables, space creation, frame zeroing) are seen by vCPU 1's fresh walks;
--    the A/D flags a walk on vCPU 2 sets are in the shared entry.
--  * Each vCPU has its own CR3 (different spaces at once), and vm:counters() is
--    the sum of the vCPUs' counters; edits `by` a vCPU are that vCPU's stores.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim
local PTE, PF = S.PTE, S.PF

local read_is = S.expect_read

local pf_is = S.expect_fault

local VA, VB, VC, VD, GVA = 0x00400000, 0x00401000, 0x00402000, 0x00403000, 0x00405000

for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode, vcpus = 2 }
  S.expect_eq(vm.vcpus, 2, mode .. ": two vCPUs")
  local c1, c2 = vm.vcpu[1], vm.vcpu[2]
  S.expect_eq(c1:index(), 1, mode .. ": index 1"); S.expect_eq(c2:index(), 2, mode .. ": index 2")
  S.expect_eq(c2:regs().cr3, vm.kernel.cr3, mode .. ": vCPU 2 boots on the kernel's CR3")
  local s = vm:space{}
  local f = {}
  for i = 1, 5 do f[i] = vm:alloc_frame{}; vm:write_phys(f[i], 0x4400 + i, 8) end
  local M = function(i) return 0x4400 + i end
  s:map(VA, f[1]); s:map(VB, f[2]); s:map(GVA, f[3], { global = true })
  S.expect_ok(c1:load_cr3(s)); S.expect_ok(c2:load_cr3(s))
  for _, c in ipairs{ c1, c2 } do
    read_is(c, VA, f[1], M(1), mode .. ": vCPU " .. c:index() .. " VA")
    read_is(c, VB, f[2], M(2), mode .. ": vCPU " .. c:index() .. " VB")
    read_is(c, GVA, f[3], M(3), mode .. ": vCPU " .. c:index() .. " GVA")
  end

  ---------------------------------------------------------------- INVLPG is local
  s:map(VA, f[4])                               -- by vCPU 1
  c1:invlpg(VA)
  read_is(c1, VA, f[4], M(4), mode .. ": vCPU 1 after its INVLPG")
  read_is(c2, VA, f[1], M(1), mode .. ": vCPU 2 still stale after vCPU 1's INVLPG")
  c2:invlpg(VA)
  read_is(c2, VA, f[4], M(4), mode .. ": vCPU 2 after its own INVLPG")

  ---------------------------------------------------------------- flushes are local
  s:map(VA, f[5])
  S.expect_ok(c1:load_cr3(s))
  read_is(c1, VA, f[5], M(5), mode .. ": vCPU 1 after MOV CR3")
  read_is(c2, VA, f[4], M(4), mode .. ": vCPU 2 stale after vCPU 1's MOV CR3")
  s:map(GVA, f[1], { global = true })
  S.expect_ok(c1:set{ pge = false }); S.expect_ok(c1:set{ pge = true })
  read_is(c1, GVA, f[1], M(1), mode .. ": vCPU 1 after its PGE toggle")
  read_is(c2, GVA, f[3], M(3), mode .. ": vCPU 2's global entry survives vCPU 1's PGE toggle")
  S.expect_ok(c1:invpcid(2))
  read_is(c2, GVA, f[3], M(3), mode .. ": vCPU 2's global entry survives vCPU 1's INVPCID type 2")
  read_is(c2, VA, f[4], M(4), mode .. ": vCPU 2's entry survives vCPU 1's INVPCID type 2")
  S.expect_ok(c2:load_cr3(s))
  read_is(c2, VA, f[5], M(5), mode .. ": vCPU 2 after its MOV CR3")
  read_is(c2, GVA, f[3], M(3), mode .. ": vCPU 2's global survives its MOV CR3")
  c2:invlpg(GVA)
  read_is(c2, GVA, f[1], M(1), mode .. ": vCPU 2 after INVLPG of the global page")

  ---------------------------------------------------------------- a #PF invalidates on its own vCPU only
  read_is(c2, VB, f[2], M(2), mode .. ": vCPU 2 caches VB again (its MOV CR3 flushed it)")
  S.expect_eq(s:unmap(VB), true, mode .. ": unmap VB")
  c1:invlpg(VB)
  pf_is(0, VB, mode .. ": vCPU 1 faults on VB", c1:read(VB))
  read_is(c2, VB, f[2], M(2), mode .. ": vCPU 2 still reaches VB through its TLB")
  s:map(VB, f[2], { write = false, dirty = true })
  -- vCPU 2's VB entry was cached by reads with D = 0, so its write walks again
  -- and meets the new read-only PTE.
  pf_is(PF.P | PF.W, VB, mode .. ": vCPU 2 write walks and sees the RO PTE", c2:write(VB, 1))
  read_is(c2, VB, f[2], M(2), mode .. ": vCPU 2 reads VB (new RO mapping)")

  ---------------------------------------------------------------- edits by vCPU 2 seen by vCPU 1
  local w1, w2 = c1:counters().writes, c2:counters().writes
  s:map(VC, f[3], { by = c2 })                  -- new PTE (same page table)
  local far = (mode == "legacy32" or mode == "pae") and 0x30000000 or 0x0000200000000000
  s:map(far, f[4], { by = c2 })                 -- new tables, all stored by vCPU 2
  S.expect_eq(c1:counters().writes, w1, mode .. ": vCPU 1 made no store")
  S.expect(c2:counters().writes > w2, mode .. ": vCPU 2 made the page-table stores")
  read_is(c1, VC, f[3], M(3), mode .. ": vCPU 1 walks vCPU 2's new PTE")
  read_is(c1, far, f[4], M(4), mode .. ": vCPU 1 walks vCPU 2's new tables")
  s:set_entry(VC, 1, f[5] | PTE.P | PTE.RW | PTE.US, { by = c2 })
  read_is(c1, VC, f[3], M(3), mode .. ": vCPU 1 stale after vCPU 2's set_entry")
  c1:invlpg(VC)
  read_is(c1, VC, f[5], M(5), mode .. ": vCPU 1 sees vCPU 2's set_entry after INVLPG")
  -- A/D set by vCPU 2's walk are in the shared entry.
  s:map(VD, f[1])
  S.expect_eq(s:entry(VD, 1) & (PTE.A | PTE.D), 0, mode .. ": VD A/D clear")
  S.expect_ok(c2:write(VD, 0x77))
  S.expect_eq(s:entry(VD, 1) & (PTE.A | PTE.D), PTE.A | PTE.D, mode .. ": vCPU 2's walk set A/D in memory")
  read_is(c1, VD, f[1], 0x77, mode .. ": vCPU 1 reads vCPU 2's data")
  -- A space and a zeroed frame made by vCPU 2.
  w1, w2 = c1:counters().writes, c2:counters().writes
  local s2 = vm:space{ by = c2 }
  vm:write_phys(f[1] + 0x800, 0xDEAD, 8)
  vm:free_frame(f[1])
  local g = vm:alloc_frame{ by = c2 }
  S.expect_eq(g, f[1], mode .. ": the freed frame is reused")
  S.expect_eq(vm:read_phys(g + 0x800, 8), 0, mode .. ": and zeroed (through vCPU 2's stores)")
  S.expect_eq(c1:counters().writes, w1, mode .. ": vCPU 1 made no store for space/frame")
  S.expect(c2:counters().writes > w2, mode .. ": vCPU 2 did")

  ---------------------------------------------------------------- different CR3s at once
  s2:map(VA, f[2], { by = c2 })
  S.expect_ok(c2:load_cr3(s2))
  S.expect_eq(c2:regs().cr3, s2.cr3, mode .. ": vCPU 2 in s2")
  S.expect_eq(c1:regs().cr3, s.cr3, mode .. ": vCPU 1 still in s")
  read_is(c2, VA, f[2], M(2), mode .. ": vCPU 2 VA in s2")
  read_is(c1, VA, f[5], M(5), mode .. ": vCPU 1 VA in s")

  ---------------------------------------------------------------- counters
  local total, a, b = vm:counters(), c1:counters(), c2:counters()
  for _, k in ipairs{ "reads", "writes", "walks", "tlb_hits", "tlb_misses", "invlpg", "cr3_loads", "ad_updates" } do
    S.expect_eq(total[k], a[k] + b[k], mode .. ": vm counter " .. k .. " is the sum")
  end
end

-- runs under: every policy
-- suite_frame_reuse.lua -- a data frame is unmapped and invalidated on one vCPU only,
-- then the kernel reuses it as a page table, while another vCPU may still hold a
-- writable translation to it (the guest never shot it down there).
--
-- x86 lets that other vCPU go on writing through its stale translation, and a store it
-- makes then lands in a live page table. Whatever a hypervisor does, it must see that
-- store: shadowing the new table write-protects every spte that maps the frame and
-- flushes every vCPU that may cache one. A policy that dropped the spte during the
-- first vCPU's INVLPG without a remote flush leaves the other vCPU writing behind the
-- shadow's back: the checker reports the stale shadow of the table, or the writable
-- TLB entry to a synced table. Each paging mode, with the table the data page lived in
-- unsync (or out of sync) first.
local S = shadowsim
local PTE = S.PTE
local FLAGS = PTE.P | PTE.RW | PTE.US | PTE.A | PTE.D

for _, mode in ipairs{ "long4", "long5", "pae", "legacy32" } do
  local vm = S.vm{ mode = mode, vcpus = 2 }
  local a, b = vm.vcpu[1], vm.vcpu[2]
  local p = vm:space()
  local X, Y = 0x00400000, 0x40000000        -- the data page, and where the new table maps
  -- F starts a group of eight frames nothing else uses: no access to a neighbour makes
  -- the MMU's prefetch map F through the physmap (a writable mapping of F that shadowing
  -- it would have to write-protect, flushing every vCPU along the way).
  local F
  for _ = 1, 24 do
    local f = vm:alloc_frame()
    if not F and (f >> 12) % 8 == 0 then F = f end
  end
  local G, H, K = vm:alloc_frame(), vm:alloc_frame(), vm:alloc_frame()
  if mode == "legacy32" then Y = 0x40800000 end   -- its own page directory entry (4 MiB each)
  p:map(X, F, { accessed = true, dirty = true })
  p:map(X + 0x1000, G, { accessed = true, dirty = true })
  p:map(Y + 0x800000, H)                     -- Y's upper tables (Y's own entry stays empty)
  for _, cpu in ipairs{ a, b } do
    S.expect_ok(cpu:load_cr3(p))
    S.expect_ok(cpu:write(X, 0x1111, 8, 3))  -- both cache X -> F writable
    S.expect_ok(cpu:write(X + 0x1000, 0x2222, 8, 3))
    S.expect_ok(cpu:read(Y + 0x800000, 8, 3))   -- the tables above Y are in use (shadowed)
  end
  -- A store to X's table by a: it goes unsync (or out of sync) where a policy allows.
  p:map(X + 0x2000, vm:alloc_frame(), { by = a })
  S.expect_ok(a:read(X + 0x2000, 8, 3))
  -- The frame's last use as data leaves it holding what the table needs: zeros, and a
  -- PTE for Y (to K) in entry 0. No other mapping of F is ever made.
  S.expect_ok(a:fill(X, 4096, 0, 3))
  S.expect_ok(a:write(X, K | FLAGS, mode == "legacy32" and 4 or 8, 3))
  -- a unmaps X and invalidates it on itself only.
  p:unmap(X, { by = a })
  a:invlpg(X)
  S.expect_pf(S.PF.U, a:read(X, 8, 3))
  -- The kernel reuses F as the page table of Y: it points Y's page directory entry at
  -- it and uses it.
  p:set_entry(Y, 2, F | PTE.P | PTE.RW | PTE.US, { by = a })
  a:invlpg(Y)
  S.expect_read(a, Y, K, nil, mode .. ": Y through the new table", 3)
  -- b, which was never told, writes through what it may still cache for X: a new PTE
  -- for Y (to G). x86 allows the store to land in the table, or a fault if b no longer
  -- has the translation (the checker judges which).
  local landed = b:write(X, G | FLAGS, mode == "legacy32" and 4 or 8, 3) ~= nil
  local entry = vm:read_phys(F, mode == "legacy32" and 4 or 8)
  S.expect_eq(entry == (G | FLAGS), landed, mode .. ": the table holds the store exactly when it went through")
  -- After an INVLPG, a must see the table as it is now.
  a:invlpg(Y)
  S.expect_read(a, Y, landed and G or K, nil, mode .. ": Y after b's store " .. (landed and "landed" or "faulted"), 3)
  local problems = vm:verify()
  S.expect_eq(#problems, 0, mode .. ": shadow MMU invariants (" .. (problems[1] or "") .. ")")
end

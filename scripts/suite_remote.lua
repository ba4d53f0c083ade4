-- runs under: every policy
--
-- suite_remote.lua: remote TLB shootdowns on four vCPUs, in all four paging modes,
-- interleaved by the seeded scheduler with several seeds.
--  1. A shared process runs on all four vCPUs. In each round one vCPU is the initiator:
--     it edits a PTE of the process (remap, unmap, or map of an absent page), INVLPGs
--     it on itself, bumps a shared "generation" (the IPI) and waits until every other
--     vCPU has acknowledged it. Each other vCPU, when it sees the generation change,
--     invalidates the address itself (INVLPG, or a flushing MOV to CR3 of the same
--     space) and must then see the change; a not present -> present change must be
--     seen without any invalidation. Between shootdowns every vCPU reads the process's
--     pages and must see what the tables say (nothing is pending then); while an edit
--     is in flight it reads without asserting (old or new is allowed; the checker
--     judges).
--  2. B5-like (reference §11, the INVLPG prefetch race): two vCPUs INVLPG the same
--     address around a change of its PTE -- one changes the PTE and INVLPGs, the other
--     INVLPGs and reads concurrently, a third only reads. A vCPU whose INVLPG came
--     after the change must see it; at the end of each race both invalidate again and
--     all must see it. Also with the PDE of the address retargeted instead of the PTE.
local S = shadowsim
local PF = S.PF
local expect_ok = S.expect_ok

local NV = 4
local SEEDS = 3

local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

for mi, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ mode = mode, vcpus = NV, memory = "64M" }
  local span = mode == "legacy32" and 0x400000 or 0x200000
  local ADDR = mode == "legacy32" and 0xFFFFF000 or 0x000FFFFFFFFFF000
  local marker = {}
  local pool = {}
  for i = 1, 12 do
    local f = vm:alloc_frame()
    marker[f] = (0x3E07 << 32) | (mi << 28) | f
    vm:write_phys(f, marker[f], 8)
    pool[i] = f
  end
  local X = vm:space()
  local pages = { 0x00400000, 0x00401000, 0x00402000, 0x00403000, 0x00400000 + 2 * span, 0x00401000 + 2 * span }
  for i, va in ipairs(pages) do
    if i ~= 4 then X:map(va, pool[i]) end
  end
  for v = 1, NV do expect_ok(vm.vcpu[v]:load_cr3(X)) end

  -- The read must give what X's tables give now.
  local function sees(c, va, what)
    local e, level = X:leaf(va)
    if e == nil then faults(PF.U, what, c:read(va, 8, 3)); return end
    S.expect_eq(level, 1, what .. ": 4 KiB leaf")
    local fr = e & ADDR
    local v, pa = c:read(va, 8, 3)
    if v == nil then error(("%s: read of %s faulted: %s"):format(what, S.hex(va), pa.text), 2) end
    if pa ~= fr or v ~= marker[fr] then
      error(("%s: read of %s reached %s (%s), expected %s"):format(what, S.hex(va), S.hex(pa), S.hex(v), S.hex(fr)), 2)
    end
  end

  ---------------------------------------------------------------- 1. shootdowns
  for k = 1, SEEDS do
    for initiator = 1, NV do
      local gen, done, busy = 0, false, false
      local ack = {}
      for v = 1, NV do ack[v] = 0 end
      local pending, present_before
      local tasks = {}
      tasks[initiator] = function()
        local c = vm.vcpu[initiator]
        for batch = 1, 5 do
          local va = pages[S.random(1, #pages)]
          present_before = X:leaf(va) ~= nil
          busy = true
          if present_before and S.random() < 0.25 then
            X:unmap(va, { by = c })
          else
            X:map(va, pool[S.random(1, #pool)], { by = c })
          end
          pending = va
          if present_before then expect_ok(c:invlpg(va)) end
          sees(c, va, ("%s 1: seed %d, initiator %d, batch %d, own view"):format(mode, k, initiator, batch))
          gen, busy = gen + 1, false                          -- the IPI
          ack[initiator] = gen
          local waiting = true
          while waiting do                                    -- wait for every acknowledgement
            waiting = false
            for v = 1, NV do if ack[v] < gen then waiting = true end end
            if waiting then c:read(pages[1], 8, 3) end
          end
        end
        done = true
      end
      for v = 1, NV do
        if v ~= initiator then
          tasks[v] = function()
            local c = vm.vcpu[v]
            local n = 0
            while not done do
              if ack[v] < gen then
                local g = gen
                n = n + 1
                local what = ("%s 1: seed %d, initiator %d, vcpu %d, generation %d"):format(mode, k, initiator, v, g)
                if not present_before then
                  sees(c, pending, what .. ", not present -> present, no invalidation")
                elseif (n + v) % 4 == 0 then
                  expect_ok(c:load_cr3(X))
                  sees(c, pending, what .. ", after MOV to CR3")
                else
                  expect_ok(c:invlpg(pending))
                  sees(c, pending, what .. ", after INVLPG")
                end
                ack[v] = g
              elseif not busy and ack[v] == gen then
                sees(c, pages[S.random(1, #pages)], ("%s 1: seed %d, vcpu %d between shootdowns"):format(mode, k, v))
              else
                c:read(pages[S.random(1, #pages)], 8, 3)       -- may be old or new
              end
            end
          end
        end
      end
      S.interleave(S.seed * 1000 + mi * 100 + k * 10 + initiator, tasks)
      for v = 1, NV do
        for _, va in ipairs(pages) do sees(vm.vcpu[v], va, ("%s 1: seed %d, round %d end, vcpu %d"):format(mode, k, initiator, v)) end
      end
    end
  end

  ---------------------------------------------------------------- 2. B5-like races
  local other = X:entry(pages[5], 2)                          -- the second page table
  local home = X:entry(pages[1], 2)
  for k = 1, SEEDS * 4 do
    local a, b, r = (k - 1) % NV + 1, k % NV + 1, (k + 1) % NV + 1   -- changer, invalidator, reader
    local ca, cb, cr = vm.vcpu[a], vm.vcpu[b], vm.vcpu[r]
    local va = k % 3 == 0 and pages[1] or pages[2]
    local pde = k % 3 == 0                                    -- retarget the PDE instead of the PTE
    for _, c in ipairs{ ca, cb, cr } do c:read(va, 8, 3) end  -- all have it cached (or know it absent)
    local changed = false
    S.interleave(S.seed * 7919 + mi * 97 + k, {
      function()
        if pde then
          X:set_entry(va, 2, (X:entry(va, 2) & ADDR) == (home & ADDR) and other or home, { by = ca })
        else
          X:map(va, pool[S.random(1, #pool)], { by = ca })
        end
        changed = true
        expect_ok(ca:invlpg(va))
        sees(ca, va, ("%s 2: race %d, the changer after its INVLPG"):format(mode, k))
      end,
      function()
        for _ = 1, 3 do
          local after = changed
          expect_ok(cb:invlpg(va))
          if after then
            sees(cb, va, ("%s 2: race %d, the invalidator, INVLPG after the change"):format(mode, k))
          else
            cb:read(va, 8, 3)
          end
        end
      end,
      function()
        for _ = 1, 3 do cr:read(va, 8, 3) end
      end,
    })
    for _, c in ipairs{ ca, cb, cr } do
      expect_ok(c:invlpg(va))
      sees(c, va, ("%s 2: race %d, vcpu %d at the end"):format(mode, k, c:index()))
    end
    if pde then for _, v in ipairs{ pages[2], pages[3] } do
      for _, c in ipairs{ ca, cb, cr } do expect_ok(c:invlpg(v)) end
    end end
  end
  for v = 1, NV do
    expect_ok(vm.vcpu[v]:load_cr3(X))
    for _, va in ipairs(pages) do sees(vm.vcpu[v], va, ("%s end, vcpu %d"):format(mode, v)) end
  end
end
print("suite_remote: ok under " .. S.default_policy)

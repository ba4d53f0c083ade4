-- runs under: every policy
--
-- suite_recycle.lua: a shadow MMU short of shadow pages, in all four paging modes.
-- Two guests on one host, with a budget of 16 and of 64 shadow pages (`shadow_pages`;
-- bare metal and tdp have no shadow pages and ignore it), each run ten processes with
-- pages in three page tables, plus a page in the shared kernel half -- far more tables
-- than the budget, so shadow pages (roots included, while no vCPU uses them) are
-- recycled constantly. The four vCPUs of the two guests are interleaved (a host-wide
-- policy keeps both guests' unsync pages on one list).
--  1. In each guest two vCPUs schedule the processes (seeded; a process runs on one vCPU
--     at a time). After each switch (a flushing MOV to CR3) every page of the process
--     must read as its tables say, with its own data.
--  2. Under that pressure the running process edits its PTEs (remap + INVLPG, unmap +
--     INVLPG, not present -> present with no invalidation) and must see each edit;
--     processes that run nowhere get their PTEs edited through the physmap, and must
--     show the edits when next switched in.
--  3. The kernel remaps its shared page once; after both vCPUs INVLPG it, every process
--     sees the new frame.
local S = shadowsim
local processes = require("processes")
local PF = S.PF
local expect_ok = S.expect_ok

local NPROC, ROUNDS = 10, 9
local KVA = { legacy32 = 0xD0800000, pae = 0xD0800000, long4 = 0xFFFFC90000400000, long5 = 0xFF91000000400000 }

local function reads(c, va, gpa, value, what, cpl) return S.expect_read(c, va, gpa, value, what, cpl or 3) end

local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

-- One guest: its processes, and the closures that drive it.
local function guest(mode, mi, bi, budget)
  local where = ("%s budget %d"):format(mode, budget)
  local vm = S.vm{ mode = mode, vcpus = 2, memory = "64M", shadow_pages = budget, name = where }
  local c1, c2 = vm.vcpu[1], vm.vcpu[2]
  local span = mode == "legacy32" and 0x400000 or 0x200000
  local content = {}
  local function frame()
    local f = vm:alloc_frame()
    content[f] = (0x2EC << 40) | (mi << 36) | (bi << 32) | f
    vm:write_phys(f, content[f], 8)
    return f
  end

  local K = KVA[mode]
  local kf = { frame(), frame() }
  vm.kernel:map(K, kf[1], { user = false })
  local kcur = kf[1]

  local pages = {}
  for t = 0, 2 do
    for i = 0, 3 do pages[#pages + 1] = 0x00400000 + t * 3 * span + i * 0x1000 end
  end
  local procs, running = {}, {}
  for p = 1, NPROC do
    procs[p] = processes.spawn(vm, pages, 6, frame, function(i) return (i + p) % 5 ~= 0 and i + p end)
  end

  local function check(c, p, what)
    processes.check(c, procs[p], pages, content, what)
    reads(c, K, kcur, content[kcur], what .. " kernel page", 0)
  end

  -- An edit of process p by vCPU c; `runs` says whether c runs p (then it invalidates).
  -- The expectation is updated before the store: another vCPU may switch to p at once.
  local function edit(c, p, runs)
    local pr = procs[p]
    local va = pages[S.random(1, #pages)]
    local old = pr.map[va]
    if old and S.random() < 0.3 then
      pr.map[va] = false
      pr.s:unmap(va, { by = c })
    else
      local f = pr.pool[S.random(1, #pr.pool)]
      pr.map[va] = f
      pr.s:map(va, f, { by = c })                     -- remap, or not present -> present
    end
    if runs and old then expect_ok(c:invlpg(va)) end
    return va
  end

  local g = { vm = vm }
  function g.scheduler(v, phase)
    return function()
      local c = vm.vcpu[v]
      local cur
      for round = 1, ROUNDS do
        local p = processes.switch(c, v, procs, NPROC, running, cur)
        cur = p
        local what = ("%s %s vcpu %d round %d process %d"):format(where, phase, v, round, p)
        check(c, p, what .. " switched in")
        for _ = 1, 3 do
          local va = edit(c, p, true)
          local f = procs[p].map[va]
          if f then reads(c, va, f, content[f], what .. " after its edit of " .. S.hex(va))
          else faults(PF.U, what .. " after unmapping " .. S.hex(va), c:read(va, 8, 3)) end
        end
        -- A process that runs nowhere, edited through the physmap.
        local q = S.random(1, NPROC)
        if running[q] == nil then edit(c, q, false) end
      end
      running[cur] = nil
    end
  end
  -- 3. the kernel's shared page, remapped once and INVLPG'd on both vCPUs.
  function g.kernel_edit()
    kcur = kf[2]
    vm.kernel:map(K, kf[2], { user = false, by = c2 })
    expect_ok(c1:invlpg(K)); expect_ok(c2:invlpg(K))
    for p = 1, NPROC do
      local c = p % 2 == 1 and c1 or c2
      expect_ok(c:load_cr3(procs[p].s))
      check(c, p, ("%s 3: process %d after the kernel edit"):format(where, p))
    end
  end
  return g
end

-- Both guests of a mode share the host (and, for host-wide policies, its unsync list):
-- their vCPUs are interleaved.
for mi, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local gs = { guest(mode, mi, 1, 16), guest(mode, mi, 2, 64) }
  local function tasks(phase)
    local t = {}
    for _, g in ipairs(gs) do
      t[#t + 1] = g.scheduler(1, phase); t[#t + 1] = g.scheduler(2, phase)
    end
    return t
  end
  S.interleave(S.seed * 32 + mi * 4, tasks("1"))
  for _, g in ipairs(gs) do g.kernel_edit() end
  S.interleave(S.seed * 32 + mi * 4 + 2, tasks("2"))
  for bi, g in ipairs(gs) do S.record(("recycle_%s_%d"):format(mode, bi == 1 and 16 or 64), g.vm:counters()) end
end
print("suite_recycle: ok under " .. S.default_policy)

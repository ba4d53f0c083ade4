-- runs under: every policy
--
-- suite_task_switch.lua: task switching as an OS does it, in all four paging modes,
-- with CR4.PCIDE = 0 (every MOV to CR3 flushes the non-global entries).
--  1. CR3 ping-pong: four single-threaded processes are scheduled on two vCPUs by
--     interleaved threads (seeded); a process runs on one vCPU at a time and migrates.
--     While it runs it edits its own PTEs: remap (present -> present) and unmap, each
--     followed by INVLPG on its vCPU; map of an absent page (non-present -> present),
--     with no invalidation; and data stores. Every time a process is switched in (a
--     flushing MOV to CR3) and after every edit, all its pages must read as its tables
--     say, with the data last stored in them: x86 requires it (the other vCPU that ran
--     the process before flushed it when it switched away).
--  2. A kernel half shared by every process: a supervisor page and a global supervisor
--     page are mapped at a kernel address (vmalloc-style) in the kernel's tables before
--     the processes are created, so every process shares that top-level entry. The
--     kernel remaps both once; after both vCPUs INVLPG them, every process on every
--     vCPU must see the new frames (and user mode must still fault on them).
--  3. fork: a child space is filled PTE by PTE from the parent with the frames shared
--     read-only (copy-on-write); the parent's PTEs are write-protected too and INVLPG'd
--     on its vCPU. Writes then fault in both; copy-on-write breaks give each its own
--     frame. exec: the child's image is replaced in place (present -> present remaps,
--     then a flushing MOV to CR3), then by a new address space; the old space's tables
--     are freed and their frames reused as data and as page tables of a new process.
local S = shadowsim
local processes = require("processes")
local P, PF = S.PTE, S.PF
local expect_ok = S.expect_ok

local MODES = { "legacy32", "pae", "long4", "long5" }
local KVA = { legacy32 = 0xD0000000, pae = 0xD0000000, long4 = 0xFFFFC90000000000, long5 = 0xFF91000000000000 }
local NPROC, ROUNDS = 4, 14

-- A read at `cpl` (default 3) must reach `gpa` and give `value`.
local function reads(c, va, gpa, value, what, cpl) return S.expect_read(c, va, gpa, value, what, cpl or 3) end

-- An access must give #PF with exactly `code`.
local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

for mi, mode in ipairs(MODES) do
  local vm = S.vm{ mode = mode, vcpus = 2, memory = "64M" }
  local c1, c2 = vm.vcpu[1], vm.vcpu[2]
  local content = {}                                  -- frame -> the 8 bytes at its offset 0
  local function frame(by)
    local f = vm:alloc_frame{ by = by }
    local m = (0xA5 << 48) | (mi << 40) | f
    vm:write_phys(f, m, 8)
    content[f] = m
    return f
  end

  ---------------------------------------------------------------- the shared kernel half
  local K, KG = KVA[mode], KVA[mode] + 0x1000         -- a supervisor page, a global one
  local kf = { frame(), frame(), frame(), frame() }
  vm.kernel:map(K, kf[1], { user = false })
  vm.kernel:map(KG, kf[2], { user = false, global = true })
  local kcur = { [K] = kf[1], [KG] = kf[2] }

  ---------------------------------------------------------------- processes
  local procs, running = {}, {}
  local pages = {}
  for i = 0, 5 do pages[#pages + 1] = 0x00400000 + i * 0x1000 end
  pages[#pages + 1] = 0x00800000                      -- in another page table
  pages[#pages + 1] = 0x00801000
  for p = 1, NPROC do
    procs[p] = processes.spawn(vm, pages, 8, frame, function(i) return i % 4 ~= 0 and i end)
  end

  -- Everything process p's tables say, read on vCPU c (which runs p).
  local function check(c, p, what)
    processes.check(c, procs[p], pages, content, what .. ": process " .. p)
    for _, va in ipairs{ K, KG } do
      reads(c, va, kcur[va], content[kcur[va]], what .. ": process " .. p .. " kernel page " .. S.hex(va), 0)
    end
    faults(PF.P | PF.U, what .. ": process " .. p .. " user read of a kernel page", c:read(K, 8, 3))
  end

  -- Process p, running on c, edits one of its own pages.
  local function edit(c, p, what)
    local pr = procs[p]
    local va = pages[S.random(1, #pages)]
    local old, kind = pr.map[va], S.random(1, 4)
    if old and kind <= 2 then                         -- remap, then INVLPG
      local f = pr.pool[S.random(1, #pr.pool)]
      pr.s:map(va, f, { by = c })
      pr.map[va] = f
      expect_ok(c:invlpg(va))
    elseif old and kind == 3 then                     -- unmap, then INVLPG
      pr.s:unmap(va, { by = c })
      pr.map[va] = false
      expect_ok(c:invlpg(va))
    elseif not old then                               -- not present -> present: no flush
      local f = pr.pool[S.random(1, #pr.pool)]
      pr.s:map(va, f, { by = c })
      pr.map[va] = f
    else                                              -- a data store
      local value = (S.random(1, 0xFFFF) << 16) | p
      expect_ok(c:write(va + 0, value, 8, 3))
      content[old] = value
    end
    local f = pr.map[va]
    if f then
      reads(c, va, f, content[f], what .. ": process " .. p .. " after editing " .. S.hex(va))
    else
      faults(PF.U, what .. ": process " .. p .. " after unmapping " .. S.hex(va), c:read(va, 8, 3))
    end
  end

  -- A vCPU's scheduler: switch to a process no other vCPU runs, check it, let it edit.
  local function scheduler(v, phase)
    return function()
      local c = vm.vcpu[v]
      local cur
      for round = 1, ROUNDS do
        local p = processes.switch(c, v, procs, NPROC, running, cur)
        cur = p
        local what = ("%s %s vcpu %d round %d"):format(mode, phase, v, round)
        check(c, p, what .. " switched in")
        for _ = 1, S.random(1, 3) do edit(c, p, what) end
      end
      running[cur] = nil
    end
  end

  -- 1. ping-pong, with the kernel half as created.
  S.interleave(S.seed * 16 + mi, { scheduler(1, "phase 1"), scheduler(2, "phase 1") })

  -- 2. the kernel edits its shared half once; each vCPU invalidates both pages.
  kcur[K], kcur[KG] = kf[3], kf[4]
  vm.kernel:map(K, kf[3], { user = false, by = c1 })
  vm.kernel:map(KG, kf[4], { user = false, global = true, by = c1 })
  for _, c in ipairs{ c1, c2 } do
    expect_ok(c:invlpg(K)); expect_ok(c:invlpg(KG))
  end
  for p = 1, NPROC do
    for _, c in ipairs{ c1, c2 } do
      expect_ok(c:load_cr3(procs[p].s))
      check(c, p, mode .. " kernel edit seen by vcpu " .. c:index())
    end
  end
  S.interleave(S.seed * 16 + mi + 8, { scheduler(1, "phase 2"), scheduler(2, "phase 2") })

  ---------------------------------------------------------------- 3. fork and exec
  local parent = procs[1]
  expect_ok(c1:load_cr3(parent.s))
  expect_ok(c2:load_cr3(vm.kernel))
  local child = { s = vm:space{ by = c1 }, map = {}, pool = {} }
  for _, va in ipairs(pages) do                       -- copy the parent PTE by PTE
    local f = parent.map[va]
    child.map[va] = f
    if f then
      child.s:map(va, f, { write = false, by = c1 })
      parent.s:map(va, f, { write = false, by = c1 })
      expect_ok(c1:invlpg(va))                        -- the parent lost its write right
    end
  end
  procs[NPROC + 1] = child
  check(c1, 1, mode .. " fork: parent")
  expect_ok(c2:load_cr3(child.s))
  check(c2, NPROC + 1, mode .. " fork: child")
  local cow_va
  for _, va in ipairs(pages) do
    if parent.map[va] then
      faults(PF.P | PF.W | PF.U, mode .. " fork: parent write to a shared page", c1:write(va, 1, 8, 3))
      faults(PF.P | PF.W | PF.U, mode .. " fork: child write to a shared page", c2:write(va, 2, 8, 3))
      cow_va = cow_va or va
    end
  end
  S.expect(cow_va ~= nil, mode .. " fork: the parent has pages")
  -- Copy-on-write breaks: the child, then the parent, get a private copy.
  local shared = parent.map[cow_va]
  for _, who in ipairs{ { c2, child, 0xC41D }, { c1, parent, 0x9A7E } } do
    local c, pr, tag = who[1], who[2], who[3]
    local copy = vm:alloc_frame{ by = c }
    expect_ok(c:write(vm:physmap(copy), content[shared], 8, 0))
    content[copy] = content[shared]
    pr.s:map(cow_va, copy, { by = c })
    pr.map[cow_va] = copy
    expect_ok(c:invlpg(cow_va))
    expect_ok(c:write(cow_va, tag, 8, 3))
    content[copy] = tag
    reads(c, cow_va, copy, tag, mode .. " fork: write after the copy-on-write break")
  end
  check(c1, 1, mode .. " fork: parent after the breaks")
  check(c2, NPROC + 1, mode .. " fork: child after the breaks")

  -- exec, in place: every page of the image is replaced, then CR3 is reloaded.
  for i, va in ipairs(pages) do
    local f = frame(c2)
    child.pool[i] = f
    if child.map[va] or i % 2 == 0 then
      child.s:map(va, f, { by = c2 })
      child.map[va] = f
    end
  end
  expect_ok(c2:load_cr3(child.s))
  check(c2, NPROC + 1, mode .. " exec in place")

  -- exec into a new space: the old one's tables are freed and reused.
  local old = child.s
  local tables = { old.cr3 }
  for _, va in ipairs{ pages[1], pages[#pages] } do
    local _, pte_gpa = old:entry(va, 1)
    tables[#tables + 1] = pte_gpa & ~0xFFF
  end
  -- A process built by vCPU `by`: a new space with every page on a frame of its own.
  local function populated(by)
    local pr = { s = vm:space{ by = by }, map = {}, pool = {} }
    for i, va in ipairs(pages) do
      local f = frame(by)
      pr.pool[i] = f
      pr.s:map(va, f, { by = by })
      pr.map[va] = f
    end
    return pr
  end
  local image = populated(c2)
  procs[NPROC + 1] = image
  expect_ok(c2:load_cr3(image.s))
  check(c2, NPROC + 1, mode .. " exec into a new space")
  local seen = {}
  for _, t in ipairs(tables) do
    if not seen[t] then seen[t] = true; vm:free_frame(t) end
  end
  -- The freed tables come back: as data frames of the new image (written by user
  -- code) and as tables of a new process running on vCPU 1.
  local reused = vm:alloc_frame{ by = c2 }
  content[reused] = 0
  image.s:map(pages[2], reused, { by = c2 })
  image.map[pages[2]] = reused
  expect_ok(c2:invlpg(pages[2]))
  expect_ok(c2:write(pages[2], 0x5EED, 8, 3))
  content[reused] = 0x5EED
  local fresh = populated(c1)
  procs[NPROC + 2] = fresh
  expect_ok(c1:load_cr3(fresh.s))
  check(c1, NPROC + 2, mode .. " a new process on the freed tables")
  check(c2, NPROC + 1, mode .. " the new image, after the frames were reused")
  for _ = 1, 6 do edit(c1, NPROC + 2, mode .. " new process") end
  check(c2, NPROC + 1, mode .. " the new image at the end")
end
print("suite_task_switch: ok under " .. S.default_policy)

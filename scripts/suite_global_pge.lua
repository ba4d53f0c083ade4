-- runs under: every policy
--
-- suite_global_pge.lua: global translations and guest-scope flushes, in all four
-- paging modes, on two vCPUs (CR4.PGE = 1, PCIDE = 0).
--  1. Global kernel mappings across CR3 switches: a global and a non-global supervisor
--     page in the shared kernel half, and a user global page in process A, read in A,
--     B and C on both vCPUs.
--  2. Edit + INVLPG: the kernel remaps its global page; after INVLPG on a vCPU, every
--     process on that vCPU sees the new frame (a MOV to CR3 does not flush a global
--     entry, so INVLPG is what makes it visible). A's user global page likewise.
--  3. PGE toggles: the kernel remaps the global page with no INVLPG; a CR4.PGE toggle
--     (a flush of everything) on each vCPU makes it visible. With PGE = 0 no
--     translation is global: a remap of the G = 1 page is seen after a plain MOV to
--     CR3.
--  4. B2-like (reference §11): vCPU 2 runs process B; vCPU 1 edits B's tables (PTE
--     remaps in two page tables, unmaps, maps of absent pages, a PDE retargeted to
--     another page table) and the kernel's global page; vCPU 2 then does a guest-scope
--     flush -- a PGE toggle or INVPCID type 2 (all contexts, globals included) -- or
--     INVPCID type 3 / a MOV to CR3 (non-global entries only), and must see every
--     edit the flush covers. Done in a fixed order, then interleaved (seeded) with
--     vCPU 1 waiting for vCPU 2's acknowledgement after each batch of edits (a TLB
--     shootdown).
local S = shadowsim
local P, PF = S.PTE, S.PF
local expect_ok = S.expect_ok

local MODES = { "legacy32", "pae", "long4", "long5" }
local KVA = { legacy32 = 0xD0400000, pae = 0xD0400000, long4 = 0xFFFFC90000200000, long5 = 0xFF91000000200000 }

local function faults(code, what, first, fault) return S.expect_fault(code, nil, what, first, fault) end

for mi, mode in ipairs(MODES) do
  local vm = S.vm{ mode = mode, vcpus = 2, memory = "64M" }
  local c1, c2 = vm.vcpu[1], vm.vcpu[2]
  local span = mode == "legacy32" and 0x400000 or 0x200000      -- what one PDE maps
  local ADDR = mode == "legacy32" and 0xFFFFF000 or 0x000FFFFFFFFFF000
  local marker = {}
  local function frame()
    local f = vm:alloc_frame()
    marker[f] = (0x610B << 32) | (mi << 28) | f
    vm:write_phys(f, marker[f], 8)
    return f
  end

  -- What the tables of `s` give for va now: the read at `cpl` must see exactly that.
  local function sees(c, s, va, what, cpl)
    local e, level = s:leaf(va)
    if e == nil then
      faults(cpl == 0 and 0 or PF.U, what, c:read(va, 8, cpl or 3))
      return
    end
    S.expect_eq(level, 1, what .. ": a 4 KiB leaf")
    local fr = e & ADDR
    local v, pa = c:read(va, 8, cpl or 3)
    if v == nil then error(("%s: read of %s faulted: %s"):format(what, S.hex(va), pa.text), 2) end
    if pa ~= fr then error(("%s: read of %s reached %s, expected %s"):format(what, S.hex(va), S.hex(pa), S.hex(fr)), 2) end
    if v ~= marker[fr] then error(("%s: read of %s gave %s"):format(what, S.hex(va), S.hex(v)), 2) end
  end

  local KG, KN = KVA[mode], KVA[mode] + 0x1000                 -- global, non-global (kernel)
  local UG = 0x00600000                                        -- a user global page of A
  local kf = {}
  for i = 1, 8 do kf[i] = frame() end
  vm.kernel:map(KG, kf[1], { user = false, global = true })
  vm.kernel:map(KN, kf[2], { user = false })
  local K = vm.kernel
  local A, B, C = vm:space(), vm:space(), vm:space()
  local procs = { A, B, C }
  local user = { 0x00400000, 0x00401000, 0x00402000, 0x00400000 + 4 * span, 0x00400000 + 4 * span + 0x1000 }
  local pool = {}
  for i = 1, 12 do pool[i] = frame() end
  for pi, s in ipairs(procs) do
    for i, va in ipairs(user) do s:map(va, pool[(pi + i) % #pool + 1]) end
  end
  A:map(UG, pool[12], { global = true })

  local function all(c, s, what)
    for _, va in ipairs(user) do sees(c, s, va, what .. " " .. S.hex(va)) end
    sees(c, K, KG, what .. " global kernel page", 0)
    sees(c, K, KN, what .. " kernel page", 0)
    faults(PF.P | PF.U, what .. ": user read of the global kernel page", c:read(KG, 8, 3))
  end

  ---------------------------------------------------------------- 1. across CR3 switches
  for _, c in ipairs{ c1, c2 } do
    for pi, s in ipairs(procs) do
      expect_ok(c:load_cr3(s))
      all(c, s, ("%s 1: vcpu %d process %d"):format(mode, c:index(), pi))
    end
    expect_ok(c:load_cr3(A))
    sees(c, A, UG, mode .. " 1: A's user global page")
  end

  ---------------------------------------------------------------- 2. edit + INVLPG
  K:map(KG, kf[3], { user = false, global = true, by = c1 })
  K:map(KN, kf[4], { user = false, by = c1 })
  A:map(UG, pool[11], { global = true, by = c1 })
  expect_ok(c1:invlpg(KG)); expect_ok(c1:invlpg(KN)); expect_ok(c1:invlpg(UG))
  sees(c1, A, UG, mode .. " 2: A's user global page after INVLPG")
  for pi, s in ipairs{ C, B, A } do
    expect_ok(c1:load_cr3(s))
    all(c1, s, ("%s 2: vcpu 1 process %d after INVLPG"):format(mode, pi))
  end
  expect_ok(c2:invlpg(KG)); expect_ok(c2:invlpg(KN)); expect_ok(c2:invlpg(UG))
  all(c2, A, mode .. " 2: vcpu 2 after its INVLPG")
  sees(c2, A, UG, mode .. " 2: vcpu 2, A's user global page")

  ---------------------------------------------------------------- 3. PGE toggles
  K:map(KG, kf[5], { user = false, global = true, by = c2 })
  A:map(UG, pool[10], { global = true, by = c2 })
  for _, c in ipairs{ c1, c2 } do
    expect_ok(c:set{ pge = false }); expect_ok(c:set{ pge = true })
    all(c, A, mode .. " 3: vcpu " .. c:index() .. " after a PGE toggle")
    sees(c, A, UG, mode .. " 3: vcpu " .. c:index() .. ", A's user global page after a PGE toggle")
  end
  -- With PGE = 0 the G bit means nothing: MOV to CR3 flushes the page.
  expect_ok(c1:set{ pge = false })
  expect_ok(c1:load_cr3(B))
  all(c1, B, mode .. " 3: PGE = 0, B")
  K:map(KG, kf[6], { user = false, global = true, by = c1 })
  expect_ok(c1:load_cr3(C))
  all(c1, C, mode .. " 3: PGE = 0, the G = 1 page after MOV to CR3")
  expect_ok(c1:set{ pge = true })
  all(c1, C, mode .. " 3: PGE set again")
  expect_ok(c2:invlpg(KG))
  all(c2, A, mode .. " 3: vcpu 2 after INVLPG")

  ---------------------------------------------------------------- 4. B2-like
  -- A second page table with the same index range, for PDE retargets.
  local far = 0x00400000 + 12 * span
  B:map(far, pool[9]); B:map(far + 0x1000, pool[8]); B:map(far + 0x2000, pool[7])
  local pde_home = B:entry(user[1], 2)                          -- B's own first table
  local pde_far = B:entry(far, 2)

  -- One batch of edits, by vCPU 1 (which runs A). Returns whether it touched a global.
  local function edits(k)
    local global = false
    local r = S.random(1, 6)
    if r == 1 then
      B:set_entry(user[1], 2, (B:entry(user[1], 2) & ADDR) == (pde_home & ADDR) and pde_far or pde_home, { by = c1 })
    elseif r == 2 then
      K:map(KG, kf[S.random(5, 8)], { user = false, global = true, by = c1 })
      global = true
    end
    for _ = 1, S.random(1, 3) do
      local va = user[S.random(1, #user)]
      if S.random() < 0.25 then
        B:unmap(va, { by = c1 })
      else
        B:map(va, pool[S.random(1, #pool)], { by = c1 })
      end
    end
    return global
  end

  -- vCPU 2's flush of kind `how`; whether it covers global translations.
  local FLUSHES = { "PGE toggle", "INVPCID type 2", "INVPCID type 3", "MOV to CR3" }
  local function flush(how)
    if how == 1 then
      expect_ok(c2:set{ pge = false }); expect_ok(c2:set{ pge = true }); return true
    elseif how == 2 then
      expect_ok(c2:invpcid(2)); return true
    elseif how == 3 then
      expect_ok(c2:invpcid(3)); return false
    else
      expect_ok(c2:load_cr3(B)); return false
    end
  end

  expect_ok(c1:load_cr3(A))
  expect_ok(c2:load_cr3(B))
  all(c2, B, mode .. " 4: vcpu 2 runs B")
  -- In a fixed order first.
  local global_pending = false
  for round = 1, 8 do
    local how = (round - 1) % 4 + 1
    global_pending = edits(round) or global_pending
    local what = ("%s 4: fixed round %d, after %s"):format(mode, round, FLUSHES[how])
    if flush(how) then global_pending = false end
    for _, va in ipairs(user) do sees(c2, B, va, what .. " " .. S.hex(va)) end
    if not global_pending then sees(c2, K, KG, what .. " global kernel page", 0) end
  end
  expect_ok(c2:invlpg(KG))
  global_pending = false

  -- Interleaved: vCPU 1 edits and waits for the acknowledgement; vCPU 2 reads B's pages
  -- and, when a new batch is announced, flushes and checks.
  for round = 1, 3 do
    local gen, ack, done, busy = 0, 0, false, false
    local global_gen, global_flushed = 0, 0
    S.interleave(S.seed * 8 + mi * 3 + round, {
      function()
        for _ = 1, 6 do
          busy = true
          local g = edits(gen)
          busy = false
          gen = gen + 1
          if g then global_gen = gen end
          while ack < gen do c1:read(user[1], 8, 3) end
        end
        done = true
      end,
      function()
        local n = 0
        while not done do
          if ack < gen then
            local g = gen
            n = n + 1
            local how = (n + round) % 4 + 1
            local what = ("%s 4: interleaved round %d batch %d, after %s"):format(mode, round, g, FLUSHES[how])
            if flush(how) then global_flushed = g end
            for _, va in ipairs(user) do sees(c2, B, va, what .. " " .. S.hex(va)) end
            if global_gen <= global_flushed then sees(c2, K, KG, what .. " global kernel page", 0) end
            ack = g
          elseif not busy then
            sees(c2, B, user[S.random(1, #user)], mode .. " 4: vcpu 2 between batches")
          else
            c2:read(user[S.random(1, #user)], 8, 3)               -- may be old or new
          end
        end
      end,
    })
    expect_ok(c2:invlpg(KG))                                   -- a global change may be pending
  end
  all(c2, B, mode .. " 4: vcpu 2 at the end")
  expect_ok(c1:set{ pge = false }); expect_ok(c1:set{ pge = true })
  for pi, s in ipairs(procs) do
    expect_ok(c1:load_cr3(s))
    all(c1, s, ("%s 4: vcpu 1 process %d at the end"):format(mode, pi))
  end
end
print("suite_global_pge: ok under " .. S.default_policy)

-- runs under: every policy
-- suite_rights_unsync.lua -- mprotect on pages in use: rights-only changes of present
-- PTEs with A = 1 and D = 1 (nothing else in the entry changes), in a table that is
-- already shadowed and (under the unsync policies) unsync, followed by the guest's
-- invalidation: INVLPG on the vCPU that changed them, INVLPG on the other vCPU, or a
-- flushing CR3 reload. Each change takes rights away (R/W, U/S, XD) or gives them back.
--
-- Before the invalidation a vCPU may still use the old rights (x86 allows it; the
-- checker judges what it gets); after it, every access must see the new rights
-- exactly: the fault with its error code, or the access going through. A policy that
-- resyncs the wrong entry, keeps a writable spte to a read-only PTE, or forgets that
-- the page is unsync fails here.
local S = shadowsim
local PTE, PF = S.PTE, S.PF

local RIGHTS = { { "read-only", PTE.RW }, { "supervisor", PTE.US }, { "no-execute", PTE.NX } }

for _, mode in ipairs{ "long4", "long5", "pae", "legacy32" } do
  local vm = S.vm{ mode = mode, vcpus = 2 }
  local a, b = vm.vcpu[1], vm.vcpu[2]
  local p, other = vm:space(), vm:space()
  local base = 0x00400000
  local pages, frames = {}, {}
  for i = 0, 7 do
    pages[i] = base + i * 0x1000
    frames[i] = vm:alloc_frame()
    p:map(pages[i], frames[i], { write = true, user = true, accessed = true, dirty = true })
  end
  other:map(base, vm:alloc_frame())
  for _, cpu in ipairs{ a, b } do S.expect_ok(cpu:load_cr3(p)) end
  -- Both vCPUs use every page (writes: the sptes become writable, D is already set).
  for i = 0, 7 do
    for _, cpu in ipairs{ a, b } do
      S.expect_ok(cpu:write(pages[i], i, 8, 3))
      S.expect_ok(cpu:fetch(pages[i] + 0x800, 3))
    end
  end
  -- A first store to the table (a remap of page 7): it goes unsync where a policy allows.
  p:map(pages[7], vm:alloc_frame(), { accessed = true, dirty = true })
  a:invlpg(pages[7]); b:invlpg(pages[7])

  local wide = mode ~= "legacy32"
  for r, right in ipairs(RIGHTS) do
    local name, bit = right[1], right[2]
    if bit == PTE.NX and not wide then goto next_right end
    local what = mode .. ", " .. name
    -- The access that the lost right refuses, and its error code at CPL 3.
    local function refused(cpu, va)
      if bit == PTE.RW then return S.expect_fault(PF.P | PF.W | PF.U, va, what .. " write", cpu:write(va, 1, 8, 3)) end
      if bit == PTE.US then return S.expect_fault(PF.P | PF.U, va, what .. " user read", cpu:read(va, 8, 3)) end
      return S.expect_fault(PF.P | PF.I | PF.U, va, what .. " fetch", cpu:fetch(va, 3))
    end
    local function allowed(cpu, i)
      if bit == PTE.RW then return S.expect_ok(cpu:write(pages[i], 0x100 + i, 8, 3)) end
      if bit == PTE.US then return S.expect_read(cpu, pages[i], frames[i], nil, what .. " user read", 3) end
      return S.expect_ok(cpu:fetch(pages[i], 3))
    end
    -- vCPU b switches to another process: its root for p stays cached.
    S.expect_ok(b:load_cr3(other))
    -- Three pages lose the right: A = 1 and D = 1 stay set, only the right changes.
    local i1, i2, i3 = 2 * (r - 1), 2 * (r - 1) + 1, 6
    for _, i in ipairs{ i1, i2, i3 } do
      local e = p:entry(pages[i], 1)
      S.expect_eq(e & (PTE.A | PTE.D), PTE.A | PTE.D, what .. ": A and D are set before the change")
      p:set_entry(pages[i], 1, bit == PTE.NX and (e | bit) or (e & ~bit), { by = a })
    end
    -- b comes back with a flushing CR3 load: the cached root must not hand out the old
    -- rights (KVM syncs it, or builds a new one).
    S.expect_ok(b:load_cr3(p))
    for _, i in ipairs{ i1, i2, i3 } do refused(b, pages[i]) end
    -- Until it invalidates, a may use the old rights (the checker decides).
    a:write(pages[i1] + 8, 2, 8, 3)
    -- INVLPG on the vCPU that changed the entry: there, the new rights hold at once.
    a:invlpg(pages[i1])
    refused(a, pages[i1])
    -- A flushing CR3 reload covers every page of the process.
    S.expect_ok(a:load_cr3(p))
    refused(a, pages[i2])
    refused(a, pages[i3])
    -- The rights come back, again with A and D set, changed by the other vCPU; after an
    -- INVLPG here, or a CR3 reload, they are there.
    for _, i in ipairs{ i1, i2, i3 } do
      local e = p:entry(pages[i], 1)
      p:set_entry(pages[i], 1, bit == PTE.NX and (e & ~bit) or (e | bit), { by = b })
    end
    b:invlpg(pages[i1]); a:invlpg(pages[i1])
    allowed(a, i1)
    allowed(b, i1)
    S.expect_ok(a:load_cr3(p)); S.expect_ok(b:load_cr3(p))
    for _, i in ipairs{ i2, i3 } do allowed(a, i); allowed(b, i) end
    ::next_right::
  end
  local problems = vm:verify()
  S.expect_eq(#problems, 0, mode .. ": shadow MMU invariants (" .. (problems[1] or "") .. ")")
end

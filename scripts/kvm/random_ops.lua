-- runs under: every policy
-- random_ops.lua: seeded random guest operations for running side by side with the
-- host's KVM (`shadowsim run scripts/kvm/random_ops.lua --backend kvm --param seed=7
-- --param vcpus=2 --param ops=1000`): reads, writes and fetches at CPL 3, page-table
-- stores (maps with random rights and A/D, unmaps) into the current and other address
-- spaces, INVLPG and MOV CR3 among three spaces sharing frames, on one or two vCPUs,
-- 2 MiB guest pages, hypervisor-emulated stores, rewritten directory entries, REP STOSB
-- clears, CR4.PGE and CR0.WP toggles, table frames freed and reused, A/D cleared in live
-- PTEs; a phase every 50 operations. Parameters: seed (1), vcpus (1), ops (300).
local S = shadowsim
local seed = tonumber(S.params.seed or 1)
local vcpus = tonumber(S.params.vcpus or 1)
local nops = tonumber(S.params.ops or 300)
math.randomseed(seed)
local R = math.random
local vm = S.vm{ mode = "long4", vcpus = vcpus, memory = "64M" }
local spaces = { vm:space(), vm:space(), vm:space() }
local frames = {}
for i = 1, 24 do frames[i] = vm:alloc_frame() end
local vas = {}
for i = 0, 5 do vas[#vas + 1] = 0x10000000 + i * 0x1000 end
for i = 0, 2 do vas[#vas + 1] = 0x10200000 + i * 0x1000 end
vas[#vas + 1] = 0x40000000
vas[#vas + 1] = 0x7f0000000000
local big = 0x80000000   -- a 2 MiB guest page
for _, sp in ipairs(spaces) do for i = 1, 4 do sp:map(vas[i], frames[R(#frames)]) end end
local cur = {}
for v = 1, vcpus do
  local cpu = vm.vcpu[v]
  cur[v] = spaces[1]
  cpu:set{ cpl = 0 }; cpu:load_cr3(spaces[1]); cpu:set{ cpl = 3 }
end
for n = 1, nops do
  if n % 50 == 1 then S.mark("ops " .. n) end
  local v = R(vcpus)
  local cpu = vm.vcpu[v]
  local op = R(135)
  local va = vas[R(#vas)]
  if op <= 25 then
    cpu:read(va)
  elseif op <= 38 then
    cpu:write(va, n)
  elseif op <= 52 then
    local sp = R(3) <= 2 and cur[v] or spaces[R(3)]
    sp:map(va, frames[R(#frames)], { write = R(4) > 1, accessed = R(2) == 1, dirty = R(3) == 1, by = cpu })
  elseif op <= 58 then
    local sp = R(2) == 1 and cur[v] or spaces[R(3)]
    sp:unmap(va, { by = cpu })
  elseif op <= 68 then
    cpu:set{ cpl = 0 }; cpu:invlpg(va); cpu:set{ cpl = 3 }
  elseif op <= 80 then
    local sp = spaces[R(3)]
    cpu:set{ cpl = 0 }; cpu:load_cr3(sp); cpu:set{ cpl = 3 }
    cur[v] = sp
  elseif op <= 84 then
    cpu:fetch(va)
  elseif op <= 90 then
    -- a 2 MiB mapping (the host splits it into 4 KiB sptes), then an access into it
    local sp = R(2) == 1 and cur[v] or spaces[R(3)]
    sp:map(big, 0x400000 * R(4), { size = "2m", write = R(3) > 1, by = cpu })
    cpu:read(big + R(0, 511) * 4096)
  elseif op <= 96 then
    cpu:write(big + R(0, 511) * 4096, n)
  elseif op <= 104 then
    -- a store to a table through the physmap by the hypervisor's emulator (CPL 0 code)
    local sp = cur[v]
    local e, at = sp:entry(va, 1)
    if at then cpu:write(vm:physmap(at), frames[R(#frames)] | 0x67, 8, 0, { emulated = true }) end
  elseif op <= 110 then
    -- the kernel rewrites an upper-level entry (the PDE) of some space
    local sp = spaces[R(3)]
    local e, at = sp:entry(va, 2)
    if e and R(3) == 1 then sp:set_entry(va, 2, 0, { by = cpu }) elseif e then sp:set_entry(va, 2, e, { by = cpu }) end
  elseif op <= 120 then
    -- a data page cleared with REP STOSB
    cpu:fill(va, 4096 - (va & 0xFFF), 0)
  elseif op <= 124 then
    -- CR4.PGE toggled (a full guest TLB flush), or CR0.WP
    cpu:set{ cpl = 0 }
    if R(2) == 1 then cpu:set{ pge = false }; cpu:set{ pge = true } else cpu:set{ wp = false }; cpu:set{ wp = true } end
    cpu:set{ cpl = 3 }
  elseif op <= 130 then
    -- a leaf table freed and reused as a fresh table of another space (cleared by the kernel)
    local sp = spaces[R(3)]
    local e, at = sp:entry(va, 2)
    if e and e & 1 == 1 and e & 0x80 == 0 then
      sp:set_entry(va, 2, 0, { by = cpu })
      vm:free_frame(e & ~0xFFF)
      local t = vm:alloc_frame{ by = cpu }
      sp:set_entry(va, 2, t | 0x67, { by = cpu })
    end
  else
    -- A/D cleared in a live PTE by the kernel, then used again
    local sp = cur[v]
    local e = sp:entry(va, 1)
    if e and e & 1 == 1 then sp:set_entry(va, 1, e & ~0x60, { by = cpu }); cpu:read(va) end
  end
end

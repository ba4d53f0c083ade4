-- runs under: every policy
-- random_ops.lua: seeded random guest operations for running side by side with the
-- host's KVM (`shadowsim run scripts/kvm/random_ops.lua --backend kvm --param seed=7
-- --param vcpus=2 --param ops=1000`): reads, writes and fetches at CPL 3, page-table
-- stores (maps with random rights and A/D, unmaps) into the current and other address
-- spaces, INVLPG and MOV CR3 among three spaces sharing frames, on one or two vCPUs,
-- a phase every 50 operations. Parameters: seed (1), vcpus (1), ops (300).
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
  local op = R(100)
  local va = vas[R(#vas)]
  if op <= 30 then
    cpu:read(va)
  elseif op <= 45 then
    cpu:write(va, n)
  elseif op <= 60 then
    local sp = R(3) <= 2 and cur[v] or spaces[R(3)]
    sp:map(va, frames[R(#frames)], { write = R(4) > 1, accessed = R(2) == 1, dirty = R(3) == 1, by = cpu })
  elseif op <= 68 then
    local sp = R(2) == 1 and cur[v] or spaces[R(3)]
    sp:unmap(va, { by = cpu })
  elseif op <= 80 then
    cpu:set{ cpl = 0 }; cpu:invlpg(va); cpu:set{ cpl = 3 }
  elseif op <= 95 then
    local sp = spaces[R(3)]
    cpu:set{ cpl = 0 }; cpu:load_cr3(sp); cpu:set{ cpl = 3 }
    cur[v] = sp
  else
    cpu:fetch(va)
  end
end

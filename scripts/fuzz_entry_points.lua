-- fuzz_entry_points.lua -- every Lua entry point, called with seeded random arguments
-- of every type, either works or raises a Lua error: never a trap of the simulator.
--
-- What it proves: for `ops` calls (default 4000; `-- ops=N` for more) of a random
-- function or method of shadowsim, VM, vCPU and address space, on VMs of all four
-- paging modes, with 0…5 arguments drawn from nil, booleans, extreme integers,
-- floats, strings, option tables with real and made-up keys, functions and the
-- simulator's own objects (including another VM's), the call returns or fails with a
-- string message. Afterwards every VM still passes `vm:verify()`. A trap would end
-- the process, and the suite with it. (`show` and `markdown_table` only print.)
local S = shadowsim

local ops = 4000
for _, a in ipairs(S.args) do
  local n = a:match("^ops=(%d+)$")
  if n then ops = tonumber(n) end
end

local vms = {}
for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ mode = mode, vcpus = 2, memory = "32M" }
  local s = vm:space{}
  s:map(0x00400000, vm:alloc_frame{})
  S.expect_ok(vm.vcpu[1]:load_cr3(s))
  vms[#vms + 1] = { vm = vm, space = s }
end

local integers = {
  0, 1, 2, 3, 4, 5, 8, 12, -1, -4096, 255, 256, 4095, 4096, 4097, 0x1000, 0x5000,
  0x00400000, 0x00400FFF, 0x00200000, 0x40000000, 0xFFFFFFFF, 1 << 32, 1 << 36,
  1 << 47, (1 << 47) - 4096, 0xFFFF800000000000, 1 << 52, 1 << 56, 1 << 62, 1 << 63,
  math.maxinteger, math.mininteger, 4096 * 4096, 32 << 20,
}
local strings = { "", "x", "read", "write", "fetch", "4k", "2m", "4m", "1g", "long4",
  "legacy32", "all", "address", "context", "kvm-unsync", "bare-metal", "64M", "-1",
  "0x1000", string.rep("a", 300), "\0" }
local keys = { "mode", "vcpus", "memory", "maxphyaddr", "wp", "pse", "pge", "smep",
  "smap", "nxe", "pcide", "ac", "cpl", "tlb_entries", "name", "policy", "write", "user",
  "nx", "global", "accessed", "dirty", "size", "by", "pcid", "noflush", "va", "access",
  "entries", "bogus", 1 }

local pick -- forward: values may nest
local function options()
  local t = {}
  for _ = 1, S.random(0, 3) do t[keys[S.random(1, #keys)]] = pick(1) end
  return t
end
local function object()
  local g = vms[S.random(1, #vms)]
  local which = S.random(1, 4)
  if which == 1 then return g.vm elseif which == 2 then return g.vm.vcpu[S.random(1, 2)]
  elseif which == 3 then return g.space else return g.vm.kernel end
end
function pick(depth)
  local kind = S.random(1, depth > 0 and 8 or 9)
  if kind == 1 then return nil
  elseif kind == 2 then return S.random(0, 1) == 1
  elseif kind <= 4 then return integers[S.random(1, #integers)]
  elseif kind == 5 then return ({ 0.5, -0.0, 1e300, 0 / 0, 1 / 0, 4096.0 })[S.random(1, 6)]
  elseif kind == 6 then return strings[S.random(1, #strings)]
  elseif kind == 7 then return object()
  elseif kind == 8 then return function() return 1 end
  else return options() end
end

-- The entry points: module functions (but not the VM constructor, tried separately
-- below so that the run does not pile up VMs), then every method of each class.
local module = {}
for name, f in pairs(S) do
  if type(f) == "function" and name ~= "vm" and name ~= "show" and name ~= "markdown_table" then module[#module + 1] = name end
end
table.sort(module) -- pairs order is not part of the seed
local methods = {}
for class, list in pairs(S._methods) do
  for name in pairs(list) do methods[#methods + 1] = { class, name } end
end
for _, name in ipairs{ "space", "alloc_frame", "free_frame", "read_phys", "write_phys", "physmap",
                       "counters", "verify", "cycles", "memory_stats" } do
  methods[#methods + 1] = { "vm", name }
end
table.sort(methods, function(a, b) return a[1] .. a[2] < b[1] .. b[2] end)

local failures, successes = 0, 0
local function try(f, ...)
  local ok, e = pcall(f, ...)
  if ok then successes = successes + 1 return end
  failures = failures + 1
  if type(e) ~= "string" then error("an entry point raised a " .. type(e) .. " instead of a message", 2) end
  -- Under --check, what the checker finds is a finding, not a bad argument.
  if e:find("architectural violation", 1, true) or e:find("invariant broken", 1, true) then error(e, 0) end
end

for _ = 1, ops do
  local args = {}
  local n = S.random(0, 5)
  for i = 1, n do args[i] = pick(1) end
  if S.random(1, 4) == 1 then
    local name = module[S.random(1, #module)]
    try(S[name], table.unpack(args, 1, n))
  else
    local m = methods[S.random(1, #methods)]
    local g = vms[S.random(1, #vms)]
    local self = ({ vm = g.vm, vcpu = g.vm.vcpu[S.random(1, 2)], space = g.space })[m[1]]
    if S.random(1, 8) == 1 then self = pick(1) end -- a bad self
    local f = (m[1] == "vm") and g.vm[m[2]] or S._methods[m[1]][m[2]]
    try(f, self, table.unpack(args, 1, n))
  end
end
for _ = 1, 100 do try(S.vm, pick(0)) end

-- The shadow MMUs still hold their invariants. (Whether each guest can still run is
-- another matter: the fuzzing may have scribbled over its page tables.)
for _, g in ipairs(vms) do S.expect_ok(g.vm:verify()) end
S.record("entry_point_calls", { ok = successes, errors = failures })
S.expect_ne(successes, 0, "some calls succeed")
S.expect_ne(failures, 0, "some calls fail")

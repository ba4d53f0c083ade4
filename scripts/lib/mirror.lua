-- mirror.lua -- helpers for scenarios that run the same guest operations on several
-- guests (one on bare metal, one under the policy being tested) and compare them.
--
--   local mirror = require("mirror")
--   mirror.shootdown(guests, on, p, { va1, va2 })
--   if not mirror.same(r1, r2) then print(mirror.show(r1), mirror.show(r2)) end
--
-- `guests` is a list of { vm = …, spaces = { [p] = address space } }; `on[v]` is the
-- process vCPU v runs.
local S = shadowsim
local M = {}

--- The guest's TLB shootdown of `vas` in process `p`: on every vCPU running it, the
--- same (seeded) choice of INVLPG of each address, a CR3 reload, or a PGE toggle.
function M.shootdown(guests, on, p, vas)
  local how = S.random(1, 10)
  for _, g in ipairs(guests) do
    for v = 1, #on do
      if on[v] == p then
        local cpu = g.vm.vcpu[v]
        if how <= 6 then
          for _, va in ipairs(vas) do cpu:invlpg(va) end
        elseif how <= 9 then
          S.expect_ok(cpu:load_cr3(g.spaces[p]))
        else
          S.expect_ok(cpu:set{ pge = false })
          S.expect_ok(cpu:set{ pge = true })
        end
      end
    end
  end
end

--- Whether two guests' results (lists made by `table.pack`) are the same: every value
--- equal, every fault of the same kind, error code and CR2.
function M.same(a, b)
  if a.n ~= b.n then return false end
  for i = 1, a.n do
    local x, y = a[i], b[i]
    if type(x) == "table" then
      if type(y) ~= "table" or x.kind ~= y.kind or x.error_code ~= y.error_code or x.cr2 ~= y.cr2 then return false end
    elseif x ~= y then
      return false
    end
  end
  return true
end

--- A packed result list as text for a mismatch report.
function M.show(list)
  local out = {}
  for i = 1, list.n do
    local v = list[i]
    out[i] = type(v) == "table" and v.text or S.hex(v)
  end
  return table.concat(out, ", ")
end

return M

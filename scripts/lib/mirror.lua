-- mirror.lua -- helpers for scenarios that run the same guest operations on several
-- guests (one on bare metal, one under the policy being tested) and compare them.
--
--   local mirror = require("mirror")
--   mirror.shootdown(guests, on, p, { va1, va2 })
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

return M

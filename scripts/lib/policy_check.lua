-- policy_check.lua -- helpers shared by the policy_*.lua scenarios.
--
--   local P = require("policy_check")
--   local d = P.measure(vm, function() ... end)      -- counter deltas of vm:counters()
--   P.expect_delta(d, { pf_emulate = 1, mmu_unsync = 0 }, "what")   -- exact deltas
--   P.reads(cpu, va, gpa, "what")                    -- a user read must reach gpa
--   P.section("name", function() ... end)            -- runs; a failure is recorded
--   P.finish("policy_x")                             -- fails listing every failed section
--
-- Sections let one scenario file report every rule the engine breaks, not only the
-- first: each runs even when an earlier one failed, and `finish` fails the script with
-- all their messages (each names the script line of the failed check).
local S = shadowsim
local M = {}

local function caller()
  local info = debug.getinfo(3, "Sl")
  return ("%s:%d"):format(info.short_src:match("[^/]*$"), info.currentline)
end

--- Counter deltas caused by `f`.
function M.measure(vm, f)
  local before = vm:counters()
  f()
  return S.delta(before, vm:counters())
end

--- Every key of `want` must have changed by exactly that much.
function M.expect_delta(d, want, what)
  local where = caller()
  local keys = {}
  for k in pairs(want) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if d[k] ~= want[k] then
      error(("%s: %s: %s changed by %s, expected %s"):format(where, what, k, tostring(d[k]), tostring(want[k])), 0)
    end
  end
end

--- A CPL-3 read of `va` must succeed and reach `gpa`; returns the value read.
function M.reads(c, va, gpa, what)
  local where = caller()
  local v, pa = c:read(va, 8, 3)
  if v == nil then error(("%s: %s: read of %s faulted: %s"):format(where, what, S.hex(va), pa.text), 0) end
  if pa ~= gpa then
    error(("%s: %s: read of %s reached %s, expected %s"):format(where, what, S.hex(va), S.hex(pa), S.hex(gpa)), 0)
  end
  return v
end

local failures = {}

--- Runs `f`; an error (a failed expectation) is recorded and reported by `finish`.
function M.section(name, f)
  local ok, err = pcall(f)
  if ok then
    print(("  ok    %s"):format(name))
  else
    print(("  FAIL  %s: %s"):format(name, tostring(err)))
    failures[#failures + 1] = name .. ": " .. tostring(err)
  end
end

--- Fails the scenario if any section failed.
function M.finish(script)
  if #failures > 0 then
    error(("%s: %d section(s) failed:\n  %s"):format(script, #failures, table.concat(failures, "\n  ")), 2)
  end
  print(script .. ": ok")
end

return M

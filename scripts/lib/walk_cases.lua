-- walk_cases.lua: what the walk-matrix scenarios share: paging modes, entry bits, how
-- a case is described, and how a result is compared with the reference walker's.
local S = shadowsim
local M = {}

M.MODES = { "legacy32", "pae", "long4", "long5" }
M.LEVELS = { legacy32 = 2, pae = 3, long4 = 4, long5 = 5 }
M.P, M.RW, M.US, M.A, M.D, M.PS, M.NX = 1, 2, 4, 0x20, 0x40, 0x80, 1 << 63
M.ACCESSES = { "read", "write", "fetch" }

function M.chance(p) return S.random() < p end

function M.describe(c)
  local parts = {}
  for _, k in ipairs({ "mode", "access", "cpl", "cr0_wp", "cr4_pse", "cr4_smep", "cr4_smap", "efer_nxe",
                       "rflags_ac", "maxphyaddr" }) do
    if c[k] ~= nil then parts[#parts + 1] = k .. "=" .. tostring(c[k]) end
  end
  parts[#parts + 1] = "va=" .. S.hex(c.va)
  local es = {}
  for i, e in ipairs(c.entries) do es[i] = S.hex(e) end
  parts[#parts + 1] = "entries={" .. table.concat(es, ",") .. "}"
  return table.concat(parts, " ")
end

-- Whether result `a` is result `b`: outcome, gpa or error code, and the entries left.
function M.same(a, b)
  if a.outcome ~= b.outcome then return false, "outcome " .. tostring(a.outcome) .. " vs " .. tostring(b.outcome) end
  if a.outcome == "ok" and a.gpa ~= b.gpa then return false, "gpa " .. S.hex(a.gpa) .. " vs " .. S.hex(b.gpa) end
  if a.outcome == "pf" and a.error_code ~= b.error_code then
    return false, "error code " .. S.hex(a.error_code) .. " vs " .. S.hex(b.error_code)
  end
  for i = 1, #b.entries do
    if a.entries[i] ~= b.entries[i] then
      return false, ("entry %d after the access: %s vs %s"):format(i, S.hex(a.entries[i]), S.hex(b.entries[i]))
    end
  end
  return true
end

-- A counter of mismatches that prints the first ten.
function M.reporter()
  local r = { failures = 0 }
  function r.report(where, case, why)
    r.failures = r.failures + 1
    if r.failures <= 10 then
      print(("MISMATCH (%s): %s\n  simulator vs reference: %s"):format(where, M.describe(case), why))
    end
  end
  return r
end

return M

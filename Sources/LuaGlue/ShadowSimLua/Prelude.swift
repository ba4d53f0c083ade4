/// Lua helpers installed with the module: constants, formatting and assertions.
/// Assertions raise at the caller's line (`error(msg, 2)`) so a failure reads
/// `script.lua:LINE: what: expected … got …`.
let preludeSource = #"""
local M = shadowsim

M.KiB, M.MiB, M.GiB, M.TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40

-- Paging-structure entry bits (SDM tables 4-4 to 4-20).
M.PTE = { P = 1 << 0, RW = 1 << 1, US = 1 << 2, PWT = 1 << 3, PCD = 1 << 4, A = 1 << 5,
          D = 1 << 6, PS = 1 << 7, PAT = 1 << 7, G = 1 << 8, NX = 1 << 63 }
-- Page-fault error-code bits (SDM 4.7).
M.PF = { P = 1 << 0, W = 1 << 1, U = 1 << 2, RSVD = 1 << 3, I = 1 << 4 }

--- "0x" and lowercase hex digits of an integer (as an unsigned 64-bit value).
function M.hex(v)
  if math.type(v) ~= "integer" then return tostring(v) end
  return string.format("0x%x", v)
end

local function show(v)
  if math.type(v) == "integer" then
    if v < 0 or v > 4095 then return string.format("%d (0x%x)", v, v) end
    return tostring(v)
  elseif type(v) == "string" then
    return string.format("%q", v)
  elseif type(v) == "table" and v.text then
    return v.text
  end
  return tostring(v)
end
M.show = show

local function fail(what, msg)
  error((what ~= nil and (tostring(what) .. ": ") or "") .. msg, 3)
end

--- Fails unless `cond` holds.
function M.expect(cond, what)
  if not cond then fail(nil, what or "expectation failed") end
  return cond
end

--- Fails unless `actual == expected`.
function M.expect_eq(actual, expected, what)
  if actual ~= expected then
    fail(what, "expected " .. show(expected) .. ", got " .. show(actual))
  end
  return actual
end

--- Fails unless `actual ~= unexpected`.
function M.expect_ne(actual, unexpected, what)
  if actual == unexpected then
    fail(what, "expected a value other than " .. show(unexpected))
  end
  return actual
end

--- Passes the results of an access through, failing if it faulted.
function M.expect_ok(first, ...)
  if first == nil then
    local fault = ...
    fail(nil, "expected success, got " .. show(fault))
  end
  return first, ...
end

--- Expects `nil, fault` with a #PF; `code` (optional) is the exact error code.
function M.expect_pf(code, first, fault)
  if first ~= nil then
    fail(nil, "expected #PF" .. (code and (" with error code " .. M.hex(code)) or "") ..
         ", got success (" .. show(first) .. ")")
  end
  if type(fault) ~= "table" or fault.kind ~= "pf" then
    fail(nil, "expected #PF, got " .. show(fault))
  end
  if code and fault.error_code ~= code then
    fail(nil, "expected #PF error code " .. M.hex(code) .. ", got " .. M.hex(fault.error_code) ..
         " (" .. fault.text .. ")")
  end
  return fault
end

--- Expects `nil, fault` with a #GP.
function M.expect_gp(first, fault)
  if first ~= nil then fail(nil, "expected #GP, got success (" .. show(first) .. ")") end
  if type(fault) ~= "table" or fault.kind ~= "gp" then fail(nil, "expected #GP, got " .. show(fault)) end
  return fault
end

--- A read of `va` must succeed and reach `gpa` (and give `value`, when given). `cpl`
--- defaults to the vCPU's. Returns the value read.
function M.expect_read(cpu, va, gpa, value, what, cpl)
  local v, pa = cpu:read(va, 8, cpl)
  if v == nil then fail(what, ("read of %s faulted: %s"):format(M.hex(va), pa.text)) end
  if pa ~= gpa then fail(what, ("read of %s reached %s, expected %s"):format(M.hex(va), M.hex(pa), M.hex(gpa))) end
  if value ~= nil and v ~= value then
    fail(what, ("read of %s gave %s, expected %s"):format(M.hex(va), M.hex(v), M.hex(value)))
  end
  return v
end

--- Expects an access's `nil, fault` to be a #PF with error code `code` (and CR2 `va`,
--- when given).
function M.expect_fault(code, va, what, first, fault)
  if first ~= nil then fail(what, ("expected #PF %s, got success (%s)"):format(M.hex(code), show(first))) end
  if type(fault) ~= "table" or fault.kind ~= "pf" or fault.error_code ~= code then
    fail(what, ("expected #PF %s, got %s"):format(M.hex(code), show(fault)))
  end
  if va ~= nil and fault.cr2 ~= va then fail(what, ("expected CR2 %s, got %s"):format(M.hex(va), M.hex(fault.cr2))) end
  return fault
end

--- Every counter named in `expected` must have changed by exactly that much.
function M.expect_delta(before, after, expected, what)
  local d = M.delta(before, after)
  local keys = {}
  for k in pairs(expected) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if d[k] ~= expected[k] then
      fail(what, ("counter %s changed by %s, expected %s"):format(k, tostring(d[k]), tostring(expected[k])))
    end
  end
  return d
end

--- Expects `f(...)` to raise an error whose message contains `pattern` (plain text).
function M.expect_error(pattern, f, ...)
  local ok, err = pcall(f, ...)
  if ok then fail(nil, "expected an error containing " .. show(pattern) .. ", got none") end
  if not string.find(tostring(err), pattern, 1, true) then
    fail(nil, "expected an error containing " .. show(pattern) .. ", got " .. show(tostring(err)))
  end
  return err
end

--- Runs `tasks` (a list of functions) as interleaved threads: each vCPU or address-space
--- operation is a step, and a generator seeded with `seed` picks which task takes the
--- next step, so a schedule is random but reproducible. Returns the number of steps.
--- An error in a task ends the run with that error.
function M.interleave(seed, tasks)
  if math.type(seed) ~= "integer" then error("bad argument #1 to 'interleave' (integer seed expected)", 2) end
  if type(tasks) ~= "table" or #tasks == 0 then error("bad argument #2 to 'interleave' (list of functions expected)", 2) end
  for i, t in ipairs(tasks) do
    if type(t) ~= "function" then error(("bad argument #2 to 'interleave' (task %d is a %s, not a function)"):format(i, type(t)), 2) end
  end
  if M._interleaving then error("interleave cannot be nested", 2) end
  -- xorshift64: the schedule depends on `seed` only.
  local x = seed ~ 0x9E3779B97F4A7C15
  if x == 0 then x = 1 end
  local function pick(n)
    x = x ~ (x << 13); x = x ~ (x >> 7); x = x ~ (x << 17)
    return (x % n) + 1
  end
  -- While the tasks run, every operation yields after it completes.
  local saved = {}
  local function wrap(methods, skip)
    for name, f in pairs(methods) do
      if not skip[name] then
        saved[#saved + 1] = { methods, name, f }
        methods[name] = function(...)
          local r = table.pack(f(...))
          if coroutine.isyieldable() then coroutine.yield() end
          return table.unpack(r, 1, r.n)
        end
      end
    end
  end
  local passive = { regs = true, counters = true, index = true, tlb_entries = true, entry = true, leaf = true }
  wrap(M._methods.vcpu, passive)
  wrap(M._methods.space, passive)
  M._interleaving = true
  local threads = {}
  for i, t in ipairs(tasks) do threads[i] = coroutine.create(t) end
  local steps, failure = 0, nil
  while #threads > 0 do
    local i = pick(#threads)
    local ok, err = coroutine.resume(threads[i])
    steps = steps + 1
    if not ok then failure = err; break end
    if coroutine.status(threads[i]) == "dead" then table.remove(threads, i) end
  end
  for k = #saved, 1, -1 do saved[k][1][saved[k][2]] = saved[k][3] end
  M._interleaving = false
  if failure ~= nil then error(failure, 0) end
  return steps
end

--- vcpu:loop(accesses): the vCPU keeps running guest code while the others work. After
--- every vCPU or address-space operation not made by it, it runs `accesses` again (each
--- { va, "read"|"write"|"fetch", value = v, size = n, cpl = c }), through its TLB and the
--- MMU like any access, so remote flushes hit a vCPU that really uses the translations.
--- A looped access that faults is counted, not raised (the others may have unmapped it).
--- Returns a handle whose stop() ends the loop and returns { runs, accesses, faults }.
local loops, loop_saved = {}, nil
local function run_loops(actor)
  for _, l in ipairs(loops) do
    if l.vcpu ~= actor and not l.busy then
      l.busy = true
      l.runs = l.runs + 1
      for _, a in ipairs(l.list) do
        local ok, fault
        if a[2] == "read" then ok, fault = l.read(l.vcpu, a[1], a.size or 8, a.cpl)
        elseif a[2] == "write" then ok, fault = l.write(l.vcpu, a[1], a.value or 0, a.size or 8, a.cpl)
        else ok, fault = l.fetch(l.vcpu, a[1], a.cpl) end
        l.accesses = l.accesses + 1
        if ok == nil and fault ~= nil then l.faults = l.faults + 1 end
      end
      l.busy = false
    end
  end
end
local function loop_wrap()
  loop_saved = {}
  local passive = { regs = true, counters = true, index = true, tlb_entries = true, entry = true, leaf = true,
                    loop = true }
  for kind, methods in pairs{ vcpu = M._methods.vcpu, space = M._methods.space } do
    for name, f in pairs(methods) do
      if not passive[name] then
        loop_saved[#loop_saved + 1] = { methods, name, f }
        methods[name] = function(self, ...)
          local r = table.pack(f(self, ...))
          local actor = kind == "vcpu" and self or nil
          if kind == "space" then
            local last = select(select("#", ...), ...)
            if type(last) == "table" then actor = rawget(last, "by") end
          end
          run_loops(actor)
          return table.unpack(r, 1, r.n)
        end
      end
    end
  end
end
local function loop_unwrap()
  for k = #loop_saved, 1, -1 do loop_saved[k][1][loop_saved[k][2]] = loop_saved[k][3] end
  loop_saved = nil
end
M._methods.vcpu.loop = function(vcpu, list)
  if type(list) ~= "table" or #list == 0 then error("bad argument #1 to 'loop' (list of accesses expected)", 2) end
  for i, a in ipairs(list) do
    if type(a) ~= "table" or math.type(a[1]) ~= "integer" or (a[2] ~= "read" and a[2] ~= "write" and a[2] ~= "fetch") then
      error(("bad argument #1 to 'loop' (access %d: { va, \"read\"|\"write\"|\"fetch\" } expected)"):format(i), 2)
    end
  end
  for _, l in ipairs(loops) do
    if l.vcpu == vcpu then error("bad argument #1 to 'loop' (this vCPU already loops; stop that loop first)", 2) end
  end
  if loop_saved == nil then loop_wrap() end
  local methods = M._methods.vcpu
  -- The unwrapped read/write/fetch, so a loop's own accesses never run the loops.
  local l = { vcpu = vcpu, list = list, runs = 0, accesses = 0, faults = 0 }
  for _, saved in ipairs(loop_saved) do
    if saved[1] == methods and (saved[2] == "read" or saved[2] == "write" or saved[2] == "fetch") then l[saved[2]] = saved[3] end
  end
  loops[#loops + 1] = l
  return { stop = function()
    for i, other in ipairs(loops) do
      if other == l then table.remove(loops, i) break end
    end
    if #loops == 0 and loop_saved ~= nil then loop_unwrap() end
    return { runs = l.runs, accesses = l.accesses, faults = l.faults }
  end }
end

--- Prints a markdown table: `rows` is a list of { label, key } for the lines, `columns`
--- a list of { title, values } where values[key] is the cell.
function M.markdown_table(corner, rows, columns)
  local header = { corner }
  for _, c in ipairs(columns) do header[#header + 1] = c.title end
  print("| " .. table.concat(header, " | ") .. " |")
  print("|" .. string.rep("---|", #header))
  for _, row in ipairs(rows) do
    local cells = { row[1] .. " (`" .. row[2] .. "`)" }
    for _, c in ipairs(columns) do cells[#cells + 1] = tostring(c.values[row[2]] or 0) end
    print("| " .. table.concat(cells, " | ") .. " |")
  end
end

--- Counter differences `after - before` for every counter in `after`.
function M.delta(before, after)
  local d = {}
  for k, v in pairs(after) do d[k] = v - (before[k] or 0) end
  return d
end

-- Whatever goes wrong inside a helper (a failed expectation, or a bad argument that
-- reached Lua or the simulator from here) is reported at the script's line that called
-- the helper, never at a line of this prelude.
for _, name in ipairs{ "expect", "expect_eq", "expect_ne", "expect_ok", "expect_pf", "expect_gp",
                       "expect_read", "expect_fault", "expect_delta", "expect_error", "delta",
                       "markdown_table" } do
  local helper = M[name]
  M[name] = function(...)
    local r = table.pack(pcall(helper, ...))
    if r[1] then return table.unpack(r, 2, r.n) end
    local e = r[2]
    if type(e) ~= "string" then error(e, 0) end
    local stripped, n = e:gsub("^shadowsim%.prelude:%d+: ", "")
    -- A message that already names a script line (an exhausted budget reports where the
    -- script was) keeps it; one from here, or with no position, gets the caller's.
    if n == 0 and e:find("^[^%s:]+:%d+: ") then error(e, 0) end
    error(stripped, 2)
  end
end
"""#

-- processes.lua -- guest processes as scenarios model them: an address space, the frame
-- (or `false`) each of a list of pages maps, and a pool of frames to remap from.
--
--   local processes = require("processes")
--   local pr = processes.spawn(vm, pages, 8, frame, function(i) return i % 4 ~= 0 and i end)
--   processes.check(cpu, pr, pages, content, "what")   -- every page reads as pr.map says
--   cur = processes.switch(cpu, v, procs, n, running, cur)   -- a scheduler's next process
--
-- `frame()` allocates a frame whose first 8 bytes are `content[frame]`.
local S = shadowsim
local M = {}

-- Runs an expectation; a failure is raised at the scenario line that called into this
-- module (two levels up), not here.
local function at_caller(f, ...)
  local ok, e = pcall(f, ...)
  if ok then return e end
  if type(e) ~= "string" then error(e, 0) end
  error((e:gsub("^[^:]*processes%.lua:%d+: ", "")), 3)
end

--- A process with a fresh space and `pool_size` frames from `frame()`. Page i of `pages`
--- maps pool entry `pick(i)` (taken modulo the pool), or is absent when `pick` is false.
function M.spawn(vm, pages, pool_size, frame, pick)
  local pr = { s = vm:space(), map = {}, pool = {} }
  for i = 1, pool_size do pr.pool[i] = frame() end
  for i, va in ipairs(pages) do
    local n = pick(i)
    if n then
      pr.map[va] = pr.pool[n % #pr.pool + 1]
      pr.s:map(va, pr.map[va])
    else
      pr.map[va] = false
    end
  end
  return pr
end

--- On vCPU `c` (running `pr`), every user page must read as `pr.map` says: its frame's
--- content, or #PF(U) when absent.
function M.check(c, pr, pages, content, what)
  for _, va in ipairs(pages) do
    local f = pr.map[va]
    if f then
      at_caller(S.expect_read, c, va, f, content[f], what .. " page " .. S.hex(va), 3)
    else
      at_caller(S.expect_fault, S.PF.U, nil, what .. " absent page " .. S.hex(va), c:read(va, 8, 3))
    end
  end
end

--- A scheduler's step on vCPU `v` (now running process `cur`, or nil): picks (seeded) one
--- of processes 1...n that no other vCPU runs, records it in `running` (process -> vCPU)
--- and loads its CR3 on `c`. Returns the process.
function M.switch(c, v, procs, n, running, cur)
  local choices = {}
  for p = 1, n do
    if running[p] == nil or running[p] == v then choices[#choices + 1] = p end
  end
  local p = choices[S.random(1, #choices)]
  if cur then running[cur] = nil end
  running[p] = v
  at_caller(S.expect_ok, c:load_cr3(procs[p].s))
  return p
end

return M

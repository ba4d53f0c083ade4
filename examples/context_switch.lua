-- context_switch.lua: two processes take turns on one vCPU while a third keeps
-- remapping its pages on another, under whatever policy the command line names.
-- Made for `shadowsim compare`: the same seed gives every policy the same guest
-- operations, so the counters differ only by how each policy keeps the shadow in sync.
-- Parameters (`--param NAME=VALUE`, or a sweep): rounds (default 40), pages per
-- process (default 64), remaps per round by the worker (default 4).
local S = shadowsim

local rounds = S.params.rounds or 40
local PAGES = S.params.pages or 64
local REMAPS = S.params.remaps or 4

local vm = S.vm{ mode = "long4", vcpus = 2, memory = "128M" }
local runner, worker_cpu = vm.vcpu[1], vm.vcpu[2]
local A, B, W = vm:space{}, vm:space{}, vm:space{}
local function va(i) return 0x400000 + i * 4096 end
for i = 0, PAGES - 1 do
  A:map(va(i), vm:alloc_frame{})
  B:map(va(i), vm:alloc_frame{})
  W:map(va(i), vm:alloc_frame{})
end
S.expect_ok(worker_cpu:load_cr3(W))

for round = 1, rounds do
  -- A and B each run for a while: reads and writes over their pages.
  for _, p in ipairs{ A, B } do
    S.expect_ok(runner:load_cr3(p))
    for _ = 1, 32 do
      local i = S.random(0, PAGES - 1)
      if S.random(1, 4) == 1 then S.expect_ok(runner:write(va(i), round)) else S.expect_ok(runner:read(va(i))) end
    end
  end
  -- The worker remaps a few of its pages (its tables are reached by no CR3 load of
  -- vCPU 1) and touches them again.
  for _ = 1, REMAPS do
    local i = S.random(0, PAGES - 1)
    W:map(va(i), vm:alloc_frame{}, { by = worker_cpu })
    worker_cpu:invlpg(va(i))
    S.expect_ok(worker_cpu:write(va(i), round))
  end
end

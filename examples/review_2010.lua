-- review_2010.lua: the experiment the April 2010 review argued about.
--
-- One host runs three VMs, each with 2 vCPUs and 6 processes. The processes fork
-- (the parent's PTEs are write-protected for copy-on-write, the child's tables filled
-- PTE by PTE), exec (the image is unmapped and a new one mapped), churn their mappings
-- (munmap/mmap with INVLPG), touch their pages, and are switched in and out of the
-- vCPUs with flushing CR3 loads. The same seeded schedule runs under every policy.
-- Prints one markdown table (summed over the three VMs) with what the reviewer asked
-- about: faults, emulated writes, unsync events, pages synced per root load, flushes,
-- estimated cycles, and work done under a host-wide lock on behalf of other VMs.
-- `-- rounds=N` scales it (default 30).
local S = shadowsim

local rounds = 30
for _, a in ipairs(S.args) do rounds = tonumber(a:match("^rounds=(%d+)$")) or rounds end
local POLICIES = { "kvm-unsync", "global-list", "vm-list", "wp-emulate", "xen-oos", "tdp" }
local VMS, VCPUS, PROCS, PAGES = 3, 2, 6, 24

local function va(i) return 0x400000 + (i - 1) * 0x5000 end       -- spread over page tables

local results = {}
for _, policy in ipairs(POLICIES) do
  math.randomseed(S.seed)                          -- the same schedule for every policy
  local vms = {}
  for v = 1, VMS do
    local vm = S.vm{ mode = "long4", vcpus = VCPUS, memory = "128M", policy = policy, name = policy .. v }
    local g = { vm = vm, procs = {}, frames = {}, running = {} }
    for i = 1, PAGES * 2 do g.frames[i] = vm:alloc_frame() end
    for p = 1, PROCS do
      local space = vm:space()
      for i = 1, PAGES do space:map(va(i), g.frames[math.random(1, #g.frames)]) end
      g.procs[p] = space
    end
    for c = 1, VCPUS do
      g.running[c] = c
      vm.vcpu[c]:load_cr3(g.procs[c])
    end
    vms[v] = g
  end

  local root_loads = 0
  for _ = 1, rounds do
    for _, g in ipairs(vms) do
      for c = 1, VCPUS do
        local cpu = g.vm.vcpu[c]
        -- now and then switch another process in (a root load); then let it run
        if g.running[c] == nil or math.random() < 0.4 then
          g.running[c] = math.random(1, PROCS)
          cpu:load_cr3(g.procs[g.running[c]])
          root_loads = root_loads + 1
        end
        local space = g.procs[g.running[c]]
        for i = 2, PAGES, 2 do cpu:read(va(i), 8, 3) end
        local r = math.random(1, 10)
        if r <= 3 then
          -- fork + exec: COW-protect some parent PTEs, fill a child, replace its image
          for i = 1, PAGES, 3 do space:map(va(i), g.frames[i], { write = false, by = cpu }); cpu:invlpg(va(i)) end
          local child = g.vm:space{ by = cpu }
          for i = 1, PAGES do child:map(va(i), g.frames[i], { write = false, by = cpu }) end
          for i = 1, PAGES do child:map(va(i), g.frames[math.random(1, #g.frames)], { by = cpu }) end
          -- the child takes a process slot; a vCPU running the old one must switch
          local slot = math.random(1, PROCS)
          g.procs[slot] = child
          for other = 1, VCPUS do if g.running[other] == slot then g.running[other] = nil end end
        elseif r <= 7 then
          -- mmap/munmap churn in the running process
          for _ = 1, 4 do
            local i = math.random(1, PAGES)
            space:map(va(i), g.frames[math.random(1, #g.frames)], { by = cpu })
            cpu:invlpg(va(i))
          end
        end
        for i = 1, PAGES, 2 do cpu:write(va(i), i, 8, 3) end
      end
    end
  end

  local sum = { root_loads = root_loads, cycles = 0 }
  for _, g in ipairs(vms) do
    for k, v in pairs(g.vm:counters()) do sum[k] = (sum[k] or 0) + v end
    sum.cycles = sum.cycles + g.vm:cycles().total
  end
  sum.cycles = math.floor(sum.cycles / 1000 + 0.5)
  sum.synced_per_load = string.format("%.2f", sum.pages_synced / root_loads)
  results[#results + 1] = { policy = policy, c = sum }
  S.record(policy, sum)
end

local ROWS = {
  { "pf_taken", "shadow/EPT page faults" }, { "exits", "VM exits" }, { "mmu_pte_write", "emulated page-table writes" },
  { "mmu_unsync_events", "unsync events" }, { "mmu_unsync", "pages unsync at the end" },
  { "pages_synced", "pages synced" }, { "synced_per_load", "pages synced per root load" },
  { "sptes_resynced", "sptes resynced" }, { "tlb_flush", "local TLB flushes" },
  { "remote_tlb_flush", "remote flushes that interrupted vCPUs" }, { "remote_flush_targets", "IPIs sent" }, { "lock_work_other_vms", "work under the lock for other VMs" },
  { "list_entries_walked", "unsync-list entries walked" }, { "cycles", "estimated kcycles" },
}
local columns = {}
for _, r in ipairs(results) do columns[#columns + 1] = { title = r.policy, values = r.c } end
local labelled = {}
for _, row in ipairs(ROWS) do labelled[#labelled + 1] = { row[2], row[1] } end
S.markdown_table("summed over 3 VMs", labelled, columns)

-- The reviewer's points, as checks on these numbers.
local by = {}
for _, r in ipairs(results) do by[r.policy] = r.c end
S.expect(by["global-list"].lock_work_other_vms > 0, "a host-wide list makes VMs walk each other's entries")
S.expect_eq(by["vm-list"].lock_work_other_vms, 0, "a per-VM list does not")
S.expect(by["vm-list"].pages_synced > by["kvm-unsync"].pages_synced, "syncing everything syncs more pages")
S.expect(by["vm-list"].mmu_unsync_events > by["kvm-unsync"].mmu_unsync_events, "syncing everything makes pages unsync again")

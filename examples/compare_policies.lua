-- compare_policies.lua: one workload under every policy, side by side.
--
-- Each policy gets its own guest (long4, 2 vCPUs). vCPU 1 runs a worker that keeps
-- remapping its own pages (mmap/munmap churn, each change followed by INVLPG). vCPU 2
-- runs a shell that forks children: the fork write-protects some of the shell's PTEs,
-- the child's tables are filled PTE by PTE, the child runs, execs (its image is
-- unmapped and a new one mapped), runs again and exits, with CR3 switches between the
-- shell and the child all along. The same seed gives the same guest operations under
-- every policy, so the counters differ only by policy. The worker's page tables are
-- what tells the policies apart: no CR3 load on vCPU 2 reaches them. The shell's
-- multi-page edits (the fork's copy, exec's unmap and map, exit's unmap) run as
-- `vm:batch`es, as Linux runs them in lazy MMU mode: one update hypercall each under
-- pv-mmu, ordinary stores under every other policy.
-- Prints a markdown table; `-- rounds=N` scales the workload (default 12).
local S = shadowsim

local rounds = 12
for _, a in ipairs(S.args) do rounds = tonumber(a:match("^rounds=(%d+)$")) or rounds end
local POLICIES = { "kvm-unsync", "wp-emulate", "global-list", "vm-list", "xen-oos", "tdp", "pv-mmu", "agile" }
local PAGES = 48                        -- pages per image: several page tables' worth

local results = {}
for _, policy in ipairs(POLICIES) do
  math.randomseed(S.seed)               -- the same operations for every policy
  local vm = S.vm{ mode = "long4", vcpus = 2, memory = "256M", policy = policy, name = policy }
  local worker_cpu, shell_cpu = vm.vcpu[1], vm.vcpu[2]
  local worker, shell = vm:space(), vm:space()
  local data = {}
  for i = 1, PAGES do data[i] = vm:alloc_frame() end
  local function va(i) return 0x400000 + (i - 1) * 0x3000 end     -- spread over page tables
  for i = 1, PAGES do worker:map(va(i), data[i]); shell:map(va(i), data[i]) end
  worker_cpu:load_cr3(worker)
  shell_cpu:load_cr3(shell)
  for i = 1, PAGES do worker_cpu:read(va(i), 8, 3); shell_cpu:read(va(i), 8, 3) end

  local function churn(n)                -- the worker remaps n of its pages
    for _ = 1, n do
      local i = math.random(1, PAGES)
      worker:map(va(i), data[math.random(1, PAGES)], { by = worker_cpu })
      worker_cpu:invlpg(va(i))
      worker_cpu:write(va(i), i, 8, 3)
    end
  end

  for round = 1, rounds do
    churn(8)
    -- fork: COW-protect some of the shell's PTEs, copy into a new child space
    local child = vm:space{ by = shell_cpu }
    for i = 1, PAGES, 4 do shell:map(va(i), data[i], { write = false, by = shell_cpu }); shell_cpu:invlpg(va(i)) end
    vm:batch(function()
      for i = 1, PAGES do child:map(va(i), data[i], { write = false, by = shell_cpu }) end
    end, { by = shell_cpu })
    churn(8)
    shell_cpu:load_cr3(child)
    for i = 1, PAGES, 2 do shell_cpu:read(va(i), 8, 3) end
    -- exec: the old image goes, a new one comes, and the child runs
    vm:batch(function()
      for i = 1, PAGES do child:unmap(va(i), { by = shell_cpu }) end
      for i = 1, PAGES do child:map(va(i), data[math.random(1, PAGES)], { by = shell_cpu }) end
    end, { by = shell_cpu })
    for _ = 1, 3 do
      shell_cpu:load_cr3(shell)
      for i = 1, PAGES, 3 do shell_cpu:read(va(i), 8, 3) end
      churn(4)
      shell_cpu:load_cr3(child)
      for i = 1, PAGES, 2 do shell_cpu:write(va(i), round, 8, 3) end
    end
    -- exit: the child's image is unmapped; back to the shell, which restores its PTEs
    vm:batch(function()
      for i = 1, PAGES do child:unmap(va(i), { by = shell_cpu }) end
    end, { by = shell_cpu })
    shell_cpu:load_cr3(shell)
    for i = 1, PAGES, 4 do shell:map(va(i), data[i], { by = shell_cpu }); shell_cpu:invlpg(va(i)) end
  end
  local c = vm:counters()
  c.cycles = math.floor(vm:cycles().total / 1000 + 0.5)
  results[#results + 1] = { policy = policy, c = c }
  S.record(policy, c)
end

local ROWS = {
  { "exits", "VM exits" }, { "exits_hypercall", "of them hypercalls" }, { "pf_taken", "shadow/EPT page faults" }, { "pf_fixed", "faults fixed" },
  { "pf_guest", "#PF injected into the guest" }, { "pf_emulate", "faults emulated" },
  { "mmu_pte_write", "emulated page-table writes" }, { "mmu_unsync", "pages unsync at the end" },
  { "mmu_cache_miss", "shadow pages created" }, { "mmu_shadow_zapped", "shadow pages zapped" },
  { "pages_synced", "page syncs" }, { "sptes_resynced", "sptes resynced" },
  { "write_protections", "sptes write-protected" }, { "remote_tlb_flush", "remote flushes that interrupted vCPUs" }, { "remote_flush_targets", "IPIs sent" },
  { "tlb_flush", "local TLB flushes" }, { "ept_violations", "EPT violations" },
  { "pv_updates", "entries sent by update hypercalls" },
  { "tables_to_nested", "tables switched to nested mode" }, { "nested_walks", "TLB misses walked nested" },
  { "cycles", "estimated kcycles" },
}
local columns = {}
for _, r in ipairs(results) do columns[#columns + 1] = { title = r.policy, values = r.c } end
local labelled = {}
for _, row in ipairs(ROWS) do labelled[#labelled + 1] = { row[2], row[1] } end
S.markdown_table("counter", labelled, columns)

-- What must hold whatever the tuning: nothing is unsync under wp-emulate, tdp or pv-mmu, tdp
-- takes no CR3 exits, and syncing everything never syncs fewer pages than syncing
-- what the root reaches.
local by = {}
for _, r in ipairs(results) do by[r.policy] = r.c end
S.expect_eq(by["wp-emulate"].mmu_unsync, 0, "wp-emulate unsync pages")
S.expect_eq(by["tdp"].exits_cr3, 0, "tdp CR3 exits")
S.expect_eq(by["pv-mmu"].mmu_unsync + by["pv-mmu"].pages_synced + by["pv-mmu"].mmu_pte_write, 0,
  "pv-mmu: nothing unsync, synced or emulated")
S.expect(by["wp-emulate"].mmu_pte_write > by["kvm-unsync"].mmu_pte_write, "wp-emulate emulates more writes than kvm-unsync")
S.expect(by["vm-list"].pages_synced > by["kvm-unsync"].pages_synced, "vm-list syncs more pages than kvm-unsync")
S.expect(by["vm-list"].exits > by["kvm-unsync"].exits, "vm-list re-protects the worker's tables: more exits")

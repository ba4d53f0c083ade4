-- tlb_invpcid.lua -- INVPCID (Intel SDM vol. 2A "INVPCID"; vol. 3A 4.10.4.1), in
-- long4 and long5 with CR4.PCIDE = 1, and in all four modes with CR4.PCIDE = 0.
--
-- What it proves:
--  * Type 0 (individual address) invalidates the non-global entry for that page
--    and that PCID only -- even when the PCID is not the current one -- and not
--    the global translation of the address.
--  * Type 1 (single context) invalidates every non-global entry of that PCID and
--    nothing of the other PCIDs, nor global entries.
--  * Type 2 (all contexts, globals included) invalidates everything.
--  * Type 3 (all contexts except globals) invalidates every PCID's non-global
--    entries and keeps the global ones.
--  * The numeric types and their names ("address", "context", "all",
--    "all_nonglobal") are the same instruction.
--  * #GP(0) when INVPCID_DESC[63:12] is not zero (PCID 4096 or more, any type),
--    for type 0 with a non-canonical address, for types 0/1 with a non-zero PCID
--    while CR4.PCIDE = 0 (types 2/3 do not look at the PCID then), and for a type
--    above 3. A #GP invalidates nothing.
-- The stale/fresh state of each entry is observed by remapping every page after
-- the entries are cached and reading each page back in its PCID (switching with
-- CR3 bit 63 set so the switch flushes nothing).
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim

local VA, VB, GVA = 0x00400000, 0x00401000, 0x00602000   -- distinct TLB sets
local NONCANON = { long4 = 0x0000800000000000, long5 = 0x0100000000000000 }

local read_is = S.expect_read

local delta_is = S.expect_delta

------------------------------------------------------------------ PCIDE = 1 (long modes)
for _, mode in ipairs{ "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode }
  local c = vm.vcpu[1]
  local s1, s2 = vm:space{}, vm:space{}
  local old, new = {}, {}
  for _, k in ipairs{ "1VA", "1VB", "2VA", "2VB", "G" } do
    old[k] = vm:alloc_frame{}; vm:write_phys(old[k], 0x1000 + #k, 8)
    new[k] = vm:alloc_frame{}; vm:write_phys(new[k], 0x2000 + #k, 8)
  end
  local s2g = vm:alloc_frame{}                 -- s2's own (non-global) GVA frame
  S.expect_ok(c:set{ pcide = true })

  -- Caches 1VA, 1VB (PCID 1), 2VA, 2VB (PCID 2) and the global G, then remaps
  -- every page so that each cached entry is stale. Leaves PCID `current` loaded.
  local function prime(current)
    s1:map(VA, old["1VA"]); s1:map(VB, old["1VB"]); s1:map(GVA, old.G, { global = true })
    s2:map(VA, old["2VA"]); s2:map(VB, old["2VB"]); s2:map(GVA, s2g)
    S.expect_ok(c:invpcid(2, 0, 0))
    S.expect_ok(c:load_cr3(s1, { pcid = 1 }))
    read_is(c, VA, old["1VA"], nil, mode .. ": prime 1VA")
    read_is(c, VB, old["1VB"], nil, mode .. ": prime 1VB")
    read_is(c, GVA, old.G, nil, mode .. ": prime G")
    S.expect_ok(c:load_cr3(s2, { pcid = 2 }))
    read_is(c, VA, old["2VA"], nil, mode .. ": prime 2VA")
    read_is(c, VB, old["2VB"], nil, mode .. ": prime 2VB")
    read_is(c, GVA, old.G, nil, mode .. ": prime G in PCID 2")
    s1:map(VA, new["1VA"]); s1:map(VB, new["1VB"]); s1:map(GVA, new.G, { global = true })
    s2:map(VA, new["2VA"]); s2:map(VB, new["2VB"])
    if current == 1 then S.expect_ok(c:load_cr3(s1, { pcid = 1, noflush = true })) end
  end

  -- `stale` lists the entries expected to have survived; the others must be gone.
  local function check(stale, what)
    local function pick(k) return stale[k] and old[k] or new[k] end
    S.expect_ok(c:load_cr3(s2, { pcid = 2, noflush = true }))
    read_is(c, VA, pick("2VA"), nil, what .. ": PCID 2, VA")
    read_is(c, VB, pick("2VB"), nil, what .. ": PCID 2, VB")
    S.expect_ok(c:load_cr3(s1, { pcid = 1, noflush = true }))
    read_is(c, VA, pick("1VA"), nil, what .. ": PCID 1, VA")
    read_is(c, VB, pick("1VB"), nil, what .. ": PCID 1, VB")
    read_is(c, GVA, pick("G"), nil, what .. ": global page")
  end

  local all = { ["1VA"] = true, ["1VB"] = true, ["2VA"] = true, ["2VB"] = true, G = true }
  local function but(...)
    local t = {}
    for k in pairs(all) do t[k] = true end
    for _, k in ipairs{ ... } do t[k] = nil end
    return t
  end

  -- Nothing is invalidated without an invalidation (the baseline of the method).
  prime(2); check(all, mode .. ": no INVPCID")

  -- Type 0: one page, one PCID, not the current one, not globals.
  prime(2)
  local before = c:counters()
  S.expect_eq(S.expect_ok(c:invpcid(0, 1, VA + 0x42)), true, mode .. ": type 0 succeeds")
  delta_is(before, c:counters(), { invpcid = 1, gp = 0 }, mode .. ": type 0 counted")
  check(but("1VA"), mode .. ": type 0 PCID 1 VA")

  prime(1)
  S.expect_ok(c:invpcid("address", 2, VB))
  S.expect_ok(c:invpcid("address", 1, GVA))     -- the global translation stays
  check(but("2VB"), mode .. ": type 0 PCID 2 VB, PCID 1 GVA")

  -- Type 1: one PCID's non-global entries.
  prime(1)
  S.expect_ok(c:invpcid(1, 2))
  check(but("2VA", "2VB"), mode .. ": type 1 PCID 2")
  prime(2)
  S.expect_ok(c:invpcid("context", 1))
  check(but("1VA", "1VB"), mode .. ": type 1 PCID 1")

  -- Type 2: everything, globals too.
  prime(2)
  before = c:counters()
  S.expect_ok(c:invpcid(2))
  delta_is(before, c:counters(), { tlb_flush_all = 1 }, mode .. ": type 2 is a full flush")
  check({}, mode .. ": type 2")
  prime(1)
  S.expect_ok(c:invpcid("all", 7))              -- the PCID field is not used
  check({}, mode .. ": type \"all\"")

  -- Type 3: every PCID's non-global entries, globals stay.
  prime(1)
  S.expect_ok(c:invpcid(3))
  check({ G = true }, mode .. ": type 3")
  prime(2)
  S.expect_ok(c:invpcid("all_nonglobal", 9))
  check({ G = true }, mode .. ": type \"all_nonglobal\"")

  -- #GP cases; none of them invalidates anything.
  prime(2)
  before = c:counters()
  for t = 0, 3 do
    S.expect_gp(c:invpcid(t, 4096, VA))                -- INVPCID_DESC[63:12] != 0
    S.expect_gp(c:invpcid(t, 0x10001, VA))
    S.expect_gp(c:invpcid(t, 1 << 40, VA))
  end
  S.expect_gp(c:invpcid(0, 1, NONCANON[mode]))          -- type 0, non-canonical
  S.expect_gp(c:invpcid(0, 2, 0x8000000000000000))
  delta_is(before, c:counters(), { gp = 14, invpcid = 14, tlb_flush_all = 0, tlb_flush_pcid = 0 }, mode .. ": #GPs counted")
  check(all, mode .. ": a #GP INVPCID invalidates nothing")
  -- A non-canonical address is only checked by type 0.
  S.expect_ok(c:invpcid(1, 1, NONCANON[mode]))
  if mode == "long5" then
    S.expect_ok(c:invpcid(0, 1, NONCANON.long4))       -- canonical with 57-bit addresses
  end

  -- Types 0/1 with a non-zero PCID while CR4.PCIDE = 0.
  S.expect_ok(c:set{ pcide = false })
  S.expect_ok(c:load_cr3(s1))
  S.expect_gp(c:invpcid(0, 1, VA))
  S.expect_gp(c:invpcid(1, 1))
  S.expect_gp(c:invpcid(1, 4095))
  S.expect_ok(c:invpcid(0, 0, VA))
  S.expect_ok(c:invpcid(1, 0))
  S.expect_ok(c:invpcid(2, 5))                           -- types 2/3 ignore the PCID
  S.expect_ok(c:invpcid(3, 5))
  S.expect_gp(c:invpcid(2, 4096))
end

------------------------------------------------------------------ PCIDE = 0 (every mode): PCID 0
for _, mode in ipairs{ "legacy32", "pae", "long4", "long5" } do
  local vm = S.vm{ policy = "bare-metal",  mode = mode }
  local c = vm.vcpu[1]
  local s = vm:space{}
  local f = {}
  for i = 1, 6 do f[i] = vm:alloc_frame{}; vm:write_phys(f[i], 0x3000 + i, 8) end
  S.expect_ok(c:load_cr3(s))
  local function prime()
    s:map(VA, f[1]); s:map(VB, f[2]); s:map(GVA, f[3], { global = true })
    S.expect_ok(c:invpcid(2))
    read_is(c, VA, f[1], 0x3001, mode .. ": prime VA")
    read_is(c, VB, f[2], 0x3002, mode .. ": prime VB")
    read_is(c, GVA, f[3], 0x3003, mode .. ": prime G")
    s:map(VA, f[4]); s:map(VB, f[5]); s:map(GVA, f[6], { global = true })
  end
  local function check(va, vb, g, what)
    read_is(c, VA, va and f[1] or f[4], nil, what .. ": VA")
    read_is(c, VB, vb and f[2] or f[5], nil, what .. ": VB")
    read_is(c, GVA, g and f[3] or f[6], nil, what .. ": global page")
  end
  prime(); check(true, true, true, mode .. ": no INVPCID")
  prime(); S.expect_ok(c:invpcid(0, 0, VA)); check(false, true, true, mode .. ": type 0 PCID 0")
  prime(); S.expect_ok(c:invpcid(0, 0, GVA)); check(true, true, true, mode .. ": type 0 keeps the global")
  prime(); S.expect_ok(c:invpcid(1, 0)); check(false, false, true, mode .. ": type 1 PCID 0")
  prime(); S.expect_ok(c:invpcid(3, 0)); check(false, false, true, mode .. ": type 3")
  prime(); S.expect_ok(c:invpcid(2, 0)); check(false, false, false, mode .. ": type 2")
  prime()
  S.expect_gp(c:invpcid(0, 1, VA))                       -- PCIDE = 0, PCID != 0
  S.expect_gp(c:invpcid(1, 3))
  S.expect_gp(c:invpcid(3, 4096))
  check(true, true, true, mode .. ": #GP INVPCIDs invalidated nothing")
end

------------------------------------------------------------------ a type above 3 is #GP
-- SDM vol. 2A INVPCID: "#GP(0) If an invalid type is specified in the register
-- operand, i.e., INVPCID_TYPE > 3." The instruction faults; it is not a usage error.
do
  local vm = S.vm{ policy = "bare-metal",  mode = "long4" }
  local c = vm.vcpu[1]
  local before = c:counters()
  S.expect_gp(c:invpcid(4, 0, 0))
  S.expect_gp(c:invpcid(0x7FFFFFFF, 0, 0))
  delta_is(before, c:counters(), { gp = 2, invpcid = 2 }, "long4: INVPCID type > 3 #GP counted")
end

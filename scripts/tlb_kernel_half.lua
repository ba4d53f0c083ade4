-- tlb_kernel_half.lua -- non-global translations of upper-half (kernel) addresses
-- are flushed like any other (Intel SDM vol. 3A 4.10.4.1), in long4 and long5.
--
-- The SDM's invalidation rules do not depend on where a linear address lies:
--  * MOV to CR3 with CR4.PCIDE = 0 "invalidates all TLB entries associated with
--    PCID 000H except those for global pages";
--  * with CR4.PCIDE = 1 and bit 63 of the source clear, it invalidates all
--    non-global entries of the new PCID;
--  * INVPCID type 1 invalidates all non-global entries of the given PCID;
--  * with CR4.PGE = 0 no translation is global, whatever the G bit says.
-- What it proves: a 4 KiB, G = 0 supervisor page at a negative (upper-half)
-- address -- vmalloc-style, 0xFFFFC9... / 0xFF91... -- is re-walked after each of
-- those operations, exactly like a lower-half page (checked first, as a control),
-- and is counted by c:tlb_entries while it is cached.
-- Runs on bare metal (policy "bare-metal"): it checks the processor's own TLB, which a
-- hypervisor may legitimately flush more often.
local S = shadowsim

local read_is = S.expect_read

local KVA = { long4 = 0xFFFFC90000003000, long5 = 0xFF91000000003000 }
local UVA = 0x00400000

for _, mode in ipairs{ "long4", "long5" } do
  for _, va in ipairs{ UVA, KVA[mode] } do
    local where = mode .. " " .. S.hex(va)
    local vm = S.vm{ policy = "bare-metal",  mode = mode }
    local c = vm.vcpu[1]
    local s = vm:space{}
    local f = {}
    for i = 1, 3 do f[i] = vm:alloc_frame{}; vm:write_phys(f[i], 0x6600 + i, 8) end
    S.expect_ok(c:load_cr3(s))

    -- (1) MOV to CR3, PCIDE = 0, same space.
    s:map(va, f[1], { user = false })
    local n0 = c:tlb_entries(0)
    read_is(c, va, f[1], 0x6601, where .. ": first read")
    S.expect_eq(c:tlb_entries(0), n0 + 1, where .. ": the cached translation is a live PCID-0 entry")
    s:map(va, f[2], { user = false })
    read_is(c, va, f[1], 0x6601, where .. ": stale before MOV CR3")
    S.expect_ok(c:load_cr3(s))
    S.expect_eq(c:tlb_entries(0), n0, where .. ": MOV CR3 left no non-global entry")
    read_is(c, va, f[2], 0x6602, where .. ": MOV CR3 (PCIDE=0) flushed the non-global translation")

    -- (2) CR4.PGE = 0: a G = 1 leaf is not global.
    S.expect_ok(c:set{ pge = false })
    s:map(va, f[3], { user = false, global = true })
    c:invlpg(va)
    read_is(c, va, f[3], 0x6603, where .. ": G=1 leaf with PGE=0")
    s:map(va, f[1], { user = false, global = true })
    S.expect_ok(c:load_cr3(s))
    read_is(c, va, f[1], 0x6601, where .. ": with PGE=0 MOV CR3 flushed the G=1 translation")
    S.expect_ok(c:set{ pge = true })

    -- (3) PCIDE = 1: a flushing MOV to CR3 of the PCID, and INVPCID type 1.
    S.expect_ok(c:set{ pcide = true })
    S.expect_ok(c:load_cr3(s, { pcid = 7 }))
    s:map(va, f[2], { user = false })
    c:invlpg(va)
    read_is(c, va, f[2], 0x6602, where .. ": PCID 7 read")
    s:map(va, f[3], { user = false })
    S.expect_ok(c:load_cr3(s, { pcid = 7, noflush = true }))
    read_is(c, va, f[2], 0x6602, where .. ": no-flush MOV CR3 keeps it (stale)")
    S.expect_ok(c:load_cr3(s, { pcid = 7 }))
    read_is(c, va, f[3], 0x6603, where .. ": flushing MOV CR3 of PCID 7 removed it")
    s:map(va, f[1], { user = false })
    S.expect_ok(c:invpcid(1, 7))
    read_is(c, va, f[1], 0x6601, where .. ": INVPCID type 1 (PCID 7) removed it")
    s:map(va, f[2], { user = false })
    S.expect_ok(c:invpcid(0, 7, va))
    read_is(c, va, f[2], 0x6602, where .. ": INVPCID type 0 removed it")
  end
end

import Testing
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Bad input, through the real command line: every case ends with one exact first line
/// on stderr (`file:line: message`, or `shadowsim: …` for the command line itself) and
/// the documented exit status: 1 for a script error, 2 for a bad command line, 3 for an
/// exhausted budget, 130 for Ctrl-C. None may trap.
@Suite struct BadInputTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        /// The body of `s.lua`, after a first line `local S = shadowsim`.
        var script: String
        /// The first line of stderr; a `*` stands for a number that varies from run to run.
        var message: String
        var arguments: [String] = ["s.lua"]
        var status: Int32 = 1
        var testDescription: String { name }

        init(_ name: String, _ script: String, _ message: String) {
            self.name = name; self.script = script; self.message = message
        }
        init(_ name: String, _ script: String = "S.expect_eq(1, 1)", arguments: [String], status: Int32, _ message: String) {
            self.init(name, script, message)
            self.arguments = arguments; self.status = status
        }
    }

    /// Misuse of the scenario API and of Lua itself: status 1 at the script's line.
    static let scriptCases: [Case] = [
        .init("vm_unknown_option", "S.vm{ bogus = 1 }",
              "s.lua:2: bad argument #1 to 'vm' (unknown option 'bogus'; expected one of: mode, vcpus, memory, maxphyaddr, wp, pse, pge, smep, smap, nxe, tlb_entries, name, policy, shadow_pages, prefetch, host_pages, vcpus_running, prev_roots, costs, check, inject_bug, boot)"),
        .init("vm_bad_mode", "S.vm{ mode = \"long3\" }",
              "s.lua:2: bad argument #1 to 'vm' (option 'mode' must be one of \"legacy32\", \"pae\", \"long4\", \"long5\", got \"long3\")"),
        .init("vm_big_legacy", "S.vm{ mode = \"legacy32\", memory = \"2G\" }",
              "s.lua:2: legacy32 guests can have at most 1 GiB of memory (all of it mapped at 0xc0000000), got 0x80000000 bytes"),
        .init("vm_mem_unaligned", "S.vm{ memory = 12345 }",
              "s.lua:2: guest memory size 0x3039 must be a non-zero multiple of 4 KiB up to 16 TiB"),
        .init("vm_mem_garbage", "S.vm{ memory = \"64X\" }",
              "s.lua:2: bad argument #1 to 'vm' (option 'memory': cannot read \"64X\" as a size (use bytes, or K, M, G, T suffixes))"),
        .init("vm_mem_negative", "S.vm{ memory = -4096 }",
              "s.lua:2: bad argument #1 to 'vm' (option 'memory' must be a positive whole number of bytes)"),
        .init("vm_vcpus_zero", "S.vm{ vcpus = 0 }",
              "s.lua:2: bad argument #1 to 'vm' (option 'vcpus' must be 1…256, got 0)"),
        .init("vm_vcpus_huge", "S.vm{ vcpus = 257 }",
              "s.lua:2: bad argument #1 to 'vm' (option 'vcpus' must be 1…256, got 257)"),
        .init("vm_maxphy_60", "S.vm{ maxphyaddr = 60 }",
              "s.lua:2: bad argument #1 to 'vm' (option 'maxphyaddr' must be 32…52, got 60)"),
        .init("vm_tlb_npot", "S.vm{ tlb_entries = 100 }",
              "s.lua:2: tlb_entries must be a power of two from 4 to 1048576, got 100"),
        .init("vm_not_table", "S.vm(42)",
              "s.lua:2: bad argument #1 to 'vm' (table expected, got number)"),
        .init("vm_unknown_policy", "S.vm{ policy = \"no-such-policy\" }",
              "s.lua:2: unknown policy 'no-such-policy' (built-in: bare-metal, kvm-unsync, wp-emulate, global-list, vm-list, xen-oos, tdp, pv-mmu, agile; or the path of a policy .so)"),
        .init("pv_update_not_pair", "local vm = S.vm{ policy = \"pv-mmu\" }; vm.vcpu[1]:pv_update({ 5 })",
              "s.lua:2: bad argument #1 to 'pv_update' (update 1 must be a pair { gpa, value }, got number)"),
        .init("pv_update_beyond_memory", "local vm = S.vm{ policy = \"pv-mmu\" }; vm.vcpu[1]:pv_update({ { 0x10000000, 1 } })",
              "s.lua:2: page-table update at guest-physical 0x10000000 is beyond guest memory (0x4000000 bytes)"),
        .init("pv_update_unaligned", "local vm = S.vm{ policy = \"pv-mmu\" }; vm.vcpu[1]:pv_update({ { 0x1004, 1 } })",
              "s.lua:2: a page-table update's address 0x1004 is not aligned to its 8-byte entry"),
        .init("shadow_walk_not_an_address", "local vm = S.vm{ policy = \"agile\" }; vm.vcpu[1]:shadow_walk(\"x\")",
              "s.lua:2: bad argument #1 to 'shadow_walk' (integer expected, got string)"),
        .init("pv_flush_bad_scope", "local vm = S.vm{ policy = \"pv-mmu\" }; vm.vcpu[1]:pv_flush(\"some\")",
              "s.lua:2: bad argument #1 to 'pv_flush' (expected a list of addresses or \"all\", got \"some\")"),
        .init("pv_flush_no_such_vcpu", "local vm = S.vm{ policy = \"pv-mmu\" }; vm.vcpu[1]:pv_flush(\"all\", { vcpus = { 3 } })",
              "s.lua:2: a flush hypercall names vcpu 3, but the VM has 1"),
        .init("pv_flush_vcpu_zero", "local vm = S.vm{ policy = \"pv-mmu\" }; vm.vcpu[1]:pv_flush(\"all\", { vcpus = { 0 } })",
              "s.lua:2: bad argument #2 to 'pv_flush' (option 'vcpus': vCPUs are numbered from 1, got 0)"),
        .init("pv_without_paravirtual_mmu", "local vm = S.vm{ policy = \"kvm-unsync\" }; vm.vcpu[1]:pv_flush(\"all\")",
              "s.lua:2: no paravirtual MMU here: the VM's policy offers no page-table hypercalls"),
        .init("batch_not_function", "local vm = S.vm{ policy = \"pv-mmu\" }; vm:batch(42)",
              "s.lua:2: bad argument #1 to 'batch' (function expected, got number)"),
        .init("batch_keeps_the_error", "local vm = S.vm{ policy = \"pv-mmu\" }\nvm:batch(function()\n  error(\"boom\")\nend)",
              "s.lua:4: boom"),
        .init("vm_bad_bug", "S.vm{ inject_bug = \"no-such-bug\" }",
              "s.lua:2: bad argument #1 to 'vm' (option 'inject_bug' must be one of \"skip-remote-flush-after-write-protect\", \"forget-mark-parents-unsync\", \"invlpg-current-root-only\", \"link-unsync-without-sync\", \"upper-level-unsync\", \"writable-spte-to-new-table\", \"drop-local-flush-after-sync\", \"sync-other-vms-pages\", \"zap-keeps-unsync\", \"dirty-clean-leaf-writable\", \"reuse-cached-root-without-sync\", \"miscount-unsync\", \"emulated-write-keeps-spte\", \"write-protect-skips-large-sptes\", \"pv-update-first-shadow-only\", \"nested-tlb-not-write-protected\", got \"no-such-bug\")"),
        .init("vm_bug_policy_cannot_have", "S.vm{ policy = \"bare-metal\", inject_bug = \"zap-keeps-unsync\" }",
              "s.lua:2: bad argument #1 to 'vm' (option 'inject_bug': bug 'zap-keeps-unsync' cannot happen under bare-metal: there is no shadow MMU)"),
        .init("vcpu_missing", "local vm = S.vm{ vcpus = 2 }\nlocal c = vm.vcpu[3]\nc:read(0)",
              "s.lua:4: attempt to index a nil value (local 'c')"),
        .init("read_string", "local vm = S.vm{}\nvm.vcpu[1]:read(\"x\")",
              "s.lua:3: bad argument #1 to 'read' (integer expected, got string)"),
        .init("read_size3", "local vm = S.vm{}\nvm.vcpu[1]:read(0, 3)",
              "s.lua:3: bad argument #2 to 'read' (size must be 1, 2, 4 or 8, got 3)"),
        .init("read_float", "local vm = S.vm{}\nvm.vcpu[1]:read(1.5)",
              "s.lua:3: bad argument #1 to 'read' (number has no integer representation)"),
        .init("write_size16", "local vm = S.vm{}\nvm.vcpu[1]:write(0, 0, 16)",
              "s.lua:3: bad argument #3 to 'write' (size must be 1, 2, 4 or 8, got 16)"),
        .init("read_cpl5", "local vm = S.vm{}\nvm.vcpu[1]:read(0, 8, 5)",
              "s.lua:3: bad argument #3 to 'read' (cpl must be 0…3, got 5)"),
        .init("write_cpl_neg", "local vm = S.vm{}\nvm.vcpu[1]:write(0, 0, 8, -1)",
              "s.lua:3: bad argument #4 to 'write' (cpl must be 0…3, got -1)"),
        .init("fetch_cpl4", "local vm = S.vm{}\nvm.vcpu[1]:fetch(0, 4)",
              "s.lua:3: bad argument #2 to 'fetch' (cpl must be 0…3, got 4)"),
        .init("translate_kind", "local vm = S.vm{}\nvm.vcpu[1]:translate(0, \"exec\")",
              "s.lua:3: bad argument #2 to 'translate' (access must be \"read\", \"write\" or \"fetch\", got \"exec\")"),
        .init("set_cpl5", "local vm = S.vm{}\nvm.vcpu[1]:set{ cpl = 5 }",
              "s.lua:3: bad argument #1 to 'set' (option 'cpl' must be 0…3, got 5)"),
        .init("set_unknown", "local vm = S.vm{}\nvm.vcpu[1]:set{ foo = true }",
              "s.lua:3: bad argument #1 to 'set' (unknown option 'foo'; expected one of: wp, pse, pge, smep, smap, pcide, nxe, ac, cpl, running)"),
        .init("fill_negative", "local vm = S.vm{}\nvm.vcpu[1]:fill(0, -1)",
              "s.lua:3: bad argument #2 to 'fill' (count must be 0…4294967296, got -1)"),
        .init("bad_self", "local vm = S.vm{}\nvm.vcpu[1].read(0)",
              "s.lua:3: calling 'read' on a bad self (shadowsim.VCPU expected, got number); use ':' to call methods"),
        .init("legacy_va_33bit", "local vm = S.vm{ mode = \"legacy32\" }\nvm.vcpu[1]:read(0x100000000)",
              "s.lua:3: linear address 0x100000000 does not fit the 32 bits of legacy32 paging"),
        .init("pae_invlpg_33bit", "local vm = S.vm{ mode = \"pae\" }\nvm.vcpu[1]:invlpg(1 << 32)",
              "s.lua:3: linear address 0x100000000 does not fit the 32 bits of pae paging"),
        .init("legacy_cr3_33bit", "local vm = S.vm{ mode = \"legacy32\" }\nvm.vcpu[1]:load_cr3(1 << 32)",
              "s.lua:3: CR3 value 0x100000000 does not fit the 32 bits of legacy32 paging"),
        .init("read_phys_beyond", "local vm = S.vm{ memory = \"16M\" }\nvm:read_phys(16 << 20)",
              "s.lua:3: physical access at guest-physical 0x1000000 is beyond guest memory (0x1000000 bytes)"),
        .init("write_phys_beyond", "local vm = S.vm{ memory = \"16M\" }\nvm:write_phys(16 << 20, 1)",
              "s.lua:3: physical access at guest-physical 0x1000000 is beyond guest memory (0x1000000 bytes)"),
        .init("read_phys_maxphy", "local vm = S.vm{}\nvm:read_phys(1 << 60)",
              "s.lua:3: physical access at guest-physical 0x1000000000000000 is beyond guest memory (0x4000000 bytes)"),
        .init("read_phys_size0", "local vm = S.vm{}\nvm:read_phys(0, 0)",
              "s.lua:3: bad argument #2 to 'read_phys' (size must be 1, 2, 4 or 8, got 0)"),
        .init("physmap_beyond", "local vm = S.vm{ memory = \"16M\" }\nvm:physmap(16 << 20)",
              "s.lua:3: bad argument #1 to 'physmap' (gpa 0x1000000 is beyond guest memory (0x1000000 bytes))"),
        .init("map_va_unaligned", "local vm = S.vm{}\nlocal s = vm:space{}\ns:map(0x401001, 0x5000)",
              "s.lua:4: va 0x401001 is not aligned to a 4k page"),
        .init("map_gpa_unaligned", "local vm = S.vm{}\nlocal s = vm:space{}\ns:map(0x401000, 0x5008)",
              "s.lua:4: gpa 0x5008 is not aligned to a 4k page"),
        .init("map_2m_unaligned", "local vm = S.vm{}\nlocal s = vm:space{}\ns:map(0x201000, 0x200000, { size = \"2m\" })",
              "s.lua:4: va 0x201000 is not aligned to a 2m page"),
        .init("map_gpa_beyond", "local vm = S.vm{ memory = \"16M\" }\nlocal s = vm:space{}\ns:map(0x401000, 16 << 20)",
              "s.lua:4: a 4k mapping at guest-physical 0x1000000 is beyond guest memory (0x1000000 bytes)"),
        .init("map_4m_long", "local vm = S.vm{}\nlocal s = vm:space{}\ns:map(0x800000, 0x800000, { size = \"4m\" })",
              "s.lua:4: long4 paging has no 4m pages"),
        .init("map_1g_pae", "local vm = S.vm{ mode = \"pae\" }\nlocal s = vm:space{}\ns:map(0x40000000, 0, { size = \"1g\" })",
              "s.lua:4: pae paging has no 1g pages"),
        .init("map_2m_legacy", "local vm = S.vm{ mode = \"legacy32\" }\nlocal s = vm:space{}\ns:map(0x400000, 0x400000, { size = \"2m\" })",
              "s.lua:4: legacy32 paging has no 2m pages"),
        .init("map_4m_nopse", "local vm = S.vm{ mode = \"legacy32\", pse = false }\nlocal s = vm:space{}\ns:map(0x400000, 0x400000, { size = \"4m\" })",
              "s.lua:4: 4m pages need CR4.PSE, which is clear on this vCPU"),
        .init("map_nx_nonxe", "local vm = S.vm{ nxe = false }\nlocal s = vm:space{}\ns:map(0x400000, 0x5000, { nx = true })",
              "s.lua:4: nx needs EFER.NXE and PAE-style paging (the bit would be reserved)"),
        .init("map_size_bad", "local vm = S.vm{}\nlocal s = vm:space{}\ns:map(0x401000, 0x5000, { size = \"3k\" })",
              "s.lua:4: bad argument #3 to 'map' (option 'size' must be one of \"4k\", \"2m\", \"4m\", \"1g\", got \"3k\")"),
        .init("map_noncanonical", "local vm = S.vm{}\nlocal s = vm:space{}\ns:map(0x0000800000000000, 0x5000)",
              "s.lua:4: va 0x800000000000 is not canonical for long4 paging"),
        .init("entry_level5", "local vm = S.vm{}\nlocal s = vm:space{}\ns:entry(0x400000, 5)",
              "s.lua:4: bad argument #2 to 'entry' (level must be 1…4, got 5)"),
        .init("set_entry_missing", "local vm = S.vm{}\nlocal s = vm:space{}\ns:set_entry(0x7F0000000000, 1, 0)",
              "s.lua:4: no PTE for 0x7f0000000000: a table above it is not present or maps a large page"),
        .init("set_entry_32bit", "local vm = S.vm{ mode = \"legacy32\" }\nlocal s = vm:space{}\ns:map(0x400000, 0x5000)\ns:set_entry(0x400000, 1, 1 << 32)",
              "s.lua:5: 0x100000000 does not fit a 32-bit entry"),
        .init("free_unaligned", "local vm = S.vm{}\nvm:free_frame(0x5001)",
              "s.lua:3: frame address 0x5001 is not 4 KiB aligned"),
        .init("free_unallocated", "local vm = S.vm{}\nvm:free_frame(0x5000)",
              "s.lua:3: frame 0x5000 is not allocated (double free, or never allocated)"),
        .init("load_cr3_string", "local vm = S.vm{}\nvm.vcpu[1]:load_cr3(\"cr3\")",
              "s.lua:3: bad argument #1 to 'load_cr3' (address space or integer expected, got string)"),
        .init("load_cr3_pcid", "local vm = S.vm{}\nlocal s = vm:space{}\nvm.vcpu[1]:load_cr3(s, { pcid = 4096 })",
              "s.lua:4: bad argument #2 to 'load_cr3' (option 'pcid' must be 0…4095, got 4096)"),
        .init("load_cr3_other_vm", "local vm = S.vm{}\nlocal other = S.vm{}\nvm.vcpu[1]:load_cr3(other:space{})",
              "s.lua:4: bad argument #1 to 'load_cr3' (the address space belongs to another VM)"),
        .init("invpcid_type", "local vm = S.vm{}\nvm.vcpu[1]:invpcid(\"everything\")",
              "s.lua:3: bad argument #1 to 'invpcid' (type must be 0…3 or one of \"address\", \"context\", \"all\", \"all_nonglobal\", got \"everything\")"),
        .init("walk_no_mode", "S.x86.walk{ va = 0, access = \"read\", entries = { 1 } }",
              "s.lua:2: bad argument #1 to 'walk' (option 'mode' is required)"),
        .init("walk_cpl1", "S.x86.walk{ mode = \"long4\", va = 0, access = \"read\", cpl = 1, entries = { 1 } }",
              "s.lua:2: bad argument #1 to 'walk' (option 'cpl' must be 0 or 3, got 1)"),
        .init("expect_eq_fails", "S.expect_eq(1 + 1, 3, \"sum\")",
              "s.lua:2: sum: expected 3, got 2"),
        .init("expect_ok_fault", "local vm = S.vm{}\nlocal s = vm:space{}\nS.expect_ok(vm.vcpu[1]:load_cr3(s))\nS.expect_ok(vm.vcpu[1]:read(0x1000))",
              "s.lua:5: expected success, got #PF(NP) at 0x1000, error code 0x0"),
        .init("expect_error_bad_pattern", "S.expect_error(42, error, \"x\")",
              "s.lua:2: expected an error containing 42, got \"x\""),
        .init("expect_read_bad_va", "local vm = S.vm{}\nS.expect_read(vm.vcpu[1], \"x\", 0)",
              "s.lua:3: bad argument #1 to 'read' (integer expected, got string)"),
        .init("expect_delta_not_tables", "S.expect_delta(1, 2, 3)",
              "s.lua:2: bad argument #1 to 'for iterator' (table expected, got number)"),
        .init("nil_index", "local x = nil\nx.y = 1",
              "s.lua:3: attempt to index a nil value (local 'x')"),
        .init("error_call", "error(\"boom\")",
              "s.lua:2: boom"),
        .init("error_table", "error({ code = 7 })",
              "s.lua:2: error object is a table value"),
        .init("syntax", "local x = = 1",
              "s.lua:2: unexpected symbol near '='"),
        .init("sandbox_execute", "os.execute(\"true\")",
              "s.lua:2: os.execute is not allowed in a scenario (run with --allow-io)"),
        .init("sandbox_popen", "io.popen(\"ls\")",
              "s.lua:2: io.popen is not allowed in a scenario (run with --allow-io)"),
        .init("sandbox_write", "io.open(\"/tmp/shadowsim-bi-out\", \"w\")",
              "s.lua:2: io.open: writing files is not allowed in a scenario (run with --allow-io)"),
        .init("sandbox_dofile", "dofile(\"../etc/passwd\")",
              "s.lua:2: dofile: ../etc/passwd is outside the script's directory (run with --allow-io)"),
        .init("sandbox_sethook", "debug.sethook(print, \"l\")",
              "s.lua:2: debug.sethook is not allowed in a scenario (run with --allow-io)"),
        .init("sandbox_require_c", "require(\"socket.core\")",
              "s.lua:2: module 'socket.core' not found:"),
        .init("random_bad", "S.random(10, 1)",
              "s.lua:2: bad argument #2 to 'random' (interval is empty (10 > 1))"),
        .init("write_value_wide", "local vm = S.vm{}\nvm:write_phys(0x5000, 0x1FF, 1)",
              "s.lua:3: bad argument #2 to 'write_phys' (value 0x1ff does not fit 1 byte)"),
        .init("write_value_negative", "local vm = S.vm{}\nvm:write_phys(0x5000, -129, 1)",
              "s.lua:3: bad argument #2 to 'write_phys' (value -0x81 does not fit 1 byte)"),
        .init("set_cpl_string", "local vm = S.vm{}\nvm.vcpu[1]:set{ cpl = \"x\" }",
              "s.lua:3: bad argument #1 to 'set' (option 'cpl': integer expected, got string)"),
        .init("alloc_frame_number", "local vm = S.vm{}\nvm:alloc_frame(5)",
              "s.lua:3: bad argument #1 to 'alloc_frame' (table expected, got number)"),
        .init("read_phys_negative", "local vm = S.vm{}\nvm:read_phys(-8)",
              "s.lua:3: physical access at guest-physical 0xfffffffffffffff8 is beyond guest memory (0x4000000 bytes)"),
        .init("record_nil_name", "S.record(nil, 1)",
              "s.lua:2: bad argument #1 to 'record' (string expected, got nil)"),
        .init("vm_name_number", "S.vm{ name = 5 }",
              "s.lua:2: bad argument #1 to 'vm' (option 'name': string expected, got number)"),
        .init("vm_policy_missing_so", "S.vm{ policy = \"/nonexistent/libX.so\" }",
              "s.lua:2: cannot load policy plugin /nonexistent/libX.so: /nonexistent/libX.so: cannot open shared object file: No such file or directory"),
        .init("vm_shadow_pages_zero", "S.vm{ shadow_pages = 0 }",
              "s.lua:2: bad argument #1 to 'vm' (option 'shadow_pages' must be 8…1073741824, got 0)"),
        .init("vm_vcpus_running_number", "S.vm{ vcpus_running = 9 }",
              "s.lua:2: bad argument #1 to 'vm' (option 'vcpus_running': boolean expected, got number)"),
        .init("space_unknown_option", "local vm = S.vm{}\nvm:space{ pcid = -1 }",
              "s.lua:3: bad argument #1 to 'space' (unknown option 'pcid'; expected one of: by, kernel_half)"),
        .init("vm_too_small", "S.vm{ memory = \"64K\" }",
              "s.lua:2: the guest is too small for its boot page tables"),
    ]

    static let loop = "local vm = S.vm{}\nwhile true do end"
    static let grow = "local vm = S.vm{ memory = \"8M\" }\nlocal t = {}\nfor i = 1, 1e9 do t[i] = i end"
    /// Budgets that run out inside a helper of the module: still the script's line.
    static let helperLoop = "local vm = S.vm{}\nlocal c = vm:counters()\nwhile true do S.delta(c, c) end"
    static let helperGrow = "local vm = S.vm{ memory = \"8M\" }\nlocal t = {}\nwhile true do t[#t + 1] = S.delta(vm:counters(), vm:counters()) end"

    /// The command line, and budgets.
    static let commandLineCases: [Case] = [
        .init("unknown_policy", arguments: ["s.lua", "--policy", "nope"], status: 2,
              "shadowsim: unknown policy 'nope' (built-in: bare-metal, kvm-unsync, wp-emulate, global-list, vm-list, xen-oos, tdp, pv-mmu, agile; or the path of a policy .so)"),
        .init("policy_so_missing", arguments: ["s.lua", "--policy", "/nonexistent/libX.so"], status: 2,
              "shadowsim: cannot load policy plugin /nonexistent/libX.so: /nonexistent/libX.so: cannot open shared object file: No such file or directory"),
        .init("log_level_unknown", arguments: ["s.lua", "--log-level", "loud"], status: 2,
              "shadowsim: --log-level must be one of trace, debug, info, notice, warning, error, critical, got \"loud\""),
        .init("max_steps_zero", arguments: ["s.lua", "--max-steps", "0"], status: 2,
              "shadowsim: --max-steps must be positive"),
        .init("max_steps_not_number", arguments: ["s.lua", "--max-steps", "x"], status: 2,
              "Error: The value 'x' is invalid for '--max-steps <max-steps>'"),
        .init("max_memory_garbage", arguments: ["s.lua", "--max-memory", "12Q"], status: 2,
              "shadowsim: --max-memory: cannot read \"12Q\" as a size (bytes, or K, M, G, T suffixes)"),
        .init("timeout_negative", arguments: ["s.lua", "--timeout=-1"], status: 2,
              "shadowsim: --timeout must be a positive number of seconds"),
        .init("timeout_missing_value", arguments: ["s.lua", "--timeout", "-1"], status: 2,
              "Error: Missing value for '--timeout <timeout>'"),
        .init("inject_unknown_bug", arguments: ["s.lua", "--inject-bug", "nope"], status: 2,
              "shadowsim: unknown bug 'nope' (see `shadowsim bugs`)"),
        .init("json_unwritable", arguments: ["s.lua", "--json", "/nonexistent/dir/x.json"], status: 2,
              "shadowsim: --json /nonexistent/dir/x.json: cannot write: No such file or directory"),
        .init("script_missing", arguments: ["missing.lua"], status: 2,
              "shadowsim: missing.lua: cannot open script: No such file or directory"),
        .init("inject_bug_policy_cannot_have", arguments: ["s.lua", "--inject-bug", "sync-other-vms-pages"], status: 2,
              "shadowsim: bug 'sync-other-vms-pages' cannot happen under kvm-unsync: it lives in code only global-list runs"),
        .init("inject_bug_under_tdp", arguments: ["s.lua", "--policy", "tdp", "--inject-bug", "zap-keeps-unsync"], status: 2,
              "shadowsim: bug 'zap-keeps-unsync' cannot happen under tdp: it lives in code only kvm-unsync, global-list, vm-list, xen-oos, agile run"),
        .init("step_budget", loop, arguments: ["s.lua", "--max-steps", "100000"], status: 3,
              "s.lua:3: the step budget is exhausted: more than 100000 Lua instructions (--max-steps)"),
        .init("time_budget", loop, arguments: ["s.lua", "--timeout", "0.3"], status: 3,
              "s.lua:3: the time budget is exhausted: the run took more than 0.3 seconds (--timeout)"),
        .init("memory_budget", grow, arguments: ["s.lua", "--max-memory", "16M"], status: 3,
              "s.lua:4: the memory budget is exhausted: * bytes of Lua and guest memory in use, the limit is 16777216 (--max-memory)"),
        .init("step_budget_in_helper", helperLoop, arguments: ["s.lua", "--max-steps", "100000"], status: 3,
              "s.lua:4: the step budget is exhausted: more than 100000 Lua instructions (--max-steps)"),
        .init("memory_budget_in_helper", helperGrow, arguments: ["s.lua", "--max-memory", "16M"], status: 3,
              "s.lua:4: the memory budget is exhausted: * bytes of Lua and guest memory in use, the limit is 16777216 (--max-memory)"),
    ]

    @Test func thereAreAtLeastSixtyCases() {
        #expect(Self.scriptCases.count + Self.commandLineCases.count >= 60)
        #expect(Set((Self.scriptCases + Self.commandLineCases).map(\.name)).count
                == Self.scriptCases.count + Self.commandLineCases.count, "case names are unique")
    }

    @Test(arguments: scriptCases + commandLineCases)
    func badInputGetsItsMessageAndStatus(_ c: Case) throws {
        let run = try Self.shadowsim(script: "local S = shadowsim\n" + c.script + "\n", ["run"] + c.arguments)
        let first = run.stderr.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        #expect(Self.matches(first, c.message), "stderr: \(run.stderr)")
        #expect(run.status == c.status, "stderr: \(run.stderr)")
        if c.status == 3 {
            // The counters gathered so far follow the message.
            #expect(run.stderr.contains("\"status\":\"budget exhausted"), "stderr: \(run.stderr)")
        }
    }

    @Test func ctrlCWritesTheResultsAndExits130() throws {
        let json = NSTemporaryDirectory() + "shadowsim-interrupt-\(getpid()).json"
        defer { unlink(json) }
        // A signal that lands before the handler is installed (a slow start on a busy
        // machine) kills the process outright: wait longer and try again.
        var run = (status: Int32(0), stderr: "")
        for delay in [0.5, 2, 8] {
            run = try Self.shadowsim(script: "local S = shadowsim\n" + Self.loop + "\n", ["run", "s.lua", "--json", json],
                                     interruptAfter: delay)
            if run.status == 130 { break }
        }
        #expect(run.status == 130)
        #expect(run.stderr == "s.lua:3: interrupted (Ctrl-C)\n")
        let report = try String(contentsOfFile: json, encoding: .utf8)
        #expect(report.contains("\"status\": \"interrupted\""))
        #expect(report.contains("\"name\": \"vm0\""))
    }

    /// `expected` with `*` standing for one run of digits.
    static func matches(_ line: String, _ expected: String) -> Bool {
        let parts = expected.split(separator: "*", omittingEmptySubsequences: false)
        guard parts.count > 1 else { return line == expected }
        var rest = Substring(line)
        for (i, part) in parts.enumerated() {
            guard rest.hasPrefix(part) else { return false }
            rest = rest.dropFirst(part.count)
            if i < parts.count - 1 {
                let digits = rest.prefix(while: \.isNumber)
                guard !digits.isEmpty else { return false }
                rest = rest.dropFirst(digits.count)
            }
        }
        return rest.isEmpty
    }

    /// The `shadowsim` executable built next to this test bundle.
    static let executable: String = {
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let sibling = here.appendingPathComponent("shadowsim").path
        return FileManager.default.isExecutableFile(atPath: sibling)
            ? sibling : ScenarioSuiteTests.repositoryRoot + "/.build/debug/shadowsim"
    }()

    /// Runs `shadowsim arguments` in a fresh directory holding `script` as `s.lua`.
    static func shadowsim(script: String, _ arguments: [String], interruptAfter: Double? = nil)
        throws -> (status: Int32, stderr: String) {
        let dir = NSTemporaryDirectory() + "shadowsim-bad-input-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try script.write(toFile: dir + "/s.lua", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // A run that hangs fails its test instead of the whole suite.
        let pid = p.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + 60) { if p.isRunning { kill(pid, SIGKILL) } }
        if let interruptAfter {
            usleep(UInt32(interruptAfter * 1_000_000))
            p.interrupt()
        }
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

import Testing
import X86

/// Hand-computed walks for each mode; the exhaustive comparison with an independent
/// reference runs as a Lua scenario (scripts/x86_walk_matrix.lua).
@Suite struct PageWalkerTests {
    let P = PTE.present, RW = PTE.writable, US = PTE.user, A = PTE.accessed, D = PTE.dirty, PS = PTE.pageSize

    func walk(_ mode: PagingMode, _ va: UInt64, _ entries: [UInt64],
              configure: (inout PagingControls) -> Void = { _ in }) throws -> PathWalk.Result {
        try walk(mode, va, .read, entries, configure: configure)
    }

    func walk(_ mode: PagingMode, _ va: UInt64, _ kind: AccessKind, cpl: Int = 0,
              _ entries: [UInt64], configure: (inout PagingControls) -> Void = { _ in }) throws -> PathWalk.Result {
        var controls = PagingControls(mode: mode)
        configure(&controls)
        return try PathWalk.walk(va, kind: kind, cpl: cpl, rflagsAC: false, controls: controls, entries: entries)
    }

    @Test func long4FourKilobytePage() throws {
        let r = try walk(.long4, 0x7FFF_1234_5678, .write, cpl: 3,
                         [0x1000 | P | RW | US, 0x2000 | P | RW | US, 0x3000 | P | RW | US, 0xABC_D000 | P | RW | US])
        guard case .translated(let t) = r.outcome else { Issue.record("expected a translation, got \(r.outcome)"); return }
        #expect(t.physicalAddress == 0xABC_D678)
        #expect(t.pageSize == .size4K)
        #expect(r.entries.prefix(3).allSatisfy { $0 & A != 0 && $0 & D == 0 }, "A on upper levels, never D")
        #expect(r.entries[3] & (A | D) == A | D, "A and D on the leaf of a write")
    }

    @Test func readSetsAccessedButNotDirty() throws {
        let r = try walk(.pae, 0x1234, [0x1000 | P, 0x2000 | P | RW, 0x5000 | P | RW])
        #expect(r.entries[0] == 0x1000 | P, "the PAE PDPTE has no A bit")
        #expect(r.entries[1] == 0x2000 | P | RW | A)
        #expect(r.entries[2] == 0x5000 | P | RW | A)
    }

    @Test func largePagesPerMode() throws {
        // 2 MiB in PAE: bits 20:0 of the va are the offset.
        var r = try walk(.pae, 0x4030_1234, [0x1000 | P, 0x0060_0000 | P | PS, 0xDEAD])
        #expect(r.outcome == .translated(Translation(physicalAddress: 0x0070_1234, pageBase: 0x0060_0000, pageSize: .size2M,
                                                     rights: PageRights(rawValue: 0), isGlobal: false, isDirty: false,
                                                     leafLevel: 2, leafEntryAddress: r.leafAddress)))
        #expect(r.entries[2] == 0xDEAD, "entries after the leaf are ignored and unchanged")
        // 1 GiB in 4-level paging.
        r = try walk(.long4, 0x4_7654_3210, [0x1000 | P | RW, 0x4000_0000 | P | PS, 0, 0])
        #expect(r.physicalAddress == 0x7654_3210)
        // 4 MiB in 32-bit paging with PSE, and PSE-36 bits 20:13 → physical 39:32.
        r = try walk(.legacy32, 0x0080_1234, [0x0040_0000 | (0x3 << 13) | P | PS, 0]) { $0.cr4PSE = true }
        #expect(r.physicalAddress == 0x3_0040_1234)
        // Without CR4.PSE the same PDE points to a page table.
        r = try walk(.legacy32, 0x0080_1234, [0x0040_0000 | P | PS, 0x9000 | P])
        #expect(r.physicalAddress == 0x9234)
    }

    @Test func reservedBitsPerLevel() throws {
        let rsvd = UInt32(PageFaultCode.present | PageFaultCode.reservedBit)
        // PS in a PML4E is reserved.
        #expect(try walk(.long4, 0, [0x1000 | P | PS, 0, 0, 0]).errorCode == rsvd)
        // Bit 51 with MAXPHYADDR 46 is reserved at any level.
        #expect(try walk(.long4, 0, [0x1000 | P, (1 << 51) | P, 0, 0]).errorCode == rsvd)
        // Bits 62:52 are ignored in 4-level paging, reserved in PAE.
        #expect(try walk(.long4, 0, [P, P, P, (1 << 55) | P]).errorCode == nil)
        #expect(try walk(.pae, 0, [P, P, (1 << 55) | P]).errorCode == rsvd)
        // Bit 63 is reserved without NXE, execute-disable with it.
        #expect(try walk(.long4, 0, [P | PTE.executeDisable, P, P, P]).errorCode == rsvd)
        #expect(try walk(.long4, 0, [P | PTE.executeDisable, P, P, P]) { $0.eferNXE = true }.errorCode == nil)
        // A 2 MiB PDE has bits 20:13 reserved; a 1 GiB PDPTE bits 29:13.
        #expect(try walk(.long4, 0, [P, P, (1 << 13) | P | PS, 0]).errorCode == rsvd)
        #expect(try walk(.long4, 0, [P, (1 << 21) | P | PS, 0, 0]).errorCode == rsvd)
        // 4 MiB PDE: bit 21 always reserved; with M = 36 bits 20:17 too.
        #expect(try walk(.legacy32, 0, [(1 << 21) | P | PS, 0]) { $0.cr4PSE = true }.errorCode == rsvd)
        #expect(try walk(.legacy32, 0, [(1 << 17) | P | PS, 0]) { $0.cr4PSE = true; $0.maxPhysAddr = 36 }.errorCode == rsvd)
        #expect(try walk(.legacy32, 0, [(1 << 16) | P | PS, 0]) { $0.cr4PSE = true; $0.maxPhysAddr = 36 }.errorCode == nil)
        // A not-present entry's reserved bits do not matter.
        #expect(try walk(.long4, 0, [PS, 0, 0, 0]).errorCode == 0)
    }

    @Test func faultsLeaveTheFaultingLevelAndBelowUntouched() throws {
        // Not present at the PDE: PML4E and PDPTE get A; PDE and PTE do not.
        let r = try walk(.long4, 0, .write, [0x1000 | P | RW, 0x2000 | P | RW, 0x3000, 0x4000 | P | RW])
        #expect(r.errorCode == UInt32(PageFaultCode.write))
        #expect(r.entries == [0x1000 | P | RW | A, 0x2000 | P | RW | A, 0x3000, 0x4000 | P | RW])
        // Protection fault: every level above the leaf gets A, the leaf nothing.
        let p = try walk(.long4, 0, .write, cpl: 3, [P | RW | US, P | RW | US, P | RW | US, P | US])
        #expect(p.errorCode == UInt32(PageFaultCode.present | PageFaultCode.write | PageFaultCode.user))
        #expect(p.entries == [P | RW | US | A, P | RW | US | A, P | RW | US | A, P | US])
    }

    @Test func pdpteWithReservedBitsIsGeneralProtection() throws {
        #expect(try walk(.pae, 0, [P | RW, P, P]).outcome == .generalProtection, "R/W is reserved in a PAE PDPTE")
        #expect(try walk(.pae, 0, [RW, P, P]).errorCode == 0, "not present: #PF, not #GP")
    }

    @Test func nonCanonicalAddressesAreGeneralProtection() throws {
        #expect(try walk(.long4, 0x0000_8000_0000_0000, [P, P, P, P]).outcome == .generalProtection)
        #expect(try walk(.long4, 0xFFFF_8000_0000_0000, [P, P, P, P]).outcome != .generalProtection)
        #expect(try walk(.long5, 0x0000_8000_0000_0000, [P, P, P, P, P]).outcome != .generalProtection)
        #expect(try walk(.long5, 0x0100_0000_0000_0000, [P, P, P, P, P]).outcome == .generalProtection)
    }

    @Test func instructionFetchBitFollowsSMEPAndNXE() throws {
        let fetch = UInt32(PageFaultCode.instructionFetch)
        // Not-present fetch: I/D only with SMEP, or NXE in a PAE-style mode.
        #expect(try walk(.legacy32, 0, .fetch, [0, 0]) { $0.eferNXE = true }.errorCode == 0)
        #expect(try walk(.legacy32, 0, .fetch, [0, 0]) { $0.cr4SMEP = true }.errorCode == fetch)
        #expect(try walk(.pae, 0, .fetch, [0, 0, 0]) { $0.eferNXE = true }.errorCode == fetch)
        #expect(try walk(.long4, 0, .fetch, [0, 0, 0, 0]).errorCode == 0)
    }

    @Test func supervisorRules() throws {
        let user = P | RW | US
        let readOnlyUser = P | US
        // WP=0: supervisor writes ignore R/W.
        #expect(try walk(.long4, 0, .write, [user, user, user, readOnlyUser]).errorCode == nil)
        #expect(try walk(.long4, 0, .write, [user, user, user, readOnlyUser]) { $0.cr0WP = true }.errorCode == 0x3)
        // SMAP blocks supervisor data accesses to user pages unless AC.
        #expect(try walk(.long4, 0, .read, [user, user, user, user]) { $0.cr4SMAP = true }.errorCode == 0x1)
        var c = PagingControls(mode: .long4)
        c.cr4SMAP = true
        let withAC = try PathWalk.walk(0, kind: .read, cpl: 0, rflagsAC: true, controls: c, entries: [user, user, user, user])
        #expect(withAC.errorCode == nil)
        // SMEP blocks supervisor fetches from user pages.
        #expect(try walk(.long4, 0, .fetch, [user, user, user, user]) { $0.cr4SMEP = true }.errorCode == 0x11)
        // A user page needs U/S at every level: a supervisor PDE makes it a supervisor address.
        #expect(try walk(.long4, 0, .read, cpl: 3, [user, user, P | RW, user]).errorCode == 0x5)
    }

    @Test func badInputsAreErrors() {
        #expect(throws: MachineError.self) { try walk(.long4, 0, [P, P]) }   // walk needs more entries
        #expect(throws: MachineError.self) { try walk(.pae, 0, [P, P, P, P]) }  // more than the levels
        #expect(throws: MachineError.self) { try walk(.legacy32, 0x1_0000_0000, [P, P]) }
        #expect(throws: MachineError.self) { try walk(.legacy32, 0, [0x1_0000_0001, P]) }
        #expect(throws: MachineError.self) { try walk(.long4, 0, [P, P, P, P]) { $0.maxPhysAddr = 53 } }
    }
}

extension PathWalk.Result {
    var errorCode: UInt32? {
        if case .pageFault(let code, _) = outcome { return code }
        return nil
    }
    var physicalAddress: UInt64? {
        if case .translated(let t) = outcome { return t.physicalAddress }
        return nil
    }
    var leafAddress: UInt64 {
        if case .translated(let t) = outcome { return t.leafEntryAddress }
        return 0
    }
}

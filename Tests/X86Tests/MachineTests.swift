import Testing
import X86
import GuestKernel

@Suite struct GuestMemoryTests {
    @Test func sparseFramesCostOnlyWhatIsTouched() throws {
        let memory = try GuestMemory(capacity: 64 << 30)
        for page in 0..<UInt64(256) { memory.store(page << 12, page, size: 8) }
        #expect(memory.residentFrames == 256)
        // 1 MiB of frames, plus one directory page, one chunk page and the root array.
        #expect(memory.residentBytes < (1 << 20) + 3 * 4096)
        #expect(memory.load(0x5_0000_0000, size: 8) == 0, "untouched memory reads as zero")
        #expect(memory.residentFrames == 256, "reads allocate nothing")
    }

    @Test func littleEndianAccessesAndPageCrossing() throws {
        let memory = try GuestMemory(capacity: 1 << 20)
        memory.store(0xFFC, 0x1122_3344_5566_7788, size: 8)
        #expect(memory.load(0xFFC, size: 4) == 0x5566_7788)
        #expect(memory.load(0x1000, size: 4) == 0x1122_3344)
        #expect(memory.load(0xFFC, size: 8) == 0x1122_3344_5566_7788)
        #expect(memory.load(0xFFD, size: 1) == 0x77)
    }

    @Test func capacityIsValidated() {
        #expect(throws: MachineError.self) { try GuestMemory(capacity: 0) }
        #expect(throws: MachineError.self) { try GuestMemory(capacity: 4097) }
        #expect(throws: MachineError.self) { try GuestMemory(capacity: 1 << 45) }
    }
}

@Suite struct VCPUTests {
    /// A booted guest with one process space mapping `va` to a fresh frame.
    func guest(_ mode: PagingMode, vcpus: Int = 1, configure: (inout MachineConfiguration) -> Void = { _ in })
        throws -> (Machine, GuestKernel, AddressSpace) {
        var config = MachineConfiguration(mode: mode)
        config.vcpuCount = vcpus
        config.memoryBytes = 32 << 20
        configure(&config)
        let machine = try Machine(config)
        let kernel = try GuestKernel(machine: machine)
        let space = try kernel.newAddressSpace(by: machine.vcpus[0])
        return (machine, kernel, space)
    }

    @Test(arguments: PagingMode.allCases)
    func staleUntilInvalidated(mode: PagingMode) throws {
        let (machine, kernel, space) = try guest(mode)
        let cpu = machine.vcpus[0]
        let (a, b) = (try kernel.allocateFrame(zeroedBy: cpu), try kernel.allocateFrame(zeroedBy: cpu))
        let va: UInt64 = 0x40_0000
        try space.map(va, to: a, attributes: MappingAttributes(), by: cpu)
        #expect(try cpu.loadCR3(space.root).isOK)
        #expect(try cpu.read(va).physicalAddress == a)
        try space.map(va, to: b, attributes: MappingAttributes(), by: cpu)
        #expect(try cpu.read(va).physicalAddress == a, "the TLB keeps the old translation")
        try cpu.invlpg(va)
        #expect(try cpu.read(va).physicalAddress == b, "INVLPG makes the new PTE visible")
        try space.map(va, to: a, attributes: MappingAttributes(), by: cpu)
        #expect(try cpu.loadCR3(space.root).isOK)
        #expect(try cpu.read(va).physicalAddress == a, "a flushing CR3 load does too")
    }

    /// Kernel-half addresses have all of bits 63:48 set; the TLB's flush epochs must
    /// still apply to them (they once overlapped those bits).
    @Test(arguments: [PagingMode.long4, .long5])
    func upperHalfNonGlobalEntriesAreFlushedByCR3Loads(mode: PagingMode) throws {
        let (machine, kernel, space) = try guest(mode)
        let cpu = machine.vcpus[0]
        let (a, b) = (try kernel.allocateFrame(zeroedBy: cpu), try kernel.allocateFrame(zeroedBy: cpu))
        let va: UInt64 = mode == .long4 ? 0xFFFF_C900_0000_0000 : 0xFF50_0000_0000_0000
        try space.map(va, to: a, attributes: MappingAttributes(), by: cpu)
        _ = try cpu.loadCR3(space.root)
        #expect(try cpu.read(va).physicalAddress == a)
        try space.map(va, to: b, attributes: MappingAttributes(), by: cpu)
        _ = try cpu.loadCR3(space.root)
        #expect(try cpu.read(va).physicalAddress == b)
        // A non-canonical alias of the same low bits is #GP, not a TLB hit.
        let alias = va & PTE.bits(mode == .long4 ? 47 : 56, 0)
        #expect(try cpu.read(alias).outcome == .generalProtection)
    }

    @Test func globalsSurviveCR3LoadsButNotPGEToggles() throws {
        let (machine, kernel, space) = try guest(.long4)
        let cpu = machine.vcpus[0]
        let other = try kernel.newAddressSpace(by: cpu)
        let (a, b) = (try kernel.allocateFrame(zeroedBy: cpu), try kernel.allocateFrame(zeroedBy: cpu))
        var global = MappingAttributes()
        global.global = true
        try space.map(0x1000, to: a, attributes: global, by: cpu)
        try other.map(0x1000, to: b, attributes: MappingAttributes(), by: cpu)
        _ = try cpu.loadCR3(space.root)
        #expect(try cpu.read(0x1000).physicalAddress == a)
        _ = try cpu.loadCR3(other.root)
        #expect(try cpu.read(0x1000).physicalAddress == a, "the global translation survives MOV to CR3")
        #expect(try cpu.writeCR4(cpu.cr4 & ~CR4.pge).isOK)
        #expect(try cpu.read(0x1000).physicalAddress == b, "clearing CR4.PGE flushed it")
    }

    @Test func pcidNoFlushKeepsEntriesOfEachPCID() throws {
        let (machine, kernel, space) = try guest(.long4)
        let cpu = machine.vcpus[0]
        let other = try kernel.newAddressSpace(by: cpu)
        let frames = try (0..<3).map { _ in try kernel.allocateFrame(zeroedBy: cpu) }
        try space.map(0x1000, to: frames[0], attributes: MappingAttributes(), by: cpu)
        try other.map(0x1000, to: frames[1], attributes: MappingAttributes(), by: cpu)
        #expect(try cpu.loadCR3(space.root).isOK)
        #expect(try cpu.writeCR4(cpu.cr4 | CR4.pcide).isOK)
        _ = try cpu.loadCR3(space.root | 1)
        #expect(try cpu.read(0x1000).physicalAddress == frames[0])
        _ = try cpu.loadCR3(other.root | 2)
        #expect(try cpu.read(0x1000).physicalAddress == frames[1])
        try space.map(0x1000, to: frames[2], attributes: MappingAttributes(), by: cpu)
        _ = try cpu.loadCR3(space.root | 1 | CR3Bits.noFlush)
        #expect(try cpu.read(0x1000).physicalAddress == frames[0], "no-flush switch: PCID 1's entry is still used")
        _ = try cpu.loadCR3(space.root | 1)
        #expect(try cpu.read(0x1000).physicalAddress == frames[2], "flushing switch: it is gone")
    }

    @Test func pcidEpochWrapDoesNotResurrectEntries() throws {
        let tlb = TLB(smallEntries: 16)
        let t = Translation(physicalAddress: 0x5000, pageBase: 0x5000, pageSize: .size4K,
                            rights: .writable, isGlobal: false, isDirty: true, leafLevel: 1, leafEntryAddress: 0)
        tlb.insert(0x1000, translation: t, pcid: 3, global: false)
        #expect(tlb.lookup(0x1000, pcid: 3) != 0)
        for _ in 0..<128 { tlb.flushNonGlobal(pcid: 3) }
        #expect(tlb.lookup(0x1000, pcid: 3) == 0)
        for _ in 0..<1000 {
            tlb.flushNonGlobal(pcid: 3)
            #expect(tlb.lookup(0x1000, pcid: 3) == 0)
        }
    }

    @Test func invlpgFindsEveryPieceOfAFracturedPageAfterAPartialFlush() throws {
        // A global 4 MiB page cached as 4 KiB pieces (nested paging over 4 KiB host pages).
        let tlb = TLB(smallEntries: 64)
        func piece(_ va: UInt64) -> Translation {
            Translation(physicalAddress: 0x40_0000 | va, pageBase: 0x40_0000 | va, pageSize: .size4K,
                        rights: .writable, isGlobal: true, isDirty: true, leafLevel: 2, leafEntryAddress: 0)
        }
        for va: UInt64 in [0, 0x1000, 0x2000] {
            tlb.insertPiece(va, translation: piece(va), of: .size4M, pcid: 0, global: true)
        }
        // INVPCID individual-address leaves globals alone: the pieces must stay findable.
        tlb.flushAddress(0x2000, pcid: 0, includeGlobal: false)
        #expect(tlb.lookup(0x1000, pcid: 0) != 0)
        // INVLPG of any byte of the 4 MiB page drops every piece.
        tlb.flushAddress(0x100, pcid: 0, includeGlobal: true)
        for va: UInt64 in [0, 0x1000, 0x2000] { #expect(tlb.lookup(va, pcid: 0) == 0, "piece \(va)") }
    }

    @Test func thirtyTwoBitAccessesWrapAtFourGiB() throws {
        let (machine, kernel, space) = try guest(.legacy32)
        let cpu = machine.vcpus[0]
        let (a, b) = (try kernel.allocateFrame(zeroedBy: cpu), try kernel.allocateFrame(zeroedBy: cpu))
        try space.map(0xFFFF_F000, to: a, attributes: MappingAttributes(), by: cpu)
        try space.map(0, to: b, attributes: MappingAttributes(), by: cpu)
        _ = try cpu.loadCR3(space.root)
        #expect(try cpu.write(0xFFFF_FFFE, value: 0x4433_2211, size: 4).isOK)
        #expect(try machine.readPhysical(a + 0xFFE, size: 2) == 0x2211)
        #expect(try machine.readPhysical(b, size: 2) == 0x4433, "the high half landed at linear 0")
    }

    @Test func theFastPathKeepsEveryRightsRule() throws {
        let (machine, kernel, space) = try guest(.long4) { $0.cr4SMAP = true }
        let cpu = machine.vcpus[0]
        let frames = try (0..<4).map { _ in try kernel.allocateFrame(zeroedBy: cpu) }
        for f in frames { try machine.writePhysical(f, 0x77, size: 8) }   // frames with storage
        var readOnly = MappingAttributes(); readOnly.writable = false; readOnly.user = false
        var clean = MappingAttributes(); clean.user = false
        var user = MappingAttributes(); user.accessed = true; user.dirty = true
        try space.map(0x1000, to: frames[0], attributes: readOnly, by: cpu)
        try space.map(0x2000, to: frames[1], attributes: clean, by: cpu)
        try space.map(0x3000, to: frames[2], attributes: user, by: cpu)
        _ = try cpu.loadCR3(space.root)
        // A read-only supervisor page: reads (twice: the second from the fast path), then
        // a store faults under CR0.WP = 1 and succeeds under WP = 0.
        #expect(try cpu.read(0x1000, cpl: 0).value == 0x77)
        #expect(try cpu.read(0x1008, cpl: 0).value == 0)
        #expect(try cpu.write(0x1000, value: 1, cpl: 0).errorCode == 0x3)
        #expect(try cpu.read(0x1008, cpl: 3).errorCode == 0x5, "a user read of a supervisor page faults")
        _ = try cpu.read(0x1008, cpl: 0)
        #expect(try cpu.writeCR0(cpu.cr0 & ~CR0.wp).isOK)
        #expect(try cpu.write(0x1000, value: 1, cpl: 0).isOK)
        #expect(try cpu.writeCR0(cpu.cr0 | CR0.wp).isOK)
        // A clean writable page: a store after reads still sets D in the PTE.
        _ = try cpu.read(0x2000, cpl: 0); _ = try cpu.read(0x2000, cpl: 0)
        #expect(try cpu.write(0x2000, value: 2, cpl: 0).isOK)
        #expect(try space.leaf(0x2000)!.value & PTE.dirty != 0)
        // SMAP: a supervisor read of a user page works with AC = 1, faults once AC clears.
        cpu.setAlignmentCheck(true)
        _ = try cpu.read(0x3000, cpl: 0)
        #expect(try cpu.read(0x3000, cpl: 0).isOK)
        cpu.setAlignmentCheck(false)
        #expect(try cpu.read(0x3000, cpl: 0).outcome == .pageFault)
        #expect(try cpu.read(0x3000, cpl: 3).isOK)
        // INVLPG after a PTE change: the new frame, not the cached one.
        try space.map(0x3000, to: frames[3], attributes: user, by: cpu)
        _ = try cpu.invlpg(0x3000)
        #expect(try cpu.read(0x3000, cpl: 3).physicalAddress == frames[3])
        // A host store is seen by the next read through a cached translation.
        try machine.writePhysical(frames[3] + 16, 0xabc, size: 8)
        #expect(try cpu.read(0x3010, cpl: 3).value == 0xabc)
    }

    /// Accesses the fast path serves count as reads, writes and TLB hits like any other.
    @Test func fastPathAccessesAreCounted() throws {
        let (machine, kernel, space) = try guest(.long4)
        let cpu = machine.vcpus[0]
        let frame = try kernel.allocateFrame(zeroedBy: cpu)
        var data = MappingAttributes(); data.accessed = true; data.dirty = true
        try space.map(0x5000, to: frame, attributes: data, by: cpu)
        _ = try cpu.loadCR3(space.root)
        cpu.counters = VCPUCounters()
        for i in 0..<10 { #expect(try cpu.read(0x5000 + UInt64(i) * 8).isOK) }
        for i in 0..<5 { #expect(try cpu.write(0x5000 + UInt64(i) * 8, value: 1).isOK) }
        let c = cpu.counters
        #expect(c.reads == 10 && c.writes == 5)
        #expect(c.tlbMisses == 1 && c.tlbHits == 14, "one miss fills the TLB and the fast cache: \(c)")
        cpu.counters = VCPUCounters()
        #expect(cpu.counters == VCPUCounters())
        #expect(machine.counters.reads == 0)
    }

    @Test func crossPageAccessesNeedBothPages() throws {
        let (machine, kernel, space) = try guest(.long4)
        let cpu = machine.vcpus[0]
        let a = try kernel.allocateFrame(zeroedBy: cpu)
        try space.map(0x1000, to: a, attributes: MappingAttributes(), by: cpu)
        _ = try cpu.loadCR3(space.root)
        let r = try cpu.write(0x1FFC, value: 0x1122_3344_5566_7788, size: 8)
        #expect(r.outcome == .pageFault && r.faultAddress == 0x2000 && r.errorCode == 0x2)
        #expect(try machine.readPhysical(a + 0xFFC, size: 4) == 0, "nothing was written")
        let b = try kernel.allocateFrame(zeroedBy: cpu)
        try space.map(0x2000, to: b, attributes: MappingAttributes(), by: cpu)
        #expect(try cpu.write(0x1FFC, value: 0x1122_3344_5566_7788, size: 8).isOK)
        #expect(try cpu.read(0x1FFC, size: 8).value == 0x1122_3344_5566_7788)
        #expect(try machine.readPhysical(b, size: 4) == 0x1122_3344)
    }

    @Test func paePDPTEsAreLoadedAtMovToCR3() throws {
        let (machine, kernel, space) = try guest(.pae)
        let cpu = machine.vcpus[0]
        _ = try cpu.loadCR3(space.root)
        // A PDPTE with reserved bits in memory is harmless until the next MOV to CR3.
        try kernel.storeEntry(space.root, try machine.readPhysical(space.root, size: 8) | PTE.writable, by: cpu)
        #expect(try cpu.loadCR3(space.root).outcome == .generalProtection)
        #expect(cpu.cr3 == space.root, "CR3 keeps its value after the #GP")
    }

    @Test func controlRegisterChecks() throws {
        let (machine, _, _) = try guest(.pae)
        let cpu = machine.vcpus[0]
        #expect(try cpu.writeCR4(cpu.cr4 | CR4.pcide).outcome == .generalProtection, "PCIDE needs IA-32e mode")
        #expect(try cpu.writeCR4(cpu.cr4 | (1 << 15)).outcome == .generalProtection, "reserved CR4 bit")
        #expect(throws: MachineError.self) { try cpu.writeCR0(cpu.cr0 & ~CR0.pg) }
        let (long, _, _) = try guest(.long4)
        let lcpu = long.vcpus[0]
        #expect(try lcpu.loadCR3(1 << 50).outcome == .generalProtection, "CR3 bits above MAXPHYADDR")
        #expect(try lcpu.loadCR3(lcpu.cr3 | CR3Bits.noFlush).outcome == .generalProtection, "bit 63 without PCIDE")
        #expect(try lcpu.invpcid(type: 4, pcid: 0, address: 0).outcome == .generalProtection)
        #expect(try lcpu.invpcid(type: 1, pcid: 1, address: 0).outcome == .generalProtection, "PCID ≠ 0 without PCIDE")
        #expect(try lcpu.invpcid(type: 0, pcid: 0, address: 0x8000_0000_0000).outcome == .generalProtection)
        #expect(try lcpu.invpcid(type: 2, pcid: 0, address: 0).isOK)
    }

    @Test func outOfRangeRequestsAreErrors() throws {
        let (machine, kernel, space) = try guest(.legacy32)
        let cpu = machine.vcpus[0]
        #expect(throws: MachineError.self) { try cpu.read(0x1_0000_0000) }
        #expect(throws: MachineError.self) { try cpu.read(0x1000, size: 3) }
        #expect(throws: MachineError.self) { try machine.readPhysical(machine.memory.capacity, size: 1) }
        #expect(throws: MachineError.self) { try space.map(0x1001, to: 0x10_0000, attributes: MappingAttributes(), by: cpu) }
        var big = MappingAttributes()
        big.size = .size2M
        #expect(throws: MachineError.self) { try space.map(0, to: 0, attributes: big, by: cpu) }
        #expect(throws: MachineError.self) { try kernel.freeFrame(0x1234_5000) }
        // A mapping to memory beyond RAM is refused; so is an access through a raw one.
        #expect(throws: MachineError.self) { try space.map(0x1000, to: 1 << 30, attributes: MappingAttributes(), by: cpu) }
        try space.setEntry(0x0, level: 2, value: 0x3FF0_0000 | PTE.present | PTE.writable | PTE.user, by: cpu)
        _ = try cpu.loadCR3(space.root)
        #expect(throws: MachineError.self) { try cpu.read(0x1000) }
    }
}

import Testing
import X86
import GuestKernel
import ShadowMMU
import KVMUnsync

/// The reverse map under frames mapped once, many times, past the recycle threshold,
/// and beyond guest memory: the full and the incremental verification agree it is exact.
@Suite struct ReverseMapTests {
    @Test func sharedFramesThresholdAndFramesBeyondMemoryStayExact() throws {
        let g = try Guest(KVMUnsync())
        let shared = try g.kernel.allocateFrame(zeroedBy: g.cpu)
        try g.switchTo(0)
        #expect(g.mmu.verifyChanges().isEmpty)
        // 1200 pages over three page tables, all on one frame: past 1000 mappings KVM's
        // rule drops every spte of the frame.
        for i in 0..<1200 {
            try g.spaces[0].map(g.va(table: i / 512, page: i % 512), to: shared, attributes: MappingAttributes(), by: g.cpu)
        }
        for i in 0..<1200 { #expect(try g.read(g.va(table: i / 512, page: i % 512)).isOK) }
        #expect(g.mmu.stats.pages4K <= 1000, "the recycle threshold dropped the frame's sptes")
        #expect(g.mmu.stats.pages4K > 100)
        g.expectConsistent("after sharing one frame 1200 times")
        #expect(g.mmu.verifyChanges().isEmpty)
        // Unmap every other page (guest stores to the tables; unsync or emulated), reload.
        for i in stride(from: 0, to: 1200, by: 2) { _ = try g.spaces[0].unmap(g.va(table: i / 512, page: i % 512), by: g.cpu) }
        try g.switchTo(1)
        try g.switchTo(0)
        for i in stride(from: 1, to: 1200, by: 2) { #expect(try g.read(g.va(table: i / 512, page: i % 512)).isOK) }
        g.expectConsistent("after unmapping half")
        #expect(g.mmu.verifyChanges().isEmpty)
        // A guest entry naming a frame beyond guest memory: the access fails as unbacked,
        // the spte it left (if any) is still in the reverse map.
        let beyond = UInt64(g.machine.memory.capacity) + 0x20_0000
        try g.spaces[0].map(g.va(table: 5, page: 0), to: shared, attributes: MappingAttributes(), by: g.cpu)
        let leaf = try #require(try g.spaces[0].leaf(g.va(table: 5, page: 0)))
        try g.kernel.storeEntry(leaf.address, (leaf.value & ~PTE.bits(51, 12)) | beyond, by: g.cpu)
        #expect(throws: MachineError.self) { try g.read(g.va(table: 5, page: 0)) }
        g.expectConsistent("after a mapping beyond memory")
        #expect(g.mmu.verifyChanges().isEmpty)
        _ = try g.spaces[0].unmap(g.va(table: 5, page: 0), by: g.cpu)
        try g.switchTo(1)
        g.expectConsistent("after unmapping it")
        #expect(g.mmu.verifyChanges().isEmpty)
    }
}

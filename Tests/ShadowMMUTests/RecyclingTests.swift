import Testing
import X86
import GuestKernel
import ShadowMMU
import KVMUnsync

/// Recycling zaps the oldest shadow pages first, as KVM takes victims from the old end
/// of its active list (skipping roots), also after ids of freed pages were reused.
@Suite struct RecyclingTests {
    @Test func theOldestPagesGoFirstEvenWhenIDsAreReused() throws {
        let g = try Guest(KVMUnsync(), processes: 1) { $0.maxShadowPages = 40 }
        try g.switchTo(0)
        // One page in each of 20 page tables: 20 level-1 shadow pages (and a few above).
        var frames: [UInt64] = []
        for t in 0..<20 { frames.append(try g.map(0, table: t, page: 0)) }
        for t in 0..<20 { #expect(try g.read(g.va(table: t, page: 0)).physicalAddress == frames[t]) }
        // Zap three early tables: their ids are freed ...
        var freed: Set<Int32> = []
        for t in [1, 2, 3] {
            let pde = try #require(try g.spaces[0].entry(g.va(table: t, page: 0), level: 2))
            let gfn = (pde.value & PTE.bits(51, 12)) >> 12
            freed.formUnion(g.mmu.shadowPages(of: gfn).map(\.id))
            g.mmu.unprotect(gfn: gfn)
        }
        #expect(freed.count == 3)
        // ... and reused at once by the pages of three more tables, the newest of all.
        for t in 20..<23 {
            frames.append(try g.map(0, table: t, page: 0))
            #expect(try g.read(g.va(table: t, page: 0)).physicalAddress == frames[t])
        }
        #expect(Set(g.mmu.allPages.suffix(3).map(\.id)) == freed, "the newest pages took the freed ids")
        // Fill the budget until recycling starts; record what it zaps.
        let before = g.mmu.allPages
        var t = 23
        while g.mmu.stats.mmuRecycled == 0 {
            frames.append(try g.map(0, table: t, page: 0))
            _ = try g.read(g.va(table: t, page: 0))
            t += 1
            try #require(t < 200, "recycling never started")
        }
        let alive = Set(g.mmu.allPages.map(\.serial))
        let zapped = before.filter { !alive.contains($0.serial) }
        let survivors = before.filter { alive.contains($0.serial) && $0.rootCount == 0 }
        #expect(!zapped.isEmpty && !survivors.isEmpty)
        // Every page recycled is older than every page that survived it (roots aside).
        #expect(zapped.map(\.serial).max()! < survivors.map(\.serial).min()!,
                "zapped \(zapped.map { "\($0.id)/\($0.serial)" }), kept \(survivors.map { "\($0.id)/\($0.serial)" })")
        g.expectConsistent()
        // The pages are still right.
        for t in 0..<frames.count where ![1, 2, 3].contains(t) {
            #expect(try g.read(g.va(table: t, page: 0)).physicalAddress == frames[t], "table \(t)")
        }
    }
}

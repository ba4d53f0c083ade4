/// The shadow pages and frames whose bookkeeping changed since the MMU's invariants
/// were last checked, so `ShadowMMU.verifyChanges()` re-examines only those.
///
/// Every mutation of a page's sptes, parent list, unsync state, role or root count marks
/// the page; every reverse-map change marks the frame and the page holding the spte.
/// Beside the marks it keeps what each page contributed to the global tallies (leaf
/// sptes, links, parent entries, unsync pages) when it was last checked, so the tallies
/// stay exact without a full scan.
///
/// Invariant: between two checks, a page or frame whose state differs from what the last
/// check saw is marked.
final class ChangeLog {
    private(set) var pages: [Int32] = []
    private var pageMarked: [Bool] = []
    private(set) var frames: [UInt64] = []
    private var frameMarked: Set<UInt64> = []

    /// What one page adds to the tallies (for `total`, the sums over all pages).
    struct Contribution {
        var live = 0
        var unsync = 0
        /// Present leaf sptes at levels 1, 2 and 3.
        var leaves4K = 0, leaves2M = 0, leaves1G = 0
        /// Present non-leaf sptes (links to a child page).
        var links = 0
        var parentEntries = 0

        static func += (a: inout Contribution, b: Contribution) {
            a.live += b.live; a.unsync += b.unsync
            a.leaves4K += b.leaves4K; a.leaves2M += b.leaves2M; a.leaves1G += b.leaves1G
            a.links += b.links; a.parentEntries += b.parentEntries
        }

        static func -= (a: inout Contribution, b: Contribution) {
            a.live -= b.live; a.unsync -= b.unsync
            a.leaves4K -= b.leaves4K; a.leaves2M -= b.leaves2M; a.leaves1G -= b.leaves1G
            a.links -= b.links; a.parentEntries -= b.parentEntries
        }
    }
    /// Per page id, what it contributed when last checked.
    private var contributions: [Contribution] = []
    /// Sums of `contributions` over all ids.
    private(set) var total = Contribution()
    /// Reverse-map length per frame when last checked (only frames with entries).
    private var rmapLengths: [UInt64: Int] = [:]
    private(set) var rmapEntries = 0
    /// Pages that held root references when last checked.
    var rootHolders: Set<Int32> = []
    /// Per vCPU: synced guest tables whose write protection that vCPU's TLB has not been
    /// checked against yet (it had a flush pending).
    var tlbChecksOwed: [Set<UInt64>] = []

    @inline(__always) func mark(_ id: Int32) {
        let i = Int(id)
        if i >= pageMarked.count { pageMarked.append(contentsOf: repeatElement(false, count: i + 1 - pageMarked.count)) }
        if pageMarked[i] { return }
        pageMarked[i] = true
        pages.append(id)
    }

    @inline(__always) func mark(frame gfn: UInt64) {
        if frameMarked.insert(gfn).inserted { frames.append(gfn) }
    }

    /// The marks so far, clearing them.
    func take() -> (pages: [Int32], frames: [UInt64]) {
        defer {
            for id in pages { pageMarked[Int(id)] = false }
            pages.removeAll(keepingCapacity: true)
            frames.removeAll(keepingCapacity: true)
            frameMarked.removeAll(keepingCapacity: true)
        }
        return (pages, frames)
    }

    /// Replaces what page `id` contributes to the tallies.
    func record(_ c: Contribution, for id: Int32) {
        let i = Int(id)
        if i >= contributions.count {
            contributions.append(contentsOf: repeatElement(Contribution(), count: i + 1 - contributions.count))
        }
        total -= contributions[i]
        total += c
        contributions[i] = c
    }

    /// Replaces the recorded reverse-map length of `gfn`.
    func recordRmap(_ gfn: UInt64, length: Int) {
        rmapEntries += length - (rmapLengths[gfn] ?? 0)
        rmapLengths[gfn] = length == 0 ? nil : length
    }
}

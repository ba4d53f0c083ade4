/// A direct-mapped cache in front of the TLB, QEMU-softmmu style: linear page → host
/// frame, with the accesses the vCPU's current controls allow through the TLB entry.
/// It only ever holds what a TLB hit would give, so using it changes nothing
/// architecturally; it spares a hit the TLB's set search, rights check and
/// guest-memory radix walk.
///
/// Invariants: an entry is filled only from a live TLB entry of the current PCID, with
/// no observer attached (the checker sees every access the slow way), and never for an
/// emulated store. Every TLB invalidation and every change of the controls that decide
/// rights (CR0, CR3, CR4, EFER, RFLAGS.AC) clears the whole cache; an eviction from the
/// TLB need not (the translation stays one x86 lets the vCPU keep using).
public struct FastTranslations {
    @usableFromInline static let entries = 256
    /// `(page number << 1) | 1` for a valid entry, else 0.
    @usableFromInline let tags: UnsafeMutablePointer<UInt64>
    @usableFromInline let frames: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Guest-physical base of the 4 KiB page.
    @usableFromInline let pages: UnsafeMutablePointer<UInt64>
    /// `Allow` bits.
    @usableFromInline let allowed: UnsafeMutablePointer<UInt8>
    /// Whether anything was filled since the last clear (clearing is then free).
    @usableFromInline var isEmpty = true

    public enum Allow {
        public static let supervisorRead: UInt8 = 1
        public static let supervisorWrite: UInt8 = 2
        public static let userRead: UInt8 = 4
        public static let userWrite: UInt8 = 8
    }

    init() {
        tags = .allocate(capacity: Self.entries)
        tags.initialize(repeating: 0, count: Self.entries)
        frames = .allocate(capacity: Self.entries)
        frames.initialize(repeating: nil, count: Self.entries)
        pages = .allocate(capacity: Self.entries)
        pages.initialize(repeating: 0, count: Self.entries)
        allowed = .allocate(capacity: Self.entries)
        allowed.initialize(repeating: 0, count: Self.entries)
    }

    func deallocate() {
        tags.deallocate(); frames.deallocate(); pages.deallocate(); allowed.deallocate()
    }

    /// The slot for an access of `size` bytes at `va` needing `allow`, when the cache
    /// can serve it (the access stays in one page, and its size is a valid one).
    @inlinable @inline(__always)
    func find(_ va: UInt64, size: Int, allow: UInt8) -> Int? {
        let slot = Int(truncatingIfNeeded: (va >> 12) & UInt64(Self.entries - 1))
        guard tags[slot] == (va >> 12) << 1 | 1, allowed[slot] & allow != 0,
              size & (size - 1) == 0, size <= 8, Int(truncatingIfNeeded: va & 0xFFF) &+ size <= 4096
        else { return nil }
        return slot
    }

    @usableFromInline mutating func fill(_ va: UInt64, frame: UnsafeMutableRawPointer, page: UInt64, allow: UInt8) {
        let slot = Int(truncatingIfNeeded: (va >> 12) & UInt64(Self.entries - 1))
        tags[slot] = (va >> 12) << 1 | 1
        frames[slot] = frame
        pages[slot] = page
        allowed[slot] = allow
        isEmpty = false
    }

    @inlinable mutating func clear() {
        guard !isEmpty else { return }
        tags.update(repeating: 0, count: Self.entries)
        isEmpty = true
    }
}

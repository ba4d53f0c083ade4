/// Sparse guest-physical memory: 4 KiB frames allocated on first write, zero elsewhere.
///
/// Frames hang off a three-level radix (1 GiB directories of 2 MiB chunks of frames),
/// so a large guest that touched little costs little: a 64 GiB guest that wrote 1 MiB
/// holds one directory page, one chunk page and 256 frames.
///
/// Invariants: `capacity` is a non-zero multiple of 4 KiB; a frame, once allocated,
/// stays at the same host address until the memory is freed; `residentFrames` counts
/// allocated frames.
public final class GuestMemory {
    public typealias Frame = UnsafeMutableRawPointer

    public static let frameSize: UInt64 = 4096
    /// The largest capacity accepted (16 TiB).
    public static let maxCapacity: UInt64 = 1 << 44

    /// Bytes of guest-physical address space, starting at 0.
    public let capacity: UInt64
    /// Frames written so far.
    public private(set) var residentFrames: Int = 0

    @usableFromInline let directories: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<Frame?>?>?>
    @usableFromInline let directoryCount: Int
    private var tablePages = 0

    /// Fails if `capacity` is zero, not a multiple of 4 KiB, or above `maxCapacity`.
    public init(capacity: UInt64) throws(MachineError) {
        guard capacity > 0, capacity % GuestMemory.frameSize == 0, capacity <= GuestMemory.maxCapacity else {
            throw .invalidArgument("guest memory size \(hex(capacity)) must be a non-zero multiple of 4 KiB up to 16 TiB")
        }
        self.capacity = capacity
        let frames = capacity >> 12
        directoryCount = Int((frames + (1 << 18) - 1) >> 18)
        directories = .allocate(capacity: directoryCount)
        directories.initialize(repeating: nil, count: directoryCount)
    }

    deinit {
        for d in 0..<directoryCount {
            guard let dir = directories[d] else { continue }
            for c in 0..<512 {
                guard let chunk = dir[c] else { continue }
                for f in 0..<512 { chunk[f]?.deallocate() }
                chunk.deallocate()
            }
            dir.deallocate()
        }
        directories.deallocate()
    }

    /// Host bytes used: frames plus radix pages.
    public var residentBytes: UInt64 {
        UInt64(residentFrames) * GuestMemory.frameSize + UInt64(tablePages) * 4096 + UInt64(directoryCount) * 8
    }

    /// Whether `[address, address + size)` lies inside guest memory.
    @inlinable public func contains(_ address: UInt64, size: Int = 1) -> Bool {
        address < capacity && UInt64(size) <= capacity - address
    }

    /// The frame holding `gfn`, or nil when it was never written (it reads as zeros).
    @inlinable public func frame(_ gfn: UInt64) -> Frame? {
        guard let dir = directories[Int(truncatingIfNeeded: gfn >> 18)],
              let chunk = dir[Int(truncatingIfNeeded: (gfn >> 9) & 511)] else { return nil }
        return chunk[Int(truncatingIfNeeded: gfn & 511)]
    }

    /// The frame holding `gfn`, allocated (zeroed) if needed. `gfn` must be in range.
    @inlinable public func frameForWriting(_ gfn: UInt64) -> Frame {
        if let f = frame(gfn) { return f }
        return allocateFrame(gfn)
    }

    @usableFromInline func allocateFrame(_ gfn: UInt64) -> Frame {
        let d = Int(truncatingIfNeeded: gfn >> 18)
        let dir: UnsafeMutablePointer<UnsafeMutablePointer<Frame?>?>
        if let existing = directories[d] {
            dir = existing
        } else {
            dir = .allocate(capacity: 512)
            dir.initialize(repeating: nil, count: 512)
            directories[d] = dir
            tablePages += 1
        }
        let c = Int(truncatingIfNeeded: (gfn >> 9) & 511)
        let chunk: UnsafeMutablePointer<Frame?>
        if let existing = dir[c] {
            chunk = existing
        } else {
            chunk = .allocate(capacity: 512)
            chunk.initialize(repeating: nil, count: 512)
            dir[c] = chunk
            tablePages += 1
        }
        let frame = Frame.allocate(byteCount: Int(GuestMemory.frameSize), alignment: 16)
        frame.initializeMemory(as: UInt8.self, repeating: 0, count: Int(GuestMemory.frameSize))
        chunk[Int(truncatingIfNeeded: gfn & 511)] = frame
        residentFrames += 1
        return frame
    }

    /// `size` (1, 2, 4 or 8) little-endian bytes at `offset` of a frame; the access must
    /// stay inside it.
    @inlinable @inline(__always)
    public static func load(_ f: Frame, offset: Int, size: Int) -> UInt64 {
        switch size {
        case 1: UInt64(f.load(fromByteOffset: offset, as: UInt8.self))
        case 2: UInt64(UInt16(littleEndian: f.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
        case 4: UInt64(UInt32(littleEndian: f.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        default: UInt64(littleEndian: f.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        }
    }

    /// Writes the low `size` (1, 2, 4 or 8) bytes of `value` at `offset` of a frame.
    @inlinable @inline(__always)
    public static func store(_ f: Frame, offset: Int, _ value: UInt64, size: Int) {
        switch size {
        case 1: f.storeBytes(of: UInt8(truncatingIfNeeded: value), toByteOffset: offset, as: UInt8.self)
        case 2: f.storeBytes(of: UInt16(truncatingIfNeeded: value).littleEndian, toByteOffset: offset, as: UInt16.self)
        case 4: f.storeBytes(of: UInt32(truncatingIfNeeded: value).littleEndian, toByteOffset: offset, as: UInt32.self)
        default: f.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
        }
    }

    // MARK: Little-endian access. Unchecked: the caller must have checked `contains`
    // (an address beyond capacity indexes past the radix). An access may cross frames.

    /// Reads `size` (1, 2, 4 or 8) bytes at `address`.
    @inlinable public func load(_ address: UInt64, size: Int) -> UInt64 {
        let offset = Int(truncatingIfNeeded: address & 4095)
        if offset &+ size <= 4096 {
            guard let f = frame(address >> 12) else { return 0 }
            return GuestMemory.load(f, offset: offset, size: size)
        }
        var value: UInt64 = 0
        for i in 0..<size { value |= load(address &+ UInt64(i), size: 1) << UInt64(8 * i) }
        return value
    }

    /// Writes the low `size` (1, 2, 4 or 8) bytes of `value` at `address`.
    @inlinable public func store(_ address: UInt64, _ value: UInt64, size: Int) {
        let offset = Int(truncatingIfNeeded: address & 4095)
        if offset &+ size <= 4096 {
            GuestMemory.store(frameForWriting(address >> 12), offset: offset, value, size: size)
            return
        }
        for i in 0..<size { store(address &+ UInt64(i), value >> UInt64(8 * i), size: 1) }
    }

    /// Sets `count` bytes at `address` to `byte` (within guest memory).
    public func fill(_ address: UInt64, count: Int, byte: UInt8) {
        var a = address
        var left = count
        while left > 0 {
            let offset = Int(a & 4095)
            let n = min(left, 4096 - offset)
            if byte != 0 || frame(a >> 12) != nil {
                (frameForWriting(a >> 12) + offset).initializeMemory(as: UInt8.self, repeating: byte, count: n)
            }
            a += UInt64(n)
            left -= n
        }
    }
}

/// Errors the machine reports for requests it cannot carry out. Architectural faults
/// (#PF, #GP) are results, not errors.
public enum MachineError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A value out of range or a nonsensical request.
    case invalidArgument(String)
    /// Guest-physical memory outside the guest's RAM.
    case unbackedMemory(address: UInt64, capacity: UInt64, what: String)
    /// A request the model deliberately does not support.
    case unsupported(String)
    /// A guest-kernel helper could not do what it was asked (a store faulted, no frames left…).
    case kernel(String)
    /// The checker saw a result x86 does not allow, or a broken MMU invariant.
    case violation(String)

    public var description: String {
        switch self {
        case .invalidArgument(let m): m
        case .unbackedMemory(let a, let c, let what):
            "\(what) at guest-physical \(hex(a)) is beyond guest memory (\(hex(c)) bytes)"
        case .unsupported(let m): m
        case .kernel(let m): m
        case .violation(let m): m
        }
    }
}

/// `0x` followed by lowercase hex digits.
public func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

#if canImport(Glibc)
import Glibc
#endif

/// The file-system reads the tools share: listing the inputs a command was given and
/// reading a file whole. Plain libc, so the fuzz target links no Foundation.
public enum Files {
    /// The names in directory `path` (dot-files left out) that `keep` accepts, in name
    /// order; nil when it cannot be opened.
    public static func names(in path: String, keep: (String) -> Bool = { _ in true }) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.hasPrefix(".") && keep(name) { names.append(name) }
        }
        return names.sorted()
    }

    /// `path` itself when it is not a directory; else the paths of `names(in:keep:)`.
    /// nil when `path` does not exist or the directory cannot be read.
    public static func list(_ path: String, keep: (String) -> Bool = { _ in true }) -> [String]? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        guard st.st_mode & S_IFMT == S_IFDIR else { return [path] }
        let base = path.hasSuffix("/") ? path : path + "/"
        return names(in: path, keep: keep)?.map { base + $0 }
    }

    /// The bytes of the file at `path`; nil when it cannot be read.
    public static func read(_ path: String) -> [UInt8]? {
        guard let f = fopen(path, "rb") else { return nil }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n > 0 { bytes += buffer[0..<n] }
            if n < buffer.count { break }
        }
        return bytes
    }
}

/// A file written line by line through stdio's buffer (an MMU trace can run to millions
/// of lines). Closed when released.
public final class LineWriter {
    private let file: UnsafeMutablePointer<FILE>

    /// Nil, with `errno` set, when `path` cannot be created.
    public init?(path: String) {
        guard let f = fopen(path, "wb") else { return nil }
        file = f
    }

    public func write(_ text: String) { fputs(text, file) }
    /// Writes out what is buffered (the file stays open).
    public func flush() { fflush(file) }

    deinit { fclose(file) }
}

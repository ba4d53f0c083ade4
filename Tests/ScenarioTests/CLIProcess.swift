import Foundation

/// Runs an executable (the `shadowsim` next to this test bundle by default) in a
/// directory, with stdout and stderr captured apart.
enum CLIProcess {
    static func run(_ arguments: [String], in directory: String, executable: String = BadInputTests.executable)
        throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        // stderr goes to a file, so neither stream can fill up while the other is read.
        let errPath = NSTemporaryDirectory() + "shadowsim-cli-err-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle(forWritingAtPath: errPath)
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let e = FileManager.default.contents(atPath: errPath) ?? Data()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// A fresh temporary directory holding `files` (name → text), removed after `body`.
    static func withDirectory(_ files: [String: String], _ body: (String) throws -> Void) throws {
        let dir = NSTemporaryDirectory() + "shadowsim-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, text) in files {
            let path = dir + "/" + name
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        try body(dir)
    }
}

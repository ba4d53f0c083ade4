// swift-tools-version: 6.0
// The simulation core: one dynamic library that the `shadowsim` host and every
// policy plugin link, so types that cross a plugin boundary exist exactly once
// in a process (see docs/architecture.md).
import PackageDescription

/// Release builds drop the runtime exclusivity checks: a profile of a TLB hit showed
/// them at half of its instructions (swift_beginAccess on every stored-property access
/// of the vCPU and TLB). Debug builds, and so the tests, keep them.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "ShadowSimCore",
    products: [
        .library(name: "ShadowSimCore", type: .dynamic, targets: ["X86", "GuestKernel", "ShadowMMU", "Checker", "LinuxTrace", "LinuxReplay"]),
    ],
    dependencies: [
        // `swift package --package-path Packages/ShadowSimCore generate-documentation` (DocC).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The architectural model: memory, control registers, page walks, TLB.
        .target(name: "X86", swiftSettings: hotPath),
        // How a guest kernel lays out its tables (physmap, frames, address spaces), and a
        // model of Linux's x86-64 memory management (GuestKernel/Linux).
        .target(name: "GuestKernel", dependencies: ["X86"], swiftSettings: hotPath),
        // The shadow MMU engine and the policy interface plugins implement.
        .target(name: "ShadowMMU", dependencies: ["X86"], swiftSettings: hotPath),
        // The architectural checker: judges every access against what x86 allows.
        .target(name: "Checker", dependencies: ["X86", "ShadowMMU"], swiftSettings: hotPath),
        // Recorded Linux traces: tracefs, trace-cmd report and perf script text, streamed.
        .target(name: "LinuxTrace", swiftSettings: hotPath),
        // A trace replayed through the Linux model, held to what the trace shows.
        .target(name: "LinuxReplay", dependencies: ["X86", "GuestKernel", "LinuxTrace"], swiftSettings: hotPath),
    ]
)

// swift-tools-version: 6.0
import PackageDescription

let core: Target.Dependency = .product(name: "ShadowSimCore", package: "ShadowSimCore")

let package = Package(
    name: "ShadowSim",
    products: [
        .executable(name: "shadowsim", targets: ["shadowsim"]),
        .library(name: "ShadowSimLua", targets: ["ShadowSimLua"]),
    ],
    dependencies: [
        .package(path: "Packages/ShadowSimCore"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Lua 5.4 from Debian's liblua5.4-dev.
        .systemLibrary(name: "CLua", pkgConfig: "lua5.4", providers: [.apt(["liblua5.4-dev"])]),
        // Macro wrappers and the error trampoline: Swift never raises a Lua error itself.
        .target(name: "CLuaShim", dependencies: ["CLua"]),
        // A small Swift wrapper over a Lua state.
        .target(name: "LuaKit", dependencies: ["CLua", "CLuaShim"]),
        // The `shadowsim` Lua module: translates and checks arguments, knows no paging rules.
        .target(name: "ShadowSimLua", dependencies: ["LuaKit", "CLua", "CLuaShim", core]),
        // Command-line front end (a library so tests can drive it in-process).
        .target(name: "ShadowSimCLI", dependencies: [
            "ShadowSimLua", "LuaKit",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "shadowsim", dependencies: ["ShadowSimCLI"]),
        .testTarget(name: "X86Tests", dependencies: [core]),
        .testTarget(name: "ScenarioTests", dependencies: ["ShadowSimCLI", "ShadowSimLua", "LuaKit"]),
    ]
)

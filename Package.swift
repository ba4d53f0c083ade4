// swift-tools-version: 6.0
import PackageDescription

let core: Target.Dependency = .product(name: "ShadowSimCore", package: "ShadowSimCore")

/// Sync policies, each a module under Plugins/NAME/Policy. Built in by name, and each
/// also a .so (product NAMEPolicy) whose Plugins/NAME/Entry exports the C entry points.
let policies = ["KVMUnsync", "WPEmulate", "GlobalList", "VMList", "XenOOS", "TDP", "PVMMU", "Agile"]

let package = Package(
    name: "ShadowSim",
    products: [
        .executable(name: "shadowsim", targets: ["shadowsim"]),
        .library(name: "ShadowSimLua", targets: ["ShadowSimLua"]),
        .library(name: "ShadowSimPolicies", targets: ["ShadowSimPolicies"]),
        // The Lua C module: `require "shadowsim"` from lua5.4 (tools/lua-module.sh links
        // .build/<config>/shadowsim.so to it).
        .library(name: "ShadowSimLuaModule", type: .dynamic, targets: ["ShadowSimLuaModule", "CShadowSimModule"]),
        .executable(name: "shadowsim-fuzz", targets: ["shadowsim-fuzz"]),
    ] + policies.map { .library(name: $0 + "Policy", type: .dynamic, targets: [$0 + "Entry"]) },
    dependencies: [
        .package(path: "Packages/ShadowSimCore"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    ],
    targets: [
        // Lua glue (Sources/LuaGlue): Lua 5.4 from Debian's liblua5.4-dev.
        .systemLibrary(name: "CLua", path: "Sources/LuaGlue/CLua", pkgConfig: "lua5.4", providers: [.apt(["liblua5.4-dev"])]),
        // Macro wrappers and the error trampoline: Swift never raises a Lua error itself.
        .target(name: "CLuaShim", dependencies: ["CLua"], path: "Sources/LuaGlue/CLuaShim"),
        // A small Swift wrapper over a Lua state.
        .target(name: "LuaKit", dependencies: ["CLua", "CLuaShim"], path: "Sources/LuaGlue/LuaKit"),
        // The `shadowsim` Lua module: translates and checks arguments, knows no paging rules.
        .target(name: "ShadowSimLua", dependencies: ["LuaKit", "CLua", "CLuaShim", "ShadowSimPolicies", core],
                path: "Sources/LuaGlue/ShadowSimLua"),
        // luaopen_shadowsim: C, so that an error loading the module is raised from C.
        .target(name: "CShadowSimModule", dependencies: ["CLua", "ShadowSimLuaModule"], path: "Sources/LuaGlue/CShadowSimModule"),
        // `lua_close` dlcloses C modules; Swift code must never be unmapped.
        .target(name: "ShadowSimLuaModule", dependencies: ["ShadowSimLua"], path: "Sources/LuaGlue/ShadowSimLuaModule",
                linkerSettings: [.unsafeFlags(["-Xlinker", "-z", "-Xlinker", "nodelete"])]),

        // Tools (Sources/Tools): the built-in policies by name, and loading of policy .so files.
        .target(name: "ShadowSimPolicies", dependencies: [core, .product(name: "Logging", package: "swift-log")]
                + policies.map { .target(name: $0) }, path: "Sources/Tools/ShadowSimPolicies"),
        // The benchmark suite behind `shadowsim bench`.
        .target(name: "ShadowSimBench", dependencies: ["ShadowSimLua", "ShadowSimPolicies", "ShadowSimFiles", core],
                path: "Sources/Tools/ShadowSimBench"),
        // Listing and reading the files a tool is given.
        .target(name: "ShadowSimFiles", path: "Sources/Tools/ShadowSimFiles"),
        // Command-line front end (a library so tests can drive it in-process).
        .target(name: "ShadowSimCLI", dependencies: [
            "ShadowSimLua", "LuaKit", "CLuaShim", "ShadowSimPolicies", "ShadowSimBench", "ShadowSimFiles", "ShadowSimKVM", core,
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Sources/Tools/ShadowSimCLI"),
        .executableTarget(name: "shadowsim", dependencies: ["ShadowSimCLI"], path: "Sources/Tools/shadowsim"),

        // Harnesses (Sources/Harnesses): the /dev/kvm calls of the kvm backend (C: the
        // ioctls are variadic, their structures UAPI).
        .target(name: "CKVM", path: "Sources/Harnesses/CKVM"),
        // `run --backend kvm`: a scenario's guest operations recorded and run on the host's KVM.
        .target(name: "ShadowSimKVM", dependencies: ["CKVM", "ShadowSimLua", core], path: "Sources/Harnesses/ShadowSimKVM"),
        // Bytes to multi-VM operation sequences run under every policy with the checker
        // on; `shadowsim-fuzz` is its libFuzzer target (tools/fuzz.sh) or a replay tool.
        .target(name: "ShadowSimFuzzKit", dependencies: ["ShadowSimPolicies", core], path: "Sources/Harnesses/ShadowSimFuzzKit"),
        .executableTarget(name: "shadowsim-fuzz", dependencies: ["ShadowSimFuzzKit", "ShadowSimFiles"],
                          path: "Sources/Harnesses/shadowsim-fuzz"),

        .testTarget(name: "X86Tests", dependencies: [core]),
        // The trace parser, the Linux model's rules, and replays held to the shipped traces.
        .testTarget(name: "LinuxTests", dependencies: [core, "ShadowSimLua", "ShadowSimPolicies"]),
        .testTarget(name: "ShadowMMUTests", dependencies: [core, "ShadowSimPolicies"] + policies.map { .target(name: $0) }),
        .testTarget(name: "ScenarioTests", dependencies: [
            "ShadowSimCLI", "ShadowSimLua", "LuaKit", "ShadowSimPolicies", "ShadowSimFuzzKit", "ShadowSimFiles", "ShadowSimKVM", core,
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
    ] + policies.flatMap { name -> [Target] in [
        .target(name: name, dependencies: [core], path: "Plugins/\(name)/Policy"),
        .target(name: name + "Entry", dependencies: [.target(name: name), core], path: "Plugins/\(name)/Entry"),
    ] }
)

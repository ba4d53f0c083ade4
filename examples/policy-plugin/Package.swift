// swift-tools-version: 6.0
// Out-of-tree sync policies, each built as a .so and loaded with
// `shadowsim run SCRIPT.lua --policy .build/debug/libFlushOnReuse.so`.
// They link the same ShadowSimCore library as the host, so the policy objects they
// return are SyncPolicy objects the host understands.
//
// - FlushOnReuse: KVM with its flush_on_reuse switch (a policy worth measuring);
// - NoSyncOnFlush: wrong on purpose, to show what `shadowsim test --policy` catches.
import PackageDescription

let core: Target.Dependency = .product(name: "ShadowSimCore", package: "ShadowSimCore")

let package = Package(
    name: "FlushOnReuse",
    products: [
        .library(name: "FlushOnReuse", type: .dynamic, targets: ["FlushOnReuse"]),
        .library(name: "NoSyncOnFlush", type: .dynamic, targets: ["NoSyncOnFlush"]),
    ],
    dependencies: [
        .package(path: "../../Packages/ShadowSimCore"),
    ],
    targets: [
        .target(name: "FlushOnReuse", dependencies: [core]),
        .target(name: "NoSyncOnFlush", dependencies: [core]),
    ]
)

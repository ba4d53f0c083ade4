// swift-tools-version: 6.0
// An out-of-tree sync policy, built as a .so and loaded with
// `shadowsim run SCRIPT.lua --policy .build/debug/libFlushOnReuse.so`.
// It links the same ShadowSimCore library as the host, so the policy object it
// returns is a SyncPolicy the host understands.
import PackageDescription

let package = Package(
    name: "FlushOnReuse",
    products: [
        .library(name: "FlushOnReuse", type: .dynamic, targets: ["FlushOnReuse"]),
    ],
    dependencies: [
        .package(path: "../../Packages/ShadowSimCore"),
    ],
    targets: [
        .target(name: "FlushOnReuse", dependencies: [.product(name: "ShadowSimCore", package: "ShadowSimCore")]),
    ]
)

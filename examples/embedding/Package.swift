// swift-tools-version: 6.0
// ShadowSim embedded in a larger experiment: a Swift program that builds guests with
// the core library, plugs in policies of its own, drives the vCPUs and reads counters.
// The test suite builds and runs it (`swift run --package-path examples/embedding`).
import PackageDescription

let package = Package(
    name: "PolicyExperiment",
    dependencies: [
        .package(path: "../../Packages/ShadowSimCore"),
    ],
    targets: [
        .executableTarget(name: "PolicyExperiment", dependencies: [
            .product(name: "ShadowSimCore", package: "ShadowSimCore"),
        ]),
    ]
)

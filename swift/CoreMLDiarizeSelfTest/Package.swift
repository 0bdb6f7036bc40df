// swift-tools-version:5.9
// The Swift self-test of a coreml-diarize bundle (README "Golden I/O"): the library is one file,
// Sources/CoreMLDiarizeSelfTest/SelfTest.swift, that an app copies as it is; the executable runs
// it on every package of a bundle (the macOS CI job does, on the bundle it just built).
import PackageDescription

let package = Package(
    name: "CoreMLDiarizeSelfTest",
    platforms: [.macOS(.v14), .iOS(.v17)],
    products: [
        .library(name: "CoreMLDiarizeSelfTest", targets: ["CoreMLDiarizeSelfTest"]),
        .executable(name: "coreml-diarize-selftest", targets: ["coreml-diarize-selftest"]),
    ],
    targets: [
        .target(name: "CoreMLDiarizeSelfTest"),
        .executableTarget(
            name: "coreml-diarize-selftest", dependencies: ["CoreMLDiarizeSelfTest"]),
        .testTarget(
            name: "CoreMLDiarizeSelfTestTests", dependencies: ["CoreMLDiarizeSelfTest"]),
    ]
)

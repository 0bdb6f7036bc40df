// coreml-diarize-selftest BUNDLE [--compute-units cpu_only|cpu_and_gpu|cpu_and_ne|all]
//                                [--require-compiled]
// Self-tests every package of a coreml-diarize bundle (a directory) that has golden data
// (golden/<stem>/): the compiled <stem>.mlmodelc beside it, or, unless --require-compiled, the
// <stem>.mlpackage compiled here as an app would. One line per package and a closing
// "N passed, N failed"; exit 0 when every package passes, 1 when one fails, 2 on bad usage.
import CoreML
import CoreMLDiarizeSelfTest
import Foundation

let usage =
    "usage: coreml-diarize-selftest BUNDLE [--compute-units cpu_only|cpu_and_gpu|cpu_and_ne|all] [--require-compiled]"

func stop(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(2)
}

var bundleArgument: String?
var units: MLComputeUnits?
var requireCompiled = false
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
    switch argument {
    case "--compute-units":
        guard let name = arguments.next(), let chosen = computeUnits(named: name) else { stop(usage) }
        units = chosen
    case "--require-compiled":
        requireCompiled = true
    default:
        guard bundleArgument == nil, !argument.hasPrefix("-") else { stop(usage) }
        bundleArgument = argument
    }
}
guard let bundlePath = bundleArgument else { stop(usage) }

let bundle = URL(fileURLWithPath: bundlePath)
let goldenRoot = bundle.appendingPathComponent("golden")
let stems: [String]
do {
    stems = try FileManager.default.contentsOfDirectory(atPath: goldenRoot.path)
        .filter { !$0.hasPrefix(".") }.sorted()
} catch {
    stop("\(bundle.path) has no golden/ folder: not a bundle made by `coreml-diarize build`")
}
if stems.isEmpty { stop("\(goldenRoot.path) is empty") }

var failed = 0
for stem in stems {
    var model = bundle.appendingPathComponent("\(stem).mlmodelc")
    if !FileManager.default.fileExists(atPath: model.path) {
        guard !requireCompiled else {
            print("\(stem): FAIL\n  FAIL the bundle has no \(stem).mlmodelc")
            failed += 1
            continue
        }
        do {
            model = try await MLModel.compileModel(at: bundle.appendingPathComponent("\(stem).mlpackage"))
        } catch {
            print("\(stem): FAIL\n  FAIL could not compile \(stem).mlpackage: \(error)")
            failed += 1
            continue
        }
    }
    let result = selfTest(model: model, golden: goldenRoot.appendingPathComponent(stem), units: units)
    print("\(stem) golden via Core ML: \(result.passed ? "ok" : "FAIL")")
    for failure in result.failures { print("  FAIL \(failure)") }
    if !result.passed { failed += 1 }
}
print("\(stems.count - failed) passed, \(failed) failed")
exit(failed == 0 ? 0 : 1)

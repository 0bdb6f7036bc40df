// Self-test of a coreml-diarize bundle: run each compiled model on its golden input
// (golden/<stem>/, written by app/golden_files.py `write_golden`) and judge every output with the
// rules of the Python judge (validation/judge.py `judge_output`), so an app on a device reaches
// the verdict `coreml-diarize verify --run-golden` reaches on a Mac.
// Every check fails NaN and Inf (they are tested as `!(x <= bound)` and `isFinite`, never
// `x > bound`, which NaN passes), and malformed golden data is a failure with a message, never
// a crash. One file, no dependencies: copy it into an app as it is. Without Core ML (Linux)
// only the judge compiles.
import Foundation

#if canImport(CoreML)
import CoreML
#endif

/// One tensor of `golden.json`: a raw little-endian float32 file, row-major, no header.
public struct GoldenTensor: Decodable {
    public let name: String
    public let file: String
    public let shape: [Int]
    /// Outputs only: the fields of the tolerance that are set (max_abs, min_cosine, ...).
    public let tolerance: [String: Double]?
    /// Outputs only, where known: how much the reference moves across inputs.
    public let reference_spread: Double?
}

/// The header `golden.json` (format "coreml-diarize-golden", version 1).
public struct GoldenHeader: Decodable {
    public let format: String
    public let format_version: Int
    public let package: String
    public let compute_units: String
    public let dtype: String
    public let byte_order: String
    public let inputs: [GoldenTensor]
    public let outputs: [GoldenTensor]
}

/// A package's verdict: it passed when nothing failed; `failures` say what did.
public struct SelfTestResult {
    public let package: String
    public let failures: [String]
    public var passed: Bool { failures.isEmpty }
}

struct GoldenDataError: Error, CustomStringConvertible {
    let description: String
}

/// Number of elements of `shape`; nil for a negative dimension or an overflow.
public func elementCount(_ shape: [Int]) -> Int? {
    var count = 1
    for dimension in shape {
        guard dimension >= 0 else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
        if overflow { return nil }
        count = product
    }
    return count
}

/// A golden `.bin`: exactly prod(shape) little-endian float32 values, else an error.
public func readGoldenFloats(_ directory: URL, _ tensor: GoldenTensor) throws -> [Float] {
    guard !tensor.file.contains("/"), tensor.file != "..", let count = elementCount(tensor.shape)
    else { throw GoldenDataError(description: "\(tensor.name): malformed golden.json entry") }
    let data = try Data(contentsOf: directory.appendingPathComponent(tensor.file))
    guard data.count / 4 == count, data.count % 4 == 0 else {
        throw GoldenDataError(
            description: "\(tensor.file): \(data.count) bytes, golden.json says shape \(tensor.shape)")
    }
    return data.withUnsafeBytes { raw in
        (0..<count).map { i in
            Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
        }
    }
}

/// One output against its golden reference under its tolerance (validation/judge.py
/// `judge_output`); returns the failures, none when it passes. Rows are the last axis.
public func judgeOutput(
    name: String, reference: [Float], referenceShape: [Int], got: [Float], gotShape: [Int],
    tolerance: [String: Double], referenceSpread: Double?
) -> [String] {
    guard gotShape == referenceShape, let count = elementCount(referenceShape),
        reference.count == count, got.count == count
    else {
        return ["\(name): shape \(gotShape) (\(got.count) values) != \(referenceShape) (\(reference.count) values)"]
    }
    guard got.allSatisfy({ $0.isFinite }) else { return ["\(name): NaN or inf in output"] }
    guard reference.allSatisfy({ $0.isFinite }) else { return ["\(name): NaN or inf in the golden reference"] }
    var failures: [String] = []
    let width = referenceShape.last ?? 1
    let rows = width > 0 ? count / width : 0
    // maxima and minima stay NaN once NaN (Swift.max/min would drop it): a NaN metric fails
    var maxAbs = 0.0, sumAbs = 0.0, maxProbAbs = 0.0
    for i in 0..<count {
        let error = abs(Double(reference[i]) - Double(got[i]))
        let probError = abs(exp(Double(reference[i])) - exp(Double(got[i])))
        if error.isNaN || error > maxAbs { maxAbs = error }
        if probError.isNaN || probError > maxProbAbs { maxProbAbs = probError }
        sumAbs += error
    }
    if let bound = tolerance["min_cosine"] {  // two zero rows agree, one zero row does not
        var worst = Double.infinity
        for row in 0..<rows {
            var dot = 0.0, refNorm = 0.0, gotNorm = 0.0
            for i in row * width..<(row + 1) * width {
                dot += Double(reference[i]) * Double(got[i])
                refNorm += Double(reference[i]) * Double(reference[i])
                gotNorm += Double(got[i]) * Double(got[i])
            }
            refNorm = refNorm.squareRoot()
            gotNorm = gotNorm.squareRoot()
            let bothZero = refNorm < 1e-12 && gotNorm < 1e-12
            let cosine = bothZero ? 1.0 : dot / Swift.max(refNorm * gotNorm, 1e-12)
            if cosine.isNaN || cosine < worst { worst = cosine }
        }
        if !(worst >= bound) { failures.append("\(name): cosine \(worst) < \(bound)") }
    }
    if let bound = tolerance["min_argmax_agreement"] {
        // decisive rows only: the reference's top-1 leads its top-2 by more than the margin
        let margin = tolerance["argmax_margin"] ?? 1e-3  // specs.Tolerance.argmax_margin
        var decisive = 0, agree = 0
        for row in 0..<rows {
            var refArg = row * width, gotArg = row * width
            var top1 = -Float.infinity, top2 = -Float.infinity
            for i in row * width..<(row + 1) * width {  // first index of the maximum, as numpy
                if reference[i] > reference[refArg] { refArg = i }
                if got[i] > got[gotArg] { gotArg = i }
                if reference[i] > top1 {
                    (top1, top2) = (reference[i], top1)
                } else if reference[i] > top2 {
                    top2 = reference[i]
                }
            }
            // in float32, as numpy compares a float32 margin with a Python float
            if margin > 0 && !(top1 - top2 > Float(margin)) { continue }
            decisive += 1
            if refArg == gotArg { agree += 1 }
        }
        let agreement = decisive == 0 ? 1.0 : Double(agree) / Double(decisive)
        if !(agreement >= bound) { failures.append("\(name): argmax agreement \(agreement) < \(bound)") }
    }
    if let bound = tolerance["max_abs"], !(maxAbs <= bound) {
        failures.append("\(name): max abs error \(maxAbs) > \(bound)")
    }
    if let bound = tolerance["max_prob_abs"], !(maxProbAbs <= bound) {  // log-probability outputs
        failures.append("\(name): max probability error \(maxProbAbs) > \(bound)")
    }
    if let bound = tolerance["max_relative_to_spread"], let spread = referenceSpread,
        spread.isFinite, spread > 0
    {
        let relative = (count > 0 ? sumAbs / Double(count) : 0) / spread
        if !(relative <= bound) { failures.append("\(name): error/spread \(relative) > \(bound)") }
    }
    // min_reference_spread needs many inputs: `coreml-diarize validate` checks it, not this test
    return failures
}

#if canImport(CoreML)
/// The compute units golden.json names (the units the tolerance was recorded for).
public func computeUnits(named name: String) -> MLComputeUnits? {
    switch name {
    case "cpu_only": return .cpuOnly
    case "cpu_and_gpu": return .cpuAndGPU
    case "cpu_and_ne": return .cpuAndNeuralEngine
    case "all": return .all
    default: return nil
    }
}

/// Offset of the `index`-th element (row-major) in a buffer laid out with `strides`: Core ML
/// may hand back outputs whose rows are padded.
func stridedOffset(_ index: Int, shape: [Int], strides: [Int]) -> Int {
    var rest = index, offset = 0
    for axis in stride(from: shape.count - 1, through: 0, by: -1) where shape[axis] > 0 {
        offset += (rest % shape[axis]) * strides[axis]
        rest /= shape[axis]
    }
    return offset
}

/// A float32 MLMultiArray holding `scalars` (row-major, prod(shape) of them).
func multiArray(_ scalars: [Float], shape: [Int]) throws -> MLMultiArray {
    let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
    array.withUnsafeMutableBufferPointer(ofType: Float.self) { buffer, strides in
        for (i, value) in scalars.enumerated() {
            buffer[stridedOffset(i, shape: shape, strides: strides)] = value
        }
    }
    return array
}

/// A float32 output's values in row-major order, whatever its strides; nil for another type
/// (the contract: every tensor is Float32 at the I/O boundary).
func rowMajorFloats(_ array: MLMultiArray) -> [Float]? {
    guard array.dataType == .float32 else { return nil }
    let shape = array.shape.map { $0.intValue }
    guard let count = elementCount(shape) else { return nil }
    return array.withUnsafeBufferPointer(ofType: Float.self) { buffer, strides in
        (0..<count).map { buffer[stridedOffset($0, shape: shape, strides: strides)] }
    }
}

/// Run `model` (a compiled `<stem>.mlmodelc`; for an .mlpackage first
/// `try await MLModel.compileModel(at:)`) on the golden data in `golden` (`golden/<stem>/`) and
/// judge every output. Never throws: unreadable data, a model that fails to load or predict and
/// every failed check end up in `failures`. `units`: default, the units golden.json names.
public func selfTest(model: URL, golden: URL, units: MLComputeUnits? = nil) -> SelfTestResult {
    let package = model.lastPathComponent
    do {
        let header = try JSONDecoder().decode(
            GoldenHeader.self, from: Data(contentsOf: golden.appendingPathComponent("golden.json")))
        guard header.format == "coreml-diarize-golden", header.format_version == 1,
            header.dtype == "float32", header.byte_order == "little"
        else { return SelfTestResult(package: package, failures: ["golden.json: not a coreml-diarize-golden v1 header"]) }
        guard let chosenUnits = units ?? computeUnits(named: header.compute_units) else {
            return SelfTestResult(package: package, failures: ["golden.json: unknown compute units \(header.compute_units)"])
        }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = chosenUnits
        let mlModel = try MLModel(contentsOf: model, configuration: configuration)
        var features: [String: MLFeatureValue] = [:]
        for tensor in header.inputs {
            let input = try multiArray(readGoldenFloats(golden, tensor), shape: tensor.shape)
            features[tensor.name] = MLFeatureValue(multiArray: input)
        }
        let prediction = try mlModel.prediction(from: MLDictionaryFeatureProvider(dictionary: features))
        var failures: [String] = []
        for tensor in header.outputs {
            guard let array = prediction.featureValue(for: tensor.name)?.multiArrayValue else {
                failures.append("\(tensor.name): package has no such output")
                continue
            }
            guard let got = rowMajorFloats(array) else {
                failures.append("\(tensor.name): output is not float32")
                continue
            }
            let reference = try readGoldenFloats(golden, tensor)
            failures += judgeOutput(
                name: tensor.name, reference: reference, referenceShape: tensor.shape,
                got: got, gotShape: array.shape.map { $0.intValue },
                tolerance: tensor.tolerance ?? [:], referenceSpread: tensor.reference_spread)
        }
        return SelfTestResult(package: package, failures: failures)
    } catch {
        return SelfTestResult(package: package, failures: ["\(error)"])
    }
}
#endif

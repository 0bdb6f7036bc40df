// The judge's rules on hand-made outputs (no model needed): NaN and Inf fail under every bound,
// size mismatches fail with a message instead of crashing (issue #21 item 9), and each bound
// fails just above its limit. Expected values are worked out by hand below each case.
import Foundation
import XCTest

@testable import CoreMLDiarizeSelfTest

final class JudgeTests: XCTestCase {
    // two rows of three classes; row 0's top-1 (0.3) leads its top-2 (0.1) by 0.2
    let shape = [2, 3]
    let reference: [Float] = [0.1, -0.2, 0.3, 1.0, 0.5, -0.5]
    let everyBound: [String: Double] = [
        "max_abs": 0.01, "min_cosine": 0.99, "min_argmax_agreement": 1.0, "argmax_margin": 0.001,
        "max_prob_abs": 0.01, "max_relative_to_spread": 0.1,
    ]

    func judge(_ got: [Float], shape gotShape: [Int]? = nil, _ tolerance: [String: Double]) -> [String] {
        judgeOutput(
            name: "y", reference: reference, referenceShape: shape, got: got,
            gotShape: gotShape ?? shape, tolerance: tolerance, referenceSpread: 1.0)
    }

    func testTheReferenceItselfPassesEveryBound() {
        XCTAssertEqual(judge(reference, everyBound), [])
    }

    func testNaNAndInfFailUnderEachBoundAlone() {
        for bad in [Float.nan, Float.infinity, -Float.infinity] {
            var got = reference
            got[4] = bad
            for (key, value) in everyBound where key != "argmax_margin" {
                XCTAssertEqual(judge(got, [key: value]), ["y: NaN or inf in output"], "\(bad) \(key)")
            }
        }
    }

    func testSizeMismatchIsAFailureNotACrash() {
        XCTAssertEqual(judge(Array(reference.prefix(5)), everyBound).count, 1)
        XCTAssertEqual(judge(reference, shape: [3, 2], everyBound).count, 1)
        XCTAssertEqual(judge([], shape: [0], everyBound).count, 1)
        XCTAssertEqual(
            judgeOutput(
                name: "y", reference: [1], referenceShape: [-1], got: [1], gotShape: [-1],
                tolerance: everyBound, referenceSpread: nil).count, 1)
    }

    func testEachBoundFailsJustAboveItsLimit() {
        var got = reference
        got[0] += 0.02  // error 0.02 > max_abs 0.01; row 0 still argmax 2, cosine > 0.99
        XCTAssertEqual(judge(got, ["max_abs": 0.01]).count, 1)
        XCTAssertEqual(judge(got, ["max_abs": 0.03]), [])
        // |exp(0.12) - exp(0.1)| = 0.0224 > 0.01
        XCTAssertEqual(judge(got, ["max_prob_abs": 0.01]).count, 1)
        // mean error 0.02 / 6 = 0.0033 over spread 1.0
        XCTAssertEqual(judge(got, ["max_relative_to_spread": 0.003]).count, 1)
        XCTAssertEqual(judge(got, ["max_relative_to_spread": 0.004]), [])
        var flipped = reference
        flipped.swapAt(3, 4)  // row 1's argmax moves from 0 to 1: agreement 1/2
        XCTAssertEqual(judge(flipped, ["min_argmax_agreement": 0.6, "argmax_margin": 0.001]).count, 1)
        XCTAssertEqual(judge(flipped, ["min_argmax_agreement": 0.5, "argmax_margin": 0.001]), [])
        // a margin above both rows' leads (0.2 and 0.5) leaves no decisive row: agreement 1
        XCTAssertEqual(judge(flipped, ["min_argmax_agreement": 1.0, "argmax_margin": 0.6]), [])
        let opposite = reference.map { -$0 }  // cosine -1 on both rows
        XCTAssertEqual(judge(opposite, ["min_cosine": 0.0]).count, 1)
    }

    func testZeroRowsAgreeAndAZeroRowAgainstANonZeroOneDoesNot() {
        let zeros = [Float](repeating: 0, count: 6)
        XCTAssertEqual(
            judgeOutput(
                name: "y", reference: zeros, referenceShape: shape, got: zeros, gotShape: shape,
                tolerance: ["min_cosine": 0.99], referenceSpread: nil), [])
        XCTAssertEqual(judge(zeros, ["min_cosine": 0.5]).count, 1)
    }

    func testGoldenFileOfTheWrongSizeIsAnErrorNotACrash() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Data(count: 20).write(to: directory.appendingPathComponent("output.y.bin"))
        let tensor = GoldenTensor(
            name: "y", file: "output.y.bin", shape: shape, tolerance: nil, reference_spread: nil)
        XCTAssertThrowsError(try readGoldenFloats(directory, tensor))
        // 24 bytes: six little-endian float32 values, 1.0 = 0x3F800000
        var bytes = Data()
        for _ in 0..<6 { bytes.append(contentsOf: [0x00, 0x00, 0x80, 0x3F]) }
        try bytes.write(to: directory.appendingPathComponent("output.y.bin"))
        XCTAssertEqual(try readGoldenFloats(directory, tensor), [Float](repeating: 1, count: 6))
    }
}

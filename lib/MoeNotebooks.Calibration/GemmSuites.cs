using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>GEMM validation: the tile/wave model with no fitting, and the calibrated model on shapes held out from its fit.</summary>
public static class GemmSuites
{
    /// <summary>
    /// Fold A of the held-out split: the calibrated model is fitted on these models' shapes and judged on the others', then
    /// the other way round (two folds, so every measurement is predicted once by a model that never saw its shape).
    /// </summary>
    public static readonly IReadOnlyList<string> FoldA =
    [
        "meta-llama/Llama-2-7b-hf", "meta-llama/Meta-Llama-3-8B", "Qwen/Qwen-72B", "codellama/CodeLlama-34b-Instruct-hf",
    ];

    public static string CaseId(GemmMeasurement m) => string.Create(CultureInfo.InvariantCulture,
        $"{m.Gpu} {m.Context.Split(';')[0]} m={m.M} n={m.N} k={m.K} (line {m.Line})");

    /// <summary>
    /// No fitting: <see cref="TileWaveCompute"/> with the GPU's preset and its architecture's tile table, for every measured
    /// GEMM with m >= <paramref name="minM"/>. Times in microseconds.
    /// </summary>
    public static ValidationSuite TileWave(IReadOnlyList<GemmMeasurement> rows, long minM = 1024, string name = "gemm-tile-wave")
    {
        var cases = new List<ValidationCase>();
        foreach (var m in rows.Where(r => r.M >= minM).OrderBy(r => r.Line))
        {
            var gpu = PublicData.PresetForGemmGpu(m.Gpu).Gpu;
            var model = new TileWaveCompute(gpu, TileWaveTable.For(gpu));
            cases.Add(new ValidationCase(CaseId(m), m.Seconds * 1e6, model.MatmulSeconds(m.Shape, m.Dtype, ModelSpec.DtypeBytes[m.Dtype]) * 1e6));
        }
        return new ValidationSuite(name,
            $"GEMM time, tile/wave quantization model with datasheet peaks, measured achievable FLOP/s and the architecture's tile table; no parameter fitted to these data; shapes with m >= {minM}",
            "us", 15, cases, []);
    }

    /// <summary>
    /// Calibrated on some models' shapes, judged on the others' (two folds, <see cref="FoldA"/> and the rest). A held-out row
    /// whose exact (m, n, k) also occurs in the fitting fold is left out, so no case is predicted from its own shape.
    /// </summary>
    public static ValidationSuite HeldOut(IReadOnlyList<GemmMeasurement> rows, string name = "gemm")
    {
        var cases = new List<(int Line, ValidationCase Case)>();
        var warnings = new List<string>();
        var skipped = 0;
        foreach (var gpuRows in rows.GroupBy(r => r.Gpu, StringComparer.OrdinalIgnoreCase).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var gpu = PublicData.PresetForGemmGpu(gpuRows.Key).Gpu;
            var inA = gpuRows.ToLookup(r => FoldA.Contains(PublicData.ModelOf(r), StringComparer.OrdinalIgnoreCase));
            foreach (var fitOnA in new[] { true, false })
            {
                var fitRows = inA[fitOnA].ToArray();
                var testRows = inA[!fitOnA].ToArray();
                if (fitRows.Length == 0 || testRows.Length == 0) continue;
                var seen = fitRows.Select(r => (r.M, r.N, r.K, r.Dtype)).ToHashSet();
                var model = new CalibratedCompute(gpu, TileWaveTable.For(gpu), fitRows, source: $"{gpuRows.Key} fold {(fitOnA ? "A" : "B")}");
                foreach (var m in testRows)
                {
                    if (seen.Contains((m.M, m.N, m.K, m.Dtype))) { skipped++; continue; }
                    cases.Add((m.Line, new ValidationCase(CaseId(m), m.Seconds * 1e6, model.MatmulSeconds(m.Shape, m.Dtype, ModelSpec.DtypeBytes[m.Dtype]) * 1e6)));
                }
                foreach (var (dtype, fit) in model.Calibrations)
                    warnings.Add(string.Create(CultureInfo.InvariantCulture,
                        $"fit {gpuRows.Key} {dtype} fold {(fitOnA ? "A" : "B")}: {fit.Points.Count} shapes, achievable {fit.Fitted.AchievableFraction:F3} of peak, tiles {string.Join("/", fit.Fitted.Tiles.Select(t => t.RelativeEfficiency.ToString("F2", CultureInfo.InvariantCulture)))}, HBM {fit.Fitted.MemoryEfficiency:F3}, launch {fit.Fitted.LaunchSeconds * 1e6:F2} us, k overhead {fit.Fitted.KOverhead:F0}; fit MAPE {fit.FitMapePct:F1}%"));
                warnings.AddRange(model.Warnings.Take(3));
            }
        }
        warnings.Insert(0, $"{skipped} held-out rows left out because their exact shape was in the fitting fold");
        return new ValidationSuite(name,
            $"GEMM time, calibrated model (tile/wave parameters fitted by least squares + nearest-shape residual correction) judged on shapes held out from its fit: two folds split by model (fold A: {string.Join(", ", FoldA)}; fold B: the other models)",
            "us", 8, cases.OrderBy(c => c.Line).Select(c => c.Case).ToArray(), warnings);
    }
}

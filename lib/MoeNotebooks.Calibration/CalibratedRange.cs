using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>What the training-modern validation covers for one GPU generation: hardware, precisions, sizes.</summary>
public sealed record GenerationRange(string Generation, IReadOnlySet<string> Systems, IReadOnlySet<string> Precisions, int MinGpus, int MaxGpus, long MinSequence, long MaxSequence, bool HasMoe);

/// <summary>
/// The range the training-modern suite's predicted rows span, and the warnings a training scenario outside it earns:
/// its measured error does not vouch for such a prediction. Carried with the fits (<see cref="FittedGeneration.Range"/>,
/// data/calibration/training-fits.json, embedded), so no data folder is needed and no CSV is read.
/// </summary>
public static class CalibratedRange
{
    /// <summary>The carried ranges, per fitted generation.</summary>
    public static IReadOnlyDictionary<string, GenerationRange> Carried => CarriedRanges.Value;

    private static readonly Lazy<IReadOnlyDictionary<string, GenerationRange>> CarriedRanges = new(() =>
        TrainingFits.Carried.Generations.ToDictionary(g => g.Key, g => g.Value.Range, StringComparer.Ordinal));

    /// <summary>The range over <paramref name="runs"/> as they are (the suite's predicted rows), per generation.</summary>
    public static IReadOnlyDictionary<string, GenerationRange> Over(IEnumerable<ModernRun> runs) =>
        runs.GroupBy(r => r.Generation).ToDictionary(g => g.Key, g => new GenerationRange(g.Key,
            g.Select(r => r.System).ToHashSet(StringComparer.Ordinal), g.Select(r => PrecisionOf(r.Precision)).ToHashSet(StringComparer.Ordinal), g.Min(r => r.Gpus), g.Max(r => r.Gpus),
            g.Min(r => r.SequenceLength), g.Max(r => r.SequenceLength), g.Any(r => r.IsMoe)));

    /// <summary>"bf16", "fp8", "nvfp4": the GEMM precision class a row trained with.</summary>
    public static string PrecisionOf(TrainingPrecision p) => p switch
    {
        TrainingPrecision.Bf16 => "bf16",
        TrainingPrecision.Nvfp4 => "nvfp4",
        _ => "fp8",
    };

    /// <summary>The GPU generation of a hardware description ("ampere", "hopper", "blackwell", ...), from its architecture.</summary>
    public static string GenerationOf(HardwareSpec h) => (h.Gpu.Architecture ?? "unknown").ToLowerInvariant();

    /// <summary>Warnings for a training scenario outside the calibrated range (none for inference, which the suite does not cover).</summary>
    public static IReadOnlyList<string> Warnings(ModelSpec model, StrategySpec strategy, HardwareSpec hardware, string dtype)
    {
        if (strategy.Mode != WorkloadMode.Training) return [];
        return Warnings(Carried, model, strategy, hardware, dtype);
    }

    public static IReadOnlyList<string> Warnings(IReadOnlyDictionary<string, GenerationRange> ranges, ModelSpec model, StrategySpec strategy, HardwareSpec hardware, string dtype)
    {
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        var generation = GenerationOf(hardware);
        if (!ranges.TryGetValue(generation, out var g))
            return [$"outside the calibrated range: no published training run on {generation} GPUs ({hardware.Gpu.Name}) is in the training-modern validation (it covers {string.Join(", ", ranges.Keys.Order())}), so its measured error does not vouch for this prediction"];
        var warnings = new List<string>();
        var precision = dtype.StartsWith("fp8", StringComparison.OrdinalIgnoreCase) || dtype.StartsWith("mxfp8", StringComparison.OrdinalIgnoreCase) ? "fp8"
            : dtype.Contains("fp4", StringComparison.OrdinalIgnoreCase) ? "nvfp4" : "bf16";
        if (!g.Precisions.Contains(precision))
            warnings.Add($"outside the calibrated range: precision {dtype} not among the {generation} runs validated ({string.Join(", ", g.Precisions.Order())})");
        if (strategy.GpuCount < g.MinGpus || strategy.GpuCount > g.MaxGpus)
            warnings.Add($"outside the calibrated range: {I(strategy.GpuCount)} GPUs, the {generation} runs validated span {I(g.MinGpus)}-{I(g.MaxGpus)}");
        if (model.SequenceLength < g.MinSequence || model.SequenceLength > g.MaxSequence)
            warnings.Add($"outside the calibrated range: sequence length {I(model.SequenceLength)}, the {generation} runs validated span {I(g.MinSequence)}-{I(g.MaxSequence)}");
        if (!model.IsDense && !g.HasMoe)
            warnings.Add($"outside the calibrated range: no MoE run on {generation} GPUs is validated");
        return warnings;
    }
}

using System.Globalization;
using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration;

/// <summary>A training run described by its settings (<c>moe predict</c> flags), to become a <see cref="ModernRun"/>.</summary>
/// <param name="Model">A family of the training-modern suite ("DeepSeek-V3", "Llama-3-70B") or its model preset ("deepseek-v3", "llama3-70b").</param>
/// <param name="System">A hardware label (<see cref="ModernSystems"/>): a preset ("DGX-H100", "H200") or a GPU ("H100-80GB").</param>
/// <param name="SequenceLength">Null: the model preset's.</param>
/// <param name="Release">A Megatron-Bridge release ("25.11"): the run is launched as NVIDIA's published config of that release launches it, where one matches.</param>
public sealed record TrainingRunRequest(string Model, string System, int Gpus, string Precision, long GlobalBatch, int MicroBatch = 1,
    int TP = 1, int PP = 1, int? VP = null, int CP = 1, int EP = 1, long? SequenceLength = null, string Release = "", bool Recompute = false,
    RecomputeModules RecomputeModules = RecomputeModules.None);

/// <summary>One run's predicted step under the carried fits.</summary>
/// <param name="ModelTflopsPerGpu">Model TFLOP/s per GPU by Megatron-LM's <c>num_floating_point_operations</c> (no recompute), the row's published convention.</param>
/// <param name="MfuPct">Model FLOP/s (Megatron convention) over the GPU's dense bf16 peak.</param>
/// <param name="Breakdown">Seconds of the step by part (<see cref="ModernRowModel.Breakdown"/>), summing to <paramref name="StepSeconds"/>.</param>
/// <param name="Warnings">Why the prediction is not vouched for by the suite's measured error (transferred factors, range, launch).</param>
public sealed record RunPrediction(ModernRun Run, string System, string Generation, FitChoice Fit, double StepSeconds, double ModelTflopsPerGpu,
    double TokensPerSecondPerGpu, double MfuPct, IReadOnlyList<(string Part, double Seconds)> Breakdown, IReadOnlyList<string> Warnings)
{
    /// <summary>The selective recomputation priced (the run's own, else its launch's; <see cref="ModernScenario.LaunchRecomputeModules"/>).</summary>
    public RecomputeModules RecomputeModules { get; init; }

    /// <summary>The row's published figure in its own metric (TFLOP/s per GPU; MFU % for MPT), null when the row carries none.</summary>
    public double? Measured => !Run.HasMeasurement ? null : Run.Framework == ModernFramework.MosaicMpt ? Run.MeasuredMfuPct : Run.MeasuredTflopsPerGpu;

    /// <summary>The prediction in the same metric as <see cref="Measured"/> (MPT: the published MFU scaled by the step-time ratio, as the suite compares them).</summary>
    public double? Predicted => Measured is null ? null : Run.Framework == ModernFramework.MosaicMpt ? Run.MeasuredMfuPct!.Value * Run.MeasuredIterationSeconds / StepSeconds : ModelTflopsPerGpu;

    public double? ErrorPct => Measured is { } m && Predicted is { } p ? 100 * (p - m) / m : null;
}

/// <summary>A row of a runs file that could not be predicted, and why.</summary>
public sealed record RunPredictionRefusal(ModernRun Run, string Reason);

/// <summary>
/// The step-time predictor of the training-modern suite as a user's verb (<c>moe predict</c>, notebook 08): a run from
/// settings or a CSV row in the training_modern format is written as the suite writes its rows
/// (<see cref="ModernPredictor.ScenarioOf"/>, <see cref="ModernSuite.Model"/>: the same DAG slice, pipeline law and
/// launch settings) and priced with the carried per-generation fit (<see cref="TrainingFits"/>), transferred from
/// other generations or frameworks with a warning where the run's own is not fitted. Nothing is fitted here.
/// </summary>
public static class TrainingPredictor
{
    /// <summary>The largest sizes a run from settings may ask for (the slice holds one replica's EP x TP x CP ranks).</summary>
    public const int MaxTensorParallel = 64, MaxContextParallel = 64, MaxExpertParallel = 256, MaxPipeline = 1024, MaxMicroBatch = 1024, MaxMicrobatches = 1_000_000, MaxGpus = 1 << 20;
    public const long MaxSequence = 1 << 22;

    /// <summary>
    /// The models a run from settings can name: the suite's families (a public architecture and a model preset, the fits
    /// measured on their runs), then every other model preset, named by itself and priced the same way from its preset
    /// (with a warning that no run of it was measured).
    /// </summary>
    public static IReadOnlyList<(string Family, string Preset)> Models
    {
        get
        {
            var families = ModernPredictor.FamilyPresets.Where(f => ModernArchitecture.Catalog.ContainsKey(f.Key) && ModelPresets.Names.Contains(f.Value))
                .OrderBy(f => f.Key, StringComparer.Ordinal).Select(f => (f.Key, f.Value)).ToArray();
            return families.Concat(ModelPresets.Names.Where(n => families.All(f => f.Value != n)).Select(n => (n, n))).ToArray();
        }
    }

    /// <summary>The request as a Megatron-Bridge run (measured columns NaN), or a <see cref="ConfigException"/> naming the flag, its value and what is valid.</summary>
    public static ModernRun RunOf(TrainingRunRequest q)
    {
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        var match = Models.FirstOrDefault(m => ModernSystems.Key(m.Family) == ModernSystems.Key(q.Model) || ModernSystems.Key(m.Preset) == ModernSystems.Key(q.Model));
        if (match.Family is null)
            throw new ConfigException("--model", q.Model, $"must be one of {string.Join(", ", Models.Select(m => m.Preset == m.Family ? m.Preset : $"{m.Preset} ({m.Family})"))}");
        if (ModernSystems.Resolve(q.System).Preset is null) throw new ConfigException("--system", q.System, $"names no hardware preset: valid labels are {ModernSystems.ValidLabels}");
        void Within(string flag, long value, long max)
        {
            if (value < 1 || value > max) throw new ConfigException(flag, I(value), $"must be an integer from 1 to {I(max)}");
        }
        Within("--gpus", q.Gpus, MaxGpus);
        Within("--tp", q.TP, MaxTensorParallel);
        Within("--pp", q.PP, MaxPipeline);
        Within("--cp", q.CP, MaxContextParallel);
        Within("--ep", q.EP, MaxExpertParallel);
        Within("--micro-batch", q.MicroBatch, MaxMicroBatch);
        Within("--global-batch", q.GlobalBatch, (long)MaxMicrobatches * MaxMicroBatch);
        if (q.VP is { } vp) Within("--vp", vp, 64);
        var precision = ModernRun.PrecisionOf(q.Precision, "--precision");
        var sequence = q.SequenceLength ?? ModelPresets.Get(match.Preset).SequenceLength;
        Within("--seq-length", sequence, MaxSequence);
        var stage = (long)q.TP * q.PP * q.CP;
        if (q.Gpus % stage != 0) throw new ConfigException("--gpus", I(q.Gpus), $"must be a multiple of TP x PP x CP = {q.TP} x {q.PP} x {q.CP} = {I(stage)}");
        var dp = (int)(q.Gpus / stage);
        if (q.GlobalBatch % ((long)dp * q.MicroBatch) != 0)
            throw new ConfigException("--global-batch", I(q.GlobalBatch), $"must be a multiple of DP x micro-batch = {dp} x {q.MicroBatch} (DP = GPUs / (TP x PP x CP) = {dp})");
        if (q.GlobalBatch / ((long)dp * q.MicroBatch) > MaxMicrobatches)
            throw new ConfigException("--global-batch", I(q.GlobalBatch), $"gives more than {I(MaxMicrobatches)} microbatches per step at DP {dp} x micro-batch {q.MicroBatch}");
        if (q.Recompute && q.RecomputeModules != RecomputeModules.None)
            throw new ConfigException("--recompute-modules", q.RecomputeModules.ToText(), "cannot be combined with --recompute true: Megatron's --recompute-granularity is full or selective, not both");
        if (q.Release.Length > 0 && !System.Text.RegularExpressions.Regex.IsMatch(q.Release, @"^\d{2}\.\d{2}(\.\d{2})?$"))
            throw new ConfigException("--release", q.Release, "must be a Megatron-Bridge release as YY.MM or YY.MM.PP, e.g. 25.11 or 26.04.01");
        var a = ModernArchitecture.Of(match.Family)!;
        var arch = a.Hybrid is not null ? "moe (hybrid Mamba)" : a.Experts > 0 ? "moe" : "dense";
        var id = q.Release.Length > 0 ? $"user_{q.Release}" : "user";
        return new ModernRun(id, "moe predict", match.Family, match.Family, ModernFramework.MegatronBridge, q.Release, arch, q.System, q.Gpus, q.Precision, precision,
            sequence, q.GlobalBatch, q.MicroBatch, q.TP, q.PP, q.VP, q.CP, q.EP, dp, "", q.Recompute, double.NaN, null, double.NaN, 0) { RecomputeModules = q.RecomputeModules };
    }

    /// <summary>The prediction of one run; a <see cref="ConfigException"/> (field "run") when it cannot be written as a scenario.</summary>
    public static RunPrediction Predict(TrainingRunRequest request, TrainingFits? fits = null) => Predict(RunOf(request), fits);

    /// <inheritdoc cref="Predict(TrainingRunRequest, TrainingFits?)"/>
    public static RunPrediction Predict(ModernRun run, TrainingFits? fits = null)
    {
        var (p, why) = TryPredict(run, fits ?? TrainingFits.Carried);
        return p ?? throw new ConfigException("run", run.Id, $"cannot be predicted: {why}");
    }

    /// <summary>Every run of a runs file: predicted, or refused with its reason (listed, never dropped).</summary>
    public static (IReadOnlyList<RunPrediction> Predicted, IReadOnlyList<RunPredictionRefusal> Refused) PredictAll(IReadOnlyList<ModernRun> runs, TrainingFits? fits = null)
    {
        var predicted = new List<RunPrediction>();
        var refused = new List<RunPredictionRefusal>();
        foreach (var run in runs)
        {
            var (p, why) = TryPredict(run, fits ?? TrainingFits.Carried);
            if (p is not null) predicted.Add(p);
            else refused.Add(new RunPredictionRefusal(run, why!));
        }
        return (predicted, refused);
    }

    private static (RunPrediction? Prediction, string? Refusal) TryPredict(ModernRun run, TrainingFits fits)
    {
        var warnings = new List<string>();
        if ((long)run.GlobalBatch / ((long)run.DP * run.MicroBatch) > MaxMicrobatches)
            return (null, $"more than {MaxMicrobatches} microbatches per step");
        if (run.TP > MaxTensorParallel || run.CP > MaxContextParallel || run.EP > MaxExpertParallel || run.MicroBatch > MaxMicroBatch || run.SequenceLength > MaxSequence)
            return (null, $"TP {run.TP}, CP {run.CP}, EP {run.EP}, micro-batch {run.MicroBatch} or sequence {run.SequenceLength} beyond what the slice is built for (TP, CP <= 64, EP <= 256, micro-batch <= 1024, sequence <= 2^22)");
        // A release whose published launch names another layout for this family, GPU and precision: plain settings, said.
        if (run.Framework == ModernFramework.MegatronBridge && run.Release.Length > 0)
        {
            try { BridgeLaunchCatalog.Published.For(run); }
            catch (ConfigException e)
            {
                warnings.Add($"launch: release {run.Release}'s published config does not describe this layout ({e.Requirement}); priced with plain launch settings");
                run = run with { Release = "", Id = run.Id + " (plain launch)" };
            }
        }
        var (s, reason) = ModernPredictor.ScenarioOf(run);
        if (s is null) return (null, reason);
        ModernRowModel row;
        try { row = ModernSuite.Model(s, ModernPredictor.Datasheet); }
        catch (ConfigException e) { return (null, $"the core rejects the slice: {e.Message}"); }
        var choice = fits.For(run.Generation, run.Framework);
        if (choice.Warning is not null) warnings.Insert(0, choice.Warning);
        else warnings.AddRange(RangeWarnings(run));
        if (run.Framework == ModernFramework.MegatronBridge && !ModernArchitecture.IsMeasuredFamily(run.Family))
            warnings.Add($"model: no published run of {run.Family} is in the fitted tables; priced from its preset (data/models) as the suite prices its families, with factors measured on {string.Join(", ", ModernArchitecture.Catalog.Keys.Order(StringComparer.Ordinal))}; model TFLOP/s by Megatron-LM's count of the preset");
        if (s.RecipeNote is not null) warnings.Add($"precision: {s.RecipeNote}");
        if (run.Framework == ModernFramework.MegatronBridge && s.Launch is null && run.Release.Length > 0) warnings.Add($"launch: plain settings ({s.LaunchNote})");
        if (s.Launch is { ByLayout: true } byLayout)
            warnings.Add($"launch: {byLayout.Config} applied because its layout is the run's; read at {byLayout.Source}, not confirmed for release {run.Release}");
        var seconds = row.Seconds(choice.Fit);
        if (!double.IsFinite(seconds) || seconds <= 0) return (null, $"the predicted step is {seconds} s (a bug: please report the run)");
        var tokens = run.GlobalBatch * (double)run.SequenceLength / (run.Gpus * seconds);
        var flopsPerGpu = s.PublishedFlops.Total * run.GlobalBatch / (run.Gpus * seconds);
        var breakdown = row.Breakdown(choice.Fit).Select(k => (k.Key, k.Value)).ToArray();
        return (new RunPrediction(run, s.Hardware.Name, run.Generation, choice, seconds, flopsPerGpu / 1e12, tokens, 100 * flopsPerGpu / s.Hardware.Gpu.PeakFor("bf16"), breakdown, warnings)
            { RecomputeModules = s.LaunchRecomputeModules }, null);
    }

    /// <summary>Where a run on a fitted generation lies outside what that generation's carried rows span (system, precision, GPUs, sequence, MoE).</summary>
    public static IReadOnlyList<string> RangeWarnings(ModernRun run)
    {
        if (!CalibratedRange.Carried.TryGetValue(run.Generation, out var g)) return [];
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        var w = new List<string>();
        if (!g.Systems.Contains(run.System)) w.Add($"outside the calibrated range: system {run.System}; the {g.Generation} runs validated ran on {string.Join(", ", g.Systems.Order(StringComparer.Ordinal))}");
        var precision = CalibratedRange.PrecisionOf(run.Precision);
        if (!g.Precisions.Contains(precision)) w.Add($"outside the calibrated range: precision {run.PrecisionName}; the {g.Generation} runs validated used {string.Join(", ", g.Precisions.Order(StringComparer.Ordinal))}");
        if (run.Gpus < g.MinGpus || run.Gpus > g.MaxGpus) w.Add($"outside the calibrated range: {I(run.Gpus)} GPUs, the {g.Generation} runs validated span {I(g.MinGpus)}-{I(g.MaxGpus)}");
        if (run.SequenceLength < g.MinSequence || run.SequenceLength > g.MaxSequence) w.Add($"outside the calibrated range: sequence length {I(run.SequenceLength)}, the {g.Generation} runs validated span {I(g.MinSequence)}-{I(g.MaxSequence)}");
        if (run.IsMoe && !g.HasMoe) w.Add($"outside the calibrated range: no MoE run on {g.Generation} GPUs is validated");
        return w;
    }
}

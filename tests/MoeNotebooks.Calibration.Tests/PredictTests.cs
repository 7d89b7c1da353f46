using System.Reflection;
using MoeNotebooks.Calibration;
using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>
/// Issue 14, "predict published modern training runs": hardware labels resolved over the catalog, the transfer rule for
/// generations and frameworks without a fit, the carried fits file against the live fit, and <c>moe predict</c>'s
/// facade against the suite's own predictions.
/// </summary>
public class PredictTests
{
    private static ModernSuiteResult Suite => ModernSuite.Run(RealData.Data);

    [Theory]
    // Oracle: data/hardware (file names and gpu.architecture) read by hand; the label rules of ModernSystems' summary.
    [InlineData("H100 (DGX-H100)", "DGX-H100", "hopper")]
    [InlineData("H100-80GB", "DGX-H100", "hopper")]
    [InlineData("H100", "DGX-H100", "hopper")]
    [InlineData("H100 SXM", "H100-SXM", "hopper")]
    [InlineData("H100 PCIe", "H100-PCIe", "hopper")]
    [InlineData("H200", "H200", "hopper")]
    [InlineData("H800", "H800", "hopper")]
    [InlineData("GH200", "GH200", "hopper")]
    [InlineData("A100-80GB", "A100-80GB", "ampere")]
    [InlineData("A100", "DGX-A100", "ampere")]
    [InlineData("MI300X", "MI300X", "cdna3")]
    [InlineData("B300", "DGX-B300", "blackwell")]
    [InlineData("GB200", "GB200-NVL72", "blackwell")]
    // The carried rows' labels: the systems and generations the suite always gave them.
    [InlineData("A100-40GB (MosaicML, 1600Gbps RoCE node-node)", "A100-40GB", "ampere")]
    [InlineData("GB200 NVL72 (per B200-class GPU)", "GB200-NVL72", "blackwell")]
    [InlineData("GB300 NVL72 (per GPU)", "GB300-NVL72", "blackwell")]
    [InlineData("B200 (DGX-B200)", "DGX-B200", "blackwell")]
    [InlineData("B300 (DGX-B300)", "DGX-B300", "blackwell")]
    public void A_label_resolves_to_its_catalog_entry_and_the_generation_of_its_architecture(string label, string preset, string generation)
    {
        var r = ModernSystems.Resolve(label);
        Assert.Equal(preset, r.Preset);
        Assert.Equal(generation, r.Generation);
        Assert.Equal(generation, CalibratedRange.GenerationOf(HardwareCatalog.Get(preset)));
        Assert.Null(r.Reason);
    }

    [Theory]
    [InlineData("TPU v5p")]
    [InlineData("H10")]
    [InlineData("A100 PCIe")]
    [InlineData("")]
    public void An_unknown_label_is_not_expressed_with_one_line_naming_it_and_the_valid_labels(string label)
    {
        // Oracle: the contract (one line naming the value and the valid labels); no preset, generation "unknown".
        var r = ModernSystems.Resolve(label);
        Assert.Null(r.Preset);
        Assert.Equal("unknown", r.Generation);
        Assert.Contains($"\"{label}\"", r.Reason);
        Assert.Contains("DGX-H100", r.Reason);
        Assert.DoesNotContain('\n', r.Reason!);
    }

    [CalibrationDataFact]
    public void A_row_on_an_unknown_label_is_not_expressed_with_that_line()
    {
        // Oracle: ModernSystems' line for the label; every other column of the row is one the suite expresses.
        foreach (var x in new[] { "moe", "dense", "mpt" }.Select(g => Suite.Rows.First(r => r.Row.Run.TargetGroup == g)))
        {
            var (scenario, reason) = ModernPredictor.ScenarioOf(x.Row.Run with { GpuLabel = "TPU v5p" });
            Assert.Null(scenario);
            Assert.Equal(ModernSystems.Resolve("TPU v5p").Reason, reason);
            Assert.Equal("unknown", (x.Row.Run with { GpuLabel = "TPU v5p" }).Generation);
        }
    }

    [CalibrationDataFact]
    public void The_carried_rows_keep_the_systems_and_generations_of_the_old_rule()
    {
        // Oracle: the rule the suite had before labels were resolved over the catalog (A100 labels ampere, every other
        // label blackwell; the five system names by prefix), so no carried figure moves.
        foreach (var run in ModernRun.Read(RealData.Data.PathOf(ModernSuite.File)))
        {
            Assert.Equal(run.GpuLabel.StartsWith("A100", StringComparison.OrdinalIgnoreCase) ? "ampere" : "blackwell", run.Generation);
            var old = run.GpuLabel switch
            {
                var g when g.StartsWith("A100-40GB") => "A100-40GB", var g when g.StartsWith("GB200") => "GB200-NVL72", var g when g.StartsWith("GB300") => "GB300-NVL72",
                var g when g.StartsWith("B200") => "DGX-B200", var g when g.StartsWith("B300") => "DGX-B300", var g => g,
            };
            Assert.Equal(old, run.System);
        }
    }

    private static readonly string[] NotFactors = [nameof(GenerationFit.Generation), nameof(GenerationFit.Rows)];

    private static object? Get(GenerationFit f, string property) => typeof(GenerationFit).GetProperty(property)!.GetValue(f);

    private static IEnumerable<string> FrameworkTerms => typeof(GenerationFit).GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Select(p => p.Name).Where(n => !NotFactors.Contains(n) && !TrainingFits.KernelFactors.Contains(n));

    [CalibrationDataFact]
    public void The_transfer_rule_takes_kernel_factors_from_the_nearest_calibration_and_framework_terms_from_the_framework()
    {
        // Oracle: the rule as TrainingFits documents it, checked property by property against the source fits (every
        // property of GenerationFit, so a term added later is checked too); data/gemm's achievable fractions by hand:
        // Hopper 0.80 is nearer Blackwell's 0.776 than Ampere's 0.84, CDNA3's 0.514 too.
        var fits = TrainingFits.Of(Suite, RealData.Data.PathOf(ModernSuite.File));
        var blackwell = fits.Generations["blackwell"].Fit;
        var ampere = fits.Generations["ampere"].Fit;
        Assert.Equal("blackwell", fits.NearestKernelGeneration("hopper"));
        Assert.Equal("blackwell", fits.NearestKernelGeneration("cdna3"));

        var own = fits.For("blackwell", ModernFramework.MegatronBridge);
        Assert.Null(own.Warning);
        Assert.Equal(blackwell, own.Fit);
        Assert.Null(fits.For("ampere", ModernFramework.MosaicMpt).Warning);

        void Check(FitChoice c, GenerationFit kernel, GenerationFit framework, string generation)
        {
            Assert.StartsWith("outside the calibrated range", c.Warning);
            Assert.Contains("factors transferred from", c.Warning);
            Assert.Equal(generation, c.Fit.Generation);
            Assert.Equal(0, c.Fit.Rows);
            foreach (var k in TrainingFits.KernelFactors) Assert.Equal(Get(kernel, k), Get(c.Fit, k));
            foreach (var t in FrameworkTerms) Assert.Equal(Get(framework, t), Get(c.Fit, t));
        }
        Check(fits.For("hopper", ModernFramework.MegatronBridge), blackwell, blackwell, "hopper");
        Check(fits.For("hopper", ModernFramework.MosaicMpt), blackwell, ampere, "hopper");
        Check(fits.For("cdna3", ModernFramework.MegatronBridge), blackwell, blackwell, "cdna3");
        // A fitted generation, another framework: its own kernels, the framework's terms from where that framework was fitted.
        Check(fits.For("ampere", ModernFramework.MegatronBridge), ampere, blackwell, "ampere");
        Check(fits.For("blackwell", ModernFramework.MosaicMpt), blackwell, ampere, "blackwell");
        Assert.Contains(FrameworkTerms, t => t == nameof(GenerationFit.OverheadMicroseconds));
        Assert.Contains(FrameworkTerms, t => t == nameof(GenerationFit.DataParallelExposed));
    }

    [CalibrationDataFact]
    public void The_carried_fits_file_is_the_live_fit_of_the_carried_table()
    {
        // Oracle: the suite's fit computed now from data/calibration/training_modern_public.csv (ModernSuite.Run).
        var live = TrainingFits.Of(Suite, RealData.Data.PathOf(ModernSuite.File));
        var carried = TrainingFits.Carried;
        var how = $"data/calibration/training-fits.json differs from the live fit; regenerate: {TrainingFits.RegenerateCommand}";
        Assert.True(live.TableSha256 == carried.TableSha256, $"{how} (the table changed: {carried.TableSha256} -> {live.TableSha256})");
        Assert.True(live.Generations.Keys.Order().SequenceEqual(carried.Generations.Keys.Order()), $"{how} (generations {string.Join(", ", carried.Generations.Keys)} -> {string.Join(", ", live.Generations.Keys)})");
        foreach (var (name, g) in live.Generations)
        {
            var c = carried.Generations[name];
            Assert.True(g.RowIds.SequenceEqual(c.RowIds), $"{how} ({name}: rows in the fit changed)");
            Assert.True(g.Frameworks.SequenceEqual(c.Frameworks) && g.Sources.SequenceEqual(c.Sources), $"{how} ({name}: frameworks or sources changed)");
            Assert.True(SameRange(g.Range, c.Range), $"{how} ({name}: the calibrated range changed)");
            foreach (var p in typeof(GenerationFit).GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                var (a, b) = (p.GetValue(g.Fit), p.GetValue(c.Fit));
                var same = a is double x && b is double y ? Math.Abs(x - y) <= 1e-6 * Math.Max(1, Math.Abs(x)) : Equals(a, b);
                Assert.True(same, $"{how} ({name}.{p.Name}: carried {b}, live {a})");
            }
        }
    }

    private static bool SameRange(GenerationRange a, GenerationRange b) =>
        a.Generation == b.Generation && a.Systems.SetEquals(b.Systems) && a.Precisions.SetEquals(b.Precisions) && a.MinGpus == b.MinGpus && a.MaxGpus == b.MaxGpus
        && a.MinSequence == b.MinSequence && a.MaxSequence == b.MaxSequence && a.HasMoe == b.HasMoe;

    [CalibrationDataFact]
    public void The_carried_ranges_are_those_of_the_expressible_rows_of_the_table()
    {
        // Oracle: the range computed straight from the CSV's rows that ModernPredictor.ScenarioOf expresses (what the range
        // warnings read before it was carried), against the carried file (written from the suite's predicted rows).
        var fromCsv = CalibratedRange.Over(ModernRun.Read(RealData.Data.PathOf(ModernSuite.File)).Where(r => ModernPredictor.ScenarioOf(r).Scenario is not null));
        Assert.Equal(fromCsv.Keys.Order(), CalibratedRange.Carried.Keys.Order());
        foreach (var (name, r) in fromCsv) Assert.True(SameRange(r, CalibratedRange.Carried[name]), name);
        // Oracle for one span by hand: the table's largest Blackwell runs use 256 GPUs (num_gpus of the DeepSeek-V3,
        // Qwen3-235B and Kimi-K2 rows), its smallest 8 (the Qwen3-30B and Nemotron-3-Nano rows).
        Assert.Equal((8, 256), (CalibratedRange.Carried["blackwell"].MinGpus, CalibratedRange.Carried["blackwell"].MaxGpus));
    }

    [CalibrationDataFact]
    public void The_fits_file_round_trips_every_property()
    {
        // Oracle: record equality of GenerationFit (every property) after writing and reading the file text.
        var fits = TrainingFits.Of(Suite, RealData.Data.PathOf(ModernSuite.File));
        var back = TrainingFits.Parse(fits.ToJson(), "round trip");
        foreach (var (name, g) in fits.Generations)
        {
            Assert.Equal(g.Fit, back.Generations[name].Fit);
            Assert.Equal(g.RowIds, back.Generations[name].RowIds);
            Assert.True(SameRange(g.Range, back.Generations[name].Range), name);
        }
        // A file without the calibrated range is refused the same way.
        var noRange = System.Text.RegularExpressions.Regex.Replace(fits.ToJson(), "\"range\": \\{[^}]*\\},", "");
        Assert.Contains("range", Assert.Throws<ConfigException>(() => TrainingFits.Parse(noRange, "old.json")).Message);
        // A file written before the fit gained a term is refused, naming the term and how to regenerate.
        var stale = fits.ToJson().Replace("\"OverheadMicroseconds\"", "\"OverheadMicrosecondsOld\"");
        var e = Assert.Throws<ConfigException>(() => TrainingFits.Parse(stale, "stale.json"));
        Assert.Contains("OverheadMicroseconds", e.Message);
        Assert.Contains("--write-fits", e.Message);
    }

    [CalibrationDataFact]
    public void Predict_on_a_carried_row_equals_the_suites_in_sample_prediction()
    {
        // Oracle: the suite's in-sample prediction of the same row (ModernSuite.Run), in the row's own metric; with the
        // live fits exactly (same computation), with the carried file within its printed precision.
        var live = TrainingFits.Of(Suite, RealData.Data.PathOf(ModernSuite.File));
        var picks = new[] { "moe", "dense", "mpt", "hybrid" }.Select(g => Suite.Rows.First(r => r.Row.Run.TargetGroup == g)).ToArray();
        foreach (var x in picks)
        {
            var p = TrainingPredictor.Predict(x.Row.Run, live);
            Assert.Null(p.Fit.Warning);
            Assert.DoesNotContain(p.Warnings, w => w.StartsWith("model:"));   // a carried row's model is measured (MPT: by its columns)
            Assert.Equal(x.InSample, p.Predicted!.Value, 9);
            Assert.True(Math.Abs(p.ErrorPct!.Value - x.InSampleErrorPct) < 1e-9);
            Assert.Equal(p.StepSeconds, p.Breakdown.Sum(b => b.Seconds), 9);
            var carried = TrainingPredictor.Predict(x.Row.Run);
            Assert.True(Math.Abs(carried.Predicted!.Value / x.InSample - 1) < 1e-5, $"{x.Row.Run.Id}: carried {carried.Predicted} vs suite {x.InSample}");
        }
    }

    [CalibrationDataFact]
    public void Predict_from_flags_of_a_carried_row_equals_the_suites_prediction_of_that_row()
    {
        // Oracle: the suite's in-sample prediction of mbridge_26.04.01_LLAMA3_70B_DGX-GB200_64g_MXFP8_tp2pp4 (its columns
        // written as flags: the published launch of release 26.04.01 applies to both).
        var x = Suite.Rows.Single(r => r.Row.Run.Id == "mbridge_26.04.01_LLAMA3_70B_DGX-GB200_64g_MXFP8_tp2pp4epn/a");
        var live = TrainingFits.Of(Suite, RealData.Data.PathOf(ModernSuite.File));
        var p = TrainingPredictor.Predict(new TrainingRunRequest("llama3-70b", "GB200 NVL72", 64, "MXFP8", 256, 1, TP: 2, PP: 4, VP: 5, Release: "26.04.01"), live);
        Assert.Equal(x.InSample, p.ModelTflopsPerGpu, 9);
        Assert.Equal("GB200-NVL72", p.System);
        Assert.Null(p.Measured);
    }

    [CalibrationDataFact]
    public void An_h100_run_resolves_to_dgx_h100_and_hopper_with_transferred_factors()
    {
        // Oracle: the catalog (DGX-H100 is hopper), the transfer rule (Blackwell's Megatron-Bridge fit), and the throughput
        // identities tokens/s per GPU = batch x sequence / (GPUs x step) and MFU = model FLOP/s / bf16 peak (989 TFLOP/s).
        var p = TrainingPredictor.Predict(new TrainingRunRequest("deepseek-v3", "H100 (DGX-H100)", 256, "bf16", 1024, 1, PP: 16, EP: 8, SequenceLength: 4096));
        Assert.Equal("DGX-H100", p.System);
        Assert.Equal("hopper", p.Generation);
        Assert.Equal("blackwell", p.Fit.KernelGeneration);
        Assert.Equal("blackwell", p.Fit.FrameworkGeneration);
        Assert.Contains(p.Warnings, w => w.StartsWith("outside the calibrated range") && w.Contains("factors transferred from"));
        Assert.True(double.IsFinite(p.StepSeconds) && p.StepSeconds > 0);
        Assert.Equal(1024 * 4096.0 / (256 * p.StepSeconds), p.TokensPerSecondPerGpu, 6);
        Assert.Equal(100 * p.ModelTflopsPerGpu * 1e12 / 989e12, p.MfuPct, 6);
        Assert.All(p.Breakdown, b => Assert.True(double.IsFinite(b.Seconds)));
    }

    [CalibrationDataFact]
    public void A_preset_outside_the_suites_families_is_priced_as_the_family_it_equals()
    {
        // Oracle: the catalog path, validated against the published rows. "llama3-8b" (the preset's own name) is not a
        // catalog family (the catalog calls the same preset Llama-3-8B and records no publisher's FLOP convention for it),
        // so it is priced through ModernArchitecture.Of's preset path; both paths build the model from the same preset, so
        // the step and the model FLOP/s must be identical, and only the preset path warns that no run of it was measured.
        var request = new TrainingRunRequest("Llama-3-8B", "DGX-B200", 8, "fp8-cs", 128, 1, SequenceLength: 8192);
        var family = TrainingPredictor.Predict(request);
        Assert.False(ModernArchitecture.IsMeasuredFamily("llama3-8b"));
        var preset = TrainingPredictor.Predict(TrainingPredictor.RunOf(request) with { Family = "llama3-8b" });
        Assert.Equal(family.StepSeconds, preset.StepSeconds, 12);
        Assert.Equal(family.ModelTflopsPerGpu, preset.ModelTflopsPerGpu, 9);
        Assert.DoesNotContain(family.Warnings, w => w.StartsWith("model:"));
        Assert.Contains(preset.Warnings, w => w.StartsWith("model: no published run of llama3-8b"));
    }

    [CalibrationDataFact]
    public void A_release_the_launch_file_does_not_name_takes_the_config_with_the_runs_layout_and_says_so()
    {
        // Oracle: the launch file by hand: GPT_OSS_120B_PRETRAIN_CONFIG_GB200_BF16_V2 (EP 64, MBS 4, GBS 1280) was read for
        // release 26.04.01; the table has no 26.06 GPT-OSS GB200 BF16 row, so a 26.06 run with that layout takes it by
        // layout (with a warning), and prices exactly as the 26.04.01 run does.
        TrainingRunRequest Run(string release) => new("gpt-oss-120b", "GB200", 64, "bf16", 1280, 4, EP: 64, Release: release);
        var named = TrainingPredictor.Predict(Run("26.04.01"));
        var other = TrainingPredictor.Predict(Run("26.06"));
        Assert.Equal(named.StepSeconds, other.StepSeconds, 12);
        Assert.DoesNotContain(named.Warnings, w => w.StartsWith("launch:"));
        Assert.Contains(other.Warnings, w => w.StartsWith("launch: GPT_OSS_120B_PRETRAIN_CONFIG_GB200_BF16_V2 applied because its layout is the run's"));
    }

    public static TheoryData<string> Presets => new(ModelPresets.Names);

    [Theory]
    [MemberData(nameof(Presets))]
    public void Every_model_preset_can_be_predicted_from_settings(string name)
    {
        // Oracle: the throughput identity tokens/s per GPU = batch x sequence / (GPUs x step), and the rule that a model
        // outside the suite's families is priced with a warning naming it. One DGX-B200 node, EP the largest divisor of 8
        // that divides the experts.
        var m = ModelPresets.Get(name);
        var ep = m.Experts > 0 ? Enumerable.Range(1, 8).Where(e => 8 % e == 0 && m.Experts % e == 0).Max() : 1;
        var p = TrainingPredictor.Predict(new TrainingRunRequest(name, "DGX-B200", 8, "bf16", 16, 1, EP: ep, SequenceLength: 1024));
        Assert.True(double.IsFinite(p.StepSeconds) && p.StepSeconds > 0, $"{name}: step {p.StepSeconds}");
        Assert.Equal(16 * 1024.0 / (8 * p.StepSeconds), p.TokensPerSecondPerGpu, 6);
        Assert.True(p.ModelTflopsPerGpu > 0 && p.ModelTflopsPerGpu < 2250, $"{name}: {p.ModelTflopsPerGpu} TFLOP/s per GPU against a 2250 TFLOP/s bf16 peak");
        Assert.Equal(!ModernArchitecture.IsMeasuredFamily(p.Run.Family), p.Warnings.Any(w => w.StartsWith("model:")));
    }

    [CalibrationDataFact]
    public void A_described_run_prices_its_selective_recompute_between_none_and_full()
    {
        // Oracle: ordering. Selective recomputation reruns part of what full recomputation reruns, so the step lies
        // between none and full; the run's own modules are what is priced (and reported), and full excludes selective.
        TrainingRunRequest Run(bool full = false, RecomputeModules modules = RecomputeModules.None) =>
            new("qwen3-30b-a3b", "DGX-B200", 8, "mxfp8", 512, 4, EP: 8, Recompute: full, RecomputeModules: modules);
        var none = TrainingPredictor.Predict(Run());
        var some = TrainingPredictor.Predict(Run(modules: RecomputeModules.Moe));
        var full = TrainingPredictor.Predict(Run(full: true));
        Assert.True(none.StepSeconds < some.StepSeconds && some.StepSeconds < full.StepSeconds, $"{none.StepSeconds} < {some.StepSeconds} < {full.StepSeconds}");
        Assert.Equal(RecomputeModules.Moe, some.RecomputeModules);
        Assert.Equal(RecomputeModules.None, none.RecomputeModules);
        Assert.Throws<ConfigException>(() => TrainingPredictor.Predict(Run(full: true, modules: RecomputeModules.MoeAct)));
    }
}

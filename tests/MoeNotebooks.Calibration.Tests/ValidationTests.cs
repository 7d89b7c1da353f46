using System.Text.Json;
using MoeNotebooks.Calibration;
using MoeNotebooks.Cli;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>
/// The issue's targets, measured on the shared data (skipped with a message when ../shared/calibration is absent).
/// Oracle: published third-party measurements (vidur profiler GEMM and NCCL timings; Megatron-LM SC21 Table 1).
/// </summary>
public class ValidationTests
{
    [CalibrationDataFact]
    public void Calibrated_GEMMs_meet_8_percent_on_held_out_shapes()
    {
        var suite = RealData.Report["gemm"];
        Assert.True(suite.Cases.Count > 500, $"{suite.Cases.Count} cases");
        Assert.True(suite.MapePct <= 8, $"held-out GEMM MAPE {suite.MapePct:F2}% > 8%");
        // Each GPU separately too: one fit per GPU type, judged on the other models' shapes.
        foreach (var gpu in new[] { "A100-80GB", "H100-80GB" })
        {
            var errors = suite.Cases.Where(c => c.Id.StartsWith(gpu, StringComparison.Ordinal)).Select(c => Math.Abs(c.ErrorPct!.Value)).ToArray();
            Assert.True(errors.Average() <= 8, $"{gpu} held-out MAPE {errors.Average():F2}%");
        }
    }

    [CalibrationDataFact]
    public void Tile_wave_without_fitting_meets_15_percent_for_m_at_least_1024()
    {
        var suite = RealData.Report["gemm-tile-wave"];
        Assert.True(suite.Cases.Count > 500, $"{suite.Cases.Count} cases");
        Assert.True(suite.MapePct <= 15, $"tile/wave GEMM MAPE {suite.MapePct:F2}% > 15%");
    }

    [CalibrationDataFact]
    public void Calibrated_all_reduce_meets_10_percent_for_messages_of_1_MiB_and_more()
    {
        var suite = RealData.Report["collectives"];
        Assert.True(suite.Cases.Count >= 70);
        Assert.True(suite.MapePct <= 10, $"all-reduce MAPE {suite.MapePct:F2}% > 10%");
        // Cross-validated (leave one size out) the target is missed (11.3% when written, driven by two-node A100 runs whose
        // time falls as the message grows); this bound guards against regressions, not the target.
        Assert.True(RealData.Report["collectives-leave-one-out"].MapePct <= 12.5);
        // Calibration must beat the datasheet, which misses latency and achievable bandwidth.
        Assert.True(RealData.Report["collectives-datasheet"].MapePct > 2 * suite.MapePct);
    }

    [CalibrationDataFact]
    public void Nccl_protocol_latencies_predict_single_node_all_reduce_better_than_one_latency_per_step()
    {
        // Oracle: the vidur DGX A100 / DGX H100 all-reduce timings (>= 1 MiB, one node). Datasheet links either way; with
        // costModel.ncclProtocols the latency is NCCL 2.28's tuner (base + steps x per-protocol hop latency, LL / LL128 /
        // Simple chosen per size) instead of the preset's 2 KB send latency plus 0.47 us per step. When written:
        // 54.5 % -> 34.9 % (every case predicted too fast: the datasheet NVLink bandwidth is above what the rings reach).
        var plain = RealData.Report["collectives-datasheet-intra-node"];
        var tuned = RealData.Report["collectives-datasheet-protocols-intra-node"];
        Assert.Equal(plain.Cases.Count, tuned.Cases.Count);
        Assert.True(tuned.Cases.Count >= 40, $"{tuned.Cases.Count} cases");
        Assert.True(tuned.MapePct <= 36, $"datasheet + protocols intra-node MAPE {tuned.MapePct:F1}% > 36%");
        Assert.True(tuned.MapePct < plain.MapePct, $"protocols {tuned.MapePct:F1}% vs one latency {plain.MapePct:F1}%");
        // Every case names the algorithm and protocol chosen.
        Assert.All(tuned.Cases, c => Assert.Matches(@"\[(ring|tree|nvls)/(LL|LL128|Simple)\]$", c.Id));
    }

    [CalibrationDataFact]
    public void Training_suite_lists_every_SC21_row_with_the_papers_flop_count()
    {
        // Oracle: SC21 Table 1 row 1: GPT 1.7B, 32 GPUs, 137 TFLOP/s; F = 96 B s l h^2 (1 + s/6h + V/16lh) by hand:
        // 96 * 512 * 2048 * 24 * 2304^2 * (1 + 2048/13824 + 51200/884736) = 1.3284e+16 FLOP -> 3.03 s per iteration.
        var cases = TrainingCase.Read(RealData.Data.PathOf(PublicData.TrainingFile));
        Assert.Equal(10, cases.Count);
        Assert.Equal(96.0 * 512 * 2048 * 24 * 2304.0 * 2304 * (1 + 2048 / 13824.0 + 51200 / 884736.0), cases[0].FlopsPerIteration, 1e6);
        Assert.Equal(cases[0].FlopsPerIteration / (32 * 137e12), cases[0].MeasuredIterationSeconds, 1e-9);
        Assert.Equal(137, cases[0].TflopsPerGpu(cases[0].MeasuredIterationSeconds), 1e-9);
        Assert.Equal(10, RealData.Report[TrainingSuite.Name].Cases.Count);
    }

    [CalibrationDataFact]
    public void SC21_training_throughput_is_predicted_for_every_row()
    {
        // Oracle: the paper's Table 1 (Narayanan et al., SC21). Target 5% MAPE on TFLOP/s per GPU, every run as
        // published (micro-batch, interleaving, DDP) and executed as Megatron-LM did then; no per-case constant.
        // Measured when written: 3.84%, worst the 76.1B run at +8.5%.
        var suite = RealData.Report[TrainingSuite.Name];
        Assert.Equal("ok", suite.Status);
        Assert.All(suite.Cases, c => Assert.NotNull(c.Predicted));
        Assert.True(suite.MapePct <= 5, $"SC21 MAPE {suite.MapePct:F2}%");
        Assert.All(suite.Cases, c => Assert.InRange(Math.Abs(c.ErrorPct!.Value), 0, 10));
    }

    [CalibrationDataFact]
    public void Validate_verb_prints_the_documented_json()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["validate", "--format", "json"], stdout, stderr));
        using var doc = JsonDocument.Parse(stdout.ToString());
        var suites = doc.RootElement.GetProperty("suites").EnumerateArray().ToArray();
        Assert.Contains(suites, s => s.GetProperty("name").GetString() == "gemm");
        Assert.Contains(suites, s => s.GetProperty("name").GetString() == "collectives");
        Assert.Contains(suites, s => s.GetProperty("name").GetString() == "training-sc21");
        foreach (var s in suites)
        {
            Assert.True(s.TryGetProperty("mapePct", out _));
            foreach (var c in s.GetProperty("cases").EnumerateArray())
                foreach (var key in new[] { "id", "measured", "predicted", "errorPct" }) Assert.True(c.TryGetProperty(key, out _), key);
        }
        var gemm = suites.First(s => s.GetProperty("name").GetString() == "gemm");
        Assert.Equal(RealData.Report["gemm"].MapePct!.Value, gemm.GetProperty("mapePct").GetDouble(), 1e-4);
    }

    [CalibrationDataFact]
    public void Validate_verb_reports_the_sc21_ablation_one_suite_per_rung()
    {
        var stdout = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["validate", "--ablation", "sc21", "--format", "json"], stdout, new StringWriter()));
        using var doc = JsonDocument.Parse(stdout.ToString());
        var suites = doc.RootElement.GetProperty("suites").EnumerateArray().ToArray();
        Assert.Equal(Sc21Ablation.Steps(Sc21RunCatalog.Published).Select(s => $"{TrainingSuite.Name} {s.Name}"), suites.Select(s => s.GetProperty("name").GetString()));
        // Oracle: the last rung is the published model, whose MAPE `moe validate` reports.
        Assert.Equal(RealData.Report[TrainingSuite.Name].MapePct!.Value, suites[^1].GetProperty("mapePct").GetDouble(), 1e-4);
    }

    [Fact]
    public void Validate_verb_rejects_an_unknown_ablation()
    {
        var stderr = new StringWriter();
        Assert.Equal(2, Cli.Cli.Run(["validate", "--ablation", "gemm"], new StringWriter(), stderr));
        Assert.Contains("--ablation = gemm", stderr.ToString());
    }

    [Fact]
    public void Validate_verb_with_a_missing_folder_exits_2_with_one_line()
    {
        var stderr = new StringWriter();
        Assert.Equal(2, Cli.Cli.Run(["validate", "--data", "/no/such/folder"], new StringWriter(), stderr));
        Assert.StartsWith("error: --data = /no/such/folder", stderr.ToString());
    }

    [Fact]
    public void Suite_mape_is_the_mean_absolute_error_of_predicted_cases()
    {
        // Oracle: hand arithmetic: errors +10% and -20% -> MAPE 15%; an unpredicted case is not counted.
        var suite = new ValidationSuite("s", "d", "us", 10, [new("a", 100, 110), new("b", 50, 40), new("c", 1, null)], []);
        Assert.Equal(15, suite.MapePct!.Value, 1e-12);
        Assert.Equal(20, suite.MaxAbsErrorPct!.Value, 1e-12);
        Assert.False(suite.MeetsTarget);
    }
}

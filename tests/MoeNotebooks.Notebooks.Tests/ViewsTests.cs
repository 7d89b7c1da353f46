using System.Text.Json;
using Microsoft.Data.Analysis;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Interactive;
using Plotly.NET;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Oracles: the evaluation each view is drawn from (its breakdowns sum to the total, its schedule places every
/// operation) and the founding document's shapes.
/// </summary>
public sealed class ViewsTests
{
    private static readonly Lazy<Evaluation> SeedEp16 = new(() => Load("seed-ep16"));
    private static readonly Lazy<Evaluation> Tp8Pp2 = new(() => Load("tp8-pp2"));

    private static Evaluation Load(string name) => Scenario.Load(Path.Combine(RepoPaths.Root, "data", "scenarios", name + ".json")).Evaluate();

    private static JsonElement Json(GenericChart chart) => JsonDocument.Parse(GenericChart.toJson(chart)).RootElement;

    [Fact]
    public void Timeline_has_a_compute_lane_per_gpu_and_no_comm_lane_without_communication()
    {
        var json = Json(Views.Timeline(SeedEp16.Value));
        var layout = json.GetProperty("layout");
        Assert.StartsWith("seed-ep16: per-GPU timeline", layout.GetProperty("title").GetProperty("text").GetString(), StringComparison.Ordinal);
        Assert.Equal("time (ms)", layout.GetProperty("xaxis").GetProperty("title").GetProperty("text").GetString());
        var lanes = layout.GetProperty("yaxis").GetProperty("categoryarray").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Equal(16, lanes.Count);
        Assert.Equal("GPU 0 compute", lanes[^1]);
        // The seed's EP=16 has matmuls and attention only.
        Assert.Equal(["matmul", "attention"], json.GetProperty("data").EnumerateArray().Select(t => t.GetProperty("name").GetString()));
    }

    [Fact]
    public void Timeline_of_tp_pp_has_comm_lanes_and_colours_by_kind_on_request()
    {
        var json = Json(Views.Timeline(Tp8Pp2.Value, maxGpus: 4, title: "TP", colour: TimelineColour.Kind));
        var lanes = json.GetProperty("layout").GetProperty("yaxis").GetProperty("categoryarray").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Equal(8, lanes.Count);
        Assert.Contains("GPU 3 comm", lanes);
        var names = json.GetProperty("data").EnumerateArray().Select(t => t.GetProperty("name").GetString()).ToList();
        Assert.Contains("Attention_AllReduce", names);
        Assert.Contains("Q projection", names);
    }

    [Fact]
    public void Timeline_bars_cover_every_operation_and_respect_the_cap()
    {
        var e = Tp8Pp2.Value;
        var bars = Views.TimelineBars(e, maxBarsPerLane: 5);
        Assert.All(bars.GroupBy(b => b.Lane), lane => Assert.True(lane.Count() <= 5, $"{lane.Key}: {lane.Count()} bars"));
        // Every scheduled operation with a duration lies inside a bar of its lane.
        foreach (var op in e.Result.Timeline().Where(o => o.FinishSeconds > o.StartSeconds))
        {
            var lane = $"GPU {op.Gpu} {(op.Category == MoeNotebooks.Dag.OpCategory.Communication ? "comm" : "compute")}";
            Assert.Contains(bars, b => b.Lane == lane && b.StartSeconds <= op.StartSeconds && op.FinishSeconds <= b.FinishSeconds);
        }

        Assert.Equal(e.Result.Timeline().Count(o => o.FinishSeconds > o.StartSeconds), bars.Sum(b => b.Operations));
        var unmerged = Views.TimelineBars(e, maxBarsPerLane: 100000);
        Assert.True(unmerged.Count > bars.Count);
    }

    [Fact]
    public void Timeline_of_a_training_dag_stays_small()
    {
        var e = Load("tp8-pp2-training");
        var json = GenericChart.toJson(Views.Timeline(e));
        // 32 lanes x at most 150 bars: well under a megabyte of chart JSON whatever the DAG size.
        Assert.True(json.Length < 1_000_000, $"{json.Length} characters of chart JSON");
    }

    [Fact]
    public void Breakdown_stacks_five_categories_that_sum_to_each_total()
    {
        var list = new[] { SeedEp16.Value, Tp8Pp2.Value };
        var json = Json(Views.Breakdown(list));
        var data = json.GetProperty("data");
        Assert.Equal(["matmul", "attention", "elementwise", "communication", "idle"], data.EnumerateArray().Select(t => t.GetProperty("name").GetString()));
        Assert.Equal("time (s)", json.GetProperty("layout").GetProperty("yaxis").GetProperty("title").GetProperty("text").GetString());
        for (var bar = 0; bar < 2; bar++)
        {
            var sum = data.EnumerateArray().Sum(t => t.GetProperty("y")[bar].GetDouble());
            Assert.Equal(list[bar].TotalSeconds, sum, list[bar].TotalSeconds * 1e-9);
        }

        Assert.Equal("#d62728", data[3].GetProperty("marker").GetProperty("color").GetString());
        var critical = Json(Views.CriticalPathBreakdown(list)).GetProperty("data");
        Assert.Equal(list[1].TotalSeconds, critical.EnumerateArray().Sum(t => t.GetProperty("y")[1].GetDouble()), 1e-6);
    }

    [Fact]
    public void PerGpu_has_one_bar_per_gpu_summing_to_the_total()
    {
        var e = Tp8Pp2.Value;
        var data = Json(Views.PerGpu(e)).GetProperty("data");
        Assert.Equal(16, data[0].GetProperty("x").GetArrayLength());
        Assert.Equal("GPU 15", data[0].GetProperty("x")[15].GetString());
        Assert.Equal(e.TotalSeconds, data.EnumerateArray().Sum(t => t.GetProperty("y")[9].GetDouble()), 1e-6);
    }

    [Fact]
    public void Operations_lists_the_documents_matmuls_of_one_layer()
    {
        var frame = Views.Operations(SeedEp16.Value);
        Assert.Equal(9L, frame.Rows.Count); // Q, K, V, Q x K^T, Attention x V, output, gate, expert up, expert down
        var names = frame.Columns["operation"].Cast<string>().ToList();
        var score = names.IndexOf("Q x K^T");
        Assert.Equal(16L, frame.Columns["count"][score]);
        Assert.Equal("Get_Time(10240000, 512, 10000)", frame.Columns["Get_Time"][score]);
        Assert.Equal(100.0, frame.Columns["share of layer (%)"].Cast<double?>().Sum()!.Value, 1);
        Assert.Throws<ArgumentException>(() => Views.Operations(SeedEp16.Value, gpu: 0, layer: 99));
        Assert.True(Views.OtherOperations(Tp8Pp2.Value).Rows.Count > 0);
    }

    [Fact]
    public void CriticalPath_folds_runs_and_accounts_for_the_total()
    {
        var e = SeedEp16.Value;
        var frame = Views.CriticalPath(e);
        var seconds = frame.Columns["time (ms)"].Cast<double?>().Sum(v => v!.Value) / 1000;
        Assert.Equal(e.TotalSeconds, seconds, 1e-3);
        // 4 layers x (Q, K, V, attention heads..., output, gate, expert up, down) folded: far fewer rows than ops.
        Assert.True(frame.Rows.Count < e.Result.CriticalOps.Count);
        var names = frame.Columns["operation"].Cast<string>().ToList();
        var attention = names.IndexOf("Q x K^T + Attention x V (per head)");
        Assert.Equal(32L, frame.Columns["count"][attention]); // 16 heads x (score + value), the document's 16×(...)
    }

    [Fact]
    public void Formula_table_matches_term_for_term_and_shows_a_mismatch()
    {
        var e = SeedEp16.Value;
        var same = Views.Formula(e, e.Formula.ToString());
        Assert.All(same.Columns["equal"].Cast<bool?>(), v => Assert.True(v));
        // Hand: Get_Time(10240000, 8192, 8192) = 2 x 10,240,000 x 8192^2 / 989e12 = 1.389676 s (compute-bound, H100 SXM).
        Assert.Equal(1.389676, (double)same.Columns["seconds each (library)"][0]!, 3);
        var other = Views.Formula(e, "4 × [Get_Time(10240000, 8192, 8192)]");
        Assert.False((bool)other.Columns["equal"][0]!);
        var side = Views.FormulaSideBySide(e, null);
        Assert.Equal("(document not found)", side.Columns["formula"][0]);
    }

    [Fact]
    public void Load_applies_gpu_preset_and_cost_model()
    {
        var file = Path.Combine(RepoPaths.Root, "data", "scenarios", "ep16.json");
        var s = Views.Load(file, "H200", "typical-hopper");
        Assert.Equal("H200", s.Hardware.Name);
        Assert.Equal(16, s.Hardware.GpuCount);
        Assert.Equal(CostModelKind.RooflineEfficiency, s.CostModel.Kind);
        Assert.Equal(Scenario.Load(file), Views.Load(file));
        Assert.ThrowsAny<Exception>(() => Views.Load(file, "H999"));
    }

    [Fact]
    public void Derivations_summary_insights_and_winner()
    {
        var d = Views.Derivations(Tp8Pp2.Value.Scenario);
        Assert.Contains("Q projection", d.Columns["operation"].Cast<string>());
        var summary = Views.Summary([SeedEp16.Value, Tp8Pp2.Value]);
        Assert.Equal(2L, summary.Rows.Count);
        foreach (var insight in Enum.GetValues<Insight>())
        {
            Assert.Equal(2L, Views.Insight([SeedEp16.Value, Tp8Pp2.Value], insight).Rows.Count);
        }

        var verdict = Views.Winner(SeedEp16.Value, Tp8Pp2.Value);
        Assert.StartsWith("TP=8 x PP=2 (tp8-pp2) is faster", verdict, StringComparison.Ordinal);
        Assert.Equal("EP=16", Views.StrategyName(SeedEp16.Value.Scenario.Strategy));
        var totals = Json(Views.Totals([SeedEp16.Value, Tp8Pp2.Value])).GetProperty("data");
        Assert.Equal(["Seed derivation", "Corrected derivation"], totals.EnumerateArray().Select(t => t.GetProperty("name").GetString()));
    }
}

using System.Text.Json;
using Microsoft.Data.Analysis;
using MoeNotebooks.Analysis;
using MoeNotebooks.Interactive;
using Plotly.NET;

namespace MoeNotebooks.Notebooks.Tests;

public sealed class SweepViewsTests
{
    private static ComparisonRow Row(string series, double x, double? seconds, string? invalid = null) =>
        new(series, SweepAxisKind.SequenceLength, x, x.ToString(System.Globalization.CultureInfo.InvariantCulture), seconds, seconds is null ? null : true,
            seconds is null ? null : 2e9, seconds is null ? null : new Dictionary<string, double> { ["matmul"] = 1, ["attention"] = 0, ["elementwise"] = 0, ["communication"] = 0.5, ["idle"] = 0.25 },
            invalid);

    [Fact]
    public void Lines_draw_valid_points_per_series_in_axis_order_and_mark_crossovers()
    {
        // Oracle: hand-made rows (A = 1 + x, B = 4 - x/2 cross at x = 2, 3 s); an invalid row is not drawn.
        ComparisonRow[] rows = [Row("A", 3, 4), Row("A", 1, 2), Row("B", 1, 3.5), Row("B", 3, 2.5), Row("B", 5, null, "nope")];
        var crossovers = StrategyComparison.Crossovers(rows, "A", "B");
        var chart = SweepViews.Lines("Total time", rows, crossovers, logX: true);
        using var json = JsonDocument.Parse(GenericChart.toJson(chart));
        var data = json.RootElement.GetProperty("data");
        Assert.Equal(3, data.GetArrayLength());
        Assert.Equal([1.0, 3.0], data[0].GetProperty("x").EnumerateArray().Select(e => e.GetDouble()));
        Assert.Equal([1.0, 3.0], data[1].GetProperty("x").EnumerateArray().Select(e => e.GetDouble()));
        var mark = data[2];
        Assert.Equal(SweepViews.CrossoverTraceName, mark.GetProperty("name").GetString());
        Assert.Equal(2.0, mark.GetProperty("x")[0].GetDouble(), 12);
        Assert.Equal(3.0, mark.GetProperty("y")[0].GetDouble(), 12);
        Assert.Equal("markers", mark.GetProperty("mode").GetString());
        Assert.Contains("A faster below", mark.GetProperty("text")[0].GetString(), StringComparison.Ordinal);
        var layout = json.RootElement.GetProperty("layout");
        Assert.Equal("Total time", layout.GetProperty("title").GetProperty("text").GetString());
        Assert.Equal(SweepAxisKind.SequenceLength.Title(), layout.GetProperty("xaxis").GetProperty("title").GetProperty("text").GetString());
        Assert.Equal("log", layout.GetProperty("xaxis").GetProperty("type").GetString());
        Assert.Equal("total time (s)", layout.GetProperty("yaxis").GetProperty("title").GetProperty("text").GetString());
    }

    [Fact]
    public void Lines_plot_a_chosen_value_and_refuse_rows_with_nothing_to_draw()
    {
        ComparisonRow[] rows = [Row("A", 1, 2), Row("A", 2, 4)];
        var chart = SweepViews.Lines("Idle", rows, yTitle: "idle share", y: r => r.IdleShare);
        using var json = JsonDocument.Parse(GenericChart.toJson(chart));
        Assert.Equal([0.125, 0.0625], json.RootElement.GetProperty("data")[0].GetProperty("y").EnumerateArray().Select(e => e.GetDouble()));
        Assert.Throws<ArgumentException>(() => SweepViews.Lines("t", [Row("A", 1, null, "bad")]));
    }

    [Fact]
    public void Bars_group_series_by_value_label()
    {
        ComparisonRow[] rows =
        [
            new("EP", SweepAxisKind.GpuType, 0, "A100-80GB", 3, true, 1, null, null),
            new("EP", SweepAxisKind.GpuType, 1, "H100-SXM", 1, true, 1, null, null),
            new("TP", SweepAxisKind.GpuType, 0, "A100-80GB", 4, true, 1, null, null),
        ];
        using var json = JsonDocument.Parse(GenericChart.toJson(SweepViews.Bars("By GPU", rows)));
        var data = json.RootElement.GetProperty("data");
        Assert.Equal(["A100-80GB", "H100-SXM"], data[0].GetProperty("x").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("TP", data[1].GetProperty("name").GetString());
        Assert.Equal("group", json.RootElement.GetProperty("layout").GetProperty("barmode").GetString());
    }

    [Fact]
    public void RatioHeatmap_leaves_invalid_cells_empty_and_puts_the_tie_colour_at_one()
    {
        var grid = new ComparisonGrid("EP", "TP", SweepAxisKind.SequenceLength, [1, 2], ["1", "2"], SweepAxisKind.Experts, [8, 16], ["8", "16"],
            new[,] { { 0.5, double.NaN }, { 1.5, 2 } }, new[,] { { null, "EP: model.experts = 8" }, { (string?)null, null } });
        using var json = JsonDocument.Parse(GenericChart.toJson(SweepViews.RatioHeatmap("EP / TP", grid)));
        var trace = json.RootElement.GetProperty("data")[0];
        Assert.Equal(0.5, trace.GetProperty("z")[0][0].GetDouble());
        Assert.Equal(JsonValueKind.Null, trace.GetProperty("z")[0][1].ValueKind);
        Assert.Equal("invalid", trace.GetProperty("text")[0][1].GetString());
        Assert.Equal("0.50", trace.GetProperty("text")[0][0].GetString());
        Assert.Contains("model.experts", trace.GetProperty("customdata")[0][1].GetString(), StringComparison.Ordinal);
        // Oracle: values 0.5 .. 2, so the tie colour sits at (1 - 0.5) / (2 - 0.5) = 1/3 of the scale.
        Assert.Equal(0.5, trace.GetProperty("zmin").GetDouble());
        Assert.Equal(2.0, trace.GetProperty("zmax").GetDouble());
        Assert.Equal(1.0 / 3, trace.GetProperty("colorscale")[1][0].GetDouble(), 12);
        Assert.Equal("%{text}", trace.GetProperty("texttemplate").GetString());
        var layout = json.RootElement.GetProperty("layout");
        Assert.Equal(SweepAxisKind.Experts.Title(), layout.GetProperty("yaxis").GetProperty("title").GetProperty("text").GetString());
        Assert.Equal("category", layout.GetProperty("xaxis").GetProperty("type").GetString());
    }

    [Fact]
    public void Tables_expand_breakdowns_and_name_crossovers()
    {
        // Oracle: the hand-made rows above; peak 2e9 bytes is 2 GB.
        var frame = SweepViews.Table([Row("A", 1, 2), Row("A", 2, null, "model.batch = 3: must be divisible")]);
        Assert.Equal(2L, frame.Rows.Count);
        Assert.Equal(2.0, frame.Columns["peak per GPU (GB)"][0]);
        Assert.Equal(0.5, frame.Columns["communication (s)"][0]);
        Assert.Null(frame.Columns["total (s)"][1]);
        Assert.Equal("model.batch = 3: must be divisible", frame.Columns["invalid because"][1]);

        var invalid = SweepViews.InvalidTable([Row("A", 1, 2), Row("A", 2, null, "model.batch = 3: must be divisible")]);
        Assert.Equal(1L, invalid.Rows.Count);
        Assert.Equal("2", invalid.Columns["value"][0]);

        var winners = SweepViews.WinnerTable([Row("A", 1, 2), Row("B", 1, 3), Row("A", 2, 2), Row("B", 2, null, "bad")], [("A", "B")]);
        Assert.Equal("A, 1.50x", winners.Columns["A vs B"][0]);
        Assert.Null(winners.Columns["A vs B"][1]);

        var c = new Crossover("A", "B", SweepAxisKind.SequenceLength, 1, "1", 3, "3", 2, 3, "A", "B");
        var crossings = SweepViews.CrossoverTable([c]);
        Assert.Equal("1 and 3", crossings.Columns["between"][0]);
        Assert.Equal(2.0, crossings.Columns["at (interpolated)"][0]);

        // Oracle: 0.5 s saved of a 10 s total is 5 %; rows come largest saving first.
        var sensitivity = SweepViews.SensitivityTable(
            [new SensitivityRow("Gate", "operation", 4, 0.1, 9.99, 0.01), new SensitivityRow("Expert up", "operation", 8, 5, 9.5, 0.5)], 10);
        Assert.Equal("Expert up", sensitivity.Columns["target"][0]);
        Assert.Equal(5.0, sensitivity.Columns["saved (% of total)"][0]);
    }

    [Fact]
    public void Memory_bars_stack_components_per_stage_with_a_capacity_line()
    {
        // Oracle: a hand-made two-stage report; 30 + 10 GB on stage 0 against an 80 GB capacity.
        var stages = new[] { new StageMemory(0, 30e9, 10e9, 0, 0, 0, 1), new StageMemory(1, 20e9, 10e9, 5e9, 1e9, 0, 1) };
        var report = new MemoryReport(stages, 40e9, 80e9, null, 1, 1, "");
        using var json = JsonDocument.Parse(GenericChart.toJson(MemoryViews.StackedBars("Memory", [("TP", report)])));
        var data = json.RootElement.GetProperty("data");
        Assert.Equal(6, data.GetArrayLength()); // five components and one capacity line
        Assert.Equal("weights", data[0].GetProperty("name").GetString());
        Assert.Equal([30.0, 20.0], data[0].GetProperty("y").EnumerateArray().Select(e => e.GetDouble()));
        Assert.Equal(["TP, stage 0", "TP, stage 1"], data[0].GetProperty("x").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("capacity (80 GB)", data[5].GetProperty("name").GetString());
        Assert.Equal(80.0, data[5].GetProperty("y")[1].GetDouble());
        Assert.Equal("stack", json.RootElement.GetProperty("layout").GetProperty("barmode").GetString());
        var table = MemoryViews.Table([("TP", report)]);
        Assert.Equal(40.0, table.Columns["total (GB)"][0]);
        Assert.Equal(true, table.Columns["fits"][1]);
    }
}

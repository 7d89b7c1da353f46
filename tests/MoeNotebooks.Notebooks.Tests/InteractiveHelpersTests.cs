using System.Reflection;
using System.Runtime.Loader;
using System.Text.Json;
using Microsoft.Data.Analysis;
using MoeNotebooks.Interactive;
using Plotly.NET;

namespace MoeNotebooks.Notebooks.Tests;

public sealed class InteractiveHelpersTests
{
    [Fact]
    public void FSharpCore_requests_of_any_version_get_the_loaded_copy()
    {
        _ = Charts.Line("t", "x", "y", [("s", 0, 0)]);
        Assert.True(FSharpCoreBinding.IsInstalled);
        FSharpCoreBinding.Install(); // idempotent

        var loaded = typeof(Microsoft.FSharp.Core.FSharpOption<int>).Assembly;
        var resolved = AssemblyLoadContext.Default.LoadFromAssemblyName(new AssemblyName($"FSharp.Core, Version=99.0.0.0, Culture=neutral, PublicKeyToken=b03f5f7f11d50a3a"));
        Assert.Same(loaded, resolved);
    }

    [Fact]
    public void Line_has_one_trace_per_series_sorted_by_x_with_titles_and_legend()
    {
        var chart = Charts.Line("Throughput", "batch (tokens)", "throughput (tokens/s)",
            [("EP", 2, 20), ("EP", 1, 10), ("TP", 1, 12)]);
        using var json = JsonDocument.Parse(GenericChart.toJson(chart));
        var data = json.RootElement.GetProperty("data");
        Assert.Equal(2, data.GetArrayLength());
        Assert.Equal("EP", data[0].GetProperty("name").GetString());
        Assert.Equal([1.0, 2.0], data[0].GetProperty("x").EnumerateArray().Select(e => e.GetDouble()));
        Assert.Equal([10.0, 20.0], data[0].GetProperty("y").EnumerateArray().Select(e => e.GetDouble()));
        var layout = json.RootElement.GetProperty("layout");
        Assert.Equal("Throughput", layout.GetProperty("title").GetProperty("text").GetString());
        Assert.Equal("batch (tokens)", layout.GetProperty("xaxis").GetProperty("title").GetProperty("text").GetString());
        Assert.Equal("throughput (tokens/s)", layout.GetProperty("yaxis").GetProperty("title").GetProperty("text").GetString());
        Assert.True(layout.GetProperty("showlegend").GetBoolean());
    }

    [Fact]
    public void Heatmap_rows_are_y_labels_and_colourbar_has_z_title()
    {
        var chart = Charts.Heatmap("Step time", "EP degree", "TP degree", "step time (ms)", ["1", "2", "4"], ["1", "2"],
            new double[,] { { 1, 2, 3 }, { 4, 5, 6 } });
        using var json = JsonDocument.Parse(GenericChart.toJson(chart));
        var trace = json.RootElement.GetProperty("data")[0];
        Assert.Equal("heatmap", trace.GetProperty("type").GetString());
        Assert.Equal(6.0, trace.GetProperty("z")[1][2].GetDouble());
        Assert.Equal("step time (ms)", trace.GetProperty("colorbar").GetProperty("title").GetProperty("text").GetString());
        var ex = Assert.Throws<ArgumentException>(() => Charts.Heatmap("t", "x", "y", "z", ["a"], ["b"], new double[2, 1]));
        Assert.Contains("2x1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void StackedBars_stack_one_trace_per_category_over_all_bars()
    {
        var chart = Charts.StackedBars("Step breakdown", "strategy", "time (ms)",
            [("compute", "EP", 3), ("comm", "EP", 1), ("compute", "TP", 2)]);
        using var json = JsonDocument.Parse(GenericChart.toJson(chart));
        var data = json.RootElement.GetProperty("data");
        Assert.Equal(2, data.GetArrayLength());
        Assert.Equal("comm", data[1].GetProperty("name").GetString());
        Assert.Equal([1.0, 0.0], data[1].GetProperty("y").EnumerateArray().Select(e => e.GetDouble()));
        Assert.Equal("stack", json.RootElement.GetProperty("layout").GetProperty("barmode").GetString());
    }

    [Fact]
    public void Gantt_draws_horizontal_bars_from_start_to_finish_in_ms()
    {
        var chart = Charts.Gantt("Timeline", [("GPU 0", "attn", "compute", 0.001, 0.003), ("GPU 1", "a2a", "comm", 0.002, 0.0025)]);
        using var json = JsonDocument.Parse(GenericChart.toJson(chart));
        var compute = json.RootElement.GetProperty("data")[0];
        Assert.Equal("h", compute.GetProperty("orientation").GetString());
        Assert.Equal(1.0, compute.GetProperty("base")[0].GetDouble(), 9);
        Assert.Equal(2.0, compute.GetProperty("x")[0].GetDouble(), 9);
        Assert.Equal("GPU 0", compute.GetProperty("y")[0].GetString());
        var layout = json.RootElement.GetProperty("layout");
        Assert.Equal("time (ms)", layout.GetProperty("xaxis").GetProperty("title").GetProperty("text").GetString());
        Assert.Equal(["GPU 1", "GPU 0"], layout.GetProperty("yaxis").GetProperty("categoryarray").EnumerateArray().Select(e => e.GetString()));
        Assert.Throws<ArgumentException>(() => Charts.Gantt("t", [("GPU 0", "x", "g", 2, 1)]));
        Assert.Throws<ArgumentException>(() => Charts.Gantt("t", []));
    }

    private sealed record Row(string Name, double Ms, long Bytes, int Gpus, bool Ok, double? Maybe, DayOfWeek Day);

    [Fact]
    public void Tables_From_maps_properties_to_typed_columns()
    {
        var frame = Tables.From([new Row("a", 1.5, 10, 2, true, null, DayOfWeek.Monday), new Row("b", 2.5, 20, 4, false, 3, DayOfWeek.Friday)]);
        Assert.Equal(["Name", "Ms", "Bytes", "Gpus", "Ok", "Maybe", "Day"], frame.Columns.Select(c => c.Name));
        Assert.IsType<StringDataFrameColumn>(frame.Columns["Name"]);
        Assert.IsType<DoubleDataFrameColumn>(frame.Columns["Ms"]);
        Assert.IsType<Int64DataFrameColumn>(frame.Columns["Bytes"]);
        Assert.IsType<Int32DataFrameColumn>(frame.Columns["Gpus"]);
        Assert.IsType<BooleanDataFrameColumn>(frame.Columns["Ok"]);
        Assert.Null(frame.Columns["Maybe"][0]);
        Assert.Equal(3.0, frame.Columns["Maybe"][1]);
        Assert.Equal("Friday", frame.Columns["Day"][1]);
        Assert.Equal(2L, frame.Rows.Count);
    }

    [Fact]
    public void Tables_From_reads_tuple_fields_and_FromRows_infers_types()
    {
        var tuples = Tables.From([(gpus: 8, ms: 1.5)]);
        Assert.Equal(["Item1", "Item2"], tuples.Columns.Select(c => c.Name));

        var frame = Tables.FromRows(["n", "x", "label", "flag"], [[1, 1.5, "a", true], [2L, 2, null, false]]);
        Assert.IsType<Int64DataFrameColumn>(frame.Columns["n"]);
        Assert.IsType<DoubleDataFrameColumn>(frame.Columns["x"]);
        Assert.IsType<StringDataFrameColumn>(frame.Columns["label"]);
        Assert.IsType<BooleanDataFrameColumn>(frame.Columns["flag"]);
        Assert.Throws<ArgumentException>(() => Tables.FromRows(["a", "b"], [[1]]));
    }
}

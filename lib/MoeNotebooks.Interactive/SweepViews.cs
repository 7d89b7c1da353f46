using System.Globalization;
using System.Runtime.CompilerServices;
using Microsoft.Data.Analysis;
using MoeNotebooks.Analysis;
using Plotly.NET;
using CSharpChart = Plotly.NET.CSharp.Chart;

namespace MoeNotebooks.Interactive;

/// <summary>
/// Charts and tables of <see cref="StrategyComparison"/> results: one line per strategy with crossovers marked,
/// grouped bars for categorical axes (GPU types), a ratio heatmap, and tables of rows and crossovers.
/// Every public entry installs <see cref="FSharpCoreBinding"/> before Plotly.NET code is compiled.
/// </summary>
public static class SweepViews
{
    /// <summary>Name of the extra marker trace that shows crossovers.</summary>
    public const string CrossoverTraceName = "crossover";

    /// <summary>
    /// One line per series over the rows' axis (valid points only, in axis order), plus a marker trace at each
    /// crossover. <paramref name="y"/> picks the plotted value (default: the total in seconds); rows where it is null
    /// are left out. The x-axis title is the axis' title with its unit.
    /// </summary>
    public static GenericChart Lines(
        string title,
        IEnumerable<ComparisonRow> rows,
        IEnumerable<Crossover>? crossovers = null,
        string yTitle = "total time (s)",
        Func<ComparisonRow, double?>? y = null,
        bool logX = false,
        bool logY = false)
    {
        FSharpCoreBinding.Install();
        ArgumentNullException.ThrowIfNull(rows);
        var list = rows.ToList();
        y ??= r => r.TotalSeconds;
        var points = list.Select(r => (r.Series, r.Value, Y: y(r))).Where(p => p.Y is { } v && double.IsFinite(v))
            .Select(p => (series: p.Series, x: p.Value, y: p.Y!.Value)).ToList();
        if (points.Count == 0) throw new ArgumentException("no valid points to draw (every row is invalid or has no value)", nameof(rows));
        var axes = list.Select(r => r.Axis).Distinct().ToArray();
        if (axes.Length != 1) throw new ArgumentException($"rows must share one axis; they have {string.Join(", ", axes)}", nameof(rows));
        return LinesCore(title, axes[0].Title(), yTitle, points, crossovers?.ToList() ?? [], logX, logY);
    }

    /// <summary>Grouped bars: one group per axis value (by label, e.g. GPU type), one bar per series (valid rows only).</summary>
    public static GenericChart Bars(string title, IEnumerable<ComparisonRow> rows, string yTitle = "total time (s)", Func<ComparisonRow, double?>? y = null)
    {
        FSharpCoreBinding.Install();
        ArgumentNullException.ThrowIfNull(rows);
        var list = rows.ToList();
        y ??= r => r.TotalSeconds;
        var bars = list.Select(r => (series: r.Series, label: r.ValueLabel, value: y(r))).Where(b => b.value is { } v && double.IsFinite(v))
            .Select(b => (b.series, b.label, value: b.value!.Value)).ToList();
        if (bars.Count == 0) throw new ArgumentException("no valid points to draw", nameof(rows));
        var axes = list.Select(r => r.Axis).Distinct().ToArray();
        if (axes.Length != 1) throw new ArgumentException($"rows must share one axis; they have {string.Join(", ", axes)}", nameof(rows));
        return BarsCore(title, axes[0].Title(), yTitle, bars);
    }

    /// <summary>
    /// The grid's ratio total(A) / total(B) as a heatmap on a diverging scale centred at 1 (below 1: A is faster);
    /// invalid cells stay empty and their hover text gives the reason.
    /// </summary>
    public static GenericChart RatioHeatmap(string title, ComparisonGrid grid)
    {
        FSharpCoreBinding.Install();
        ArgumentNullException.ThrowIfNull(grid);
        return RatioHeatmapCore(title, grid);
    }

    /// <summary>A table of rows: series, value, total, memory verdict, peak GB, the breakdown in seconds, and why a point is invalid.</summary>
    public static DataFrame Table(IEnumerable<ComparisonRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var list = rows.ToList();
        var keys = new[] { "matmul", "attention", "elementwise", "communication", "idle" };
        var columns = new List<string> { "series", list.FirstOrDefault()?.Axis.ToString() ?? "value", "total (s)", "fits in memory", "peak per GPU (GB)" };
        columns.AddRange(keys.Select(k => $"{k} (s)"));
        columns.Add("invalid because");
        return Tables.FromRows(columns, list.Select(r =>
        {
            var values = new List<object?> { r.Series, r.ValueLabel, r.TotalSeconds, r.MemoryFeasible, r.PeakBytesPerGpu / 1e9 };
            values.AddRange(keys.Select(k => r.BreakdownSeconds is { } b && b.TryGetValue(k, out var s) ? (object?)s : null));
            values.Add(r.Invalid);
            return (IReadOnlyList<object?>)values;
        }));
    }

    /// <summary>A table of crossovers: which pair, between which values, where (interpolated), and who is faster on each side.</summary>
    public static DataFrame CrossoverTable(IEnumerable<Crossover> crossovers)
    {
        ArgumentNullException.ThrowIfNull(crossovers);
        return Tables.FromRows(
            ["axis", "series A", "series B", "between", "at (interpolated)", "total there (s)", "faster below", "faster above"],
            crossovers.Select(c => (IReadOnlyList<object?>)
            [
                c.Axis.Title(), c.SeriesA, c.SeriesB, $"{c.LowerLabel} and {c.UpperLabel}", c.AtValue, c.AtSeconds, c.FasterBelow, c.FasterAbove,
            ]));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart LinesCore(
        string title, string xTitle, string yTitle,
        IReadOnlyList<(string series, double x, double y)> points, IReadOnlyList<Crossover> crossovers, bool logX, bool logY)
    {
        var traces = points
            .GroupBy(p => p.series)
            .Select(g =>
            {
                var ordered = g.OrderBy(p => p.x).ToArray();
                return CSharpChart.Line<double, double, string>(
                    x: ordered.Select(p => p.x).ToArray(),
                    y: ordered.Select(p => p.y).ToArray(),
                    ShowMarkers: true,
                    Name: g.Key,
                    ShowLegend: true);
            })
            .ToList();
        if (crossovers.Count > 0)
        {
            var marks = CSharpChart.Point<double, double, string>(
                x: crossovers.Select(c => c.AtValue).ToArray(),
                y: crossovers.Select(c => c.AtSeconds).ToArray(),
                Name: CrossoverTraceName,
                ShowLegend: true,
                MultiText: crossovers.Select(Describe).ToArray());
            foreach (var trace in GenericChart.getTraces(marks))
            {
                trace.SetProperty("marker", new Dictionary<string, object> { ["symbol"] = "x", ["size"] = 14, ["color"] = "black" });
                trace.SetProperty("hovertemplate", "%{text}<extra></extra>");
            }

            traces.Add(marks);
        }

        var chart = Decorate(traces.Count == 1 ? traces[0] : CSharpChart.Combine(traces), title, xTitle, yTitle, logX ? "log" : null, logY ? "log" : null);
        return chart;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart BarsCore(string title, string xTitle, string yTitle, IReadOnlyList<(string series, string label, double value)> bars)
    {
        var labels = bars.Select(b => b.label).Distinct().ToArray();
        var traces = bars
            .GroupBy(b => b.series)
            .Select(g =>
            {
                var byLabel = g.ToDictionary(b => b.label, b => b.value);
                var present = labels.Where(byLabel.ContainsKey).ToArray();
                return CSharpChart.Column<double, string, string>(
                    values: present.Select(l => byLabel[l]).ToArray(),
                    Keys: present,
                    Name: g.Key,
                    ShowLegend: true);
            })
            .ToArray();
        var chart = Decorate(traces.Length == 1 ? traces[0] : CSharpChart.Combine(traces), title, xTitle, yTitle, "category", null);
        GenericChart.getLayout(chart).SetProperty("barmode", "group");
        return chart;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart RatioHeatmapCore(string title, ComparisonGrid grid)
    {
        int rows = grid.YValues.Count, cols = grid.XValues.Count;
        var z = new object?[rows][];
        var text = new string[rows][];
        var finite = new List<double>();
        for (var r = 0; r < rows; r++)
        {
            z[r] = new object?[cols];
            text[r] = new string[cols];
            for (var c = 0; c < cols; c++)
            {
                var v = grid.Ratio[r, c];
                z[r][c] = double.IsFinite(v) ? v : null;
                if (double.IsFinite(v)) finite.Add(v);
                text[r][c] = double.IsFinite(v)
                    ? string.Create(CultureInfo.InvariantCulture, $"{grid.Numerator} / {grid.Denominator} = {v:0.###}")
                    : $"invalid: {grid.Invalid[r, c] ?? "no value"}";
            }
        }

        var zTitle = $"total ratio {grid.Numerator} / {grid.Denominator}";
        var chart = CSharpChart.Heatmap<double, string, string, string>(
            zData: Enumerable.Range(0, rows).Select(_ => new double[cols]).ToArray(),
            X: grid.XLabels.ToArray(),
            Y: grid.YLabels.ToArray(),
            Name: zTitle);
        // A diverging scale centred at 1 when the values straddle 1; a sequential one otherwise.
        var straddles = finite.Count > 0 && finite.Min() < 1 && finite.Max() > 1;
        foreach (var trace in GenericChart.getTraces(chart))
        {
            trace.SetProperty("z", z);
            trace.SetProperty("text", text);
            trace.SetProperty("hovertemplate", "%{x}, %{y}: %{text}<extra></extra>");
            trace.SetProperty("colorscale", straddles ? "RdBu" : "Viridis");
            trace.SetProperty("reversescale", straddles);
            if (straddles) trace.SetProperty("zmid", 1.0);
            trace.SetProperty("colorbar", new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = "ratio" } });
        }

        var decorated = Decorate(chart, title, grid.XAxis.Title(), grid.YAxis.Title(), "category", "category");
        // Annotate each cell with its value so the map reads without hovering.
        var annotations = new List<Dictionary<string, object>>();
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < cols; c++)
            {
                annotations.Add(new Dictionary<string, object>
                {
                    ["x"] = grid.XLabels[c],
                    ["y"] = grid.YLabels[r],
                    ["text"] = double.IsFinite(grid.Ratio[r, c]) ? grid.Ratio[r, c].ToString("0.00", CultureInfo.InvariantCulture) : "invalid",
                    ["showarrow"] = false,
                    ["font"] = new Dictionary<string, object> { ["size"] = 11 },
                });
            }
        }

        GenericChart.getLayout(decorated).SetProperty("annotations", annotations);
        GenericChart.getLayout(decorated).SetProperty("showlegend", false);
        return decorated;
    }

    private static string Describe(Crossover c) => string.Create(CultureInfo.InvariantCulture,
        $"{c.SeriesA} = {c.SeriesB} at {c.AtValue:G4} ({c.AtSeconds:G4} s): {c.FasterBelow} faster below, {c.FasterAbove} above");

    internal static GenericChart Decorate(GenericChart chart, string title, string xTitle, string yTitle, string? xType, string? yType)
    {
        var titled = Chart.withTitle(title, null).Invoke(chart);
        var layout = GenericChart.getLayout(titled);
        layout.SetProperty("xaxis", Axis(xTitle, xType));
        layout.SetProperty("yaxis", Axis(yTitle, yType));
        layout.SetProperty("showlegend", true);
        return titled;
    }

    private static Dictionary<string, object> Axis(string title, string? type)
    {
        var axis = new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = title } };
        if (type is not null) axis["type"] = type;
        return axis;
    }
}

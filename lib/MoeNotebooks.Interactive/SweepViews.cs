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

    private const int ChartWidthPixels = 960;
    private const int ChartHeightPixels = 520;
    private const string FasterColour = "#2166ac";
    private const string TieColour = "#f7f7f7";
    private const string SlowerColour = "#b2182b";

    /// <summary>
    /// One line per series over the rows' axis (valid points only, in axis order), plus a marker trace at each
    /// crossover. <paramref name="y"/> picks the plotted value (default: the total in seconds); rows where it is null
    /// are left out. The x-axis title is the axis' title with its unit. <paramref name="dash"/> may give a series a
    /// Plotly dash style ("dash", "dot", "dashdot") to tell families of series apart.
    /// </summary>
    public static GenericChart Lines(
        string title,
        IEnumerable<ComparisonRow> rows,
        IEnumerable<Crossover>? crossovers = null,
        string yTitle = "total time (s)",
        Func<ComparisonRow, double?>? y = null,
        bool logX = false,
        bool logY = false,
        Func<string, string?>? dash = null)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(rows);
        var list = rows.ToList();
        y ??= r => r.TotalSeconds;
        var points = list.Select(r => (r.Series, r.Value, Y: y(r))).Where(p => p.Y is { } v && double.IsFinite(v))
            .Select(p => (series: p.Series, x: p.Value, y: p.Y!.Value)).ToList();
        if (points.Count == 0) throw new ArgumentException("no valid points to draw (every row is invalid or has no value)", nameof(rows));
        var axes = list.Select(r => r.Axis).Distinct().ToArray();
        if (axes.Length != 1) throw new ArgumentException($"rows must share one axis; they have {string.Join(", ", axes)}", nameof(rows));
        return LinesCore(title, axes[0].Title(), yTitle, points, crossovers?.ToList() ?? [], logX, logY, dash ?? (_ => null));
    }

    /// <summary>Grouped bars: one group per axis value (by label, e.g. GPU type), one bar per series (valid rows only).</summary>
    public static GenericChart Bars(string title, IEnumerable<ComparisonRow> rows, string yTitle = "total time (s)", Func<ComparisonRow, double?>? y = null)
    {
        ChartDisplay.Install();
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
    /// The grid's ratio total(A) / total(B) as a heatmap, each cell labelled with its value: white is a tie (1), blue A faster, red B faster;
    /// invalid cells stay empty and their hover text gives the reason.
    /// </summary>
    public static GenericChart RatioHeatmap(string title, ComparisonGrid grid)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(grid);
        return RatioHeatmapCore(title, grid);
    }

    /// <summary>A table of rows: series, value, total, memory verdict, peak GB, the breakdown in seconds (rounded for display), and why a point is invalid.</summary>
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
            var values = new List<object?> { r.Series, r.ValueLabel, Round(r.TotalSeconds, 4), r.MemoryFeasible, Round(r.PeakBytesPerGpu / 1e9, 1) };
            values.AddRange(keys.Select(k => r.BreakdownSeconds is { } b && b.TryGetValue(k, out var s) ? (object?)Round(s, 4) : null));
            values.Add(r.Invalid);
            return (IReadOnlyList<object?>)values;
        }));
    }

    /// <summary>
    /// One row per axis value (e.g. GPU type), one column per pair: the faster series and by how much
    /// (e.g. "ep16 (corrected), 3.42x"); empty where either is invalid.
    /// </summary>
    public static DataFrame WinnerTable(IEnumerable<ComparisonRow> rows, IEnumerable<(string A, string B)> pairs)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(pairs);
        var list = rows.ToList();
        var pairList = pairs.ToList();
        var verdicts = pairList.Select(p => StrategyComparison.Winners(list, p.A, p.B).ToDictionary(w => w.ValueLabel)).ToList();
        var labels = list.Select(r => r.ValueLabel).Distinct().ToList();
        return Tables.FromRows(
            [list.FirstOrDefault()?.Axis.Title() ?? "value", .. pairList.Select(p => $"{p.A} vs {p.B}")],
            labels.Select(label => (IReadOnlyList<object?>)
            [
                label,
                .. verdicts.Select(v => v.TryGetValue(label, out var w)
                    ? string.Create(CultureInfo.InvariantCulture, $"{w.Faster}, {w.Ratio:0.00}x")
                    : null),
            ]));
    }

    /// <summary>The points that could not be built: series, axis, value and the reason.</summary>
    public static DataFrame InvalidTable(IEnumerable<ComparisonRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return Tables.FromRows(
            ["series", "axis", "value", "invalid because"],
            rows.Where(r => !r.IsValid).Select(r => (IReadOnlyList<object?>)[r.Series, r.Axis.Title(), r.ValueLabel, r.Invalid]));
    }

    /// <summary>A table of crossovers: which pair, between which values, where (interpolated), and who is faster on each side.</summary>
    public static DataFrame CrossoverTable(IEnumerable<Crossover> crossovers)
    {
        ArgumentNullException.ThrowIfNull(crossovers);
        return Tables.FromRows(
            ["axis", "series A", "series B", "between", "at (interpolated)", "total there (s)", "faster below", "faster above"],
            crossovers.Select(c => (IReadOnlyList<object?>)
            [
                c.Axis.Title(), c.SeriesA, c.SeriesB, $"{c.LowerLabel} and {c.UpperLabel}", Round(c.AtValue, 4), Round(c.AtSeconds, 4), c.FasterBelow, c.FasterAbove,
            ]));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart LinesCore(
        string title, string xTitle, string yTitle,
        IReadOnlyList<(string series, double x, double y)> points, IReadOnlyList<Crossover> crossovers, bool logX, bool logY, Func<string, string?> dash)
    {
        var traces = points
            .GroupBy(p => p.series)
            .Select(g =>
            {
                var ordered = g.OrderBy(p => p.x).ToArray();
                var line = CSharpChart.Line<double, double, string>(
                    x: ordered.Select(p => p.x).ToArray(),
                    y: ordered.Select(p => p.y).ToArray(),
                    ShowMarkers: true,
                    Name: g.Key,
                    ShowLegend: true);
                if (dash(g.Key) is { } style)
                {
                    foreach (var trace in GenericChart.getTraces(line)) trace.SetProperty("line", new Dictionary<string, object> { ["dash"] = style });
                }

                return line;
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
        var labels = new string[rows][];
        var hover = new string[rows][];
        var finite = new List<double>();
        for (var r = 0; r < rows; r++)
        {
            z[r] = new object?[cols];
            labels[r] = new string[cols];
            hover[r] = new string[cols];
            for (var c = 0; c < cols; c++)
            {
                var v = grid.Ratio[r, c];
                var valid = double.IsFinite(v);
                z[r][c] = valid ? v : null;
                if (valid) finite.Add(v);
                labels[r][c] = valid ? v.ToString("0.00", CultureInfo.InvariantCulture) : "invalid";
                hover[r][c] = valid
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
        // White is a tie (ratio 1), blue shades: A faster, red shades: B faster; the scale spans the data and 1.
        var zmin = Math.Min(1, finite.Count > 0 ? finite.Min() : 1);
        var zmax = Math.Max(1, finite.Count > 0 ? finite.Max() : 1);
        var tie = zmax > zmin ? (1 - zmin) / (zmax - zmin) : 0.5;
        var scale = new List<object[]>();
        if (tie > 0) scale.Add([0.0, FasterColour]);
        scale.Add([tie, TieColour]);
        if (tie < 1) scale.Add([1.0, SlowerColour]);
        foreach (var trace in GenericChart.getTraces(chart))
        {
            trace.SetProperty("z", z);
            trace.SetProperty("text", labels);
            trace.SetProperty("customdata", hover);
            trace.SetProperty("texttemplate", "%{text}");
            trace.SetProperty("hovertemplate", "%{x}, %{y}: %{customdata}<extra></extra>");
            trace.SetProperty("colorscale", scale.Count == 1 ? new List<object[]> { new object[] { 0.0, TieColour }, new object[] { 1.0, TieColour } } : scale);
            trace.SetProperty("zmin", zmin);
            trace.SetProperty("zmax", zmax);
            trace.SetProperty("colorbar", new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = "ratio" } });
        }

        var decorated = Decorate(chart, title, grid.XAxis.Title(), grid.YAxis.Title(), "category", "category");
        GenericChart.getLayout(decorated).SetProperty("showlegend", false);
        return decorated;
    }

    /// <summary>
    /// A sensitivity table: what each operation kind or link class saves when it gets faster, as seconds and as a
    /// percentage of <paramref name="totalSeconds"/>, largest saving first (rounded for display).
    /// </summary>
    public static DataFrame SensitivityTable(IEnumerable<SensitivityRow> rows, double totalSeconds)
    {
        ArgumentNullException.ThrowIfNull(rows);
        return Tables.FromRows(
            ["target", "scope", "operations", "on critical path (s)", "new total (s)", "saved (s)", "saved (% of total)"],
            rows.OrderByDescending(r => r.SavedSeconds).Select(r => (IReadOnlyList<object?>)
            [
                r.Target, r.Scope, r.Operations, Round(r.CriticalPathSeconds, 4), Round(r.NewTotalSeconds, 4), Round(r.SavedSeconds, 4),
                Round(r.SavedPercent(totalSeconds), 2),
            ]));
    }

    /// <summary>Tables show a few decimals, not seventeen digits.</summary>
    private static double? Round(double? value, int decimals) => value is { } v && double.IsFinite(v) ? Math.Round(v, decimals) : value;

    private static string Describe(Crossover c) => string.Create(CultureInfo.InvariantCulture,
        $"{c.SeriesA} = {c.SeriesB} at {c.AtValue:G4} ({c.AtSeconds:G4} s): {c.FasterBelow} faster below, {c.FasterAbove} above");

    internal static GenericChart Decorate(GenericChart chart, string title, string xTitle, string yTitle, string? xType, string? yType)
    {
        var titled = Chart.withTitle(Charts.EscapeHoverText(title), null).Invoke(chart);
        var layout = GenericChart.getLayout(titled);
        layout.SetProperty("xaxis", Axis(xTitle, xType));
        layout.SetProperty("yaxis", Axis(yTitle, yType));
        layout.SetProperty("showlegend", true);
        layout.SetProperty("width", ChartWidthPixels);
        layout.SetProperty("height", ChartHeightPixels);
        return titled;
    }

    private static Dictionary<string, object> Axis(string title, string? type)
    {
        var axis = new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = title } };
        if (type is not null) axis["type"] = type;
        return axis;
    }
}

using System.Runtime.CompilerServices;
using Plotly.NET;
using CSharpChart = Plotly.NET.CSharp.Chart;

namespace MoeNotebooks.Interactive;

/// <summary>
/// Generic Plotly.NET charts for the notebooks. Every public entry point installs <see cref="FSharpCoreBinding"/>
/// before any Plotly.NET code is JIT-compiled, so notebook authors never have to.
/// </summary>
public static class Charts
{
    /// <summary>One line per series; points are drawn in x order.</summary>
    public static GenericChart Line(string title, string xTitle, string yTitle, IEnumerable<(string series, double x, double y)> points)
    {
        ChartDisplay.Install();
        return LineCore(title, xTitle, yTitle, Materialize(points, nameof(points)));
    }

    /// <summary>
    /// A heatmap with <paramref name="xLabels"/> as columns and <paramref name="yLabels"/> as rows:
    /// <c>z[row, column]</c> is the value at (<c>xLabels[column]</c>, <c>yLabels[row]</c>).
    /// </summary>
    public static GenericChart Heatmap(
        string title, string xTitle, string yTitle, string zTitle,
        IReadOnlyList<string> xLabels, IReadOnlyList<string> yLabels, double[,] z)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(xLabels);
        ArgumentNullException.ThrowIfNull(yLabels);
        ArgumentNullException.ThrowIfNull(z);
        if (z.GetLength(0) != yLabels.Count || z.GetLength(1) != xLabels.Count)
        {
            throw new ArgumentException(
                $"z is {z.GetLength(0)}x{z.GetLength(1)} (rows x columns) but there are {yLabels.Count} y labels (rows) and {xLabels.Count} x labels (columns).",
                nameof(z));
        }

        return HeatmapCore(title, xTitle, yTitle, zTitle, xLabels, yLabels, z);
    }

    /// <summary>
    /// Vertical bars (one per distinct <c>bar</c>, in first-seen order), each stacked from its <c>category</c> parts
    /// (one legend entry and colour per category).
    /// </summary>
    public static GenericChart StackedBars(string title, string xTitle, string yTitle, IEnumerable<(string category, string bar, double value)> parts)
    {
        ChartDisplay.Install();
        return StackedBarsCore(title, xTitle, yTitle, Materialize(parts, nameof(parts)));
    }

    /// <summary>
    /// A timeline: one row per <c>lane</c> (e.g. a GPU), a horizontal bar from start to finish per task, coloured and
    /// grouped in the legend by <c>group</c> (e.g. compute / communication). Times are in seconds; the axis shows ms.
    /// </summary>
    public static GenericChart Gantt(string title, IEnumerable<(string lane, string label, string group, double startSeconds, double finishSeconds)> tasks)
    {
        ChartDisplay.Install();
        var list = Materialize(tasks, nameof(tasks));
        foreach (var task in list)
        {
            if (task.finishSeconds < task.startSeconds)
            {
                throw new ArgumentException($"Task '{task.label}' on lane '{task.lane}' finishes ({task.finishSeconds} s) before it starts ({task.startSeconds} s).", nameof(tasks));
            }
        }

        return GanttCore(title, list);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart LineCore(string title, string xTitle, string yTitle, IReadOnlyList<(string series, double x, double y)> points)
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
            .ToArray();
        return Decorate(Combine(traces), title, xTitle, yTitle);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart HeatmapCore(
        string title, string xTitle, string yTitle, string zTitle,
        IReadOnlyList<string> xLabels, IReadOnlyList<string> yLabels, double[,] z)
    {
        var rows = Enumerable.Range(0, z.GetLength(0))
            .Select(r => Enumerable.Range(0, z.GetLength(1)).Select(c => z[r, c]).ToArray())
            .ToArray();
        var chart = CSharpChart.Heatmap<double, string, string, string>(
            zData: rows,
            X: xLabels.ToArray(),
            Y: yLabels.ToArray(),
            Name: zTitle);
        foreach (var trace in GenericChart.getTraces(chart))
        {
            trace.SetProperty("colorbar", new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = zTitle } });
        }

        return Decorate(chart, title, xTitle, yTitle);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart StackedBarsCore(string title, string xTitle, string yTitle, IReadOnlyList<(string category, string bar, double value)> parts)
    {
        var bars = parts.Select(p => p.bar).Distinct().ToArray();
        var traces = parts
            .GroupBy(p => p.category)
            .Select(g =>
            {
                var byBar = g.GroupBy(p => p.bar).ToDictionary(b => b.Key, b => b.Sum(p => p.value));
                return CSharpChart.StackedColumn<double, string, string>(
                    values: bars.Select(b => byBar.GetValueOrDefault(b)).ToArray(),
                    Keys: bars,
                    Name: g.Key,
                    ShowLegend: true);
            })
            .ToArray();
        return Decorate(Combine(traces), title, xTitle, yTitle);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart GanttCore(string title, IReadOnlyList<(string lane, string label, string group, double startSeconds, double finishSeconds)> tasks)
    {
        const double MsPerSecond = 1000.0;
        var lanes = tasks.Select(t => t.lane).Distinct().ToArray();
        var traces = tasks
            .GroupBy(t => t.group)
            .Select(g =>
            {
                var items = g.ToArray();
                var chart = CSharpChart.Bar<double, string, string>(
                    values: items.Select(t => (t.finishSeconds - t.startSeconds) * MsPerSecond).ToArray(),
                    Keys: items.Select(t => t.lane).ToArray(),
                    Name: g.Key,
                    ShowLegend: true,
                    MultiText: items.Select(t => t.label).ToArray());
                // Plotly.NET's Bar only takes a scalar base; a timeline needs one start per bar.
                foreach (var trace in GenericChart.getTraces(chart))
                {
                    trace.SetProperty("base", items.Select(t => t.startSeconds * MsPerSecond).ToArray());
                    trace.SetProperty("textposition", "inside");
                    trace.SetProperty("insidetextanchor", "middle");
                    trace.SetProperty("hovertemplate", "%{text}<br>%{base:.3f} – %{x:.3f} ms<extra>" + EscapeHoverText(g.Key) + "</extra>");
                }

                return chart;
            })
            .ToArray();
        var combined = Decorate(Combine(traces), title, "time (ms)", "lane");
        var layout = GenericChart.getLayout(combined);
        layout.SetProperty("barmode", "overlay");
        // First lane at the top, like a timeline reads.
        layout.SetProperty("yaxis", new Dictionary<string, object>
        {
            ["title"] = new Dictionary<string, object> { ["text"] = "lane" },
            ["type"] = "category",
            ["categoryorder"] = "array",
            ["categoryarray"] = lanes.Reverse().ToArray(),
        });
        return combined;
    }

    private static GenericChart Combine(GenericChart[] charts) =>
        charts.Length == 1 ? charts[0] : Plotly.NET.CSharp.Chart.Combine(charts);

    private static GenericChart Decorate(GenericChart chart, string title, string xTitle, string yTitle)
    {
        // Titles are user text (scenario names): plotly.js reads them as its pseudo-HTML, so < and > are escaped for it;
        // the <script> context they are written into is handled by the JSON settings (FSharpCoreBinding.ScriptSafeJson).
        var titled = Chart.withTitle(EscapeHoverText(title), null).Invoke(chart);
        var layout = GenericChart.getLayout(titled);
        layout.SetProperty("xaxis", new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = EscapeHoverText(xTitle) } });
        layout.SetProperty("yaxis", new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = EscapeHoverText(yTitle) } });
        layout.SetProperty("showlegend", true);
        return titled;
    }

    /// <summary>Text for plotly.js's pseudo-HTML (titles, hover labels): &amp;, &lt; and &gt; as entities, so user text is shown, not parsed.</summary>
    internal static string EscapeHoverText(string text) => text.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal);

    private static IReadOnlyList<T> Materialize<T>(IEnumerable<T> items, string parameterName)
    {
        ArgumentNullException.ThrowIfNull(items, parameterName);
        var list = items.ToList();
        if (list.Count == 0)
        {
            throw new ArgumentException("At least one data point is needed to draw a chart.", parameterName);
        }

        return list;
    }
}

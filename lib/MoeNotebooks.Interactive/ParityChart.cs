using System.Runtime.CompilerServices;
using Plotly.NET;
using CSharpChart = Plotly.NET.CSharp.Chart;

namespace MoeNotebooks.Interactive;

/// <summary>Predicted against measured, one marker per case, with the y = x line; log axes for quantities spanning decades.</summary>
public static class ParityChart
{
    public static GenericChart Create(string title, string unit, IEnumerable<(string series, double measured, double predicted)> points, bool logAxes = true)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(points);
        var list = points.ToList();
        if (list.Count == 0) throw new ArgumentException("At least one data point is needed to draw a chart.", nameof(points));
        return CreateCore(title, unit, list, logAxes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart CreateCore(string title, string unit, List<(string series, double measured, double predicted)> points, bool logAxes)
    {
        var lo = points.Min(p => Math.Min(p.measured, p.predicted));
        var hi = points.Max(p => Math.Max(p.measured, p.predicted));
        var traces = points.GroupBy(p => p.series)
            .Select(g => CSharpChart.Point<double, double, string>(
                x: g.Select(p => p.measured).ToArray(), y: g.Select(p => p.predicted).ToArray(), Name: g.Key, ShowLegend: true))
            .Append(CSharpChart.Line<double, double, string>(x: [lo, hi], y: [lo, hi], Name: "y = x", ShowLegend: true))
            .ToArray();
        var chart = Chart.withTitle(Charts.EscapeHoverText(title), null).Invoke(Plotly.NET.CSharp.Chart.Combine(traces));
        var layout = GenericChart.getLayout(chart);
        var type = logAxes ? "log" : "linear";
        layout.SetProperty("xaxis", new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = $"measured ({unit})" }, ["type"] = type });
        layout.SetProperty("yaxis", new Dictionary<string, object> { ["title"] = new Dictionary<string, object> { ["text"] = $"predicted ({unit})" }, ["type"] = type });
        layout.SetProperty("showlegend", true);
        return chart;
    }
}

using System.Runtime.CompilerServices;
using Microsoft.Data.Analysis;
using MoeNotebooks.Analysis;
using Plotly.NET;
using CSharpChart = Plotly.NET.CSharp.Chart;

namespace MoeNotebooks.Interactive;

/// <summary>Charts and tables of <see cref="MemoryReport"/>s: per-GPU memory by component, per pipeline stage, against capacity.</summary>
public static class MemoryViews
{
    /// <summary>Bytes per gigabyte (10^9, as GPU capacities are quoted).</summary>
    public const double BytesPerGigabyte = 1e9;

    /// <summary>
    /// One stacked bar per (report, stage): weights, gradients, optimizer states, activations and all-to-all buffers
    /// of one GPU of that stage, in GB, with each report's capacity drawn as a dashed line over its bars.
    /// </summary>
    public static GenericChart StackedBars(string title, IEnumerable<(string label, MemoryReport report)> reports)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(reports);
        var list = reports.ToList();
        if (list.Count == 0) throw new ArgumentException("At least one memory report is needed.", nameof(reports));
        return StackedBarsCore(title, list);
    }

    /// <summary>Bar label of a stage: the report's label, with the stage when there are several.</summary>
    public static string BarLabel(string label, MemoryReport report, StageMemory stage) =>
        report.Stages.Count == 1 ? label : $"{label}, stage {stage.Stage}";

    /// <summary>One row per (report, stage): components, total and capacity in GB (one decimal), microbatches in flight, and the verdict.</summary>
    public static DataFrame Table(IEnumerable<(string label, MemoryReport report)> reports)
    {
        ArgumentNullException.ThrowIfNull(reports);
        return Tables.FromRows(
            ["scenario", "stage", "weights (GB)", "gradients (GB)", "optimizer (GB)", "activations (GB)", "all-to-all buffers (GB)", "total (GB)", "capacity (GB)", "microbatches in flight", "fits"],
            reports.SelectMany(x => x.report.Stages.Select(s => (IReadOnlyList<object?>)
            [
                x.label, s.Stage, Gb(s.WeightsBytes), Gb(s.GradientsBytes), Gb(s.OptimizerBytes),
                Gb(s.ActivationsBytes), Gb(s.AllToAllBufferBytes), Gb(s.TotalBytes),
                Gb(x.report.CapacityBytes), s.MicrobatchesInFlight, s.TotalBytes <= x.report.CapacityBytes,
            ])));
    }

    /// <summary>GB with one decimal, for tables.</summary>
    private static double Gb(double bytes) => Math.Round(bytes / BytesPerGigabyte, 1);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart StackedBarsCore(string title, IReadOnlyList<(string label, MemoryReport report)> reports)
    {
        var bars = reports.SelectMany(x => x.report.Stages.Select(s => (bar: BarLabel(x.label, x.report, s), stage: s))).ToList();
        var labels = bars.Select(b => b.bar).ToArray();
        var components = bars[0].stage.Components.Select(c => c.Component).ToArray();
        var traces = components
            .Select((component, i) => CSharpChart.StackedColumn<double, string, string>(
                values: bars.Select(b => b.stage.Components[i].Bytes / BytesPerGigabyte).ToArray(),
                Keys: labels,
                Name: component,
                ShowLegend: true))
            .ToList();
        foreach (var group in reports.SelectMany(x => x.report.Stages.Select(s => (bar: BarLabel(x.label, x.report, s), capacity: x.report.CapacityBytes)))
                     .GroupBy(b => b.capacity))
        {
            var line = CSharpChart.Line<string, double, string>(
                x: group.Select(g => g.bar).ToArray(),
                y: group.Select(g => g.capacity / BytesPerGigabyte).ToArray(),
                Name: $"capacity ({group.Key / BytesPerGigabyte:0} GB)",
                ShowLegend: true);
            foreach (var trace in GenericChart.getTraces(line))
            {
                trace.SetProperty("line", new Dictionary<string, object> { ["dash"] = "dash", ["color"] = "black", ["width"] = 2 });
                trace.SetProperty("mode", "lines+markers");
            }

            traces.Add(line);
        }

        var chart = SweepViews.Decorate(CSharpChart.Combine(traces), title, "scenario and pipeline stage (one GPU)", "memory per GPU (GB)", "category", null);
        GenericChart.getLayout(chart).SetProperty("barmode", "stack");
        return chart;
    }
}

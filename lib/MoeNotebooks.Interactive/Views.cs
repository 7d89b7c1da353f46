using System.Globalization;
using System.Runtime.CompilerServices;
using Microsoft.Data.Analysis;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using Plotly.NET;

namespace MoeNotebooks.Interactive;

/// <summary>How <see cref="Views.Timeline"/> colours its bars.</summary>
public enum TimelineColour
{
    /// <summary>matmul / attention / elementwise / communication.</summary>
    Category,

    /// <summary>One colour per operation kind (Q projection, all-to-all dispatch, ...).</summary>
    Kind,
}

/// <summary>Which of the founding document's four "Key Insights" a <see cref="Views.Insight"/> table measures.</summary>
public enum Insight
{
    MatrixSizes,
    Granularity,
    Communication,
    LoadDistribution,
}

/// <summary>One bar of a timeline lane: possibly several consecutive operations merged to keep charts small.</summary>
public sealed record TimelineBar(string Lane, string Label, string Group, double StartSeconds, double FinishSeconds, int Operations);

/// <summary>
/// Core-typed notebook views: an <see cref="Evaluation"/> (or several) in, a chart or a DataFrame out, so a notebook
/// cell is one call. Every number comes from the core library; nothing here derives a shape or a time.
/// </summary>
public static class Views
{
    /// <summary>Fixed colours per category so every chart of a report reads the same way.</summary>
    private static readonly IReadOnlyDictionary<string, string> CategoryColours = new Dictionary<string, string>
    {
        ["matmul"] = "#1f77b4",
        ["attention"] = "#ff7f0e",
        ["elementwise"] = "#2ca02c",
        ["communication"] = "#d62728",
        ["idle"] = "#c7c7c7",
    };

    private static readonly string[] Palette =
    [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
        "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363",
    ];

    private static readonly string[] BreakdownOrder = ["matmul", "attention", "elementwise", "communication", "idle"];

    private const double Ms = 1000.0;

    private const int ChartWidthPixels = 960;

    /// <summary>
    /// Loads a scenario file and applies a notebook's parameters: <paramref name="gpuPreset"/> (a hardware catalog
    /// name, same GPU count) and <paramref name="costModel"/> ("roofline-ideal", or an efficiency table name such
    /// as "typical-hopper" for roofline with efficiencies). Null keeps the file's choice.
    /// </summary>
    public static Scenario Load(string scenarioFile, string? gpuPreset = null, string? costModel = null)
    {
        var scenario = Scenario.Load(scenarioFile);
        if (gpuPreset is not null) scenario = scenario.OnHardware(gpuPreset);
        if (costModel is not null) scenario = scenario.WithCostModel(costModel);
        return scenario.Validated(scenarioFile);
    }

    // ---------------------------------------------------------------- charts

    /// <summary>
    /// Per-GPU Gantt chart of a schedule: for each of the first <paramref name="maxGpus"/> GPUs one compute lane and
    /// (when the DAG communicates) one communication lane. Consecutive operations of the same colour on a lane are
    /// merged, and, for big DAGs, nearby ones too, so that no lane has more than <paramref name="maxBarsPerLane"/>
    /// bars (the hover text says how many operations a bar holds); the report stays small whatever the DAG size.
    /// </summary>
    public static GenericChart Timeline(Evaluation evaluation, int maxGpus = 16, string? title = null, int maxBarsPerLane = 150, TimelineColour colour = TimelineColour.Category)
    {
        ChartDisplay.Install();
        var bars = TimelineBars(evaluation, maxGpus, maxBarsPerLane, colour);
        title ??= string.Create(CultureInfo.InvariantCulture,
            $"{evaluation.Scenario.Name}: per-GPU timeline, total {evaluation.TotalSeconds:0.###} s");
        return TimelineCore(title, bars, colour);
    }

    /// <summary>The bars <see cref="Timeline"/> draws (lanes in GPU order; compute lane before communication lane).</summary>
    public static IReadOnlyList<TimelineBar> TimelineBars(Evaluation evaluation, int maxGpus = 16, int maxBarsPerLane = 150, TimelineColour colour = TimelineColour.Category)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxGpus, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBarsPerLane, 1);
        var dag = evaluation.Dag;
        var gpus = Math.Min(maxGpus, dag.GpuCount);
        var communicates = Enumerable.Range(0, dag.Count).Any(op => dag.Category(op) == OpCategory.Communication);
        var lanes = new List<(string Name, List<TimelineBar> Ops)>();
        var laneIndex = new Dictionary<(int Gpu, bool Comm), int>();
        for (var g = 0; g < gpus; g++)
        {
            laneIndex[(g, false)] = lanes.Count;
            lanes.Add(($"GPU {g} compute", []));
            if (communicates)
            {
                laneIndex[(g, true)] = lanes.Count;
                lanes.Add(($"GPU {g} comm", []));
            }
        }

        foreach (var op in evaluation.Result.Timeline())
        {
            if (op.Gpu >= gpus || op.FinishSeconds <= op.StartSeconds) continue;
            var comm = op.Category == OpCategory.Communication;
            var lane = lanes[laneIndex[(op.Gpu, comm)]];
            var group = colour == TimelineColour.Category ? CriticalPathResult.Key(op.Category) : KindLabel(dag, op.Op);
            lane.Ops.Add(new TimelineBar(lane.Name, ShortName(op.Name), group, op.StartSeconds, op.FinishSeconds, 1));
        }

        var span = evaluation.TotalSeconds;
        return lanes.SelectMany(l => Merge(l.Ops, maxBarsPerLane, span)).ToArray();
    }

    /// <summary>Stacked bars per scenario of <see cref="CriticalPathResult.BreakdownSeconds"/> (mean per GPU; each bar sums to the total).</summary>
    public static GenericChart Breakdown(IEnumerable<Evaluation> evaluations, string? title = null)
    {
        ChartDisplay.Install();
        var list = Materialize(evaluations);
        var parts = BreakdownOrder.SelectMany(c => list.Select(e => (c, e.Scenario.Name, e.Result.BreakdownSeconds.GetValueOrDefault(c)))).ToList();
        return Wide(ColourByName(Charts.StackedBars(title ?? "Where each GPU's time goes (mean over GPUs)", "scenario", "time (s)", parts), parts.Select(p => p.c)));
    }

    /// <summary>Stacked bars per scenario of the critical path's seconds by category (each bar sums to the total).</summary>
    public static GenericChart CriticalPathBreakdown(IEnumerable<Evaluation> evaluations, string? title = null)
    {
        ChartDisplay.Install();
        var list = Materialize(evaluations);
        var parts = BreakdownOrder.Take(4).SelectMany(c => list.Select(e => (c, e.Scenario.Name, e.Result.CriticalPathSecondsByCategory.GetValueOrDefault(c)))).ToList();
        return Wide(ColourByName(Charts.StackedBars(title ?? "Critical path by category", "scenario", "time on the critical path (s)", parts), parts.Select(p => p.c)));
    }

    /// <summary>Stacked bars per GPU: matmul, attention, elementwise, exposed communication and idle seconds (each bar sums to the total).</summary>
    public static GenericChart PerGpu(Evaluation evaluation, string? title = null)
    {
        ChartDisplay.Install();
        ArgumentNullException.ThrowIfNull(evaluation);
        var parts = new List<(string category, string bar, double value)>();
        foreach (var (category, pick) in new (string, Func<GpuUsage, double>)[]
                 {
                     ("matmul", g => g.MatmulSeconds), ("attention", g => g.AttentionSeconds), ("elementwise", g => g.ElementwiseSeconds),
                     ("communication", g => g.CommunicationSeconds), ("idle", g => g.IdleSeconds),
                 })
        {
            parts.AddRange(evaluation.Result.PerGpu.Select(g => (category, $"GPU {g.Gpu}", pick(g))));
        }

        return Wide(ColourByName(
            Charts.StackedBars(title ?? $"{evaluation.Scenario.Name}: time per GPU", "GPU", "time (s)", parts),
            parts.Select(p => p.category)));
    }

    /// <summary>Bars of total seconds per scenario, grouped by derivation (one legend entry per derivation).</summary>
    public static GenericChart Totals(IEnumerable<Evaluation> evaluations, string? title = null)
    {
        ChartDisplay.Install();
        var list = Materialize(evaluations);
        var parts = list.Select(e => (e.Scenario.Strategy.Derivation.ToString() + " derivation", StrategyName(e.Scenario.Strategy), e.TotalSeconds)).ToList();
        var chart = Charts.StackedBars(title ?? "Total runtime per strategy", "strategy", "total runtime (s)", parts);
        GenericChart.getLayout(chart).SetProperty("barmode", "group");
        return Wide(chart);
    }

    // ---------------------------------------------------------------- tables

    /// <summary>Every matmul of one layer on one GPU (forward), identical ones folded: shape, FLOPs, bytes, Get_Time.</summary>
    public static DataFrame Operations(Evaluation evaluation, int gpu = 0, int layer = 0, int microbatch = 0)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        var rows = OperationTable.LayerMatmuls(evaluation.Dag, evaluation.Cost, gpu, layer, microbatch);
        if (rows.Count == 0)
        {
            throw new ArgumentException($"GPU {gpu} has no matmul in layer {layer}, microbatch {microbatch} of {evaluation.Scenario.Name}.", nameof(gpu));
        }

        var layerSeconds = rows.Sum(r => r.TotalSeconds);
        return Tables.FromRows(
            ["operation", "count", "[m x k] x [k x n]", "Get_Time", "TFLOP each", "GB each", "ms each", "total ms", "share of layer (%)"],
            rows.Select(r => (IReadOnlyList<object?>)
            [
                r.Operation, r.Count, r.Shape, new MatmulShape(r.M, r.K, r.N, r.Batch).ToString(),
                Round(r.FlopsEach / 1e12, 3), Round(r.BytesEach / 1e9, 3), Round(r.SecondsEach * Ms, 3), Round(r.TotalSeconds * Ms, 3),
                Round(100 * r.TotalSeconds / layerSeconds, 2),
            ]));
    }

    /// <summary>The layer's other operations on one GPU (communication and elementwise), with bytes and priced time.</summary>
    public static DataFrame OtherOperations(Evaluation evaluation, int gpu = 0, int layer = 0, int microbatch = 0)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        var rows = OperationTable.LayerOthers(evaluation.Dag, evaluation.Cost, gpu, layer, microbatch);
        return Tables.FromRows(
            ["operation", "count", "MB each (per GPU)", "ms each", "total ms"],
            rows.Select(r => (IReadOnlyList<object?>)[r.Operation, r.Count, Round(r.BytesEach / 1e6, 3), Round(r.SecondsEach * Ms, 4), Round(r.Count * r.SecondsEach * Ms, 3)]));
    }

    /// <summary>
    /// The critical path, first to last, consecutive operations of the same kind in the same layer folded into one
    /// row (attention heads, which alternate score and value products, into one row): layer, operation, count of
    /// operations, GPUs, start and time spent.
    /// </summary>
    public static DataFrame CriticalPath(Evaluation evaluation)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        var dag = evaluation.Dag;
        var rows = new List<(int Layer, int Microbatch, string Phase, string Operation, int Count, SortedSet<int> Gpus, double Start, double Seconds)>();
        foreach (var op in evaluation.Result.CriticalPath)
        {
            var seconds = op.DurationSeconds;
            if (seconds <= 0) continue;
            // Heads alternate Q x K^T and Attention x V on the path; one row holds all of a layer's heads.
            var name = op.Category == OpCategory.Attention ? "Q x K^T + Attention x V (per head)" : KindLabel(dag, op.Op);
            var phase = dag.Phase(op.Op).ToString();
            if (rows.Count > 0 && rows[^1] is var last && last.Layer == op.Layer && last.Microbatch == op.Microbatch && last.Operation == name && last.Phase == phase)
            {
                foreach (var g in dag.Participants(op.Op)) last.Gpus.Add(g);
                rows[^1] = last with { Count = last.Count + 1, Seconds = last.Seconds + seconds };
                continue;
            }

            var gpus = new SortedSet<int>();
            foreach (var g in dag.Participants(op.Op)) gpus.Add(g);
            rows.Add((op.Layer, op.Microbatch, phase, name, 1, gpus, op.StartSeconds, seconds));
        }

        var total = evaluation.TotalSeconds;
        return Tables.FromRows(
            ["step", "layer", "microbatch", "phase", "operation", "count", "GPUs", "start (ms)", "time (ms)", "share of total (%)"],
            rows.Select((r, i) => (IReadOnlyList<object?>)
            [
                i + 1, r.Layer < 0 ? "-" : r.Layer.ToString(CultureInfo.InvariantCulture), r.Microbatch, r.Phase, r.Operation, r.Count, Gpus(r.Gpus),
                Round(r.Start * Ms, 3), Round(r.Seconds * Ms, 3), Round(100 * r.Seconds / total, 2),
            ]));
    }

    /// <summary>
    /// The document's formula and the library's term for term: every leaf term with its total count in each
    /// (see <see cref="SeedDocument.CompareTerms"/>) and the library's Get_Time seconds for it.
    /// </summary>
    public static DataFrame Formula(Evaluation evaluation, string documentFormula)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        ArgumentNullException.ThrowIfNull(documentFormula);
        var library = evaluation.Formula.ToString();
        var seconds = evaluation.Formula.MatmulTerms.ToDictionary(
            t => SeedDocument.Normalize(new MatmulShape(t.M, t.K, t.N, t.Batch).ToString()),
            t => evaluation.Cost.Compute.MatmulSeconds(new MatmulShape(t.M, t.K, t.N, t.Batch), evaluation.Dag.Dtype, evaluation.Dag.ElementBytes));
        foreach (var t in evaluation.Formula.OtherTerms) seconds.TryAdd(t.Name, t.Seconds);
        return Tables.FromRows(
            ["term", "founding document (count)", "library (count)", "equal", "seconds each (library)"],
            SeedDocument.CompareTerms(documentFormula, library).Select(c => (IReadOnlyList<object?>)
                [c.Term, c.DocumentCount, c.LibraryCount, c.Equal, seconds.TryGetValue(c.Term, out var s) ? Round(s, 6) : null]));
    }

    /// <summary>The founding document's formula and the library's side by side, one row each, whitespace normalised.</summary>
    public static DataFrame FormulaSideBySide(Evaluation evaluation, string? documentFormula)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        var rows = new List<IReadOnlyList<object?>>();
        rows.Add(["founding document", documentFormula is null ? "(document not found)" : Spaced(documentFormula)]);
        rows.Add(["library (derived from the critical path)", Spaced(evaluation.Formula.ToString())]);
        return Tables.FromRows(["source", "formula"], rows);
    }

    /// <summary>
    /// The seed's and the corrected (Megatron) derivation's forward matmuls of one layer on GPU 0, per operation:
    /// shapes, FLOPs and Get_Time each implies, and the FLOPs ratio.
    /// </summary>
    public static DataFrame Derivations(Scenario scenario)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        return Tables.FromRows(
            ["operation", "seed shapes", "seed TFLOP", "seed ms", "corrected shapes", "corrected TFLOP", "corrected ms", "corrected / seed FLOPs"],
            OperationTable.CompareDerivations(scenario).Select(d => (IReadOnlyList<object?>)
            [
                d.Operation, Dash(d.SeedShapes), Round(d.SeedFlops / 1e12, 2), Round(d.SeedSeconds * Ms, 1),
                Dash(d.CorrectedShapes), Round(d.CorrectedFlops / 1e12, 2), Round(d.CorrectedSeconds * Ms, 1), d.FlopsRatio is { } r ? Round(r, 4) : null,
            ]));
    }

    /// <summary>One row per scenario: strategy, derivation, total and the mean-per-GPU breakdown.</summary>
    public static DataFrame Summary(IEnumerable<Evaluation> evaluations)
    {
        var list = Materialize(evaluations);
        return Tables.FromRows(
            ["scenario", "strategy", "derivation", "total (s)", "matmul (s)", "attention (s)", "elementwise (s)", "communication (s)", "idle (s)", "operations", "critical ops"],
            list.Select(e => (IReadOnlyList<object?>)
            [
                e.Scenario.Name, StrategyName(e.Scenario.Strategy), e.Scenario.Strategy.Derivation.ToString(), Round(e.TotalSeconds, 3),
                .. BreakdownOrder.Select(c => (object?)Round(e.Result.BreakdownSeconds.GetValueOrDefault(c), 3)),
                e.Dag.Count, e.Result.CriticalOps.Count,
            ]));
    }

    /// <summary>One of the founding document's four key insights, measured on each scenario (see <see cref="StrategyProfile"/>).</summary>
    public static DataFrame Insight(IEnumerable<Evaluation> evaluations, Insight insight)
    {
        var profiles = Materialize(evaluations).Select(StrategyProfile.Of).ToList();
        IReadOnlyList<string> columns = insight switch
        {
            Interactive.Insight.MatrixSizes => ["scenario", "strategy", "Q projection per GPU", "largest matmul per GPU", "largest is", "matmul TFLOP per layer on GPU 0"],
            Interactive.Insight.Granularity => ["scenario", "strategy", "operations in DAG", "matmuls per layer on GPU 0", "mean matmul (ms)", "critical path operations"],
            Interactive.Insight.Communication => ["scenario", "strategy", "communication ops", "GB sent per GPU", "communication on critical path (s)", "exposed communication per GPU (s)", "share of total (%)"],
            Interactive.Insight.LoadDistribution => ["scenario", "strategy", "max compute per GPU (s)", "mean compute per GPU (s)", "min compute per GPU (s)", "busiest / mean", "expert tokens busiest / mean", "idle share (%)"],
            _ => throw new ArgumentOutOfRangeException(nameof(insight), insight, "Unknown insight."),
        };
        return Tables.FromRows(columns, profiles.Select(p => insight switch
        {
            Interactive.Insight.MatrixSizes => (IReadOnlyList<object?>)[p.Scenario, p.Strategy, p.QProjectionShape, p.LargestMatmulShape, p.LargestMatmulOperation, Round(p.MatmulFlopsPerLayerOnGpu0 / 1e12, 1)],
            Interactive.Insight.Granularity => [p.Scenario, p.Strategy, p.Operations, p.MatmulOperationsPerLayerOnGpu0, Round(p.MeanMatmulSeconds * Ms, 3), p.CriticalPathOperations],
            Interactive.Insight.Communication => [p.Scenario, p.Strategy, p.CommunicationOperations, Round(p.CommunicationBytesPerGpu / 1e9, 2), Round(p.CommunicationSecondsOnCriticalPath, 3), Round(p.ExposedCommunicationSecondsPerGpu, 3), Round(100 * p.CommunicationSecondsOnCriticalPath / p.TotalSeconds, 1)],
            _ => [p.Scenario, p.Strategy, Round(p.MaxComputeSecondsPerGpu, 3), Round(p.MeanComputeSecondsPerGpu, 3), Round(p.MinComputeSecondsPerGpu, 3), Round(p.ComputeImbalance, 3), Round(p.ExpertTokenImbalance, 3), Round(100 * p.IdleShare, 1)],
        }));
    }

    /// <summary>"X is faster: a s vs b s (r x)" for two evaluations of the same model, in plain words.</summary>
    public static string Winner(Evaluation first, Evaluation second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        var (fast, slow) = first.TotalSeconds <= second.TotalSeconds ? (first, second) : (second, first);
        return string.Create(CultureInfo.InvariantCulture,
            $"{StrategyName(fast.Scenario.Strategy)} ({fast.Scenario.Name}) is faster: {fast.TotalSeconds:0.00} s vs {slow.TotalSeconds:0.00} s for {StrategyName(slow.Scenario.Strategy)} ({slow.Scenario.Name}), {slow.TotalSeconds / fast.TotalSeconds:0.00}x.");
    }

    /// <summary>"EP=16", "TP=8 x PP=2": the parallel degrees above 1.</summary>
    public static string StrategyName(StrategySpec strategy)
    {
        ArgumentNullException.ThrowIfNull(strategy);
        var parts = new List<string>();
        if (strategy.EP > 1) parts.Add($"EP={strategy.EP}");
        if (strategy.TP > 1) parts.Add($"TP={strategy.TP}");
        if (strategy.PP > 1) parts.Add($"PP={strategy.PP}");
        if (strategy.DP > 1) parts.Add($"DP={strategy.DP}");
        return parts.Count == 0 ? "1 GPU" : string.Join(" x ", parts);
    }

    // ---------------------------------------------------------------- helpers

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static GenericChart TimelineCore(string title, IReadOnlyList<TimelineBar> bars, TimelineColour colour)
    {
        if (bars.Count == 0) throw new ArgumentException("The schedule has no operation with a duration to draw.", nameof(bars));
        // Traces (legend entries) in a fixed category order; the lane order is set explicitly below.
        var groups = bars.Select(b => b.Group).Distinct()
            .OrderBy(g => Array.IndexOf(BreakdownOrder, g) is var i && i >= 0 ? i : BreakdownOrder.Length)
            .ThenBy(g => g, StringComparer.Ordinal).ToList();
        var ordered = bars.OrderBy(b => groups.IndexOf(b.Group));
        var chart = Charts.Gantt(title, ordered.Select(b => (b.Lane, b.Label, b.Group, b.StartSeconds, b.FinishSeconds)));
        var traces = GenericChart.getTraces(chart).ToList();
        for (var i = 0; i < traces.Count && i < groups.Count; i++)
        {
            var colourOf = colour == TimelineColour.Category ? CategoryColours.GetValueOrDefault(groups[i], Palette[i % Palette.Length]) : Palette[i % Palette.Length];
            traces[i].SetProperty("marker", new Dictionary<string, object> { ["color"] = colourOf, ["line"] = new Dictionary<string, object> { ["width"] = 0 } });
            // Labels only on hover: text drawn inside thousands of thin bars is unreadable.
            traces[i].SetProperty("textposition", "none");
        }

        var lanes = bars.Select(b => b.Lane).Distinct().Count();
        var layout = GenericChart.getLayout(chart);
        layout.SetProperty("height", Math.Max(320, 110 + (lanes * 20)));
        layout.SetProperty("bargap", 0.15);
        layout.SetProperty("hovermode", "closest");
        var yaxis = new Dictionary<string, object>
        {
            ["title"] = new Dictionary<string, object> { ["text"] = "GPU and stream" },
            ["type"] = "category",
            ["categoryorder"] = "array",
            ["categoryarray"] = bars.Select(b => b.Lane).Distinct().Reverse().ToArray(),
            ["automargin"] = true,
        };
        layout.SetProperty("yaxis", yaxis);
        return Wide(chart);
    }

    /// <summary>Report-width charts (Plotly.NET's default is a narrow fixed size).</summary>
    private static GenericChart Wide(GenericChart chart)
    {
        GenericChart.getLayout(chart).SetProperty("width", ChartWidthPixels);
        return chart;
    }

    private static GenericChart ColourByName(GenericChart chart, IEnumerable<string> categoriesInOrder)
    {
        var names = categoriesInOrder.Distinct().ToList();
        var traces = GenericChart.getTraces(chart).ToList();
        for (var i = 0; i < traces.Count && i < names.Count; i++)
        {
            if (CategoryColours.TryGetValue(names[i], out var c)) traces[i].SetProperty("marker", new Dictionary<string, object> { ["color"] = c });
        }

        return chart;
    }

    /// <summary>
    /// Merges a lane's operations: first consecutive ones of the same group that touch; while the lane still has
    /// more than <paramref name="cap"/> bars, ones of the same group closer than a growing gap; finally any
    /// neighbours closer than span / cap (coloured by the group holding most of the merged time).
    /// </summary>
    internal static IReadOnlyList<TimelineBar> Merge(List<TimelineBar> ops, int cap, double span)
    {
        if (ops.Count == 0) return ops;
        ops.Sort((a, b) => a.StartSeconds.CompareTo(b.StartSeconds));
        var touch = span * 1e-9;
        var merged = MergePass(ops, touch, sameGroup: true);
        for (var gap = span / (cap * 64.0); merged.Count > cap && gap <= span / cap; gap *= 2) merged = MergePass(merged, gap, sameGroup: true);
        if (merged.Count > cap) merged = MergePass(merged, span / cap, sameGroup: false);
        return merged;
    }

    private static List<TimelineBar> MergePass(IReadOnlyList<TimelineBar> bars, double gap, bool sameGroup)
    {
        var result = new List<TimelineBar>(bars.Count);
        var busy = new Dictionary<string, double>();
        TimelineBar? current = null;
        string? firstLabel = null, lastLabel = null;
        foreach (var bar in bars)
        {
            if (current is not null && bar.StartSeconds - current.FinishSeconds <= gap && (!sameGroup || bar.Group == current.Group))
            {
                busy[bar.Group] = busy.GetValueOrDefault(bar.Group) + (bar.FinishSeconds - bar.StartSeconds);
                lastLabel = bar.Label;
                current = current with
                {
                    FinishSeconds = Math.Max(current.FinishSeconds, bar.FinishSeconds),
                    Operations = current.Operations + bar.Operations,
                };
                continue;
            }

            if (current is not null) result.Add(Close(current, busy, firstLabel!, lastLabel!));
            current = bar;
            firstLabel = lastLabel = bar.Label;
            busy.Clear();
            busy[bar.Group] = bar.FinishSeconds - bar.StartSeconds;
        }

        result.Add(Close(current!, busy, firstLabel!, lastLabel!));
        return result;
    }

    private static TimelineBar Close(TimelineBar bar, Dictionary<string, double> busy, string first, string last)
    {
        if (bar.Operations == 1) return bar;
        var group = busy.MaxBy(kv => kv.Value).Key;
        var range = first == last ? first : $"{Strip(first)} … {Strip(last)}";
        var mix = busy.Count == 1 ? "" : " (" + string.Join(", ", busy.OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value / busy.Values.Sum():P0}")) + ")";
        return bar with { Group = group, Label = $"{bar.Operations} ops: {range}{mix}" };

        static string Strip(string label) => label.Contains(" ops: ", StringComparison.Ordinal) ? label[(label.IndexOf(" ops: ", StringComparison.Ordinal) + 6)..] : label;
    }

    private static string KindLabel(OperatorDag dag, int op) =>
        dag.Kind(op) == OpKind.Elementwise ? OpKindExtensions.ElementwiseRole(dag.Index(op)) : dag.Kind(op).Label();

    /// <summary>Operation name without the "@gpu.." placement (the lane says where).</summary>
    private static string ShortName(string name)
    {
        var at = name.IndexOf('@', StringComparison.Ordinal);
        return at > 0 ? name[..at] : name;
    }

    private static string Gpus(SortedSet<int> gpus)
    {
        if (gpus.Count == 0) return "-";
        var contiguous = gpus.Max - gpus.Min + 1 == gpus.Count;
        return gpus.Count == 1 ? gpus.Min.ToString(CultureInfo.InvariantCulture)
            : contiguous ? $"{gpus.Min}-{gpus.Max}" : string.Join(",", gpus);
    }

    private static string Spaced(string formula) => string.Join(" ", formula.Split((char[])['\n', '\r', ' ', '\t'], StringSplitOptions.RemoveEmptyEntries));

    private static string Dash(string s) => s.Length == 0 ? "-" : s;

    private static double Round(double value, int digits) => Math.Round(value, digits, MidpointRounding.AwayFromZero);

    private static IReadOnlyList<Evaluation> Materialize(IEnumerable<Evaluation> evaluations)
    {
        ArgumentNullException.ThrowIfNull(evaluations);
        var list = evaluations.ToList();
        if (list.Count == 0) throw new ArgumentException("At least one evaluation is needed.", nameof(evaluations));
        return list;
    }
}

using System.Globalization;
using MoeNotebooks.Config;

namespace MoeNotebooks.Analysis;

/// <summary>A knob that a comparison turns: one field of the model, the cluster or the strategy.</summary>
public enum SweepAxisKind
{
    /// <summary>model.sequenceLength (tokens per sequence).</summary>
    SequenceLength,

    /// <summary>model.batch (sequences per step).</summary>
    Batch,

    /// <summary>model.hiddenSize; the FFN width keeps its ratio to it and the head count stays.</summary>
    HiddenSize,

    /// <summary>model.experts.</summary>
    Experts,

    /// <summary>
    /// hardware.gpus, as weak scaling: the batch and the expert count grow with the GPU count (same model for every
    /// strategy at a point), and the strategy's expert-parallel size (or, without EP, its data-parallel size) absorbs
    /// the new GPUs, so tokens and experts per GPU stay constant.
    /// </summary>
    GpuCount,

    /// <summary>The GPU type: the value is an index into <see cref="HardwareCatalog.Names"/>; the GPU count stays.</summary>
    GpuType,

    /// <summary>strategy.microbatches.</summary>
    Microbatches,

    /// <summary>Zipf exponent s of the routing (0 = uniform); a capacity factor, if any, is kept.</summary>
    ZipfExponent,

    /// <summary>strategy.alltoallChunks.</summary>
    AllToAllChunks,
}

/// <summary>One strategy (series) at one axis value: its total, memory verdict and breakdown, or why it is invalid.</summary>
/// <param name="Series">The scenario's name.</param>
/// <param name="Axis">The knob turned.</param>
/// <param name="Value">The knob's value (for <see cref="SweepAxisKind.GpuType"/> the catalog index).</param>
/// <param name="ValueLabel">The value as shown (the preset name for GPU types).</param>
/// <param name="TotalSeconds">Critical-path total, or null when the point is invalid.</param>
/// <param name="MemoryFeasible">Whether the memory model says it fits, or null when invalid.</param>
/// <param name="PeakBytesPerGpu">Peak memory of the fullest GPU, or null when invalid.</param>
/// <param name="BreakdownSeconds">Mean per-GPU matmul/attention/elementwise/communication/idle seconds, or null when invalid.</param>
/// <param name="Invalid">The <see cref="ConfigException"/> message when the scenario cannot be built at this value.</param>
public sealed record ComparisonRow(
    string Series,
    SweepAxisKind Axis,
    double Value,
    string ValueLabel,
    double? TotalSeconds,
    bool? MemoryFeasible,
    double? PeakBytesPerGpu,
    IReadOnlyDictionary<string, double>? BreakdownSeconds,
    string? Invalid)
{
    public bool IsValid => Invalid is null;

    /// <summary>Mean idle share of a GPU (idle / total): the pipeline bubble and waiting, between 0 and 1.</summary>
    public double? IdleShare => TotalSeconds is > 0 && BreakdownSeconds is { } b && b.TryGetValue("idle", out var idle) ? idle / TotalSeconds : null;
}

/// <summary>
/// Where two series swap order: between <see cref="LowerValue"/> and <see cref="UpperValue"/> (neighbouring axis
/// values where both are valid) the sign of A - B changes; <see cref="AtValue"/> and <see cref="AtSeconds"/> are the
/// crossing of the two straight lines through the neighbouring points.
/// </summary>
public sealed record Crossover(
    string SeriesA,
    string SeriesB,
    SweepAxisKind Axis,
    double LowerValue,
    string LowerLabel,
    double UpperValue,
    string UpperLabel,
    double AtValue,
    double AtSeconds,
    string FasterBelow,
    string FasterAbove);

/// <summary>A against B over two axes: <c>Ratio[row, column]</c> = total(A) / total(B) at (<c>XValues[column]</c>, <c>YValues[row]</c>); NaN where either is invalid.</summary>
public sealed record ComparisonGrid(
    string Numerator,
    string Denominator,
    SweepAxisKind XAxis,
    IReadOnlyList<double> XValues,
    IReadOnlyList<string> XLabels,
    SweepAxisKind YAxis,
    IReadOnlyList<double> YValues,
    IReadOnlyList<string> YLabels,
    double[,] Ratio,
    string?[,] Invalid);

/// <summary>Which of two series is faster at one axis value, and by how much (slower / faster, at least 1).</summary>
public sealed record PairWinner(string SeriesA, string SeriesB, SweepAxisKind Axis, double Value, string ValueLabel, string Faster, double Ratio);

/// <summary>A series' total relative to its own total at a baseline axis value (e.g. slowdown against uniform routing).</summary>
public sealed record RelativeRow(string Series, SweepAxisKind Axis, double Value, double TotalSeconds, double BaselineSeconds)
{
    public double Ratio => TotalSeconds / BaselineSeconds;
}

/// <summary>
/// Compares strategies (scenarios) while one or two knobs turn: a typed, in-memory facade for notebooks.
/// Points that cannot be built are reported with the <see cref="ConfigException"/> reason, never thrown;
/// evaluations run in parallel and rows come back in a fixed order (series, then values as given).
/// </summary>
public static class StrategyComparison
{
    /// <summary>The axis title with its unit, for charts.</summary>
    public static string Title(this SweepAxisKind axis) => axis switch
    {
        SweepAxisKind.SequenceLength => "sequence length (tokens)",
        SweepAxisKind.Batch => "batch (sequences)",
        SweepAxisKind.HiddenSize => "hidden size H (elements)",
        SweepAxisKind.Experts => "experts (count)",
        SweepAxisKind.GpuCount => "GPUs (count; batch and experts scale with it)",
        SweepAxisKind.GpuType => "GPU type (catalog preset)",
        SweepAxisKind.Microbatches => "microbatches (count)",
        SweepAxisKind.ZipfExponent => "Zipf exponent s (0 = uniform routing)",
        SweepAxisKind.AllToAllChunks => "all-to-all chunks (count)",
        _ => axis.ToString(),
    };

    /// <summary>How a value of this axis is shown (GPU types by preset name).</summary>
    public static string Label(this SweepAxisKind axis, double value) => axis == SweepAxisKind.GpuType
        ? Preset(value)
        : value.ToString("G", CultureInfo.InvariantCulture);

    /// <summary>
    /// The scenario with one knob set to <paramref name="value"/>, validated. Keeps it valid where a rule allows
    /// (FFN width follows hidden size; batch, experts and the EP or DP size follow the GPU count); otherwise throws
    /// <see cref="ConfigException"/> naming the field.
    /// </summary>
    public static Scenario Vary(Scenario scenario, SweepAxisKind axis, double value)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        var m = scenario.Model;
        var st = scenario.Strategy;
        var varied = axis switch
        {
            SweepAxisKind.SequenceLength => scenario with { Model = m with { SequenceLength = Whole("model.sequenceLength", value) } },
            SweepAxisKind.Batch => scenario with { Model = m with { Batch = Whole("model.batch", value) } },
            SweepAxisKind.HiddenSize => WithHidden(scenario, Whole("model.hiddenSize", value)),
            SweepAxisKind.Experts => scenario with { Model = m with { Experts = (int)WholeInt("model.experts", value) } },
            SweepAxisKind.GpuCount => WithGpus(scenario, (int)WholeInt("hardware.gpus", value)),
            SweepAxisKind.GpuType => scenario.OnHardware(Preset(value)),
            SweepAxisKind.Microbatches => scenario with { Strategy = st with { Microbatches = (int)WholeInt("strategy.microbatches", value) } },
            SweepAxisKind.ZipfExponent => scenario with
            {
                Model = m with { Routing = new RoutingSpec(RoutingDistribution.Zipf, Finite("model.routing.zipfExponent", value), null, m.Routing.CapacityFactor) },
            },
            SweepAxisKind.AllToAllChunks => scenario with { Strategy = st with { AllToAllChunks = (int)WholeInt("strategy.alltoallChunks", value) } },
            _ => throw new ArgumentOutOfRangeException(nameof(axis), axis, "unknown axis"),
        };
        return varied.Validated();
    }

    /// <summary>The scenario on another catalog GPU type (same GPU count).</summary>
    public static Scenario Vary(Scenario scenario, string preset) =>
        Vary(scenario, SweepAxisKind.GpuType, IndexOf(preset));

    /// <summary>The catalog index of a preset, for <see cref="SweepAxisKind.GpuType"/> values.</summary>
    public static double IndexOf(string preset)
    {
        var name = HardwareCatalog.Get(preset).Name;
        return HardwareCatalog.Names.ToList().IndexOf(name);
    }

    /// <summary>Every series at every value, evaluated in parallel; rows ordered by series, then by value as given.</summary>
    public static IReadOnlyList<ComparisonRow> Compare(IReadOnlyList<Scenario> series, SweepAxisKind axis, IReadOnlyList<double> values, int? maxParallelism = null)
    {
        ArgumentNullException.ThrowIfNull(series);
        ArgumentNullException.ThrowIfNull(values);
        if (series.Select(s => s.Name).Distinct(StringComparer.Ordinal).Count() != series.Count)
            throw new ArgumentException("series need distinct names (use scenario with { Name = ... })", nameof(series));
        var points = series.SelectMany(s => values.Select(v => (s, v))).ToArray();
        var rows = new ComparisonRow[points.Length];
        Parallel.For(0, points.Length, new ParallelOptions { MaxDegreeOfParallelism = maxParallelism ?? Environment.ProcessorCount },
            i => rows[i] = Evaluate(points[i].s, axis, points[i].v));
        return rows;
    }

    /// <summary>Every series on every catalog GPU type (or the given presets).</summary>
    public static IReadOnlyList<ComparisonRow> CompareGpuTypes(IReadOnlyList<Scenario> series, IEnumerable<string>? presets = null, int? maxParallelism = null) =>
        Compare(series, SweepAxisKind.GpuType, (presets ?? HardwareCatalog.Names).Select(IndexOf).ToArray(), maxParallelism);

    /// <summary>One point: the varied scenario evaluated, or the reason it cannot be built.</summary>
    public static ComparisonRow Evaluate(Scenario scenario, SweepAxisKind axis, double value)
    {
        string label;
        try { label = axis.Label(value); }
        catch (ConfigException e) { return new ComparisonRow(scenario.Name, axis, value, value.ToString("G", CultureInfo.InvariantCulture), null, null, null, null, e.Message); }
        try
        {
            var evaluation = Vary(scenario, axis, value).Evaluate();
            return new ComparisonRow(scenario.Name, axis, value, label, evaluation.TotalSeconds, evaluation.Memory.Feasible,
                evaluation.Memory.PeakBytesPerGpu, new Dictionary<string, double>(evaluation.Result.BreakdownSeconds), null);
        }
        catch (ConfigException e)
        {
            return new ComparisonRow(scenario.Name, axis, value, label, null, null, null, null, e.Message);
        }
    }

    /// <summary>
    /// Where <paramref name="seriesA"/> and <paramref name="seriesB"/> swap order along each axis in <paramref name="rows"/>:
    /// over the values where both are valid, sorted, each neighbouring pair where A - B changes sign (a point where they
    /// are exactly equal counts once), located by linear interpolation.
    /// </summary>
    public static IReadOnlyList<Crossover> Crossovers(IEnumerable<ComparisonRow> rows, string seriesA, string seriesB)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var result = new List<Crossover>();
        foreach (var axisRows in rows.GroupBy(r => r.Axis))
        {
            var a = axisRows.Where(r => r.Series == seriesA && r.TotalSeconds is not null).GroupBy(r => r.Value).ToDictionary(g => g.Key, g => g.First());
            var b = axisRows.Where(r => r.Series == seriesB && r.TotalSeconds is not null).GroupBy(r => r.Value).ToDictionary(g => g.Key, g => g.First());
            var common = a.Keys.Where(b.ContainsKey).Order().ToArray();
            var d = common.Select(x => a[x].TotalSeconds!.Value - b[x].TotalSeconds!.Value).ToArray();
            // Walk from one nonzero difference to the next; a sign change between them is a crossover. Between two
            // neighbours it lies where the straight lines cross; across exact ties it is the first tie.
            var i = Array.FindIndex(d, v => v != 0);
            while (i >= 0 && i + 1 < d.Length)
            {
                var j = Array.FindIndex(d, i + 1, v => v != 0);
                if (j < 0) break;
                if (Math.Sign(d[i]) != Math.Sign(d[j]))
                {
                    double x0 = common[i], x1 = common[i + 1];
                    var ya0 = a[x0].TotalSeconds!.Value;
                    var ya1 = a[x1].TotalSeconds!.Value;
                    var t = j == i + 1 ? d[i] / (d[i] - d[j]) : 1.0;
                    result.Add(new Crossover(seriesA, seriesB, axisRows.Key, x0, a[x0].ValueLabel, x1, a[x1].ValueLabel,
                        x0 + t * (x1 - x0), ya0 + t * (ya1 - ya0), d[i] < 0 ? seriesA : seriesB, d[i] < 0 ? seriesB : seriesA));
                }
                i = j;
            }
        }
        return result;
    }

    /// <summary>The crossovers of each pair, pair by pair (see <see cref="Crossovers(IEnumerable{ComparisonRow}, string, string)"/>).</summary>
    public static IReadOnlyList<Crossover> Crossovers(IEnumerable<ComparisonRow> rows, IEnumerable<(string A, string B)> pairs)
    {
        ArgumentNullException.ThrowIfNull(pairs);
        var list = rows.ToList();
        return pairs.SelectMany(p => Crossovers(list, p.A, p.B)).ToArray();
    }

    /// <summary>At each axis value where both series are valid (in the rows' order), which one is faster and by how much; a tie goes to A.</summary>
    public static IReadOnlyList<PairWinner> Winners(IEnumerable<ComparisonRow> rows, string seriesA, string seriesB)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var list = rows.Where(r => r.TotalSeconds is > 0).ToList();
        var b = list.Where(r => r.Series == seriesB).GroupBy(r => (r.Axis, r.Value)).ToDictionary(g => g.Key, g => g.First());
        return list.Where(r => r.Series == seriesA && b.ContainsKey((r.Axis, r.Value)))
            .Select(a =>
            {
                double ta = a.TotalSeconds!.Value, tb = b[(a.Axis, a.Value)].TotalSeconds!.Value;
                return new PairWinner(seriesA, seriesB, a.Axis, a.Value, a.ValueLabel, ta <= tb ? seriesA : seriesB, Math.Max(ta, tb) / Math.Min(ta, tb));
            })
            .ToArray();
    }

    /// <summary>total(A) / total(B) over a grid of two axes (rows follow <paramref name="yValues"/>), evaluated in parallel.</summary>
    public static ComparisonGrid Grid(
        Scenario numerator, Scenario denominator,
        SweepAxisKind xAxis, IReadOnlyList<double> xValues,
        SweepAxisKind yAxis, IReadOnlyList<double> yValues,
        int? maxParallelism = null)
    {
        ArgumentNullException.ThrowIfNull(numerator);
        ArgumentNullException.ThrowIfNull(denominator);
        if (xAxis == yAxis) throw new ArgumentException($"the two axes must differ (both are {xAxis})", nameof(yAxis));
        var pair = new[] { numerator, denominator };
        var cells = (from y in Enumerable.Range(0, yValues.Count) from x in Enumerable.Range(0, xValues.Count) from s in Enumerable.Range(0, 2) select (y, x, s)).ToArray();
        var totals = new double?[cells.Length];
        var reasons = new string?[cells.Length];
        Parallel.For(0, cells.Length, new ParallelOptions { MaxDegreeOfParallelism = maxParallelism ?? Environment.ProcessorCount }, i =>
        {
            var (y, x, s) = cells[i];
            try
            {
                var scenario = Vary(Vary(pair[s], xAxis, xValues[x]), yAxis, yValues[y]);
                totals[i] = scenario.Evaluate().TotalSeconds;
            }
            catch (ConfigException e) { reasons[i] = $"{pair[s].Name}: {e.Message}"; }
        });
        var ratio = new double[yValues.Count, xValues.Count];
        var invalid = new string?[yValues.Count, xValues.Count];
        for (var i = 0; i < cells.Length; i += 2)
        {
            var (y, x, _) = cells[i];
            var why = string.Join("; ", new[] { reasons[i], reasons[i + 1] }.Where(r => r is not null));
            invalid[y, x] = why.Length == 0 ? null : why;
            ratio[y, x] = totals[i] is { } a && totals[i + 1] is { } b && b > 0 ? a / b : double.NaN;
        }
        return new ComparisonGrid(numerator.Name, denominator.Name,
            xAxis, xValues.ToArray(), xValues.Select(v => SafeLabel(xAxis, v)).ToArray(),
            yAxis, yValues.ToArray(), yValues.Select(v => SafeLabel(yAxis, v)).ToArray(),
            ratio, invalid);
    }

    /// <summary>Each valid row's total divided by the same series' total at <paramref name="baselineValue"/> (series without a valid baseline are left out).</summary>
    public static IReadOnlyList<RelativeRow> RelativeTo(IEnumerable<ComparisonRow> rows, double baselineValue)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var list = rows.Where(r => r.TotalSeconds is > 0).ToList();
        var baselines = list.Where(r => r.Value.Equals(baselineValue)).GroupBy(r => (r.Series, r.Axis)).ToDictionary(g => g.Key, g => g.First().TotalSeconds!.Value);
        return list.Where(r => baselines.ContainsKey((r.Series, r.Axis)))
            .Select(r => new RelativeRow(r.Series, r.Axis, r.Value, r.TotalSeconds!.Value, baselines[(r.Series, r.Axis)]))
            .ToArray();
    }

    private static Scenario WithHidden(Scenario s, long hidden)
    {
        var m = s.Model;
        var ffn = (long)Math.Round((double)m.FfnHiddenSize * hidden / m.HiddenSize);
        return s with { Model = m with { HiddenSize = hidden, FfnHiddenSize = Math.Max(1, ffn) } };
    }

    private static Scenario WithGpus(Scenario s, int gpus)
    {
        var current = s.Hardware.GpuCount;
        if (gpus == current) return s;
        var st = s.Strategy;
        var m = s.Model;
        var scaleEp = st.EP > 1;
        var dim = scaleEp ? st.EP : st.DP;
        var field = scaleEp ? "strategy.ep" : "strategy.dp";
        var scaled = (long)dim * gpus;
        if (scaled % current != 0)
            throw new ConfigException("hardware.gpus", gpus.ToString(CultureInfo.InvariantCulture),
                $"cannot scale {st} from {current} GPUs: {field} = {dim} x {gpus} / {current} is not a whole number");
        var batch = m.Batch * gpus;
        if (batch % current != 0)
            throw new ConfigException("hardware.gpus", gpus.ToString(CultureInfo.InvariantCulture),
                $"cannot scale model.batch = {m.Batch} by {gpus} / {current} to a whole number of sequences");
        var experts = m.IsDense ? 0 : (long)m.Experts * gpus;
        if (experts % current != 0)
            throw new ConfigException("hardware.gpus", gpus.ToString(CultureInfo.InvariantCulture),
                $"cannot scale model.experts = {m.Experts} by {gpus} / {current} to a whole number of experts");
        var newDim = (int)(scaled / current);
        return s with
        {
            Model = m with { Batch = batch / current, Experts = (int)(experts / current) },
            Hardware = s.Hardware with { GpuCount = gpus },
            Strategy = scaleEp ? st with { EP = newDim } : st with { DP = newDim },
        };
    }

    private static string Preset(double value)
    {
        var names = HardwareCatalog.Names.ToArray();
        if (!double.IsFinite(value) || value != Math.Floor(value) || value < 0 || value >= names.Length)
            throw new ConfigException("hardware.preset", value.ToString("G", CultureInfo.InvariantCulture),
                $"must be a catalog index 0..{names.Length - 1} ({string.Join(", ", names.Select((n, i) => $"{i} = {n}"))})");
        return names[(int)value];
    }

    private static string SafeLabel(SweepAxisKind axis, double value)
    {
        try { return axis.Label(value); }
        catch (ConfigException) { return value.ToString("G", CultureInfo.InvariantCulture); }
    }

    private static long Whole(string field, double value)
    {
        if (!double.IsFinite(value) || value != Math.Floor(value) || value < 1 || value > long.MaxValue / 2)
            throw new ConfigException(field, value.ToString("G", CultureInfo.InvariantCulture), "must be a whole number >= 1");
        return (long)value;
    }

    private static long WholeInt(string field, double value)
    {
        var v = Whole(field, value);
        if (v > int.MaxValue) throw new ConfigException(field, value.ToString("G", CultureInfo.InvariantCulture), $"must be <= {int.MaxValue}");
        return v;
    }

    private static double Finite(string field, double value)
    {
        if (!double.IsFinite(value) || value < 0) throw new ConfigException(field, value.ToString("G", CultureInfo.InvariantCulture), "must be a finite number >= 0");
        return value;
    }
}

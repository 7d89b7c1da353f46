using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>One operation placed in time.</summary>
public sealed record ScheduledOp(int Op, string Name, OpKind Kind, OpCategory Category, int Gpu, int Layer, int Microbatch, double StartSeconds, double FinishSeconds)
{
    public double DurationSeconds => FinishSeconds - StartSeconds;
}

/// <summary>
/// Where one GPU's time went. Matmul + attention + elementwise is compute-stream time; communication counts only
/// what is not hidden behind compute; idle is the rest. The five add up to the total.
/// </summary>
public sealed record GpuUsage(
    int Gpu,
    double MatmulSeconds,
    double AttentionSeconds,
    double ElementwiseSeconds,
    double CommunicationSeconds,
    double OverlappedCommunicationSeconds,
    double IdleSeconds)
{
    public double ComputeBusySeconds => MatmulSeconds + AttentionSeconds + ElementwiseSeconds;
}

/// <summary>
/// The outcome of scheduling a priced DAG: the total, the critical path (each operation whose finish
/// set the next one's start, by data dependency or by a busy stream), per-operation start/finish,
/// per-GPU usage and breakdowns.
/// </summary>
public sealed class CriticalPathResult
{
    private readonly double[] _start, _finish;
    private readonly Lazy<ScheduledOp[]> _criticalPath;
    private readonly Lazy<GpuUsage[]> _perGpu;
    private readonly Lazy<IReadOnlyDictionary<string, double>> _breakdown, _criticalByCategory;

    /// <summary>
    /// The total and the critical operation ids are computed by the scheduler; everything else (named critical path,
    /// per-GPU usage, breakdowns) is derived on first use, so a sweep that reads only the total pays for nothing more.
    /// </summary>
    internal CriticalPathResult(OperatorDag dag, double[] durations, double[] start, double[] finish, int[] criticalOps, double totalSeconds, string costModel)
    {
        Dag = dag;
        Durations = durations;
        _start = start;
        _finish = finish;
        CriticalOps = criticalOps;
        CostModel = costModel;
        TotalSeconds = totalSeconds;
        _criticalPath = new(() => criticalOps.Select(Describe).ToArray());
        _perGpu = new(() => Scheduler.Usage(dag, start, finish, totalSeconds));
        _criticalByCategory = new(() =>
        {
            var byCategory = Enum.GetValues<OpCategory>().ToDictionary(c => Key(c), _ => 0.0);
            foreach (var op in criticalOps) byCategory[Key(dag.Category(op))] += durations[op];
            return byCategory;
        });
        _breakdown = new(() => MeanOver(_perGpu.Value));
    }

    /// <summary>
    /// The result of a run extrapolated from a built DAG of fewer microbatches (<see cref="MicrobatchPeriodicity"/>): the
    /// totals, critical-path seconds by category and per-GPU usage are the whole run's; the DAG, the per-operation times,
    /// the critical operations and the timeline are the built DAG's (<see cref="Extrapolation"/> says how many microbatches
    /// it holds).
    /// </summary>
    internal CriticalPathResult(CriticalPathResult built, MicrobatchExtrapolation extrapolation, double totalSeconds,
        IReadOnlyDictionary<string, double> criticalByCategory, GpuUsage[] perGpu)
    {
        Dag = built.Dag;
        Durations = built.Durations;
        _start = built._start;
        _finish = built._finish;
        CriticalOps = built.CriticalOps;
        CostModel = built.CostModel;
        TotalSeconds = totalSeconds;
        Extrapolation = extrapolation;
        _criticalPath = built._criticalPath;
        _perGpu = new(() => perGpu);
        _criticalByCategory = new(() => criticalByCategory);
        _breakdown = new(() => MeanOver(perGpu));
    }

    /// <summary>
    /// Set when the run was extrapolated over identical microbatches: <see cref="TotalSeconds"/>, <see cref="PerGpu"/>,
    /// <see cref="BreakdownSeconds"/> and <see cref="CriticalPathSecondsByCategory"/> are the whole run's, while
    /// <see cref="Dag"/>, <see cref="CriticalOps"/>, <see cref="CriticalPath"/>, the start/finish times and
    /// <see cref="Timeline"/> describe the built DAG of <see cref="MicrobatchExtrapolation.BuiltMicrobatches"/> microbatches.
    /// </summary>
    public MicrobatchExtrapolation? Extrapolation { get; }

    internal static IReadOnlyDictionary<string, double> MeanOver(IReadOnlyList<GpuUsage> perGpu)
    {
        {
            var n = Math.Max(1, perGpu.Count);
            return new Dictionary<string, double>
            {
                ["matmul"] = perGpu.Sum(g => g.MatmulSeconds) / n,
                ["attention"] = perGpu.Sum(g => g.AttentionSeconds) / n,
                ["elementwise"] = perGpu.Sum(g => g.ElementwiseSeconds) / n,
                ["communication"] = perGpu.Sum(g => g.CommunicationSeconds) / n,
                ["idle"] = perGpu.Sum(g => g.IdleSeconds) / n,
            };
        }
    }

    public OperatorDag Dag { get; }
    public string CostModel { get; }

    /// <summary>Seconds from the first operation's start to the last one's finish.</summary>
    public double TotalSeconds { get; }

    /// <summary>Operation durations used, by id.</summary>
    public IReadOnlyList<double> Durations { get; }

    /// <summary>Critical path operation ids, first to last.</summary>
    public IReadOnlyList<int> CriticalOps { get; }

    /// <summary>The critical path, first to last; its durations sum to <see cref="TotalSeconds"/>.</summary>
    public IReadOnlyList<ScheduledOp> CriticalPath => _criticalPath.Value;

    public IReadOnlyList<GpuUsage> PerGpu => _perGpu.Value;

    /// <summary>Mean over GPUs of <see cref="GpuUsage"/>: matmul, attention, elementwise, communication (exposed), idle; sums to the total.</summary>
    public IReadOnlyDictionary<string, double> BreakdownSeconds => _breakdown.Value;

    /// <summary>Critical-path seconds by category; sums to the total.</summary>
    public IReadOnlyDictionary<string, double> CriticalPathSecondsByCategory => _criticalByCategory.Value;

    public double StartSeconds(int op) => _start[op];
    public double FinishSeconds(int op) => _finish[op];

    public ScheduledOp Describe(int op) =>
        new(op, Dag.Name(op), Dag.Kind(op), Dag.Category(op), Dag.Gpu(op), Dag.Layer(op), Dag.Microbatch(op), _start[op], _finish[op]);

    /// <summary>
    /// Every operation in time, one row per GPU taking part (collectives appear on each member). In a folded DAG each
    /// operation also appears on every GPU its representatives stand for: the rows of the whole DAG.
    /// </summary>
    public IEnumerable<ScheduledOp> Timeline()
    {
        var dag = Dag;
        List<int>[]? represented = null;
        if (dag.IsFolded)
        {
            represented = new List<int>[dag.GpuCount];
            for (var g = 0; g < dag.GpuCount; g++) (represented[dag.Representative(g)] ??= new List<int>()).Add(g);
        }
        for (var op = 0; op < dag.Count; op++)
        {
            var d = Describe(op);
            if (represented is null)
            {
                foreach (var g in dag.Participants(op).ToArray()) yield return d with { Gpu = g };
                continue;
            }
            foreach (var r in dag.Streams(op).ToArray())
                foreach (var g in represented[r]!) yield return d with { Gpu = g };
        }
    }

    public static string Key(OpCategory c) => c switch
    {
        OpCategory.Matmul => "matmul",
        OpCategory.Attention => "attention",
        OpCategory.Elementwise => "elementwise",
        _ => "communication",
    };

    public override string ToString() => $"{Dag.Description}: {TotalSeconds:G6} s over {CriticalOps.Count} critical operations ({CostModel})";
}

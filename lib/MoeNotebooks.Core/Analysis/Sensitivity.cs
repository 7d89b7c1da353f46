using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// One what-if: a class of operations (or a link class) made faster. <see cref="CriticalPathSeconds"/> is its
/// time on the current critical path; <see cref="SavedSeconds"/> is what the total really drops when the whole
/// class gets faster, after rescheduling (the critical path may move, so it can be less).
/// </summary>
public sealed record SensitivityRow(string Target, string Scope, long Operations, double CriticalPathSeconds, double NewTotalSeconds, double SavedSeconds)
{
    public double SavedPercent(double total) => total == 0 ? 0 : 100 * SavedSeconds / total;
}

/// <summary>What lies on the critical path, and how much the total changes if each piece got faster.</summary>
public static class Sensitivity
{
    /// <summary>
    /// Rescales the durations of each operation kind, and of intra-node and inter-node communication, by
    /// (1 - <paramref name="speedup"/>), reschedules, and reports the new totals, largest saving first.
    /// </summary>
    public static IReadOnlyList<SensitivityRow> Analyze(CriticalPathResult result, HardwareSpec hardware, double speedup = 0.10)
    {
        if (!double.IsFinite(speedup) || speedup <= 0 || speedup >= 1)
            throw new ConfigException("speedup", speedup.ToString(System.Globalization.CultureInfo.InvariantCulture), "must lie in (0, 1), e.g. 0.1 for 10% faster");
        var dag = result.Dag;
        var onPath = new bool[dag.Count];
        foreach (var op in result.CriticalOps) onPath[op] = true;
        var classes = new Dictionary<(string Target, string Scope), List<int>>();
        for (var op = 0; op < dag.Count; op++)
        {
            Add(classes, (dag.Kind(op).Label(), "operation"), op);
            if (dag.Category(op) == OpCategory.Communication && dag.Participants(op).Length > 1)
            {
                var spans = SpansNodes(dag.Participants(op), hardware);
                Add(classes, (spans ? "network (inter-node)" : "NVLink (intra-node)", "link"), op);
            }
        }
        var rows = new List<SensitivityRow>();
        var baseline = result.Durations.ToArray();
        foreach (var ((target, scope), ops) in classes)
        {
            var scaled = (double[])baseline.Clone();
            foreach (var op in ops) scaled[op] *= 1 - speedup;
            var total = Scheduler.Schedule(dag, scaled, result.CostModel).TotalSeconds;
            var onPathSeconds = ops.Where(op => onPath[op]).Sum(op => baseline[op]);
            // Operations of the whole DAG (a folded operation counts as many as it stands for).
            rows.Add(new SensitivityRow(target, scope, ops.Sum(op => dag.Multiplicity(op)), onPathSeconds, total, result.TotalSeconds - total));
        }
        return rows.OrderByDescending(r => r.SavedSeconds).ThenBy(r => r.Target, StringComparer.Ordinal).ToArray();
    }

    private static void Add(Dictionary<(string, string), List<int>> classes, (string, string) key, int op)
    {
        if (!classes.TryGetValue(key, out var list)) classes[key] = list = new List<int>();
        list.Add(op);
    }

    private static bool SpansNodes(ReadOnlySpan<int> gpus, HardwareSpec hardware)
    {
        var node = hardware.NodeOf(gpus[0]);
        foreach (var g in gpus) if (hardware.NodeOf(g) != node) return true;
        return false;
    }
}

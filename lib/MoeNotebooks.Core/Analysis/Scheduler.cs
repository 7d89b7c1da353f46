using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// Schedules a priced DAG with resources: every GPU has a compute stream and a communication stream, each
/// running its operations one at a time in issue (id) order, like CUDA streams. An operation starts when
/// its inputs are done and its stream(s) are free; a collective needs the communication stream of every
/// member. Communication thus overlaps compute wherever the dependencies allow; a DAG built with
/// <see cref="OperatorDag.CommunicationOverlapsCompute"/> false runs communication on the compute stream instead.
/// One pass in id order: O(operations + edges + group members).
/// </summary>
public static class Scheduler
{
    /// <summary>Prices the DAG with <paramref name="cost"/> and schedules it.</summary>
    public static CriticalPathResult CriticalPath(this OperatorDag dag, CostModel cost) => Schedule(dag, cost.Price(dag), cost.Name);

    /// <summary>Schedules with given durations (seconds, by operation id).</summary>
    public static CriticalPathResult Schedule(OperatorDag dag, double[] durations, string costModel = "given durations")
    {
        if (durations.Length != dag.Count)
            throw new ArgumentException($"durations has {durations.Length} entries but the DAG has {dag.Count} operations", nameof(durations));
        int n = dag.Count, gpus = dag.GpuCount;
        var start = new double[n];
        var finish = new double[n];
        var critPred = new int[n];
        var computeFree = new double[gpus];
        var commFree = new double[gpus];
        var lastCompute = new int[gpus];
        var lastComm = new int[gpus];
        Array.Fill(lastCompute, -1);
        Array.Fill(lastComm, -1);

        for (var op = 0; op < n; op++)
        {
            var d = durations[op];
            if (!double.IsFinite(d) || d < 0) throw new ArgumentException($"duration of {dag.Name(op)} is {d}; durations must be finite and >= 0", nameof(durations));
            var ready = 0.0;
            var crit = -1;
            foreach (var p in dag.Predecessors(op))
            {
                if (crit < 0 || finish[p] > ready) { ready = finish[p]; crit = p; }
            }
            if (dag.Kind(op) == OpKind.PipelineSend && dag.CommunicationOverlapsCompute)
            {
                // Point-to-point activation sends go over their own link as soon as the data is ready; they do not
                // queue behind the collectives of the stream (NCCL runs p2p on separate channels).
                start[op] = ready;
                finish[op] = ready + d;
            }
            else if (dag.Category(op) == OpCategory.Communication)
            {
                var blocking = !dag.CommunicationOverlapsCompute;
                foreach (var g in dag.Participants(op))
                {
                    if (commFree[g] > ready) { ready = commFree[g]; crit = lastComm[g]; }
                    if (blocking && computeFree[g] > ready) { ready = computeFree[g]; crit = lastCompute[g]; }
                }
                start[op] = ready;
                finish[op] = ready + d;
                foreach (var g in dag.Participants(op))
                {
                    commFree[g] = finish[op];
                    lastComm[g] = op;
                    if (blocking) { computeFree[g] = finish[op]; lastCompute[g] = op; }
                }
            }
            else
            {
                var g = dag.Gpu(op);
                if (computeFree[g] > ready) { ready = computeFree[g]; crit = lastCompute[g]; }
                if (!dag.CommunicationOverlapsCompute && commFree[g] > ready) { ready = commFree[g]; crit = lastComm[g]; }
                start[op] = ready;
                finish[op] = ready + d;
                computeFree[g] = finish[op];
                lastCompute[g] = op;
            }
            critPred[op] = crit;
        }

        var path = new List<int>();
        if (n > 0)
        {
            var end = 0;
            for (var op = 1; op < n; op++) if (finish[op] > finish[end]) end = op;
            for (var op = end; op >= 0; op = critPred[op]) path.Add(op);
            path.Reverse();
        }
        var total = n == 0 ? 0 : finish.Max();
        return new CriticalPathResult(dag, durations, start, finish, path.ToArray(), Usage(dag, start, finish, total), costModel);
    }

    /// <summary>Per-GPU busy time by category, exposed communication (not under compute) and idle time.</summary>
    private static GpuUsage[] Usage(OperatorDag dag, double[] start, double[] finish, double total)
    {
        int gpus = dag.GpuCount, n = dag.Count;
        var byCategory = new double[gpus, 3];
        var computeCount = new int[gpus + 1];
        var commCount = new int[gpus + 1];
        for (var op = 0; op < n; op++)
        {
            if (dag.Category(op) == OpCategory.Communication)
                foreach (var g in dag.Participants(op)) commCount[g + 1]++;
            else
                computeCount[dag.Gpu(op) + 1]++;
        }
        for (var g = 0; g < gpus; g++) { computeCount[g + 1] += computeCount[g]; commCount[g + 1] += commCount[g]; }
        var computeOps = new int[computeCount[gpus]];
        var commOps = new int[commCount[gpus]];
        var ci = (int[])computeCount.Clone();
        var mi = (int[])commCount.Clone();
        for (var op = 0; op < n; op++)
        {
            var cat = dag.Category(op);
            if (cat == OpCategory.Communication)
                foreach (var g in dag.Participants(op)) commOps[mi[g]++] = op;
            else
            {
                var g = dag.Gpu(op);
                computeOps[ci[g]++] = op;
                byCategory[g, (int)cat] += finish[op] - start[op];
            }
        }
        var usage = new GpuUsage[gpus];
        var intervals = new List<(double Start, double Finish)>();
        for (var g = 0; g < gpus; g++)
        {
            // Communication intervals may overlap one another (sends run beside collectives): merge them first,
            // then measure how much of the union lies under compute (compute intervals are disjoint and ascend).
            intervals.Clear();
            for (var j = commCount[g]; j < commCount[g + 1]; j++)
                if (finish[commOps[j]] > start[commOps[j]]) intervals.Add((start[commOps[j]], finish[commOps[j]]));
            intervals.Sort();
            double commBusy = 0, overlap = 0;
            var a = computeCount[g];
            var i = 0;
            while (i < intervals.Count)
            {
                var (s, f) = intervals[i++];
                while (i < intervals.Count && intervals[i].Start <= f) f = Math.Max(f, intervals[i++].Finish);
                commBusy += f - s;
                while (a < computeCount[g + 1] && finish[computeOps[a]] <= s) a++;
                for (var b = a; b < computeCount[g + 1] && start[computeOps[b]] < f; b++)
                    overlap += Math.Max(0, Math.Min(f, finish[computeOps[b]]) - Math.Max(s, start[computeOps[b]]));
            }
            double mm = byCategory[g, 0], at = byCategory[g, 1], el = byCategory[g, 2];
            var exposed = commBusy - overlap;
            usage[g] = new GpuUsage(g, mm, at, el, exposed, overlap, Math.Max(0, total - mm - at - el - exposed));
        }
        return usage;
    }
}

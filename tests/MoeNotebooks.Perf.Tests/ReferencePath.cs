using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Perf.Tests;

/// <summary>
/// The pricing and scheduling as they were before the fast path (Costs/CostModel.Price of commit 75f1bfc and
/// Analysis/Scheduler.Schedule of commit c283d47, with sends beside the streams and the no-overlap switch), kept verbatim on the public DAG API as the oracle: every operation priced through
/// <see cref="CostModel.Seconds"/> (matmuls memoised by shape), one pass in id order over per-GPU compute and
/// communication streams, total = the largest finish. Link contention (added with topology-aware collectives) is
/// written out plainly here from its documented rule: each link (the ids the cost model's
/// <see cref="ILinkTopology.Links"/> names) remembers the span of work committed on it, and an operation whose span
/// overlaps it is delayed by the committed work left in its window.
/// </summary>
internal static class ReferencePath
{
    public static double[] Price(CostModel cost, OperatorDag dag)
    {
        var durations = new double[dag.Count];
        var memo = new Dictionary<(MatmulShape, byte), double>();
        for (var op = 0; op < durations.Length; op++)
        {
            var kind = dag.Kind(op);
            if (kind.IsMatmulShaped())
            {
                var key = (dag.Shape(op), (byte)0);
                if (!memo.TryGetValue(key, out var t)) memo[key] = t = cost.Seconds(dag, op);
                durations[op] = t;
            }
            else durations[op] = cost.Seconds(dag, op);
        }
        return durations;
    }

    public static (double Total, double[] Start, double[] Finish, int[] Path) Schedule(OperatorDag dag, double[] durations, CostModel? cost = null)
    {
        var topology = cost?.Communication as ILinkTopology;
        var spans = new Dictionary<int, (double Start, double End)>();
        var links = new List<int>();
        double Finish(int op, double ready, double d)
        {
            if (topology is null || d <= 0) return ready + d;
            // A send occupies its sender's NIC egress and its receiver's ingress (full duplex): the pair in sending order.
            var members = dag.Participants(op).ToArray();
            if (dag.Kind(op).IsPointToPoint() && members[0] != dag.Gpu(op)) Array.Reverse(members);
            topology.Links(dag.Kind(op).IsPointToPoint() ? CollectivePattern.SendRecv : dag.Kind(op).Pattern(), members, links);
            var delay = 0.0;
            foreach (var l in links)
                if (spans.TryGetValue(l, out var span) && span.End > ready && span.Start < ready + d)
                    delay = Math.Max(delay, span.End - Math.Max(ready, span.Start));
            var f = ready + d + delay;
            foreach (var l in links)
            {
                var span = spans.TryGetValue(l, out var x) ? x : (Start: 0.0, End: 0.0);
                if (span.End > ready && span.Start < f) spans[l] = (Math.Min(span.Start, ready), Math.Max(span.End, f));
                else if (ready >= span.End) spans[l] = (ready, f);
            }
            return f;
        }
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
            var ready = 0.0;
            var crit = -1;
            foreach (var p in dag.Predecessors(op))
                if (crit < 0 || finish[p] > ready) { ready = finish[p]; crit = p; }
            if (dag.Kind(op).IsPointToPoint())
            {
                // Own link; without overlap the sender (the op's GPU) is blocked until the transfer is done.
                var g = dag.Gpu(op);
                var blocking = !dag.CommunicationOverlapsCompute;
                if (blocking && computeFree[g] > ready) { ready = computeFree[g]; crit = lastCompute[g]; }
                start[op] = ready;
                finish[op] = Finish(op, ready, d);
                if (blocking) { computeFree[g] = finish[op]; lastCompute[g] = op; }
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
                finish[op] = Finish(op, ready, d);
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
        return (n == 0 ? 0 : finish.Max(), start, finish, path.ToArray());
    }
}

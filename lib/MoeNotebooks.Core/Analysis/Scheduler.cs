using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// Schedules a priced DAG with resources: every GPU has a compute stream and a communication stream, each
/// running its operations one at a time in issue (id) order, like CUDA streams. An operation starts when
/// its inputs are done and its stream(s) are free; a collective needs the communication stream of every
/// member; pipeline sends use their own link. Communication thus overlaps compute wherever the dependencies allow; a
/// DAG built with <see cref="OperatorDag.CommunicationOverlapsCompute"/> false runs collectives on the compute streams
/// instead and makes a send block its sender until the transfer is done.
/// <para>Contention: when the cost model knows which links a collective or send occupies (<see cref="ILinkTopology"/>:
/// the send and receive sides of NICs), operations on the same link at once share it. The one pass has already
/// committed earlier-issued operations, so a later one whose time overlaps work committed on one of its links is
/// delayed by that work (the link's work is conserved: with fair sharing the last of two operations that start
/// together finishes at the same time). A collective's members already queue on their communication streams, so
/// contention arises between different groups on a shared NIC (fewer rails than GPUs) and between sends and
/// collectives.</para>
/// One pass in id order: O(operations + edges + group members + links).
/// </summary>
public static class Scheduler
{
    /// <summary>Prices the DAG with <paramref name="cost"/> and schedules it.</summary>
    public static CriticalPathResult CriticalPath(this OperatorDag dag, CostModel cost) => Schedule(dag, cost.Price(dag), cost.Name, cost.Footprints(dag), cost.ComputeShares(dag));

    /// <summary>
    /// Schedules with given durations (seconds, by operation id); with <paramref name="links"/> (from
    /// <see cref="CostModel.Footprints"/>) operations sharing a link contend, and the result's durations are the
    /// contended ones.
    /// </summary>
    /// <param name="shares">Communication that takes SMs from compute while it runs (<see cref="CostModel.ComputeShares"/>):
    /// compute on the same GPU then runs at (1 - share) of its speed.</param>
    public static CriticalPathResult Schedule(OperatorDag dag, double[] durations, string costModel = "given durations", LinkFootprints? links = null, ComputeShares? shares = null) =>
        Schedule(dag, durations, costModel, links, shares, out _);

    /// <summary><see cref="Schedule(OperatorDag, double[], string, LinkFootprints?, ComputeShares?)"/>, also handing out each operation's critical predecessor (-1 for none).</summary>
    internal static CriticalPathResult Schedule(OperatorDag dag, double[] durations, string costModel, LinkFootprints? links, ComputeShares? shares, out int[] criticalPredecessor)
    {
        if (durations.Length != dag.Count)
            throw new ArgumentException($"durations has {durations.Length} entries but the DAG has {dag.Count} operations", nameof(durations));
        int n = dag.Count;
        var start = new double[n];
        var finish = new double[n];
        var critPred = criticalPredecessor = new int[n];
        var total = Run(dag, durations, start, finish, critPred, links, shares);
        if (links is not null || shares is not null)
        {
            // Durations as run: contention stretched some communication, SM-taking communication some compute.
            var effective = (double[])durations.Clone();
            for (var op = 0; op < n; op++)
                if ((dag._groups[op] >= 0 || shares is not null) && finish[op] - start[op] > durations[op]) effective[op] = finish[op] - start[op];
            durations = effective;
        }
        var path = new List<int>();
        if (n > 0)
        {
            var end = 0;
            for (var op = 1; op < n; op++) if (finish[op] > finish[end]) end = op;
            for (var op = end; op >= 0; op = critPred[op]) path.Add(op);
            path.Reverse();
        }
        return new CriticalPathResult(dag, durations, start, finish, path.ToArray(), total, costModel);
    }

    /// <summary>
    /// Only the total (the same number <see cref="Schedule"/> reports as <see cref="CriticalPathResult.TotalSeconds"/>),
    /// for sweeps and searches: no critical path or per-GPU usage. <paramref name="workspace"/> may be reused across calls.
    /// </summary>
    public static double TotalSeconds(OperatorDag dag, ReadOnlySpan<double> durations, ScheduleWorkspace? workspace = null, LinkFootprints? links = null, ComputeShares? shares = null)
    {
        if (durations.Length != dag.Count)
            throw new ArgumentException($"durations has {durations.Length} entries but the DAG has {dag.Count} operations", nameof(durations));
        workspace ??= new ScheduleWorkspace();
        workspace.Ensure(dag.Count);
        return Run(dag, durations, workspace.Start.AsSpan(0, dag.Count), workspace.Finish.AsSpan(0, dag.Count), workspace.CritPred.AsSpan(0, dag.Count), links, shares);
    }

    /// <summary>Prices and schedules, returning only the total (see <see cref="TotalSeconds(OperatorDag, ReadOnlySpan{double}, ScheduleWorkspace?)"/>).</summary>
    public static double TotalSeconds(this OperatorDag dag, CostModel cost, ScheduleWorkspace? workspace = null)
    {
        workspace ??= new ScheduleWorkspace();
        workspace.Ensure(dag.Count);
        var durations = workspace.Durations.AsSpan(0, dag.Count);
        cost.Price(dag, durations);
        return TotalSeconds(dag, durations, workspace, cost.Footprints(dag), cost.ComputeShares(dag));
    }

    /// <summary>
    /// The total and the breakdown (<see cref="CriticalPathResult.BreakdownSeconds"/>) without the critical path: the
    /// same pass and the same usage measure as <see cref="CriticalPath"/>, into <paramref name="workspace"/>'s buffers,
    /// so both are those of <see cref="CriticalPath"/> bit for bit (what a sweep row needs). <paramref name="links"/>
    /// must be <c>cost.Footprints(dag)</c> (a sweep keeps them while the DAG, hardware and cost model repeat). A folded
    /// <paramref name="dag"/> must be one <paramref name="cost"/> prices symmetrically (the caller's
    /// <see cref="Config.Scenario.BuildDagFor(CostModel, Derivations.DagFolding)"/> checked it; not checked again).
    /// </summary>
    internal static (double TotalSeconds, IReadOnlyDictionary<string, double> Breakdown) TotalAndBreakdown(this OperatorDag dag, CostModel cost, ScheduleWorkspace workspace, LinkFootprints? links)
    {
        workspace.Ensure(dag.Count);
        var durations = workspace.Durations.AsSpan(0, dag.Count);
        cost.PriceFoldChecked(dag, durations);
        var total = TotalSeconds(dag, durations, workspace, links, cost.ComputeShares(dag));
        return (total, MeanUsage(dag, workspace.Start.AsSpan(0, dag.Count), workspace.Finish.AsSpan(0, dag.Count), total, workspace));
    }

    /// <summary>The one pass: start, finish and the critical predecessor of every operation; returns the latest finish.</summary>
    private static double Run(OperatorDag dag, ReadOnlySpan<double> durations, Span<double> start, Span<double> finish, Span<int> critPred, LinkFootprints? links, ComputeShares? shares = null)
    {
        // Per GPU, the spans during which communication takes a share of its SMs (disjoint and ascending: each GPU's
        // communication stream runs in order), and the first span a later compute operation can still meet.
        var taken = shares is null ? null : new List<(double Start, double Finish, double Share)>[dag.GpuCount];
        var takenFrom = shares is null ? null : new int[dag.GpuCount];
        var linkFree = links is null ? null : new double[links.LinkCount];
        var linkStart = links is null ? null : new double[links.LinkCount];
        int n = dag.Count, gpus = dag.GpuCount;
        var computeFree = new double[gpus];
        var commFree = new double[gpus];
        var lastCompute = new int[gpus];
        var lastComm = new int[gpus];
        Array.Fill(lastCompute, -1);
        Array.Fill(lastComm, -1);
        var gpuOf = dag._gpus;
        var kinds = dag._kinds;
        var blocking = !dag.CommunicationOverlapsCompute;
        var groups = dag._groups;
        // The streams of a collective's members; in a folded DAG a member's streams are its representative's (all
        // members of a symmetry class run the same operations at the same times), each listed once.
        var members = dag._groupStreams;
        var predStart = dag._predStart;
        var preds = dag._preds;
        var total = 0.0;

        for (var op = 0; op < n; op++)
        {
            var d = durations[op];
            if (!double.IsFinite(d) || d < 0) throw new ArgumentException($"duration of {dag.Name(op)} is {d}; durations must be finite and >= 0", nameof(durations));
            var ready = 0.0;
            var crit = -1;
            for (int e = predStart[op], end = predStart[op + 1]; e < end; e++)
            {
                var p = preds[e];
                if (crit < 0 || finish[p] > ready) { ready = finish[p]; crit = p; }
            }
            var group = groups[op];
            if (group < 0)
            {
                var g = gpuOf[op];
                if (computeFree[g] > ready) { ready = computeFree[g]; crit = lastCompute[g]; }
                if (blocking && commFree[g] > ready) { ready = commFree[g]; crit = lastComm[g]; }
                var f = taken?[g] is { } spans ? Slowed(spans, ref takenFrom![g], ready, d) : ready + d;
                start[op] = ready;
                finish[op] = f;
                computeFree[g] = f;
                lastCompute[g] = op;
                if (f > total) total = f;
            }
            else if (kinds[op].IsPointToPoint())
            {
                // Point-to-point activation sends go over their own link as soon as the data is ready; they do not
                // queue behind the collectives of the stream (NCCL runs p2p on separate channels). Without overlap
                // the send is blocking: the sender's compute stream waits for the transfer (the receiver waits for
                // the data through the dependency).
                var g = gpuOf[op];
                if (blocking && computeFree[g] > ready) { ready = computeFree[g]; crit = lastCompute[g]; }
                var f = linkFree is null ? ready + d : Contend(links!.Of(op), linkStart!, linkFree, ready, d);
                start[op] = ready;
                finish[op] = f;
                if (blocking) { computeFree[g] = f; lastCompute[g] = op; }
                if (f > total) total = f;
            }
            else
            {
                // A collective (only communication operations have a group): every member's communication stream,
                // and its compute stream too when communication does not overlap compute. Members ascend, so the first
                // member (of a folded class: its representative) to reach the latest free time names the predecessor.
                var m = members[group];
                foreach (var g in m)
                {
                    if (commFree[g] > ready) { ready = commFree[g]; crit = lastComm[g]; }
                    if (blocking && computeFree[g] > ready) { ready = computeFree[g]; crit = lastCompute[g]; }
                }
                var f = linkFree is null ? ready + d : Contend(links!.Of(op), linkStart!, linkFree, ready, d);
                start[op] = ready;
                finish[op] = f;
                foreach (var g in m)
                {
                    commFree[g] = f;
                    lastComm[g] = op;
                    if (blocking) { computeFree[g] = f; lastCompute[g] = op; }
                }
                if (shares is not null && shares.Of(op) is var share and > 0 && f > ready)
                    foreach (var g in m) (taken![g] ??= []).Add((ready, f, share));
                if (f > total) total = f;
            }
            critPred[op] = crit;
        }
        return total;
    }

    /// <summary>
    /// The finish of a compute operation needing <paramref name="d"/> seconds of the whole GPU, started at
    /// <paramref name="ready"/>, while the spans of SM-taking communication already scheduled on its GPU leave it
    /// (1 - share) of the SMs: it progresses at rate 1 outside the spans and (1 - share) inside. Communication issued
    /// after the operation (a higher id) does not slow it: the builders issue each all-to-all before the compute it
    /// runs beside (Megatron's EP overlap, the dispatch before the shared experts, chunk c + 1's dispatch before chunk
    /// c's experts).
    /// </summary>
    private static double Slowed(List<(double Start, double Finish, double Share)> spans, ref int from, double ready, double d)
    {
        while (from < spans.Count && spans[from].Finish <= ready) from++;
        var time = ready;
        var left = d;
        for (var i = from; i < spans.Count && left > 0; i++)
        {
            var (s, f, share) = spans[i];
            if (s > time)
            {
                if (left <= s - time) return time + left;
                left -= s - time;
                time = s;
            }
            var rate = 1 - share;
            if (left <= (f - time) * rate) return time + left / rate;
            left -= (f - time) * rate;
            time = f;
        }
        return time + left;
    }

    /// <summary>
    /// The finish of an operation needing <paramref name="d"/> alone on <paramref name="links"/>, ready at
    /// <paramref name="ready"/>: each link remembers the span of work committed on it (<c>[start, end]</c>); a new
    /// operation whose span overlaps it is delayed by the committed work left in its window (<c>end - max(ready,
    /// start)</c>), so the link never does more than one second of work per second.
    /// </summary>
    private static double Contend(ReadOnlySpan<int> links, double[] linkStart, double[] linkEnd, double ready, double d)
    {
        if (d <= 0 || links.IsEmpty) return ready + d;
        var delay = 0.0;
        foreach (var l in links)
        {
            double s = linkStart[l], e = linkEnd[l];
            if (Overlap(ready, ready + d, s, e)) delay = Math.Max(delay, e - Math.Max(ready, s));
        }
        var f = ready + d + delay;
        foreach (var l in links)
        {
            double s = linkStart[l], e = linkEnd[l];
            if (Overlap(ready, f, s, e)) { linkStart[l] = Math.Min(s, ready); linkEnd[l] = Math.Max(e, f); }
            else if (ready >= e || Touch(e, ready)) { linkStart[l] = ready; linkEnd[l] = f; }
        }
        return f;
    }

    /// <summary>
    /// Whether the spans [a, b] and [s, e] overlap by more than rounding: spans that meet end to start (one's end equal
    /// to the other's start up to 1e-12 relative, <see cref="Touch"/>) only touch. Times are sums of durations, and a sum
    /// taken in another order (one repeated product for n heads, n products one after another) may differ by an ulp;
    /// without the tolerance that ulp would count as an overlap and delay by a whole transfer.
    /// </summary>
    private static bool Overlap(double a, double b, double s, double e) => e > a && s < b && !Touch(e, a) && !Touch(b, s);

    /// <summary>Whether a span ending at <paramref name="end"/> meets one starting at <paramref name="start"/> within 1e-12 relative.</summary>
    private static bool Touch(double end, double start) => end - start <= 1e-12 * Math.Max(Math.Abs(end), Math.Abs(start));

    /// <summary>Per-GPU busy time by category, exposed communication (not under compute) and idle time.</summary>
    internal static GpuUsage[] Usage(OperatorDag dag, ReadOnlySpan<double> start, ReadOnlySpan<double> finish, double total)
    {
        var gpus = dag.GpuCount;
        var v = UsageValues(dag, start, finish, total, new ScheduleWorkspace());
        var usage = new GpuUsage[gpus];
        for (var g = 0; g < gpus; g++)
            if (dag.Representative(g) == g) usage[g] = new GpuUsage(g, v[6 * g], v[6 * g + 1], v[6 * g + 2], v[6 * g + 3], v[6 * g + 4], v[6 * g + 5]);
        for (var g = 0; g < gpus; g++)
            if (dag.Representative(g) != g) usage[g] = usage[dag.Representative(g)] with { Gpu = g };
        return usage;
    }

    /// <summary>
    /// <see cref="CriticalPathResult.BreakdownSeconds"/> from the same measure as <see cref="Usage"/>, without a record per
    /// GPU: the same sums in the same order (<see cref="CriticalPathResult.MeanOver"/>), so the same numbers bit for bit.
    /// </summary>
    internal static IReadOnlyDictionary<string, double> MeanUsage(OperatorDag dag, ReadOnlySpan<double> start, ReadOnlySpan<double> finish, double total, ScheduleWorkspace workspace)
    {
        var gpus = dag.GpuCount;
        var v = UsageValues(dag, start, finish, total, workspace);
        double mm = 0, at = 0, el = 0, comm = 0, idle = 0;
        for (var g = 0; g < gpus; g++)
        {
            var r = 6 * dag.Representative(g);
            mm += v[r];
            at += v[r + 1];
            el += v[r + 2];
            comm += v[r + 3];
            idle += v[r + 5];
        }
        var n = Math.Max(1, gpus);
        return new Dictionary<string, double>(5)
        {
            ["matmul"] = mm / n,
            ["attention"] = at / n,
            ["elementwise"] = el / n,
            ["communication"] = comm / n,
            ["idle"] = idle / n,
        };
    }

    /// <summary>
    /// Per representative GPU g, at 6g .. 6g + 5: matmul, attention, elementwise, exposed communication, overlapped
    /// communication and idle seconds (other GPUs' entries are not written); buffers from <paramref name="w"/>.
    /// </summary>
    private static double[] UsageValues(OperatorDag dag, ReadOnlySpan<double> start, ReadOnlySpan<double> finish, double total, ScheduleWorkspace w)
    {
        int gpus = dag.GpuCount, n = dag.Count;
        var byCategory = w.Rent(ref w.UsageByCategory, 3 * gpus);
        var values = w.Rent(ref w.UsageValues, 6 * gpus);
        var computeCount = w.Rent(ref w.ComputeCount, gpus + 1);
        var commCount = w.Rent(ref w.CommCount, gpus + 1);
        Array.Clear(byCategory, 0, 3 * gpus);
        Array.Clear(computeCount, 0, gpus + 1);
        Array.Clear(commCount, 0, gpus + 1);
        for (var op = 0; op < n; op++)
        {
            if (dag.Category(op) == OpCategory.Communication)
                foreach (var g in dag.Streams(op)) commCount[g + 1]++;
            else
                computeCount[dag.Gpu(op) + 1]++;
        }
        for (var g = 0; g < gpus; g++) { computeCount[g + 1] += computeCount[g]; commCount[g + 1] += commCount[g]; }
        var computeOps = w.Rent(ref w.ComputeOps, computeCount[gpus]);
        var commOps = w.Rent(ref w.CommOps, commCount[gpus]);
        var ci = w.Rent(ref w.ComputeNext, gpus + 1);
        var mi = w.Rent(ref w.CommNext, gpus + 1);
        Array.Copy(computeCount, ci, gpus + 1);
        Array.Copy(commCount, mi, gpus + 1);
        for (var op = 0; op < n; op++)
        {
            var cat = dag.Category(op);
            if (cat == OpCategory.Communication)
                foreach (var g in dag.Streams(op)) commOps[mi[g]++] = op;
            else
            {
                var g = dag.Gpu(op);
                computeOps[ci[g]++] = op;
                byCategory[3 * g + (int)cat] += finish[op] - start[op];
            }
        }
        var intervals = w.Intervals;
        for (var g = 0; g < gpus; g++)
        {
            // A folded GPU's usage is its representative's (computed first: representatives have the smallest ids of
            // their class only in the default rank order, so take them in a pass of their own below).
            if (dag.Representative(g) != g) continue;
            // Communication intervals may overlap one another (sends run beside collectives): merge them first,
            // then measure how much of the union lies under compute (compute intervals are disjoint and ascend).
            intervals.Clear();
            for (var j = commCount[g]; j < commCount[g + 1]; j++)
                if (finish[commOps[j]] > start[commOps[j]]) intervals.Add((start[commOps[j]], finish[commOps[j]]));
            SortIntervals(intervals);
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
            double mm = byCategory[3 * g], at = byCategory[3 * g + 1], el = byCategory[3 * g + 2];
            var exposed = commBusy - overlap;
            // Idle is what is left; a remainder within rounding of the total is reported as exactly zero.
            var idle = total - mm - at - el - exposed;
            values[6 * g] = mm;
            values[6 * g + 1] = at;
            values[6 * g + 2] = el;
            values[6 * g + 3] = exposed;
            values[6 * g + 4] = overlap;
            values[6 * g + 5] = idle > total * 1e-12 ? idle : 0;
        }
        return values;
    }

    /// <summary>
    /// <c>intervals.Sort()</c> (by start, then finish): a GPU's communication mostly comes in start order (its stream
    /// runs in order; only sends beside collectives interleave), so an insertion sort, in this assembly's compiled code,
    /// finishes in about one pass; past a few moves per interval it hands the rest to the framework's sort. The order is
    /// the same either way (a total order on the pairs; equal pairs are indistinguishable).
    /// </summary>
    private static void SortIntervals(List<(double Start, double Finish)> intervals)
    {
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(intervals);
        var budget = 4 * span.Length + 16;
        for (var i = 1; i < span.Length; i++)
        {
            var x = span[i];
            var j = i - 1;
            while (j >= 0 && (span[j].Start > x.Start || (span[j].Start == x.Start && span[j].Finish > x.Finish)))
            {
                span[j + 1] = span[j];
                j--;
                if (--budget < 0)
                {
                    span[j + 1] = x;
                    intervals.Sort();
                    return;
                }
            }
            span[j + 1] = x;
        }
    }
}

/// <summary>
/// Which links each communication operation of a DAG occupies (resource ids of the cost model's
/// <see cref="ILinkTopology"/>), per group and kind; built by <see cref="CostModel.Footprints"/>.
/// </summary>
public sealed class LinkFootprints
{
    private readonly OperatorDag _dag;
    private readonly int[][] _byGroup;

    internal LinkFootprints(OperatorDag dag, int linkCount, int[][] byGroup)
    {
        _dag = dag;
        LinkCount = linkCount;
        _byGroup = byGroup;
    }

    public int LinkCount { get; }

    /// <summary>The links of operation <paramref name="op"/> (empty for compute).</summary>
    public ReadOnlySpan<int> Of(int op)
    {
        var g = _dag._groups[op];
        if (g < 0) return default;
        return _byGroup[Slot(_dag, op, g)];
    }

    /// <summary>
    /// The footprint slot of an operation of group <paramref name="g"/>: 3g for a collective, 3g + 1 for a send from the
    /// group's first (lowest) GPU, 3g + 2 for a send from its last (the direction matters: NICs are full duplex).
    /// </summary>
    internal static int Slot(OperatorDag dag, int op, int g) =>
        !dag._kinds[op].IsPointToPoint() ? 3 * g : dag._gpus[op] == dag._groupMembers[g][0] ? 3 * g + 1 : 3 * g + 2;
}

/// <summary>
/// The share of a GPU's SMs each communication operation takes from compute while it runs: DeepEP's normal kernels
/// drive the all-to-all from <c>deepEpSms</c> of the SMs; built by <see cref="CostModel.ComputeShares"/>.
/// </summary>
public sealed class ComputeShares
{
    private readonly OperatorDag _dag;

    internal ComputeShares(OperatorDag dag, double allToAllShare)
    {
        _dag = dag;
        AllToAllShare = allToAllShare;
    }

    /// <summary>The share an all-to-all (dispatch or combine) takes.</summary>
    public double AllToAllShare { get; }

    /// <summary>The share operation <paramref name="op"/> takes (0 for compute, sends and other collectives).</summary>
    public double Of(int op) => _dag._groups[op] >= 0 && _dag._kinds[op].Pattern() == CollectivePattern.AllToAll ? AllToAllShare : 0;
}

/// <summary>Reusable buffers for <see cref="Scheduler.TotalSeconds(OperatorDag, ReadOnlySpan{double}, ScheduleWorkspace?)"/>; one per thread.</summary>
public sealed class ScheduleWorkspace
{
    internal double[] Start = [], Finish = [], Durations = [];
    internal int[] CritPred = [];
    // Buffers of the per-GPU usage measure.
    internal double[] UsageByCategory = [], UsageValues = [];
    internal int[] ComputeCount = [], CommCount = [], ComputeOps = [], CommOps = [], ComputeNext = [], CommNext = [];
    internal readonly List<(double Start, double Finish)> Intervals = [];

    internal T[] Rent<T>(ref T[] buffer, int length)
    {
        if (buffer.Length < length) buffer = new T[Math.Max(length, 2 * buffer.Length)];
        return buffer;
    }

    internal void Ensure(int n)
    {
        if (Start.Length >= n) return;
        Start = new double[n];
        Finish = new double[n];
        Durations = new double[n];
        CritPred = new int[n];
    }
}

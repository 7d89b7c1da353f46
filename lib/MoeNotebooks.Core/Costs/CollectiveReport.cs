using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// One distinct communication of a DAG (operation kind, group, bytes) and how the cost model priced it: the algorithm
/// chosen, the bus bandwidth reached and the time inside and across NVLink domains.
/// </summary>
public sealed record CollectiveUse(
    OpKind Kind,
    CollectivePattern Pattern,
    int Gpus,
    int Domains,
    double BytesPerGpu,
    int Count,
    double Seconds,
    string Algorithm,
    double BusBytesPerSecond,
    double IntraDomainSeconds,
    double InterDomainSeconds);

public static class CollectiveReport
{
    /// <summary>
    /// Every distinct communication of <paramref name="dag"/> with how <paramref name="cost"/> prices it, most total
    /// time first. The algorithm comes from the topology model (<see cref="LinkCommunication"/>); where a calibrated
    /// fit priced the collective instead, the algorithm reads "fit".
    /// </summary>
    public static IReadOnlyList<CollectiveUse> Of(OperatorDag dag, CostModel cost)
    {
        var links = cost.Communication switch
        {
            LinkCommunication l => l,
            CalibratedCommunication c => c.Datasheet,
            _ => null,
        };
        // Distinct (kind, price class) pairs in order of first appearance, counted: per price class its first
        // operation's kind in an array (one pass over a deep pipeline's hundreds of thousands of operations), the rare
        // class that two kinds share in a dictionary.
        var first = new int[dag.PriceClassCount];
        var counts = new int[dag.PriceClassCount];
        Array.Fill(first, -1);
        Dictionary<(OpKind, int), (int Op, int Count)>? shared = null;
        var order = new List<(OpKind Kind, int Class)>();
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Category(op) != OpCategory.Communication) continue;
            var (kind, cls) = (dag.Kind(op), dag.PriceClassOf(op));
            if (first[cls] < 0) { first[cls] = op; counts[cls] = 1; order.Add((kind, cls)); }
            else if (dag.Kind(first[cls]) == kind) counts[cls]++;
            else
            {
                shared ??= new Dictionary<(OpKind, int), (int, int)>();
                if (shared.TryGetValue((kind, cls), out var v)) shared[(kind, cls)] = (v.Op, v.Count + 1);
                else { shared[(kind, cls)] = (op, 1); order.Add((kind, cls)); }
            }
        }
        var rows = new List<CollectiveUse>();
        foreach (var (kind, cls) in order)
        {
            var (op, count) = dag.Kind(first[cls]) == kind ? (first[cls], counts[cls]) : shared![(kind, cls)];
            var pattern = kind.Pattern();
            var gpus = dag.Participants(op);
            var bytes = dag.Bytes(op);
            // The price the schedule used (CostModel.Seconds: a routed all-to-all knows its fan-out, DeepEP de-duplicates).
            var seconds = cost.Seconds(dag, op);
            var routed = pattern == CollectivePattern.AllToAll && dag.HasRoutedAllToAll;
            var price = routed && cost.Communication is LinkCommunication rl ? rl.PriceRouted(bytes, gpus, dag.RouterTopK, dag.ExpertsPerRank) : links?.Price(pattern, bytes, gpus);
            var fitted = price is not null && cost.Communication is CalibratedCommunication cc
                && cc.FitFor(pattern, bytes, gpus.Length, CountNodes(cc, gpus)) is not null;
            var algbw = seconds > 0 ? bytes / seconds : 0;
            rows.Add(new CollectiveUse(kind, pattern, gpus.Length, price?.Domains ?? 1, bytes, count, seconds,
                fitted ? "fit" : price is null ? "-" : price.Label,
                algbw * LinkCommunication.AlgorithmFactor(pattern, gpus.Length),
                fitted ? 0 : price?.IntraDomainSeconds ?? 0, fitted ? 0 : price?.InterDomainSeconds ?? 0));
        }
        return rows.OrderByDescending(r => r.Seconds * r.Count).ThenBy(r => r.Kind).ToArray();
    }

    private static int CountNodes(CalibratedCommunication c, ReadOnlySpan<int> gpus)
    {
        var nodes = new HashSet<int>();
        foreach (var g in gpus) nodes.Add(c.Hardware.NodeOf(g));
        return nodes.Count;
    }
}

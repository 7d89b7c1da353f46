using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// One line of a derivation table: identical operations of one layer on one GPU, with the shape in the founding
/// document's notation, FLOPs, bytes and Get_Time under a cost model.
/// </summary>
public sealed record OperationRow(
    string Operation,
    string Phase,
    int Count,
    long Batch,
    long M,
    long K,
    long N,
    string Shape,
    double FlopsEach,
    double BytesEach,
    double SecondsEach,
    string Dtype = "")
{
    public double TotalFlops => Count * FlopsEach;
    public double TotalSeconds => Count * SecondsEach;
}

/// <summary>Tables of a DAG's operations for derivation walkthroughs (notebooks and reports).</summary>
public static class OperationTable
{
    /// <summary>
    /// The matmul-shaped operations of one layer on one GPU (forward by default), identical ones folded with a
    /// count (e.g. 16 x Q x K^T), in issue order.
    /// </summary>
    public static IReadOnlyList<OperationRow> LayerMatmuls(OperatorDag dag, CostModel cost, int gpu = 0, int layer = 0, int microbatch = 0, OpPhase? phase = OpPhase.Forward)
    {
        var rows = new List<OperationRow>();
        var index = new Dictionary<(OpKind, OpPhase, MatmulShape), int>();
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Gpu(op) != gpu || dag.Layer(op) != layer || dag.Microbatch(op) != microbatch || !dag.Kind(op).IsMatmulShaped()) continue;
            if (phase is { } p && dag.Phase(op) != p) continue;
            var key = (dag.Kind(op), dag.Phase(op), dag.Shape(op));
            // A repeated product (a rank's heads, or experts with equal tokens) counts its products; the row's figures are each product's.
            var repeat = dag.Repeat(op);
            if (index.TryGetValue(key, out var i)) { rows[i] = rows[i] with { Count = rows[i].Count + repeat }; continue; }
            var s = dag.Shape(op);
            index[key] = rows.Count;
            rows.Add(new OperationRow(dag.Kind(op).Label(), dag.Phase(op).ToString(), repeat, s.Batch, s.M, s.K, s.N, Bracket(s),
                dag.Flops(op) / repeat, dag.Bytes(op) / repeat, cost.Seconds(dag, op) / repeat, dag.MatmulDtype(op)));
        }
        return rows;
    }

    /// <summary>Every non-matmul operation of one layer on one GPU (communication and elementwise), folded by kind.</summary>
    public static IReadOnlyList<(string Operation, int Count, double BytesEach, double SecondsEach)> LayerOthers(OperatorDag dag, CostModel cost, int gpu = 0, int layer = 0, int microbatch = 0)
    {
        var rows = new List<(string, int, double, double)>();
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Layer(op) != layer || dag.Microbatch(op) != microbatch || dag.Kind(op).IsMatmulShaped() || dag.Phase(op) != OpPhase.Forward) continue;
            if (dag.Participants(op).IndexOf(gpu) < 0) continue;
            var name = dag.Kind(op) == OpKind.Elementwise ? OpKindExtensions.ElementwiseRole(dag.Index(op)) : dag.Kind(op).Label();
            var i = rows.FindIndex(r => r.Item1 == name);
            // A repeated pass (a run of experts' activations) counts its passes; the row's figures are each pass's.
            var repeat = dag.Repeat(op);
            if (i >= 0) rows[i] = (name, rows[i].Item2 + repeat, rows[i].Item3, rows[i].Item4);
            else rows.Add((name, repeat, dag.Bytes(op) / repeat, cost.Seconds(dag, op) / repeat));
        }
        return rows;
    }

    /// <summary>"[m x k] x [k x n]", with "b x" in front for a batched product.</summary>
    public static string Bracket(MatmulShape s) => string.Create(CultureInfo.InvariantCulture,
        $"{(s.Batch == 1 ? "" : $"{s.Batch} x ")}[{s.M} x {s.K}] x [{s.K} x {s.N}]");

    /// <summary>
    /// The seed's and the corrected derivation's forward matmuls of one layer on GPU 0 side by side, per operation
    /// kind: total FLOPs each implies on that GPU, and the ratio.
    /// </summary>
    public static IReadOnlyList<DerivationDifference> CompareDerivations(Scenario scenario)
    {
        var seed = scenario with { Strategy = scenario.Strategy with { Derivation = Derivation.Seed } };
        var corrected = scenario with { Strategy = scenario.Strategy with { Derivation = Derivation.Corrected } };
        var cost = scenario.CreateCostModel();
        var a = LayerMatmuls(seed.BuildDag(), cost);
        var b = LayerMatmuls(corrected.BuildDag(), cost);
        var kinds = a.Select(r => r.Operation).Concat(b.Select(r => r.Operation)).Distinct();
        return kinds.Select(kind =>
        {
            var sa = a.Where(r => r.Operation == kind).ToList();
            var sb = b.Where(r => r.Operation == kind).ToList();
            return new DerivationDifference(kind,
                string.Join("; ", sa.Select(r => $"{r.Count} x {r.Shape}")), sa.Sum(r => r.TotalFlops), sa.Sum(r => r.TotalSeconds),
                string.Join("; ", sb.Select(r => $"{r.Count} x {r.Shape}")), sb.Sum(r => r.TotalFlops), sb.Sum(r => r.TotalSeconds));
        }).ToArray();
    }
}

/// <summary>One operation kind under the seed's shapes and under the corrected ones (one layer, GPU 0).</summary>
public sealed record DerivationDifference(string Operation, string SeedShapes, double SeedFlops, double SeedSeconds, string CorrectedShapes, double CorrectedFlops, double CorrectedSeconds)
{
    /// <summary>Corrected over seed FLOPs; null where the seed has no such operation.</summary>
    public double? FlopsRatio => SeedFlops == 0 ? null : CorrectedFlops / SeedFlops;
}

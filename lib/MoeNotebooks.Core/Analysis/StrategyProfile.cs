using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// The founding document's four "Key Insights" (matrix sizes, parallelism granularity, communication, load
/// distribution) measured on one evaluated scenario, so a notebook can check each claim with numbers.
/// Per-layer figures are the forward pass of layer 0 on GPU 0; per-GPU figures are over the whole DAG.
/// </summary>
public sealed record StrategyProfile(
    string Scenario,
    string Strategy,
    string Derivation,
    double TotalSeconds,
    // 1. Matrix sizes
    string QProjectionShape,
    string LargestMatmulShape,
    string LargestMatmulOperation,
    double MatmulFlopsPerLayerOnGpu0,
    // 2. Granularity
    long Operations,
    int MatmulOperationsPerLayerOnGpu0,
    double MeanMatmulSeconds,
    int CriticalPathOperations,
    // 3. Communication
    long CommunicationOperations,
    double CommunicationBytesPerGpu,
    double CommunicationSecondsOnCriticalPath,
    double ExposedCommunicationSecondsPerGpu,
    // 4. Load distribution
    double MaxComputeSecondsPerGpu,
    double MeanComputeSecondsPerGpu,
    double MinComputeSecondsPerGpu,
    double MaxExpertTokensPerGpu,
    double MeanExpertTokensPerGpu,
    double IdleShare)
{
    /// <summary>Busiest GPU's compute time over the mean (1 = perfectly even).</summary>
    public double ComputeImbalance => MeanComputeSecondsPerGpu == 0 ? 1 : MaxComputeSecondsPerGpu / MeanComputeSecondsPerGpu;

    /// <summary>Most expert tokens on one GPU over the mean (1 = perfectly even routing), 1 for a model without experts.</summary>
    public double ExpertTokenImbalance => MeanExpertTokensPerGpu == 0 ? 1 : MaxExpertTokensPerGpu / MeanExpertTokensPerGpu;

    public static StrategyProfile Of(Evaluation evaluation)
    {
        ArgumentNullException.ThrowIfNull(evaluation);
        var dag = evaluation.Dag;
        var result = evaluation.Result;
        var s = evaluation.Scenario.Strategy;
        var layer = OperationTable.LayerMatmuls(dag, evaluation.Cost);
        var largest = layer.OrderByDescending(r => r.FlopsEach).FirstOrDefault();
        var q = layer.FirstOrDefault(r => r.Operation == OpKind.QProjection.Label());

        var gpus = dag.GpuCount;
        var commBytes = new double[gpus];
        var expertTokens = new double[gpus];
        long comm = 0, matmuls = 0;
        var matmulSeconds = 0.0;
        // Counts are the whole DAG's: a folded operation counts as many times as it stands for (Multiplicity), and a
        // representative's per-GPU figures are copied to the GPUs of its class below.
        for (var op = 0; op < dag.Count; op++)
        {
            var kind = dag.Kind(op);
            var times = dag.Multiplicity(op);
            if (dag.Category(op) == OpCategory.Communication)
            {
                comm += times;
                foreach (var g in dag.Streams(op)) commBytes[g] += dag.Bytes(op);
            }
            else if (kind.IsMatmulShaped())
            {
                // Per product: a repeated operation (a rank's heads, experts with equal tokens) lasts its products' time.
                matmuls += times * dag.Repeat(op);
                matmulSeconds += times * result.Durations[op];
                // Tokens an expert processes: rows of its up projection (forward only, so training counts once).
                if (kind == OpKind.ExpertUp && dag.Phase(op) == OpPhase.Forward) expertTokens[dag.Gpu(op)] += dag.Shape(op).M * (double)dag.Shape(op).Batch * dag.Repeat(op);
            }
        }

        for (var g = 0; g < gpus; g++)
        {
            var r = dag.Representative(g);
            if (r == g) continue;
            commBytes[g] = commBytes[r];
            expertTokens[g] = expertTokens[r];
        }
        var compute = result.PerGpu.Select(g => g.ComputeBusySeconds).ToArray();
        var total = result.TotalSeconds;
        return new StrategyProfile(
            evaluation.Scenario.Name,
            $"EP{s.EP} x TP{s.TP} x PP{s.PP} x DP{s.DP}",
            s.Derivation.ToString(),
            total,
            q?.Shape ?? "-",
            largest?.Shape ?? "-",
            largest?.Operation ?? "-",
            layer.Sum(r => r.TotalFlops),
            dag.RepresentedCount,
            layer.Sum(r => r.Count),
            matmuls == 0 ? 0 : matmulSeconds / matmuls,
            result.CriticalOps.Count,
            comm,
            gpus == 0 ? 0 : commBytes.Average(),
            result.CriticalPathSecondsByCategory.GetValueOrDefault(CriticalPathResult.Key(OpCategory.Communication)),
            result.BreakdownSeconds.GetValueOrDefault("communication"),
            compute.Length == 0 ? 0 : compute.Max(),
            compute.Length == 0 ? 0 : compute.Average(),
            compute.Length == 0 ? 0 : compute.Min(),
            expertTokens.Length == 0 ? 0 : expertTokens.Max(),
            expertTokens.Length == 0 ? 0 : expertTokens.Average(),
            total == 0 ? 0 : result.BreakdownSeconds.GetValueOrDefault("idle") / total);
    }
}

using CsCheck;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Exactness of repeated products: the corrected derivation emits a rank's heads as one repeated product per kind and
/// pass, and each run of its experts with equal tokens as one repeated GEMM or pass (<see cref="DagBuilder.AddRepeatedMatmul"/>).
/// Oracle: the same scenario built one head and one expert at a time (<c>BuildDagProductsApart</c>, the DAG the
/// derivation built before, which BlockRefactorTests pins operation by operation), priced and scheduled by the same code.
/// Over the random-scenario stream (2,000 cases unless MOE_PROPERTY_ITER asks for fewer) with the expert path's modern
/// options drawn on top (memory-bound passes, gated FFN, clamp, FP8), every DAG built whole: the total to 1e-12 relative,
/// breakdowns and per-GPU usage to 1e-12 of the total, critical-path seconds by category to 1e-12 of the total where
/// both chose the same path (two paths that tie in exact arithmetic may tip either way: counted, fewer than one case in
/// twenty), total FLOPs and the flattened
/// runtime formula's Get_Time counts exactly (a repeated product counts its products), and the operations of each
/// repeated kind (repeats summed) equal the one-at-a-time count.
/// </summary>
public class RepeatedProductPropertyTests
{
    /// <summary>
    /// A stream case with the expert path's modern options drawn on top (the stream predates them): the experts'
    /// memory-bound passes (router, permutation, activation), a gated FFN with or without a clamp, and an FP8 recipe
    /// (quantize passes and weight casts around every GEMM) on GPUs that price FP8.
    /// </summary>
    private static Gen<Scenario> Cases =>
        from c in RandomScenarios.Valid()
        from memoryOps in Gen.Int[0, 1]
        from gated in Gen.Int[0, 2]
        from fp8 in Gen.Int[0, 2]
        select Widen(c.Scenario, memoryOps == 1, gated, fp8 == 1);

    private static Scenario Widen(Scenario s, bool memoryOps, int gated, bool fp8)
    {
        if (s.Strategy.Derivation != Derivation.Corrected || s.Model.IsDense) return s;
        var m = s.Model with
        {
            MoeMemoryBoundOps = memoryOps,
            FfnActivation = gated == 0 ? s.Model.FfnActivation : FfnActivation.Swiglu,
            ActivationClampValue = gated == 2 ? 7.0 : null,
            Precision = fp8 && s.Hardware.Gpu.PeakFlopsPerSecond.ContainsKey("fp8") && s.Model.Dtype == "bf16" ? PrecisionRecipe.Get("fp8-current") : s.Model.Precision,
        };
        try { return (s with { Model = m }).Validated(); }
        catch (ConfigException) { return s; }
    }

    [Fact]
    public void Repeated_heads_and_experts_schedule_as_one_product_at_a_time()
    {
        long heads = 0, experts = 0, corrected = 0, moe = 0, tiedPaths = 0;
        Property.Check(Cases, s =>
        {
            if (s.Strategy.Derivation != Derivation.Corrected) return;
            corrected++;
            if (!s.Model.IsDense) moe++;
            var (h, e, samePath) = AssertRepeatedEqualsApart(s);
            if (h) heads++;
            if (e) experts++;
            if (!samePath) tiedPaths++;
        }, Math.Min(Property.Iterations, 2_000));
        // Not vacuous: most corrected cases have several heads per rank (context-parallel rings keep theirs apart), and
        // many MoE cases several experts per rank with equal tokens (uniform routing; skewed routing splits the runs).
        Assert.True(heads > corrected / 2, $"{heads} of {corrected} corrected cases repeated their heads");
        Assert.True(experts > moe / 4, $"{experts} of {moe} MoE cases repeated their experts");
        // The categories were compared on most cases (tied paths are rare).
        Assert.True(tiedPaths < corrected / 20, $"{tiedPaths} of {corrected} cases chose another of tied critical paths");
    }

    /// <summary>The critical path as the GPUs, layers and microbatches it passes through (consecutive repeats merged).</summary>
    private static List<(int, int, int)> Trajectory(OperatorDag dag, CriticalPathResult r)
    {
        var steps = new List<(int, int, int)>();
        foreach (var op in r.CriticalOps)
        {
            var step = (dag.Gpu(op), dag.Layer(op), dag.Microbatch(op));
            if (steps.Count == 0 || steps[^1] != step) steps.Add(step);
        }
        return steps;
    }

    /// <summary>
    /// Compares the repeated-product DAG with the one-product-at-a-time DAG; returns whether heads and experts were
    /// repeated and whether both chose the same critical path (the categories and the formula were compared).
    /// </summary>
    private static (bool Heads, bool Experts, bool SamePath) AssertRepeatedEqualsApart(Scenario s)
    {
        var cost = s.CreateCostModel();
        var apart = s.Strategy.BuildDagProductsApart(s.Model);
        var dag = s.BuildDag(DagFolding.None);
        var a = apart.CriticalPath(cost);
        var r = dag.CriticalPath(cost);
        FoldingPropertyTests.Close(a.TotalSeconds, r.TotalSeconds, "total");
        // Sums of finish - start: n products one at a time add n rounded spans where the repeated product adds one, at
        // times up to the total, so these agree to 1e-12 of the total (as the periodic extrapolation's property has them).
        void Near(double x, double y, string what) => Assert.True(Math.Abs(x - y) <= 1e-12 * a.TotalSeconds, $"{what}: one at a time {x:R}, repeated {y:R} (total {a.TotalSeconds:R})");
        // Critical-path seconds by category are an attribution along one path: where two paths tie in exact arithmetic
        // (another microbatch's chain, another replica's GPU), a sum taken in another order can tip the choice to the
        // other. They must agree where both DAGs chose the same path (the same GPU, layer and microbatch, step by step).
        bool Repeats(params OpKind[] kinds) => Enumerable.Range(0, dag.Count).Any(op => kinds.Contains(dag.Kind(op)) && dag.Repeat(op) > 1);
        var samePath = Trajectory(apart, a).SequenceEqual(Trajectory(dag, r));
        if (samePath)
            foreach (var (k, v) in a.CriticalPathSecondsByCategory) Near(v, r.CriticalPathSecondsByCategory[k], $"critical {k}");
        foreach (var (k, v) in a.BreakdownSeconds) Near(v, r.BreakdownSeconds[k], $"breakdown {k}");
        for (var g = 0; g < a.PerGpu.Count; g++)
        {
            GpuUsage x = a.PerGpu[g], y = r.PerGpu[g];
            Near(x.MatmulSeconds, y.MatmulSeconds, $"GPU {g} matmul");
            Near(x.AttentionSeconds, y.AttentionSeconds, $"GPU {g} attention");
            Near(x.ElementwiseSeconds, y.ElementwiseSeconds, $"GPU {g} elementwise");
            Near(x.CommunicationSeconds, y.CommunicationSeconds, $"GPU {g} communication");
            Near(x.IdleSeconds, y.IdleSeconds, $"GPU {g} idle");
        }
        FoldingPropertyTests.Close(Enumerable.Range(0, apart.Count).Sum(apart.Flops), Enumerable.Range(0, dag.Count).Sum(dag.Flops), "FLOPs");
        // Products by kind: a repeated operation counts its products.
        foreach (var kind in new[] { OpKind.AttentionScore, OpKind.AttentionValue, OpKind.ExpertUp, OpKind.ExpertDown, OpKind.Quantize, OpKind.Elementwise })
            Assert.Equal(Enumerable.Range(0, apart.Count).Count(op => apart.Kind(op) == kind),
                Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == kind).Sum(dag.Repeat));
        // The runtime formula's Get_Time terms (along the critical path), flattened, are the same products.
        var repeated = (Heads: Repeats(OpKind.AttentionScore, OpKind.AttentionValue), Experts: Repeats(OpKind.ExpertUp, OpKind.ExpertDown));
        if (!samePath) return (repeated.Heads, repeated.Experts, false);
        var fa = RuntimeFormula.FromCriticalPath(a).MatmulTerms.ToDictionary(t => (t.M, t.K, t.N, t.Batch, t.Dtype), t => t.Count);
        var fr = RuntimeFormula.FromCriticalPath(r).MatmulTerms.ToDictionary(t => (t.M, t.K, t.N, t.Batch, t.Dtype), t => t.Count);
        Assert.Equal(fa.OrderBy(kv => kv.Key.ToString(), StringComparer.Ordinal), fr.OrderBy(kv => kv.Key.ToString(), StringComparer.Ordinal));
        return (repeated.Heads, repeated.Experts, true);
    }
}

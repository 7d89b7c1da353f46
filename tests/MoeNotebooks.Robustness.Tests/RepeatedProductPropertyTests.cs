using CsCheck;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Exactness of repeated attention products: the corrected derivation emits a rank's heads as one repeated product per
/// kind and pass (<see cref="DagBuilder.AddRepeatedMatmul"/>). Oracle: the same scenario built with one product per
/// head (<c>BuildDagHeadsApart</c>, the DAG the derivation built before, which BlockRefactorTests pins operation by
/// operation), priced and scheduled by the same code. Over the random-scenario stream (2,000 cases unless
/// MOE_PROPERTY_ITER asks for fewer), every DAG built whole: the total to 1e-12 relative, critical-path seconds by
/// category, breakdowns and per-GPU usage to 1e-12 of the total, total FLOPs and the flattened runtime formula's Get_Time counts exactly
/// (a repeated product counts its heads), and the attention products by kind (repeats summed) equal the per-head count.
/// </summary>
public class RepeatedProductPropertyTests
{
    [Fact]
    public void Repeated_heads_schedule_as_one_product_per_head()
    {
        long repeated = 0, corrected = 0;
        Property.Check(from c in RandomScenarios.Valid() select c.Scenario, s =>
        {
            if (s.Strategy.Derivation != Derivation.Corrected) return;
            corrected++;
            if (AssertRepeatedEqualsApart(s)) repeated++;
        }, Math.Min(Property.Iterations, 2_000));
        // Not vacuous: most corrected cases have several heads per rank (and context-parallel rings keep theirs apart).
        Assert.True(repeated > corrected / 2, $"{repeated} of {corrected} corrected cases repeated their heads");
    }

    /// <summary>Compares the repeated-product DAG with the per-head DAG; returns whether any product was repeated.</summary>
    internal static bool AssertRepeatedEqualsApart(Scenario s)
    {
        var cost = s.CreateCostModel();
        var apart = s.Strategy.BuildDagHeadsApart(s.Model);
        var dag = s.BuildDag(DagFolding.None);
        var a = apart.CriticalPath(cost);
        var r = dag.CriticalPath(cost);
        FoldingPropertyTests.Close(a.TotalSeconds, r.TotalSeconds, "total");
        // Sums of finish - start: one product per head adds n rounded spans where the repeated product adds one, at times
        // up to the total, so these agree to 1e-12 of the total (as the periodic extrapolation's property has them).
        void Near(double x, double y, string what) => Assert.True(Math.Abs(x - y) <= 1e-12 * a.TotalSeconds, $"{what}: per head {x:R}, repeated {y:R} (total {a.TotalSeconds:R})");
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
        // Products by kind: a repeated operation counts its heads.
        foreach (var kind in new[] { OpKind.AttentionScore, OpKind.AttentionValue })
            Assert.Equal(Enumerable.Range(0, apart.Count).Count(op => apart.Kind(op) == kind),
                Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == kind).Sum(dag.Repeat));
        // The runtime formula's Get_Time terms, flattened, are the same products.
        var fa = RuntimeFormula.FromCriticalPath(a).MatmulTerms.ToDictionary(t => (t.M, t.K, t.N, t.Batch, t.Dtype), t => t.Count);
        var fr = RuntimeFormula.FromCriticalPath(r).MatmulTerms.ToDictionary(t => (t.M, t.K, t.N, t.Batch, t.Dtype), t => t.Count);
        Assert.Equal(fa.OrderBy(kv => kv.Key.ToString(), StringComparer.Ordinal), fr.OrderBy(kv => kv.Key.ToString(), StringComparer.Ordinal));
        return dag.Count < apart.Count;
    }
}

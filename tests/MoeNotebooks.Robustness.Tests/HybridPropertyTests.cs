using MoeNotebooks.Config;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// The hybrid case stream (<see cref="RandomScenarios.Hybrids"/>: Megatron hybrid patterns over M, *, -, E with Mamba-2
/// layers split over TP): 10,000 cases (MOE_PROPERTY_ITER), each evaluated whole and folded. Oracles: the schedule's own bounds (the total is
/// at least the longest operation and at most their sum, finite) and the whole DAG for the folded one.
/// </summary>
public class HybridPropertyTests
{
    private static long Cases => Property.Iterations;

    [Fact]
    public void Hybrid_stream_covers_mamba_layers_under_tp_pipelines_and_training()
    {
        var cases = Property.Cases(RandomScenarios.Hybrids(), 1_000).ToList();
        Assert.Contains(cases, c => c.HybridPattern!.Contains('M') && c.Mode == WorkloadMode.Training && c.TP > 1);
        Assert.Contains(cases, c => c.HybridPattern!.Contains('M') && c.PP > 1);
        Assert.Contains(cases, c => c.HybridPattern!.Contains('-') && c.HybridPattern.Contains('*'));
        Assert.All(cases.Take(200), c => _ = c.Scenario);
    }

    [Fact]
    public void Hybrid_cases_evaluate_finite_within_the_longest_op_and_the_sum()
    {
        Property.Check(RandomScenarios.Hybrids(), c =>
        {
            var ev = c.Scenario.Evaluate();
            var r = ev.Result;
            double longest = 0, sum = 0;
            foreach (var d in r.Durations) { Assert.True(double.IsFinite(d) && d >= 0, $"duration {d}"); longest = Math.Max(longest, d); sum += d; }
            Assert.True(double.IsFinite(r.TotalSeconds) && r.TotalSeconds > 0);
            Assert.True(longest <= r.TotalSeconds, $"longest op {longest} > total {r.TotalSeconds}");
            Assert.True(r.TotalSeconds <= sum * (1 + 1e-12), $"total {r.TotalSeconds} > sum of ops {sum}");
            Assert.True(double.IsFinite(ev.Memory.PeakBytesPerGpu) && ev.Memory.PeakBytesPerGpu > 0);
        }, Cases);
    }

    [Fact]
    public void Folded_hybrid_dag_has_the_whole_dags_total()
    {
        Property.Check(RandomScenarios.Hybrids(), c =>
        {
            var s = (c with { DP = 2, Batch = c.Batch / c.DP * 2 }).Scenario;
            FoldingPropertyTests.AssertFoldedEqualsWhole(s);
        }, Property.Iterations);
    }
}

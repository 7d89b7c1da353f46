using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// The selective-recomputation stream (<see cref="RandomScenarios.SelectiveRecomputes"/>: training cases with a random set
/// of Megatron's recompute modules). Oracles: the whole DAG for the rank-folded and the periodically extrapolated
/// evaluations (to 1e-12), and the record path for the scenario-JSON path.
/// </summary>
public class SelectiveRecomputePropertyTests
{
    private static long Cases => Math.Min(Property.Iterations, 2_000);

    [Fact]
    public void Stream_covers_every_module_under_pipelines_tp_and_experts()
    {
        var cases = Property.Cases(RandomScenarios.SelectiveRecomputes(), 1_000).ToList();
        foreach (var module in Enum.GetValues<RecomputeModules>().Where(m => m != RecomputeModules.None))
            Assert.Contains(cases, c => (c.RecomputeModules & module) != 0 && c.PP > 1 && c.TP > 1 && c.EP > 1);
        Assert.All(cases.Take(200), c => _ = c.Scenario);
    }

    [Fact]
    public void Folded_selective_recompute_dag_has_the_whole_dags_total()
    {
        Property.Check(RandomScenarios.SelectiveRecomputes(), c =>
            FoldingPropertyTests.AssertFoldedEqualsWhole((c with { DP = 2, Batch = c.Batch / c.DP * 2 }).Scenario), Cases);
    }

    [Fact]
    public void Extrapolated_selective_recompute_run_equals_the_whole_dag()
    {
        long extrapolated = 0;
        var refusals = new Dictionary<string, int>();
        Property.Check(RandomScenarios.SelectiveRecomputes(), c =>
        {
            // 2 PP + 6: even and >= 2 PP (DualPipe's rule), long enough for a period.
            if (PeriodicFoldingPropertyTests.AssertExtrapolatedEqualsWhole(c.WithMicrobatches(2 * c.PP + 6).Scenario)) extrapolated++;
            else if (MicrobatchPeriodicity.LastRefusal is { } why) refusals[why] = refusals.GetValueOrDefault(why) + 1;
        }, Cases);
        Assert.True(extrapolated > 0, "no case was extrapolated: " + string.Join("; ", refusals.OrderByDescending(kv => kv.Value).Take(4).Select(kv => $"{kv.Value} x {kv.Key}")));
    }

    [Fact]
    public void Scenario_json_evaluates_as_the_record()
    {
        Property.Check(RandomScenarios.SelectiveRecomputes(), c =>
            Assert.Equal(c.Scenario.Evaluate().Result.TotalSeconds, Scenario.Parse(c.Json).Evaluate().Result.TotalSeconds), Math.Min(Cases, 300));
    }
}

using MoeNotebooks.Config;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// The properties are only as strong as the cases they see: the fixed case stream must cover both derivations,
/// training steps under both pipeline schedules, recomputation and skewed routing.
/// </summary>
public class GeneratorCoverageTests
{
    [Fact]
    public void Case_stream_covers_training_schedules_recompute_and_skewed_routing()
    {
        var cases = Property.Cases(RandomScenarios.Valid(), 2_000).ToList();
        Assert.Contains(cases, c => c.Derivation == Derivation.Seed);
        Assert.Contains(cases, c => c.Mode == WorkloadMode.Training && c.Schedule == PipelineSchedule.Gpipe && c.PP > 1);
        Assert.Contains(cases, c => c.Mode == WorkloadMode.Training && c.Schedule == PipelineSchedule.OneFOneB && c.PP > 1 && c.Microbatches > 1);
        Assert.Contains(cases, c => c.Recompute);
        Assert.Contains(cases, c => c.Zipf > 0 && c.EP > 1);
        Assert.Contains(cases, c => c.Mode == WorkloadMode.Training && c.DP > 1);
        Assert.Contains(cases, c => c.Kernel == AttentionKernel.MaterializedDropout && c.Mode == WorkloadMode.Training);
        Assert.Contains(cases, c => !c.Overlap && c.Mode == WorkloadMode.Training && c.PP > 1 && c.TP > 1 && c.ScatterGather);
        // Megatron-Core execution fields (issue 12), each in a training step where it matters.
        Assert.Contains(cases, c => c.DistributedOptimizer && c.Mode == WorkloadMode.Training && (c.DP > 1 || c.EP > 1));
        Assert.Contains(cases, c => !c.OverlapGradReduce && c.Mode == WorkloadMode.Training && (c.DP > 1 || c.EP > 1));
        Assert.Contains(cases, c => c.FirstStageLayers is not null && c.Mode == WorkloadMode.Training && c.Layers > c.PP);
        Assert.Contains(cases, c => c.OverlapParamGather && c.Mode == WorkloadMode.Training && (c.DP > 1 || c.EP > 1));
        // Issue 12's all-to-all options: Megatron-Core's EP overlap with several microbatches, DeepEP's SMs under it and alone.
        Assert.Contains(cases, c => c.AllToAllOverlap == MoeAllToAllOverlap.OneFOneB && c.Microbatches > 1);
        Assert.Contains(cases, c => c.AllToAllOverlap == MoeAllToAllOverlap.OneFOneB && c.DeepEpSms is not null && c.Microbatches > 1);
        Assert.Contains(cases, c => c.AllToAllOverlap == MoeAllToAllOverlap.DeepEp && c.EP > 1 && c.Mode == WorkloadMode.Training);
        // And every case is valid as generated (the properties assume it).
        Assert.All(cases.Take(200), c => _ = c.Scenario);
    }
}

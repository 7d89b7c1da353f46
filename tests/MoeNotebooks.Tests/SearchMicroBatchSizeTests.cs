using MoeNotebooks.Analysis;

namespace MoeNotebooks.Tests;

/// <summary>
/// The search's <c>--micro-batch-size</c> to microbatch count: sequences per microbatch on each rank that takes whole
/// sequences. Oracle: hand derivation from the layouts (and StrategySpec's batch check, which must accept the count).
/// </summary>
public class SearchMicroBatchSizeTests
{
    [Fact]
    public void The_count_divides_the_batch_over_the_attention_data_parallel_ranks()
    {
        // DeepSeek-V3 as published: 2,048 GPUs as EP 64 x PP 16 x DP 2, data-parallel attention over the 128 ranks of a
        // stage, batch 15,360: micro-batch 1 is 15,360 / 128 = 120 microbatches (not 15,360 / 2).
        var moe = StrategySearch.Candidates(2048, template: new Config.StrategySpec(1, 1, 1, 1) { Mode = Config.WorkloadMode.Training }, microBatchSizes: [1], batch: 15360);
        var published = Assert.Single(moe, c => c is { EP: 64, TP: 1, PP: 16, DP: 2 });
        Assert.Equal(120, published.Microbatches);
        // Megatron-1T with context parallelism: TP 8 x CP 2 over a stage of 48 GPUs leaves 3 ranks taking whole sequences:
        // micro-batch 1 of batch 3,072 is 1,024 microbatches.
        var dense = StrategySearch.Candidates(3072, template: new Config.StrategySpec(1, 8, 1, 1) { Mode = Config.WorkloadMode.Training }, contextParallel: [2], microBatchSizes: [1], batch: 3072);
        var cp = Assert.Single(dense, c => c is { EP: 1, TP: 8, PP: 64, DP: 6, CP: 2 });
        Assert.Equal(1024, cp.Microbatches);
        var model = new Config.ModelSpec("check", 128, 25600, 160, 102400, 0, 1, 3072, 2048) { Vocabulary = 51200 };
        cp.CheckFits(model, cp.GpuCount);
    }
}

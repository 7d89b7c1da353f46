using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

public class MemoryModelTests
{
    [Fact]
    public void FoundingConfigurationDoesNotFitAndSaysWhy()
    {
        // Oracle: the hand figure: one [1024 x 10000, 8192] bf16 activation is 167.8 GB, more than an
        // 80 GB H100 holds, and the seed layout gives every GPU all tokens.
        var m = Scenario.Load(TestPaths.Scenario("seed-ep16")).Memory();
        Assert.False(m.Feasible);
        Assert.True(m.PeakBytesPerGpu > 10240000.0 * 8192 * 2);
        Assert.Equal(80e9, m.CapacityBytes);
        Assert.Equal("activations", m.Overflow!.LargestComponent);
        Assert.Equal(m.PeakBytesPerGpu - 80e9, m.Overflow.Bytes, 1);
    }

    [Fact]
    public void WeightsGradientsAndAdamFollowZeroStages()
    {
        // Oracle: Rajbhandari et al. (ZeRO): 2 + 2 + 12 bytes per parameter, ZeRO-1 partitions the 12, ZeRO-2 also
        // the gradient 2, ZeRO-3 also the weights, over the data-parallel degree.
        var model = new ModelSpec("dense", 4, 1024, 8, 4096, 0, 1, 64, 512);
        var hw = HardwareCatalog.Get("H100-SXM");
        var baseSt = new StrategySpec(1, 1, 1, 8) { Mode = WorkloadMode.Training };
        var p = (double)Derivations.ParameterCounts.OnStage(model, baseSt, 0).Total;
        Assert.Equal(4 * (4.0 * 1024 * 1024 + 2.0 * 1024 * 4096 + 4 * 1024), p);
        StageMemory S(int zero) => MemoryModel.Estimate(model, baseSt with { ZeroStage = zero }, hw).Stages[0];
        Assert.Equal(2 * p, S(0).WeightsBytes);
        Assert.Equal(2 * p, S(0).GradientsBytes);
        Assert.Equal(12 * p, S(0).OptimizerBytes);
        Assert.Equal(12 * p / 8, S(1).OptimizerBytes, 6);
        Assert.Equal(2 * p / 8, S(2).GradientsBytes, 6);
        // ZeRO-3 as FSDP runs it: the shard plus the two units gathered at once (the computing layer and the
        // prefetched one, limit_all_gathers), each a whole layer of p / 4 parameters. (Was the shard alone: that
        // left out the gathered layers every forward and backward needs.)
        Assert.Equal(2 * p / 8 + 2 * 2 * (p / 4), S(3).WeightsBytes, 6);
    }

    [Fact]
    public void RecomputeAndMicrobatchesShrinkActivationsAndTheVerdictFindsAFit()
    {
        var s = Scenario.Load(TestPaths.Scenario("ep16"));
        var training = s with { Strategy = s.Strategy with { Mode = WorkloadMode.Training } };
        var plain = training.Memory();
        var recompute = (training with { Strategy = training.Strategy with { Recompute = true } }).Memory();
        Assert.True(recompute.Stages[0].ActivationsBytes < plain.Stages[0].ActivationsBytes);
        Assert.False(plain.Feasible);
        var fit = plain.SmallestFittingMicrobatches;
        Assert.NotNull(fit);
        var atFit = (training with { Strategy = training.Strategy with { Microbatches = fit!.Value } }).Memory();
        Assert.True(atFit.Feasible);
        if (fit > 1)
        {
            // The smallest: one fewer step of the divisor ladder does not fit.
            var smaller = Enumerable.Range(1, fit.Value - 1).Where(m => 64 % m == 0).Max();
            Assert.False((training with { Strategy = training.Strategy with { Microbatches = smaller } }).Memory().Feasible);
        }
    }

    [Fact]
    public void OneFOneBNeedsLessActivationMemoryThanGpipe()
    {
        var model = new ModelSpec("dense", 8, 2048, 16, 8192, 0, 1, 64, 2048);
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(4);
        var st = new StrategySpec(1, 1, 4, 1, Microbatches: 16) { Mode = WorkloadMode.Training };
        var gpipe = MemoryModel.Estimate(model, st with { Schedule = PipelineSchedule.Gpipe }, hw).Stages[0];
        var ofob = MemoryModel.Estimate(model, st, hw).Stages[0];
        Assert.Equal(16, gpipe.MicrobatchesInFlight);
        Assert.Equal(4, ofob.MicrobatchesInFlight);
        Assert.Equal(4.0, gpipe.ActivationsBytes / ofob.ActivationsBytes, 9);
    }

    [Fact]
    public void InterleavingChargesTheLogitsOnlyToLiveLastChunkMicrobatches()
    {
        // Oracle: a hand walk of Megatron's interleaved order on the last of 2 stages with 2 chunks each (chunks 1 and 3
        // on stage 1) and 4 microbatches: F(c1,0) F(c1,1) F(c3,0) B(c3,0) F(c3,1) B(c3,1) F(c1,2) B(c1,0) ... Three items
        // are live at the peak (after F(c3,0)), and only one of them is of the last chunk, so the fp32 logits
        // [tokens, vocab / tp] x 4 bytes are held once, not three times (the bug: 3 x (layers + logits)).
        var model = new ModelSpec("dense", 8, 1024, 8, 4096, 0, 1, 32, 1024) { Vocabulary = 128_000 };
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(2);
        var st = new StrategySpec(1, 1, 2, 1, Microbatches: 4) { Mode = WorkloadMode.Training, Schedule = PipelineSchedule.Interleaved, VirtualStages = 2 };
        var last = MemoryModel.Estimate(model, st, hw).Stages[1];
        Assert.Equal(3, last.MicrobatchesInFlight);
        var tokens = 32.0 / 4 * 1024;
        var logits = 4.0 * tokens * 128_000;
        // The same model without a vocabulary holds the layers only; the difference is the logits, once.
        var layersOnly = MemoryModel.Estimate(model with { Vocabulary = 0 }, st, hw).Stages[1];
        Assert.Equal(logits, last.ActivationsBytes - layersOnly.ActivationsBytes, 1);
        // Plain 1F1B on the last stage: one item live at a time, logits once as before.
        var plain = st with { Schedule = PipelineSchedule.OneFOneB, VirtualStages = 1 };
        var p1 = MemoryModel.Estimate(model, plain, hw).Stages[1];
        Assert.Equal(logits, p1.ActivationsBytes - MemoryModel.Estimate(model with { Vocabulary = 0 }, plain, hw).Stages[1].ActivationsBytes, 1);
    }
}

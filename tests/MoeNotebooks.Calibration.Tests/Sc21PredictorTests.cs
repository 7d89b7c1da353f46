using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration.Tests;

public class Sc21PredictorTests
{
    private static TrainingCase Small(int pp, int dp = 1, long batch = 12) =>
        new("t", "tiny", 8, 1024, 8, 4096, 512, 1000, 2 * pp * dp, batch, 2, pp, dp, 100, 0);

    private static Sc21Predictor Predictor()
    {
        var hw = HardwareCatalog.Get("DGX-A100").WithGpus(64);
        return new Sc21Predictor(new CostModel("tile-wave", new TileWaveCompute(hw.Gpu, TileWaveTable.Get("ampere")), new LinkCommunication(hw)), hw);
    }

    [Fact]
    public void The_two_stage_slice_extrapolates_to_the_full_pipeline_DAG()
    {
        // Oracle: the full 4-stage, 12-microbatch 1F1B training DAG of the same model, scheduled directly
        // (an independent computation of what the slice + (m + p - 1) law approximates).
        var c = Small(pp: 4);
        var predicted = Predictor().Predict(c);
        var full = new StrategySpec(1, 2, 4, 1, Derivation.Corrected, 12) { Mode = WorkloadMode.Training, Recompute = true, Schedule = PipelineSchedule.OneFOneB };
        var exact = full.BuildDag(Sc21Predictor.ModelOf(c, 8, 12)).CriticalPath(Predictor().Cost).TotalSeconds;
        Assert.InRange(predicted.PipelineSeconds / exact, 0.97, 1.03);
        Assert.Equal(12, predicted.Microbatches);
    }

    [Fact]
    public void Data_parallel_gradients_add_an_all_reduce_of_the_stage_parameters()
    {
        // Oracle: the datasheet ring all-reduce of the largest stage's fp16 parameters over DP ranks 8 apart (other nodes).
        var c = Small(pp: 4, dp: 4, batch: 48);
        var p = Predictor();
        var prediction = p.Predict(c);
        var st = new StrategySpec(1, 2, 4, 4);
        var bytes = Enumerable.Range(0, 4).Max(s => ParameterCounts.OnStage(Sc21Predictor.ModelOf(c, 8, 48), st, s).Total) * 2.0;
        var hw = p.Hardware;
        var expected = hw.InterNode.LatencySeconds + 2 * 3 / 4.0 * bytes / hw.InterNode.BytesPerSecond;
        Assert.Equal(expected, prediction.DataParallelSeconds, expected * 1e-9);
        Assert.Equal(12, prediction.Microbatches);
    }
}

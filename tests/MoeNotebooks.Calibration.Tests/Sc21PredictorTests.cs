using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
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

    [Theory]
    [InlineData(1, 0)]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    public void The_two_stage_slice_extrapolates_to_the_full_pipeline_DAG(int microBatch, int layersPerVirtualStage)
    {
        // Oracle: the full 4-stage training DAG of the same model under the same execution (blocking communication,
        // scatter/gather, materialized attention), scheduled directly: an independent computation of what the slice
        // and the law (m + (p - 1) / v) t approximate. Plain 1F1B and interleaved (v = 2 layers per stage / 1).
        var c = Small(pp: 4, batch: 12 * microBatch);
        var p = Predictor();
        var settings = new Sc21RunSettings("t", "tiny", microBatch, layersPerVirtualStage, DdpImplementation.Local);
        var predicted = p.Predict(c, settings);
        var v = settings.VirtualStages(c);
        var exact = p.StrategyOf(c, 4, 12, v).BuildDag(Sc21Predictor.ModelOf(c, 8, 12L * microBatch)).CriticalPath(p.Cost).TotalSeconds;
        Assert.InRange(predicted.PipelineSeconds / exact, 0.97, 1.03);
        Assert.Equal(12, predicted.Microbatches);
        Assert.Equal(layersPerVirtualStage == 0 ? 1 : 2, predicted.VirtualStages);
    }

    [Fact]
    public void Local_ddp_adds_an_all_reduce_of_the_stage_parameters_after_the_flush()
    {
        // Oracle: the datasheet ring all-reduce of the largest stage's fp16 parameters over DP ranks 8 apart (other nodes),
        // derived by hand (the ring beats the tree and the hierarchical form for one GPU per node at this size).
        var c = Small(pp: 4, dp: 4, batch: 48);
        var p = Predictor();
        var prediction = p.Predict(c);
        var st = new StrategySpec(1, 2, 4, 4);
        var bytes = Enumerable.Range(0, 4).Max(s => ParameterCounts.OnStage(Sc21Predictor.ModelOf(c, 8, 48), st, s).Total) * 2.0;
        var hw = p.Hardware;
        // One GPU per node on 4 nodes: NCCL's ring (tuning.cc) pays the first latency and 2(N-1) - 1 = 5 further network
        // steps of 2.7 us, and moves 2(p-1)/p of the buffer over the one NIC each GPU uses (rail = 25 GB/s).
        var expected = hw.InterNode.LatencySeconds + 5 * hw.InterNode.StepLatencySeconds + 2 * 3 / 4.0 * bytes / hw.InterNode.BytesPerSecond;
        Assert.Equal(expected, prediction.DataParallelSeconds, expected * 1e-9);
        Assert.Equal(12, prediction.Microbatches);
        Assert.Equal(DdpImplementation.Local, prediction.Settings.Ddp);   // no published settings for "t": the defaults
    }

    [Fact]
    public void Torch_ddp_hides_all_but_the_tail_of_the_gradient_all_reduce()
    {
        // Oracle: bounds. The all-reduces run behind the last microbatch's backward, so what shows is at least the
        // embedding's (issued when the backward ends) and at most the whole all-reduce after the flush (local DDP).
        var c = Small(pp: 1, dp: 4, batch: 16);
        var p = Predictor();
        var torch = p.Predict(c, new Sc21RunSettings("t", "tiny", 1, 0, DdpImplementation.Torch));
        var local = p.Predict(c, new Sc21RunSettings("t", "tiny", 1, 0, DdpImplementation.Local));
        var model = Sc21Predictor.ModelOf(c, 8, 16);
        var st = new StrategySpec(1, 2, 1, 4);
        var ranks = Enumerable.Range(0, 4).Select(dp => st.Rank(dp, 0, 0, 0)).ToArray();
        var embedding = p.Cost.Communication.Seconds(CollectivePattern.AllReduce, model.Vocabulary * model.HiddenSize / 2 * 2.0, ranks);
        Assert.Equal(local.PipelineSeconds, torch.PipelineSeconds, 1e-12);
        Assert.InRange(torch.DataParallelSeconds, embedding * (1 - 1e-9), local.DataParallelSeconds);
        Assert.True(torch.DataParallelSeconds < 0.5 * local.DataParallelSeconds, $"{torch.DataParallelSeconds} vs {local.DataParallelSeconds}");
    }

    [Fact]
    public void Torch_ddp_is_refused_for_pipelines()
    {
        var ex = Assert.Throws<ConfigException>(() => Predictor().Predict(Small(pp: 2), new Sc21RunSettings("t", "tiny", 1, 0, DdpImplementation.Torch)));
        Assert.Contains("ddp", ex.Message);
    }

    [Fact]
    public void Published_settings_cover_the_ten_runs_with_their_scripts_values()
    {
        // Oracle: NVIDIA/Megatron-LM examples/sc21/run_table_1.sh, transcribed by hand: 76B runs MBS 2 with 5 layers
        // per virtual stage, 1T runs MBS 1 without interleaving, the PP = 1 models use torch DDP.
        var runs = Sc21RunCatalog.Published;
        Assert.Equal(10, runs.Runs.Count);
        Assert.Equal((2, 5, DdpImplementation.Local), (runs.Runs["megatron_sc21_t1_6"].MicroBatch, runs.Runs["megatron_sc21_t1_6"].LayersPerVirtualStage, runs.Runs["megatron_sc21_t1_6"].Ddp));
        Assert.Equal((1, 0), (runs.Runs["megatron_sc21_t1_10"].MicroBatch, runs.Runs["megatron_sc21_t1_10"].LayersPerVirtualStage));
        Assert.Equal(4, runs.Runs.Values.Count(r => r.Ddp == DdpImplementation.Torch));
        Assert.Equal(new Sc21Execution(AttentionKernel.MaterializedDropout, false, true, runs.Execution.Source), runs.Execution);
    }

    [CalibrationDataFact]
    public void Published_settings_fit_the_tables_layouts()
    {
        // Every run's micro-batch divides its batch over DP and its virtual stages divide its layers per stage.
        var cases = TrainingCase.Read(RealData.Data.PathOf(PublicData.TrainingFile));
        foreach (var c in cases)
        {
            var s = Sc21RunCatalog.Published.For(c);
            Assert.Equal(c.Id, s.CaseId);
            Assert.Equal(0, c.GlobalBatch % (c.DP * (long)s.MicroBatch));
            Assert.True(s.VirtualStages(c) >= 1);
        }
    }

    [Theory]
    [InlineData("\"microBatch\": 0", "runs[0].microBatch", "0")]
    [InlineData("\"microBatch\": 1, \"ddp\": \"apex\"", "runs[0].ddp", "apex")]
    [InlineData("\"microBatch\": 1, \"batch\": 3", "runs[0].batch", "3")]
    [InlineData("\"microBatch\": 1, \"layersPerVirtualStage\": -1", "runs[0].layersPerVirtualStage", "-1")]
    public void Bad_run_settings_name_the_field_and_value(string fields, string field, string value)
    {
        var json = $$"""{ "source": "s", "execution": { "source": "s" }, "runs": [ { "case": "a", "model": "m", {{fields}} } ] }""";
        var ex = Assert.Throws<ConfigException>(() => Sc21RunCatalog.Parse(json, "test.json"));
        Assert.Equal(field, ex.Field);
        Assert.Contains(value, ex.Message);
    }

    [Fact]
    public void A_case_listed_twice_is_refused()
    {
        var json = """{ "source": "s", "execution": { "source": "s" }, "runs": [ { "case": "a", "model": "m", "microBatch": 1 }, { "case": "a", "model": "m", "microBatch": 2 } ] }""";
        var ex = Assert.Throws<ConfigException>(() => Sc21RunCatalog.Parse(json, "test.json"));
        Assert.Equal("runs[1].case", ex.Field);
    }
}

public class Sc21AblationTests
{
    [Fact]
    public void Rungs_add_one_published_fact_at_a_time_and_end_at_the_published_model()
    {
        var published = Sc21RunCatalog.Published;
        var steps = Sc21Ablation.Steps(published);
        Assert.Empty(steps[0].Catalog.Runs);
        Assert.Equal(new Sc21Execution(AttentionKernel.Fused, true, false, "assumed"), steps[0].Catalog.Execution);
        Assert.Same(published.Runs, steps[1].Catalog.Runs);
        Assert.Equal(published.Execution.AttentionKernel, steps[2].Catalog.Execution.AttentionKernel);
        Assert.Equal((published.Execution.OverlapCommunication, false), (steps[3].Catalog.Execution.OverlapCommunication, steps[3].Catalog.Execution.ScatterGather));
        Assert.Same(published, steps[^1].Catalog);
    }

    [CalibrationDataFact]
    public void The_last_rung_reproduces_the_validation_suite()
    {
        // Oracle: the last rung is the published model, so it must give the numbers `moe validate` reports.
        var results = Sc21Ablation.Run(Sc21Predictor.Calibrated(RealData.Data), TrainingCase.Read(RealData.Data.PathOf(PublicData.TrainingFile)));
        Assert.Equal(RealData.Report[TrainingSuite.Name].MapePct!.Value, results[^1].Suite.MapePct!.Value, 1e-9);
        Assert.True(results[0].Suite.MapePct > results[^1].Suite.MapePct);
    }
}

public class Sc21ScenarioFileTests
{
    [Fact]
    public void The_shipped_39B_replica_scenario_is_the_run_the_predictor_simulates()
    {
        // Oracle: the scenario file's full DAG (12 microbatches, both stages) scheduled directly, against the predictor's
        // slice law for the same run (published settings, tile-wave cost model): two routes to one number.
        var root = CalibrationData.RepositoryRoot(AppContext.BaseDirectory)!;
        var scenario = Scenario.Load(Path.Combine(root, "data", "scenarios", "gpt39b-sc21-replica.json"));
        var c = new TrainingCase("megatron_sc21_t1_5", "GPT 39.1B", 48, 8192, 64, 32768, 2048, 51200, 512, 1536, 8, 2, 32, 138, 0);
        var predictor = new Sc21Predictor(scenario.CreateCostModel(), scenario.Hardware);
        var prediction = predictor.Predict(c);
        Assert.Equal(4, prediction.Settings.MicroBatch);
        Assert.Equal(predictor.StrategyOf(c, 2, 12, 1), scenario.Strategy);   // the file spells out the published execution
        Assert.Equal(12L * prediction.Settings.MicroBatch, scenario.Model.Batch);
        var total = scenario.Evaluate().TotalSeconds;
        // With two stages the slice is the whole pipeline, and from 4 microbatches on each one adds the same steady-state
        // time, so the extrapolation to 12 is exact (measured when written: equal to 1e-12).
        Assert.Equal(total, prediction.PipelineSeconds, total * 1e-9);
    }
}

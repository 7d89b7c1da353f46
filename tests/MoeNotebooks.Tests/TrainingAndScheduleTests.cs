using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Pipeline schedules, training steps, routing, placements and overlap (issue 4).</summary>
public class TrainingAndScheduleTests
{
    internal static readonly HardwareSpec H100x8 = HardwareCatalog.Get("H100-SXM");
    private static readonly ModelSpec Small = new("small", 8, 1024, 8, 4096, 8, 1, 32, 512);
    /// <summary>A small dense GPT (8 layers, H 1024, 8 heads, 32 sequences of 512) shared by the schedule and execution tests.</summary>
    internal static readonly ModelSpec Dense = new("dense", 8, 1024, 8, 4096, 0, 1, 32, 512);

    /// <summary>Durations priced by the roofline, with communication set to zero so stages are pure compute.</summary>
    private static (OperatorDag Dag, double[] Durations) ComputeOnly(StrategySpec st, ModelSpec model)
    {
        var dag = st.BuildDag(model);
        var d = CostModel.RooflineIdeal(H100x8.WithGpus(st.GpuCount)).Price(dag);
        for (var op = 0; op < dag.Count; op++) if (dag.Category(op) == OpCategory.Communication) d[op] = 0;
        return (dag, d);
    }

    private static double StageSeconds(OperatorDag dag, double[] d, int gpu, int microbatch, Func<OpPhase, bool> phase) =>
        Enumerable.Range(0, dag.Count).Where(op => dag.Gpu(op) == gpu && dag.Microbatch(op) == microbatch && phase(dag.Phase(op))
                                                    && dag.Category(op) != OpCategory.Communication).Sum(op => d[op]);

    [Theory]
    [InlineData(2, 4)]
    [InlineData(4, 8)]
    [InlineData(4, 3)]
    public void GpipeForwardTakesMPlusPMinusOneStageTimes(int stages, int microbatches)
    {
        // Oracle: GPipe with p uniform stages of time t and m microbatches finishes after (m + p - 1) t.
        var model = Dense with { Layers = 8, Batch = 24 * 8 };
        var st = new StrategySpec(1, 1, stages, 1, Microbatches: microbatches) { Schedule = PipelineSchedule.Gpipe };
        var (dag, d) = ComputeOnly(st, model);
        var t = StageSeconds(dag, d, 0, 0, p => p == OpPhase.Forward);
        Assert.Equal((microbatches + stages - 1) * t, Scheduler.Schedule(dag, d).TotalSeconds, t * 1e-9);
    }

    [Theory]
    [InlineData(PipelineSchedule.Gpipe)]
    [InlineData(PipelineSchedule.OneFOneB)]
    public void TrainingPipelineTakesMPlusPMinusOneForwardBackwardTimes(PipelineSchedule schedule)
    {
        // Oracle: for uniform stages both GPipe and 1F1B take (m + p - 1)(t_f + t_b) (Narayanan et al., SC21, eq. 1:
        // bubble fraction (p - 1) / m); 1F1B differs in memory, not time.
        var st = new StrategySpec(1, 1, 4, 1, Microbatches: 8) { Mode = WorkloadMode.Training, Schedule = schedule };
        var (dag, d) = ComputeOnly(st, Dense);
        var tf = StageSeconds(dag, d, 0, 0, p => p == OpPhase.Forward);
        var tb = StageSeconds(dag, d, 0, 0, p => p is OpPhase.BackwardData or OpPhase.BackwardWeight);
        var total = Scheduler.Schedule(dag, d).TotalSeconds;
        var optimizer = Enumerable.Range(0, dag.Count).Where(op => dag.Phase(op) == OpPhase.Update && dag.Gpu(op) == 0).Sum(op => d[op]);
        Assert.Equal((8 + 4 - 1) * (tf + tb) + optimizer, total, total * 1e-9);
    }

    [Fact]
    public void InterleavingDividesTheBubbleByTheVirtualStages()
    {
        // Oracle: Narayanan et al., SC21, Sec. 2.2.2: the interleaved schedule's bubble is (p - 1)(t_f + t_b) / v.
        var baseSt = new StrategySpec(1, 1, 4, 1, Microbatches: 8) { Mode = WorkloadMode.Training };
        var (dag1, d1) = ComputeOnly(baseSt, Dense);
        var (dag2, d2) = ComputeOnly(baseSt with { Schedule = PipelineSchedule.Interleaved, VirtualStages = 2 }, Dense);
        var tf = StageSeconds(dag1, d1, 0, 0, p => p == OpPhase.Forward);
        var tb = StageSeconds(dag1, d1, 0, 0, p => p is OpPhase.BackwardData or OpPhase.BackwardWeight);
        var opt = Enumerable.Range(0, dag1.Count).Where(op => dag1.Phase(op) == OpPhase.Update && dag1.Gpu(op) == 0).Sum(op => d1[op]);
        var interleaved = Scheduler.Schedule(dag2, d2).TotalSeconds;
        Assert.Equal(8 * (tf + tb) + 3 * (tf + tb) / 2 + opt, interleaved, interleaved * 1e-6);
    }

    [Fact]
    public void OneFOneBHoldsAtMostPMicrobatchesWhileGpipeHoldsAll()
    {
        var gpipe = PipelinePlan.Build(4, 1, 16, PipelineSchedule.Gpipe, training: true);
        var ofob = PipelinePlan.Build(4, 1, 16, PipelineSchedule.OneFOneB, training: true);
        Assert.Equal(16, PipelinePlan.PeakInFlight(gpipe[0]));
        Assert.Equal([4, 3, 2, 1], ofob.Select(PipelinePlan.PeakInFlight).ToArray());
        foreach (var stage in ofob)
        {
            Assert.Equal(16, stage.Count(i => !i.Backward));
            Assert.Equal(16, stage.Count(i => i.Backward));
        }
    }

    [Fact]
    public void TrainingStepCostsThreeForwardsOfFlopsAndFourWithRecompute()
    {
        // Oracle: each matmul's backward is two products of the forward's size (dX and dW), so a training step is
        // 3x the forward FLOPs; full recomputation adds one more forward (Narayanan et al.: 4x with recompute).
        double Flops(StrategySpec st) { var dag = st.BuildDag(Small); return Enumerable.Range(0, dag.Count).Sum(dag.Flops); }
        var fwd = Flops(new StrategySpec(2, 2, 2, 1, Microbatches: 2));
        var train = Flops(new StrategySpec(2, 2, 2, 1, Microbatches: 2) { Mode = WorkloadMode.Training });
        var recompute = Flops(new StrategySpec(2, 2, 2, 1, Microbatches: 2) { Mode = WorkloadMode.Training, Recompute = true });
        Assert.Equal(3 * fwd, train, fwd * 1e-12);
        Assert.Equal(4 * fwd, recompute, fwd * 1e-12);
    }

    [Fact]
    public void DataParallelGradientsAreAllReducedOncePerLayerAndOptimizerRunsOnEveryGpu()
    {
        var st = new StrategySpec(1, 2, 1, 2) { Mode = WorkloadMode.Training };
        var dag = st.BuildDag(Dense);
        var syncs = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.GradientAllReduce).ToArray();
        Assert.Equal(Dense.Layers * 2, syncs.Length);                       // one per layer per TP rank
        Assert.All(syncs, op => Assert.Equal(2, dag.Participants(op).Length));
        // Bytes: the layer's parameters on one GPU (4H^2/TP + 2HF/TP + norms) in bf16.
        var p = ParameterCounts.PerLayer(Dense, st);
        Assert.Equal((4L * 1024 * 1024 / 2 + 2L * 1024 * 4096 / 2 + 4 * 1024) * 2, (long)dag.Bytes(syncs[0]));
        Assert.Equal(p.Total * 2, (long)dag.Bytes(syncs[0]));
        Assert.Equal(4, Enumerable.Range(0, dag.Count).Count(op => dag.Kind(op) == OpKind.Elementwise && dag.Index(op) == 6));
        var zero2 = (st with { ZeroStage = 2 }).BuildDag(Dense);
        Assert.Contains(Enumerable.Range(0, zero2.Count), op => zero2.Kind(op) == OpKind.GradientReduceScatter);
        Assert.Contains(Enumerable.Range(0, zero2.Count), op => zero2.Kind(op) == OpKind.ParameterAllGather);
    }

    [Fact]
    public void ZipfRoutingFollowsOneOverRankAndCapacityDropsTheExcess()
    {
        // Oracle: hand computation. Zipf s = 1 over 4 experts: shares 1, 1/2, 1/3, 1/4 over H_4 = 25/12.
        var zipf = new RoutingSpec(RoutingDistribution.Zipf, 1.0);
        var shares = zipf.Shares(4);
        Assert.Equal(12.0 / 25, shares[0], 12);
        Assert.Equal(3.0 / 25, shares[3], 12);
        var (counts, dropped) = zipf.Assign(2500, 4);
        Assert.Equal([1200L, 600, 400, 300], counts);
        Assert.Equal(0, dropped);
        // Capacity factor 1.25: at most ceil(1.25 x 2500 / 4) = 782 tokens per expert; expert 0 drops 418.
        var (capped, drop) = (zipf with { CapacityFactor = 1.25 }).Assign(2500, 4);
        Assert.Equal([782L, 600, 400, 300], capped);
        Assert.Equal(418, drop);
        var (explicitCounts, _) = new RoutingSpec(RoutingDistribution.Explicit, TokensPerExpert: [3, 1]).Assign(100, 2);
        Assert.Equal([75L, 25], explicitCounts);
    }

    [Fact]
    public void CapacityDropsAreReportedAndShrinkTheHotExpertsGemm()
    {
        // Oracle: hand computation. EP = 4, 8 experts, 32 x 512 tokens split over 4 ranks: the group routes 16,384
        // tokens; capacity factor 1.0 caps each expert at 16,384 / 8 = 2,048 tokens.
        var model = Small with { Routing = new RoutingSpec(RoutingDistribution.Zipf, 1.0, CapacityFactor: 1.0) };
        var st = new StrategySpec(4, 1, 1, 1);
        var routing = RoutingOutcome.Of(model, st)!;
        Assert.Equal(16384, routing.RoutedTokens);
        Assert.All(routing.TokensPerExpert, t => Assert.True(t <= 2048));
        var (uncapped, _) = (model.Routing with { CapacityFactor = null }).Assign(16384, 8);
        Assert.Equal(uncapped.Sum(t => Math.Max(0, t - 2048)), routing.DroppedTokens);
        Assert.True(routing.DroppedTokens > 0);
        var dag = st.BuildDag(model);
        var hot = Enumerable.Range(0, dag.Count).First(op => dag.Kind(op) == OpKind.ExpertUp && dag.Index(op) == 0);
        Assert.Equal(2048, dag.Shape(hot).M);
        var scenario = new Scenario("capped", model, HardwareCatalog.Get("H100-SXM").WithGpus(4), st, CostModelSpec.Ideal);
        var reported = scenario.Evaluate().Routing!;
        Assert.Equal(routing.DroppedTokens, reported.DroppedTokens);
        Assert.Equal(routing.TokensPerExpert, reported.TokensPerExpert);
    }

    [Fact]
    public void SkewedRoutingLoadsTheHotExpertAndItsAllToAll()
    {
        var model = Small with { Experts = 8 };
        var st = new StrategySpec(8, 1, 1, 1);
        var uniform = st.BuildDag(model);
        var skewed = st.BuildDag(model with { Routing = new RoutingSpec(RoutingDistribution.Zipf, 1.2) });
        long ExpertTokens(OperatorDag dag, int expert) =>
            Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.ExpertUp && dag.Index(op) == expert && dag.Layer(op) == 0).Select(op => dag.Shape(op).M).Single();
        // Each rank's 4 x 512 tokens; the group's 16,384 tokens spread evenly: 2048 per expert.
        Assert.Equal(2048, ExpertTokens(uniform, 0));
        var (expected, _) = new RoutingSpec(RoutingDistribution.Zipf, 1.2).Assign(32 * 512, 8);
        Assert.Equal(expected[0], ExpertTokens(skewed, 0));
        Assert.True(expected[0] > 2048);
        double A2A(OperatorDag dag) => Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.AllToAllDispatch).Max(dag.Bytes);
        Assert.Equal(expected[0] * 1024 * 2, A2A(skewed));   // the hot rank receives more than any rank sends
        Assert.Equal(2048 * 1024 * 2, A2A(uniform));
        var hw = H100x8;
        Assert.True(skewed.CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds > uniform.CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds);
    }

    [Fact]
    public void OverlapOffIsNeverFasterAndChunkingHidesAllToAll()
    {
        var model = ModelSpec.Seed with { Batch = 64, SequenceLength = 2048 };
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(16);
        double Total(StrategySpec st) => st.BuildDag(model).CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds;
        var on = new StrategySpec(16, 1, 1, 1) { Mode = WorkloadMode.Training };
        var off = on with { OverlapCommunication = false };
        var chunked = on with { AllToAllChunks = 4 };
        Assert.True(Total(off) >= Total(on));
        Assert.True(Total(chunked) < Total(on), $"chunked {Total(chunked)} vs {Total(on)}");
        // Forward pass too: every chunk's dispatch is issued before the experts, so chunk c + 1 travels while chunk c
        // computes, and chunk c's combine overlaps chunk c + 1's experts. More chunks, less exposed all-to-all.
        var forward = new StrategySpec(16, 1, 1, 1);
        Assert.True(Total(forward with { AllToAllChunks = 2 }) < Total(forward));
        Assert.True(Total(forward with { AllToAllChunks = 4 }) < Total(forward with { AllToAllChunks = 2 }));
    }

    [Fact]
    public void ExpertGroupInsideANodeIsFasterThanAcrossNodes()
    {
        // EP = 8 x DP = 2 on two nodes of 8. The default nesting "tp-ep-pp-dp" keeps each EP group in one node
        // (all-to-all over NVLink); "tp-dp-pp-ep" interleaves the replicas so each EP group spans both nodes.
        var model = Small with { Experts = 8, Batch = 64 };
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(16);
        double Total(string order) => new StrategySpec(8, 1, 1, 2) { RankOrder = order }.BuildDag(model)
            .CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds;
        Assert.True(Total("tp-ep-pp-dp") < Total("tp-dp-pp-ep"));
        Assert.Equal([0, 2, 4, 6, 8, 10, 12, 14], Enumerable.Range(0, 8).Select(ep => new StrategySpec(8, 1, 1, 2) { RankOrder = "tp-dp-pp-ep" }.Rank(0, 0, ep, 0)));
    }

    [Fact]
    public void TensorParallelAttentionCombinesExpertsWithAnAllReduce()
    {
        var st = new StrategySpec(4, 1, 1, 1) { Attention = AttentionPlacement.TensorParallel };
        var dag = st.BuildDag(Small);
        Assert.DoesNotContain(Enumerable.Range(0, dag.Count), op => dag.Kind(op) == OpKind.AllToAllDispatch);
        var combine = Enumerable.Range(0, dag.Count).First(op => dag.Kind(op) == OpKind.ExpertAllReduce);
        Assert.Equal(4, dag.Participants(combine).Length);
        var q = Enumerable.Range(0, dag.Count).First(op => dag.Kind(op) == OpKind.QProjection);
        Assert.Equal(new MatmulShape(32 * 512, 1024, 1024 / 4), dag.Shape(q)); // all tokens, heads over 4 ranks
    }

    [Fact]
    public void DenseModelsHaveNoExpertsAndRejectExpertParallelism()
    {
        var dag = new StrategySpec(1, 2, 1, 1).BuildDag(Dense with { Vocabulary = 1024 });
        Assert.DoesNotContain(Enumerable.Range(0, dag.Count), op => dag.Kind(op) is OpKind.ExpertUp or OpKind.Gate);
        Assert.Contains(Enumerable.Range(0, dag.Count), op => dag.Kind(op) == OpKind.Logits);
        var ex = Assert.Throws<ConfigException>(() => new StrategySpec(2, 1, 1, 1).BuildDag(Dense));
        Assert.Equal("strategy.ep", ex.Field);
    }

    [Fact]
    public void SensitivityNeverSavesMoreThanTheSpeedupOfWhatIsOnThePath()
    {
        // Oracle: the old critical path still exists with its class's durations cut by 10%, so the new total is
        // at least the old total minus 10% of that class's time on the path; and nothing gets slower.
        var e = Scenario.Load(TestPaths.Scenario("tp8-pp2")).Evaluate();
        foreach (var row in e.Sensitivity(0.1))
        {
            Assert.InRange(row.SavedSeconds, -1e-12, 0.1 * row.CriticalPathSeconds + 1e-9);
        }
        Assert.Contains(e.Sensitivity(0.1), r => r.Scope == "link" && r.Target.StartsWith("network"));
    }
}

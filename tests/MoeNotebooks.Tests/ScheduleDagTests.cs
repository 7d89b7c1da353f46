using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// ZB-H1 and DualPipe inside the DAG (issue 12 item 7): each block's backward split into input-gradient (B) and
/// weight-gradient (W) GEMMs placed by the schedule, DualPipe's bidirectional placement with two parameter copies, and its
/// F&amp;B pairs issued interleaved so one microbatch's all-to-all runs under the other's compute.
/// </summary>
public class ScheduleDagTests
{
    /// <summary>A dense model without vocabulary: every stage and direction holds the same two layers.</summary>
    private static ModelSpec Dense(int pp) => new("dense", 2 * pp, 256, 4, 1024, 0, 1, 72, 64);

    private static StrategySpec Pipeline(int pp, int m, PipelineSchedule schedule) =>
        new(1, 1, pp, 1, Microbatches: m) { Mode = WorkloadMode.Training, Schedule = schedule };

    /// <summary>Which pass of the zero-bubble split an operation belongs to: F, B (dX, and the attention products' second GEMM) or W (dW).</summary>
    private static char PassOf(OperatorDag dag, int op) => dag.Phase(op) switch
    {
        OpPhase.Forward or OpPhase.Recompute => 'F',
        OpPhase.BackwardData => 'B',
        OpPhase.BackwardWeight => dag.Category(op) == OpCategory.Attention ? 'B' : 'W',
        _ => 'U',
    };

    /// <summary>
    /// Durations making every item's F, B and W pass take exactly one unit: each compute operation of pass X on GPU g for
    /// microbatch mb lasts 1 / (operations of pass X on g for mb); communication and the optimizer step take nothing.
    /// </summary>
    private static double[] UnitPasses(OperatorDag dag)
    {
        var counts = new Dictionary<(int, int, char), int>();
        (int, int, char) Key(int op) => (dag.Gpu(op), dag.Microbatch(op), PassOf(dag, op));
        bool Timed(int op) => dag.Category(op) != OpCategory.Communication && PassOf(dag, op) != 'U';
        for (var op = 0; op < dag.Count; op++) if (Timed(op)) counts[Key(op)] = counts.GetValueOrDefault(Key(op)) + 1;
        var d = new double[dag.Count];
        for (var op = 0; op < dag.Count; op++) if (Timed(op)) d[op] = 1.0 / counts[Key(op)];
        return d;
    }

    [Theory]
    [InlineData(PipelineSchedule.OneFOneB, 2, 4)]
    [InlineData(PipelineSchedule.OneFOneB, 4, 8)]
    [InlineData(PipelineSchedule.ZeroBubbleH1, 2, 4)]
    [InlineData(PipelineSchedule.ZeroBubbleH1, 4, 8)]
    [InlineData(PipelineSchedule.ZeroBubbleH1, 3, 9)]
    [InlineData(PipelineSchedule.DualPipe, 2, 4)]
    [InlineData(PipelineSchedule.DualPipe, 4, 8)]
    [InlineData(PipelineSchedule.DualPipe, 4, 12)]
    [InlineData(PipelineSchedule.DualPipe, 6, 12)]
    public void WithoutCommunicationTheDagStepIsThePapersBubble(PipelineSchedule schedule, int p, int m)
    {
        // Oracle: the papers' bubbles with F = B = W = 1 and no communication: 1F1B (p - 1)(F + B + W) (Qi et al. 2023
        // Table 1), ZB-H1 (p - 1)(F + B - W) (Qi et al. §3.1), DualPipe (p/2 - 1)(F&B + B - 3W) with B the whole backward
        // and F&B = F + B + W when there is nothing to overlap (DeepSeek-V3 report Table 2); every rank does m F, B and W.
        // The same plans timed by PipelinePlanTests' independent list scheduler give the same makespan.
        var dag = Pipeline(p, m, schedule).BuildDag(Dense(p));
        var step = Scheduler.Schedule(dag, UnitPasses(dag)).TotalSeconds;
        var bubble = schedule switch
        {
            PipelineSchedule.OneFOneB => (p - 1) * 3.0,
            PipelineSchedule.ZeroBubbleH1 => (p - 1) * 1.0,
            _ => (p / 2 - 1) * (3.0 + 2.0 - 3.0),
        };
        Assert.Equal(3.0 * m + bubble, step, 9);
        var plan = PipelinePlan.Build(p, 1, m, schedule, training: true);
        var (makespan, _) = PipelinePlanTests.Simulate(plan, p, new PipelinePlanTests.Times(1, 1, 1, 3));
        Assert.Equal(makespan, step, 9);
    }

    [Fact]
    public void OneFOneBKeepsEachWeightGradientRightAfterItsInputGradient()
    {
        // Oracle: the split is materialized only where the schedule asks: under 1F1B every dW GEMM directly follows its
        // dX GEMM in issue order (BlockRefactorTests pins the whole DAG); under ZB-H1 the same GEMMs exist, counted by
        // kind and shape, but no linear layer's dW directly follows its dX.
        var model = new ModelSpec("moe", 4, 256, 4, 512, 4, 2, 8, 64);
        var oneF = new StrategySpec(2, 1, 2, 1, Microbatches: 4) { Mode = WorkloadMode.Training };
        var a = oneF.BuildDag(model);
        var b = (oneF with { Schedule = PipelineSchedule.ZeroBubbleH1 }).BuildDag(model);
        string Sig(OperatorDag d, int op) => $"{d.Kind(op)} {d.Phase(op)} {d.Gpu(op)} {d.Layer(op)} {d.Microbatch(op)} {d.Shape(op)}";
        Assert.Equal(Enumerable.Range(0, a.Count).Select(op => Sig(a, op)).Order(), Enumerable.Range(0, b.Count).Select(op => Sig(b, op)).Order());
        int Adjacent(OperatorDag d) => Enumerable.Range(1, d.Count - 1).Count(op =>
            d.Phase(op) == OpPhase.BackwardWeight && d.Kind(op).IsLinearLayer() && d.Phase(op - 1) == OpPhase.BackwardData && d.Kind(op - 1) == d.Kind(op));
        Assert.Equal(a.Count(OpPhase.BackwardWeight, linearOnly: true), Adjacent(a));
        Assert.Equal(0, Adjacent(b));
    }

    [Fact]
    public void DualPipeHoldsTwoStagesPerRankAndSumsTheCopiesGradients()
    {
        // Oracle: DeepSeek-V3 report §3.2.1: rank i holds stages i and pp - 1 - i (two copies of the parameters).
        // Hand count, pp 4, 8 layers of equal size: every rank runs forwards of 4 layers (2 per direction), 2 x its
        // 1F1B weights; the gradients of stage s are summed over ranks s and pp - 1 - s.
        var model = Dense(4);
        var st = Pipeline(4, 8, PipelineSchedule.DualPipe);
        var dag = st.BuildDag(model);
        for (var g = 0; g < 4; g++)
        {
            var layers = Enumerable.Range(0, dag.Count).Where(op => dag.Gpu(op) == g && dag.Phase(op) == OpPhase.Forward && dag.Layer(op) >= 0)
                .Select(op => dag.Layer(op)).Distinct().Order().ToArray();
            Assert.Equal(new[] { 2 * g, 2 * g + 1, 2 * (3 - g), 2 * (3 - g) + 1 }.Order(), layers);
            Assert.Equal(2 * ParameterCounts.OnStage(model, st, g).Total, ParameterCounts.OnRank(model, st, g).Total);
        }
        var syncs = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.GradientAllReduce).ToArray();
        Assert.Equal(model.Layers, syncs.Length);
        foreach (var op in syncs)
        {
            var stage = dag.Layer(op) / 2;
            Assert.Equal(new[] { stage, 3 - stage }.Order(), dag.GroupMembers(dag.Group(op)).ToArray().Order());
        }
        // Memory: the weights of two stages on every rank.
        var mem = MemoryModel.Estimate(model, st, HardwareCatalog.Get("H100-SXM") with { GpuCount = 4 });
        var one = MemoryModel.Estimate(model, st with { Schedule = PipelineSchedule.OneFOneB }, HardwareCatalog.Get("H100-SXM") with { GpuCount = 4 });
        for (var s = 0; s < 4; s++) Assert.Equal(2 * one.Stages[s].WeightsBytes, mem.Stages[s].WeightsBytes, 6);
        Assert.Contains(MemoryModel.DualPipeNote, mem.ToString());   // what `moe evaluate` prints on its Memory line
        // ZB-H1 keeps 1F1B's memory (Qi et al. §3.1: W passes hold no extra microbatch in flight).
        var zb = MemoryModel.Estimate(model, st with { Schedule = PipelineSchedule.ZeroBubbleH1 }, HardwareCatalog.Get("H100-SXM") with { GpuCount = 4 });
        Assert.Equal(one.PeakBytesPerGpu, zb.PeakBytesPerGpu);
        Assert.DoesNotContain("DualPipe", one.ToString());
    }

    [Fact]
    public void DualPipePairsHideTheAllToAllUnderTheOtherMicrobatchsCompute()
    {
        // Oracle, by hand: MoE with EP 2 on 2 stages (one layer each), every compute operation 1 unit, every all-to-all
        // a = 0.5, other communication free. Under 1F1B a forward item waits for its dispatch and its combine: its compute
        // spans (its operations) + 2a. A DualPipe F&B pair is issued layer by layer in the merged order (the backward's
        // combine under the forward's attention, its experts over the forward's dispatch, the backward's dispatch under
        // the forward's experts, the forward's combine under the backward's attention): each all-to-all (a < 1) finishes
        // while the other chunk's next segment (>= 1 operation) computes, so once both chunks have started no compute
        // operation of the pair waits on an all-to-all: the pair's compute runs back to back.
        var model = new ModelSpec("moe", 2, 256, 4, 512, 4, 2, 16, 64);
        const double a = 0.5;
        double[] Durations(OperatorDag d) => Enumerable.Range(0, d.Count).Select(op =>
            d.Kind(op) is OpKind.AllToAllDispatch or OpKind.AllToAllCombine ? a : d.Category(op) == OpCategory.Communication || d.Phase(op) == OpPhase.Update ? 0.0 : 1.0).ToArray();
        static bool Compute(OperatorDag d, int op) => d.Category(op) != OpCategory.Communication && d.Phase(op) != OpPhase.Update;

        var oneF = new StrategySpec(2, 1, 2, 1, Microbatches: 4) { Mode = WorkloadMode.Training };
        var d1 = oneF.BuildDag(model);
        var r1 = Scheduler.Schedule(d1, Durations(d1));
        var f0 = Enumerable.Range(0, d1.Count).Where(op => d1.Gpu(op) == 0 && d1.Microbatch(op) == 0 && d1.Phase(op) == OpPhase.Forward && Compute(d1, op)).ToArray();
        Assert.Equal(f0.Length + 2 * a, r1.FinishSeconds(f0[^1]) - r1.StartSeconds(f0[0]), 9);

        var dual = oneF with { Schedule = PipelineSchedule.DualPipe, Microbatches = 8 };
        var d2 = dual.BuildDag(model);
        var r2 = Scheduler.Schedule(d2, Durations(d2));
        var pairs = 0;
        for (var rank = 0; rank < 2; rank++)
        {
            var plan = PipelinePlan.Build(2, 1, 8, PipelineSchedule.DualPipe, training: true)[rank];
            for (var i = 0; i < plan.Count; i++)
            {
                if (!plan[i].OverlapsNext) continue;
                var (f, b) = (plan[i], plan[i + 1]);
                // The pair's compute on this rank's first EP GPU, in issue order.
                var gpu = rank * 2;
                var ops = Enumerable.Range(0, d2.Count).Where(op => d2.Gpu(op) == gpu && Compute(d2, op) &&
                    ((d2.Microbatch(op) == f.Microbatch && d2.Phase(op) == OpPhase.Forward) || (d2.Microbatch(op) == b.Microbatch && d2.Phase(op) is OpPhase.BackwardData or OpPhase.BackwardWeight or OpPhase.Recompute))).ToArray();
                // The pair's first operations wait for the pipeline inputs; after both runs have started, none waits.
                var fStart = ops.First(op => d2.Phase(op) == OpPhase.Forward);
                var bStart = ops.First(op => d2.Phase(op) != OpPhase.Forward);
                var from = Array.IndexOf(ops, Math.Max(fStart, bStart));
                for (var k = from + 1; k < ops.Length; k++)
                    Assert.Equal(r2.FinishSeconds(ops[k - 1]), r2.StartSeconds(ops[k]), 9);
                pairs++;
            }
        }
        Assert.Equal(2 * 5, pairs);   // hand count from the plan: m/2 - pp + 1 = 3 rounds of two pairs per rank, the first half unoverlapped (middle rank)
    }

    [Fact]
    public void EachDualPipeParameterCopyCastsItsWeightsOnce()
    {
        // Oracle: Transformer Engine casts a linear layer's weight once per step, in its first microbatch
        // (is_first_microbatch). Under DualPipe each rank holds two copies (stages s and pp - 1 - s) whose first
        // microbatches are 0 (entering at rank 0) and m/2 (entering at rank pp - 1): by hand, one weight cast per
        // linear layer per copy, so twice the weight casts of 1F1B on the same layout (which holds one copy).
        var model = Dense(2) with { Precision = PrecisionRecipe.Get("fp8-current") };
        var st = Pipeline(2, 4, PipelineSchedule.DualPipe);
        int Casts(OperatorDag d) => Enumerable.Range(0, d.Count).Count(op => d.Kind(op) == OpKind.Quantize && d.Phase(op) == OpPhase.Forward && d.Predecessors(op).Length == 0);
        var oneF = Casts((st with { Schedule = PipelineSchedule.OneFOneB }).BuildDag(model));
        Assert.True(oneF > 0);
        Assert.Equal(2 * oneF, Casts(st.BuildDag(model)));
    }

    [Fact]
    public void SearchEnumeratesTheSchedulesAndCountsWhatDualPipeCannotRun()
    {
        // Oracle: a count by hand. 4 GPUs have 10 ordered (EP, TP, PP, DP) factorizations: 6 with PP = 1 (one candidate,
        // the schedule has nothing to order), 3 with PP = 2 and 1 with PP = 4 (three schedules each); with microbatches
        // {4}: 6 + 4 x 3 = 18 candidates. DualPipe with PP = 4 needs >= 8 microbatches: it is rejected naming
        // strategy.microbatches, counted under its reason (as are EP > 1 layouts of the dense model); the PP = 2 layouts
        // without EP are evaluated under ZB-H1 and DualPipe alike.
        var template = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        PipelineSchedule[] schedules = [PipelineSchedule.OneFOneB, PipelineSchedule.ZeroBubbleH1, PipelineSchedule.DualPipe];
        var candidates = StrategySearch.Candidates(4, [4], template, schedules: schedules);
        Assert.Equal(18, candidates.Count);
        Assert.Equal(4, candidates.Count(c => c.Schedule == PipelineSchedule.DualPipe));
        Assert.Equal(4, candidates.Count(c => c.Schedule == PipelineSchedule.ZeroBubbleH1));
        var model = Dense(2) with { Layers = 4, Batch = 16 };
        var scenario = new Scenario("dense", model, HardwareCatalog.Get("H100-SXM").WithGpus(4), template with { DP = 4 }, CostModelSpec.Ideal);
        var result = StrategySearch.Run(scenario, 4, new SearchOptions(Top: 40, Microbatches: [4], MaxDegreeOfParallelism: 1, Schedules: schedules));
        Assert.Equal(18, result.Considered);
        Assert.Equal(result.Considered, result.Evaluated + result.Rejected);
        Assert.Contains(result.RejectedByReason.Keys, r => r.Contains("strategy.microbatches", StringComparison.Ordinal) && r.Contains("DualPipe", StringComparison.Ordinal));
        Assert.Contains(result.Best, b => b.Strategy.Schedule == PipelineSchedule.ZeroBubbleH1 && b.Strategy.PP == 2);
        Assert.Contains(result.Best, b => b.Strategy.Schedule == PipelineSchedule.DualPipe && b.Strategy.PP == 2);
    }
}

internal static class DagCounting
{
    public static int Count(this OperatorDag dag, OpPhase phase, bool linearOnly) =>
        Enumerable.Range(0, dag.Count).Count(op => dag.Phase(op) == phase && (!linearOnly || dag.Kind(op).IsLinearLayer()));
}

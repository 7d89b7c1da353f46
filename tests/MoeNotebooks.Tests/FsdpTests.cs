using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// ZeRO-3 / FSDP as it runs (issue 12 item 5): per-unit parameter all-gathers before forward and before the backward's
/// recompute, per-unit gradient reduce-scatter after its backward, one-unit prefetch; and Megatron's
/// --overlap-param-gather (issue 12 item 4).
/// </summary>
public class FsdpTests
{
    private static readonly HardwareSpec H100 = HardwareCatalog.Get("H100-SXM");

    /// <summary>2 layers, H 1024, 8 heads, F 4096, no vocabulary: each layer 4H^2 + 4H + 2HF parameters.</summary>
    private static readonly ModelSpec TwoLayers = new("fsdp-dense", 2, 1024, 8, 4096, 0, 1, 16, 512);

    private const long LayerParameters = 4L * 1024 * 1024 + 4 * 1024 + 2L * 1024 * 4096;   // 12,587,008

    private static int[] On(OperatorDag dag, int gpu, OpKind kind) =>
        Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == kind && dag.Participants(op).Contains(gpu)).ToArray();

    [Fact]
    public void Zero3GathersEachLayerBeforeForwardAndRecomputeAndReduceScattersItsGradientByHand()
    {
        // Oracle: hand byte counts of PyTorch FSDP FULL_SHARD with activation checkpointing. Per layer 4H^2 + 4H + 2HF
        // = 12,587,008 parameters x 2 bytes = 25,174,016 bytes. Per microbatch (2 of them) on DP 4: an all-gather of
        // each of the 2 layers before its forward, again before its recompute (kept for its backward), and a
        // reduce-scatter of its gradient after its backward: 2 x 2 x 2 = 8 gathers and 2 x 2 = 4 reduce-scatters of
        // 25,174,016 bytes over the 4 replicas; no gather after the optimizer (the next step gathers per layer).
        var st = new StrategySpec(1, 1, 1, 4, Microbatches: 2) { Mode = WorkloadMode.Training, Recompute = true, ZeroStage = 3 };
        var dag = st.BuildDag(TwoLayers);
        Assert.Equal(LayerParameters, ParameterCounts.PerLayer(TwoLayers, st, 0).Total);
        const double bytes = 2.0 * LayerParameters;
        var gathers = On(dag, 0, OpKind.ParameterAllGather);
        var scatters = On(dag, 0, OpKind.GradientReduceScatter);
        Assert.Equal(8, gathers.Length);
        Assert.Equal(4, scatters.Length);
        Assert.All(gathers.Concat(scatters), op => Assert.Equal(bytes, dag.Bytes(op)));
        Assert.All(gathers.Concat(scatters), op => Assert.Equal([0, 1, 2, 3], dag.GroupMembers(dag.Group(op)).ToArray()));
        Assert.Empty(On(dag, 0, OpKind.GradientAllReduce));
        // Per microbatch: forward gathers layers 0, 1; backward gathers 1, 0 (BACKWARD_PRE prefetch); scatters 1, 0.
        for (var mb = 0; mb < 2; mb++)
        {
            Assert.Equal([0, 1], gathers.Where(op => dag.Microbatch(op) == mb && dag.Phase(op) == OpPhase.Forward).Select(dag.Layer));
            Assert.Equal([1, 0], gathers.Where(op => dag.Microbatch(op) == mb && dag.Phase(op) == OpPhase.BackwardData).Select(dag.Layer));
            Assert.Equal([1, 0], scatters.Where(op => dag.Microbatch(op) == mb).Select(dag.Layer));
        }
        // Each layer's first kernel of a pass waits for that layer's gather (forward; recompute with the backward gather).
        foreach (var g in gathers)
        {
            var phase = dag.Phase(g) == OpPhase.Forward ? OpPhase.Forward : OpPhase.Recompute;
            var first = Enumerable.Range(0, dag.Count).First(op => dag.Gpu(op) == 0 && dag.Group(op) < 0 && dag.Layer(op) == dag.Layer(g)
                                                                  && dag.Microbatch(op) == dag.Microbatch(g) && dag.Phase(op) == phase);
            Assert.Contains(g, dag.Predecessors(first).ToArray());
        }
        // Each scatter waits for its layer's backward on every member; the optimizer step waits for every scatter.
        var step = Enumerable.Range(0, dag.Count).Single(op => dag.Gpu(op) == 0 && dag.Phase(op) == OpPhase.Update && dag.Group(op) < 0);
        Assert.Equal(scatters.Order(), dag.Predecessors(step).ToArray().Order());
        Assert.Equal(2 * LayerParameters * 28.0 / 4, dag.Bytes(step));
    }

    [Fact]
    public void Zero3GathersTheEmbeddingAndOutputLayerAsUnits()
    {
        // Oracle: hand count with a vocabulary of 5,000 (V x H = 5,120,000 parameters, 10,240,000 bytes), untied, one
        // stage, one microbatch, no recompute: the embedding is gathered before its forward, the output layer before
        // its forward and again before its backward; the output layer's gradient is reduce-scattered after its
        // backward and the embedding's once the backward is done. Tied on one stage the output layer is the embedding
        // matrix: gathered the same way (it was freed after the embedding's forward), reduced once (as the embedding).
        foreach (var tied in new[] { false, true })
        {
            var model = TwoLayers with { Vocabulary = 5000, TieEmbeddings = tied };
            var dag = new StrategySpec(1, 1, 1, 2) { Mode = WorkloadMode.Training, ZeroStage = 3 }.BuildDag(model);
            const double vocab = 2.0 * 5000 * 1024;
            Assert.Equal(3, On(dag, 0, OpKind.ParameterAllGather).Count(op => dag.Bytes(op) == vocab && dag.Layer(op) == -1));
            Assert.Equal(4, On(dag, 0, OpKind.ParameterAllGather).Count(op => dag.Bytes(op) == 2.0 * LayerParameters));
            Assert.Equal(tied ? 1 : 2, On(dag, 0, OpKind.GradientReduceScatter).Count(op => dag.Bytes(op) == vocab && dag.Layer(op) == -1));
            Assert.Equal(2, On(dag, 0, OpKind.GradientReduceScatter).Count(op => dag.Bytes(op) == 2.0 * LayerParameters));
        }
    }

    private static double WithFreeCommunication(OperatorDag dag, CostModel cost)
    {
        var d = cost.Price(dag);
        for (var op = 0; op < dag.Count; op++) if (dag.Kind(op).Category() == OpCategory.Communication) d[op] = 0;
        return Scheduler.Schedule(dag, d).TotalSeconds;
    }

    [Fact]
    public void WithFreeCommunicationZero3ComputesExactlyWhatZero0AndZero1Do()
    {
        // Oracle: ZeRO-3 adds only communication: the compute operations (kind, phase, GPU, shape, bytes) outside the
        // optimizer step are ZeRO-0's, the optimizer updates 1/DP as under ZeRO-1, and with every collective free
        // the step equals ZeRO-1's to rounding (gathers and scatters only wait for work that precedes their users).
        var model = TwoLayers with { Layers = 4, Vocabulary = 5000 };
        var cost = CostModel.RooflineIdeal(H100.WithGpus(8));
        foreach (var st in new[]
                 {
                     new StrategySpec(1, 1, 1, 4, Microbatches: 2) { Mode = WorkloadMode.Training, Recompute = true },
                     new StrategySpec(1, 2, 2, 2, Microbatches: 4) { Mode = WorkloadMode.Training },
                 })
        {
            static IEnumerable<string> Compute(OperatorDag dag) => Enumerable.Range(0, dag.Count)
                .Where(op => dag.Group(op) < 0 && dag.Phase(op) != OpPhase.Update)
                .Select(op => $"{dag.Kind(op)} {dag.Phase(op)} {dag.Gpu(op)} {dag.Layer(op)} {dag.Microbatch(op)} {dag.Shape(op)} {dag.Bytes(op)}").Order();
            var zero0 = st.BuildDag(model);
            var zero1 = (st with { ZeroStage = 1 }).BuildDag(model);
            var zero3 = (st with { ZeroStage = 3 }).BuildDag(model);
            Assert.Equal(Compute(zero0), Compute(zero3));
            var t1 = WithFreeCommunication(zero1, cost);
            Assert.Equal(t1, WithFreeCommunication(zero3, cost), t1 * 1e-12);
        }
    }

    [Fact]
    public void PrefetchExposesOnlyTheFirstGatherAndTheLastReduceScatterOnTwoLayers()
    {
        // Oracle: the step by hand on 2 layers, one microbatch, DP 2 inside one node. Communication stream in issue
        // order: gather L0, gather L1 (prefetched), [forward L0, L1], gather L1 and L0 for the backward (prefetched,
        // each waiting only until the unit two before is freed), [backward L1], scatter L1, [backward L0], scatter L0,
        // optimizer. Every layer's compute (~ms) outlasts a 25 MB NVLink gather (~0.1 ms), so everything is hidden but
        // the first gather (nothing to overlap yet) and the last scatter (the optimizer waits for it):
        // T(free) + gather(L0) <= T(ZeRO-3) <= T(free) + gather(L0) + scatter(L0).
        var model = TwoLayers with { Batch = 32, SequenceLength = 2048 };
        var st = new StrategySpec(1, 1, 1, 2) { Mode = WorkloadMode.Training, ZeroStage = 3 };
        var cost = CostModel.RooflineIdeal(H100.WithGpus(2));
        var dag = st.BuildDag(model);
        var d = cost.Price(dag);
        var t = Scheduler.Schedule(dag, d).TotalSeconds;
        var free = WithFreeCommunication(dag, cost);
        var gathers = On(dag, 0, OpKind.ParameterAllGather);
        var scatters = On(dag, 0, OpKind.GradientReduceScatter);
        var firstGather = d[gathers[0]];
        var lastScatter = d[scatters[^1]];
        Assert.True(t >= free + firstGather * (1 - 1e-9), $"{t} < {free} + {firstGather}");
        Assert.True(t <= free + firstGather + lastScatter + 1e-12, $"{t} > {free} + {firstGather} + {lastScatter} (all: {gathers.Sum(op => d[op]) + scatters.Sum(op => d[op])})");
        // Not vacuous: the gathers and scatters together are far more than what is exposed.
        Assert.True(gathers.Sum(op => d[op]) + scatters.Sum(op => d[op]) > 2 * (firstGather + lastScatter));
    }

    [Fact]
    public void TheLimiterKeepsAtMostTwoUnitsGathered()
    {
        // Oracle: limit_all_gathers (two units gathered at most): the gather of unit u waits until unit u-2 is done on
        // every member, so no gather of layer L runs before layer L-2's forward has finished (hand check on 4 layers).
        var model = TwoLayers with { Layers = 4 };
        var st = new StrategySpec(1, 1, 1, 2, Microbatches: 2) { Mode = WorkloadMode.Training, ZeroStage = 3 };
        var dag = st.BuildDag(model);
        var r = dag.CriticalPath(CostModel.RooflineIdeal(H100.WithGpus(2)));
        foreach (var g in On(dag, 0, OpKind.ParameterAllGather).Where(op => dag.Phase(op) == OpPhase.Forward && dag.Layer(op) >= 2))
        {
            var freed = Enumerable.Range(0, dag.Count).Where(op => dag.Gpu(op) == 0 && dag.Group(op) < 0 && dag.Phase(op) == OpPhase.Forward
                                                                   && dag.Layer(op) == dag.Layer(g) - 2 && dag.Microbatch(op) == dag.Microbatch(g)).Max();
            Assert.True(r.StartSeconds(g) >= r.FinishSeconds(freed) - 1e-15, $"gather of layer {dag.Layer(g)} starts {r.StartSeconds(g)} before layer {dag.Layer(g) - 2} is freed {r.FinishSeconds(freed)}");
        }
    }

    [Fact]
    public void OverlapParamGatherGathersPerBucketInForwardOrderAndIsNeverSlower()
    {
        // Oracle: Megatron's distributed optimizer with --overlap-param-gather: the same bytes as without (each
        // layer's parameters once over the DP group, the head once), issued per bucket in forward order at the start
        // of the step, each bucket's first forward waiting for its gather; without the flag they all run after the
        // optimizer with nothing to hide under, so the overlapped step is never slower. Buckets close at
        // max(40M, 1M x DP) parameters (Megatron-Core bucket_size): a layer of H 4096, F 16384 (4H^2 + 4H + 2HF =
        // 201,342,976 parameters) is a bucket of its own and the embedding (V x H = 20.5M) the remaining first bucket:
        // 5 gathers on one stage of 4 layers (the tied head is the embedding: not gathered twice), 3 on the first of
        // two stages. The small 4-layer model (12.6M a layer) fills one bucket from the last layer, reaching 40M at
        // layer 0; the embedding (5.1M) is the remaining one: 2 gathers.
        var big = new ModelSpec("fsdp-big", 4, 4096, 32, 16384, 0, 1, 8, 512) { Vocabulary = 5000 };
        var small = TwoLayers with { Layers = 4, Vocabulary = 5000 };
        foreach (var (model, st, buckets) in new[]
                 {
                     (big, new StrategySpec(1, 1, 1, 4, Microbatches: 2) { Mode = WorkloadMode.Training, UseDistributedOptimizer = true }, 5),
                     (big, new StrategySpec(1, 2, 2, 2, Microbatches: 4) { Mode = WorkloadMode.Training, UseDistributedOptimizer = true, Recompute = true }, 3),
                     (small, new StrategySpec(1, 1, 1, 4, Microbatches: 2) { Mode = WorkloadMode.Training, UseDistributedOptimizer = true }, 2),
                 })
        {
            var cost = CostModel.RooflineIdeal(H100.WithGpus(st.GpuCount));
            var plain = st.BuildDag(model);
            var overlapped = (st with { OverlapParamGather = true }).BuildDag(model);
            var plainGathers = On(plain, 0, OpKind.ParameterAllGather);
            var gathers = On(overlapped, 0, OpKind.ParameterAllGather);
            Assert.Equal(plainGathers.Sum(plain.Bytes), gathers.Sum(overlapped.Bytes));
            Assert.Equal(buckets, gathers.Length);
            Assert.All(gathers, op => Assert.Equal(OpPhase.Forward, overlapped.Phase(op)));
            Assert.All(gathers, op => Assert.Equal(0, overlapped.Microbatch(op)));
            var layers = gathers.Select(overlapped.Layer).ToArray();
            Assert.Equal(layers.Order(), layers);   // forward order
            // The bucket's first layer waits for it: a kernel on GPU 0 at or before the layer's first GEMM (the compute
            // stream runs in issue order) has the gather among its predecessors.
            foreach (var g in gathers.Where(op => overlapped.Layer(op) >= 0))
            {
                var gemm = Enumerable.Range(0, overlapped.Count).First(op => overlapped.Gpu(op) == 0 && overlapped.Kind(op) == OpKind.QProjection
                                                                             && overlapped.Layer(op) == overlapped.Layer(g) && overlapped.Microbatch(op) == 0);
                Assert.Contains(Enumerable.Range(g + 1, gemm - g), op => overlapped.Gpu(op) == 0 && overlapped.Group(op) < 0 && overlapped.Predecessors(op).ToArray().Contains(g));
            }
            var tPlain = plain.CriticalPath(cost).TotalSeconds;
            var tOverlapped = overlapped.CriticalPath(cost).TotalSeconds;
            Assert.True(tOverlapped <= tPlain * (1 + 1e-12), $"{st}: overlapped {tOverlapped} > plain {tPlain}");
            if (buckets > 1) Assert.True(tOverlapped < tPlain, $"{st}: nothing hidden ({tOverlapped} = {tPlain})");
        }
    }

    [Fact]
    public void OverlapParamGatherIsPricedNotRefused()
    {
        // Oracle: the field is priced now (it was refused by CheckModelled): evaluate accepts it and it shows in the summary.
        var st = new StrategySpec(1, 1, 1, 2) { Mode = WorkloadMode.Training, UseDistributedOptimizer = true, OverlapParamGather = true };
        st.CheckFits(TwoLayers, 2);
        Assert.Contains("param-gather overlap", st.ToString());
    }
}

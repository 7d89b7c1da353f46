using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Issue 12: Megatron-Core's EP all-to-all overlap (<c>moeAllToAllOverlap: one-f-one-b</c>).</summary>
public class AllToAllOverlapTests
{
    private static readonly HardwareSpec H100 = HardwareCatalog.Get("H100-SXM");

    /// <summary>One MoE layer, one expert per EP rank, no vocabulary: each microbatch's layer is attention, router, dispatch, experts, combine.</summary>
    private static readonly ModelSpec OneLayer = new("one-layer", 1, 1024, 8, 4096, 2, 1, 6, 512);

    private static StrategySpec Plain(int microbatches) =>
        new(2, 1, 1, 1, Microbatches: microbatches) { Mode = WorkloadMode.Training };

    /// <summary>
    /// Durations by hand: the Q projection carries the attention's time (forward T_af, backward T_ab), the expert up
    /// projection the experts' (T_ef, T_eb), every all-to-all takes a; everything else takes 0.
    /// </summary>
    private static double[] Durations(OperatorDag dag, double taf, double tab, double tef, double teb, double a)
    {
        var d = new double[dag.Count];
        for (var op = 0; op < dag.Count; op++)
        {
            var backward = dag.Phase(op) == OpPhase.BackwardData;
            d[op] = (dag.Kind(op), dag.Phase(op)) switch
            {
                (OpKind.AllToAllDispatch or OpKind.AllToAllCombine, _) => a,
                (OpKind.QProjection, OpPhase.Forward) => taf,
                (OpKind.QProjection, OpPhase.BackwardData) => tab,
                (OpKind.ExpertUp, OpPhase.Forward) => tef,
                (OpKind.ExpertUp, OpPhase.BackwardData) => teb,
                _ => 0,
            };
        }
        return d;
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(3.5)]
    [InlineData(10.0)]
    public void Each_all_to_all_is_hidden_exactly_as_far_as_the_other_microbatchs_compute_allows(double a)
    {
        // Oracle (hand derivation, the order of Megatron's TransformerLayerSchedulePlan.run): without overlap every
        // microbatch runs F = T_af + a + T_ef + a then B = a + T_eb + a + T_ab in a row: m (F + B). With the overlap,
        // F0 runs alone, each of the m - 1 merged steps (F i+1 with B i) takes max(a, T_af) + max(a, T_eb) + max(a, T_ef)
        // + max(a, T_ab) (combine-bwd under attention forward, dispatch under experts backward, dispatch-bwd under
        // experts forward, combine under attention backward), then B m-1 runs alone: each merged step hides
        // sum_i min(a, T_i) exactly.
        const double taf = 3, tab = 5, tef = 2, teb = 4;
        const int m = 3;
        var plainDag = Plain(m).BuildDag(OneLayer);
        var overlapDag = (Plain(m) with { MoeAllToAllOverlap = MoeAllToAllOverlap.OneFOneB }).BuildDag(OneLayer);
        var plainResult = Scheduler.Schedule(plainDag, Durations(plainDag, taf, tab, tef, teb, a));
        var overlapResult = Scheduler.Schedule(overlapDag, Durations(overlapDag, taf, tab, tef, teb, a));
        var plain = plainResult.TotalSeconds;
        var overlap = overlapResult.TotalSeconds;
        double f = taf + tef + 2 * a, b = teb + tab + 2 * a;
        Assert.Equal(m * (f + b), plain, 1e-9);
        var hidden = Math.Min(a, taf) + Math.Min(a, tab) + Math.Min(a, tef) + Math.Min(a, teb);
        Assert.Equal(m * (f + b) - (m - 1) * hidden, overlap, 1e-9);
        // What `moe evaluate` reports (AllToAllExposure): 4m all-to-alls of a per GPU; none under compute in the plain
        // run, (m - 1) x sum_i min(a, T_i) under the overlap.
        var exposedPlain = AllToAllExposure.Of(plainResult)!;
        var exposedOverlap = AllToAllExposure.Of(overlapResult)!;
        Assert.Equal(4 * m * a, exposedPlain.Seconds, 1e-9);
        Assert.Equal(0, exposedPlain.HiddenSeconds, 1e-9);
        Assert.Equal(4 * m * a, exposedOverlap.Seconds, 1e-9);
        Assert.Equal((m - 1) * hidden, exposedOverlap.HiddenSeconds, 1e-9);
    }

    [Fact]
    public void The_overlap_only_reorders_the_same_operations()
    {
        // Oracle: the option is an ordering change: the same multiset of operations (kind, phase, GPU, shape, bytes,
        // layer, microbatch) as the plain run, with recomputation and a two-stage interleaved pipeline too.
        var model = new ModelSpec("moe", 4, 512, 8, 1024, 8, 2, 32, 128) { Vocabulary = 256, SharedExperts = 1, MoeMemoryBoundOps = true };
        foreach (var st in new[]
                 {
                     new StrategySpec(4, 1, 1, 1, Microbatches: 4) { Mode = WorkloadMode.Training, Recompute = true },
                     new StrategySpec(2, 2, 2, 1, Microbatches: 4) { Mode = WorkloadMode.Training, Schedule = PipelineSchedule.Interleaved, VirtualStages = 2 },
                 })
        {
            static string Ops(OperatorDag d) => string.Join("\n", Enumerable.Range(0, d.Count)
                .Select(op => $"{d.Kind(op)} {d.Phase(op)} {d.Gpu(op)} {(d.Kind(op).IsMatmulShaped() ? d.Shape(op).ToString() : d.Bytes(op).ToString())} {d.Microbatch(op)}").Order());
            var plain = st.BuildDag(model);
            var overlap = (st with { MoeAllToAllOverlap = MoeAllToAllOverlap.OneFOneB }).BuildDag(model);
            Assert.Equal(Ops(plain), Ops(overlap));
            Assert.NotEqual(BlockRefactorTests.Fingerprint(plain), BlockRefactorTests.Fingerprint(overlap));
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(4, 1)]
    [InlineData(4, 2)]
    public void The_overlap_is_never_slower_and_changes_nothing_with_one_microbatch(int microbatches, int pp)
    {
        // Oracle: with one microbatch there is no other microbatch to overlap with: Megatron's combined schedule is
        // F0 then B0, the plain order, so the DAG is the same operation for operation (fingerprint). With more, the
        // roofline-priced step is never slower than the plain one.
        var model = new ModelSpec("moe", 4, 1024, 8, 2048, 8, 2, 16, 1024) { Vocabulary = 1024 };
        var st = new StrategySpec(4, 1, pp, 1, Microbatches: microbatches) { Mode = WorkloadMode.Training, Recompute = true };
        if (pp > 1) st = st with { Schedule = PipelineSchedule.Interleaved, VirtualStages = 2 };
        var cost = CostModel.RooflineIdeal(HardwareCatalog.Get("DGX-H100").WithGpus(st.GpuCount));
        var plainDag = st.BuildDag(model);
        var overlapDag = (st with { MoeAllToAllOverlap = MoeAllToAllOverlap.OneFOneB }).BuildDag(model);
        var plain = plainDag.CriticalPath(cost).TotalSeconds;
        var overlap = overlapDag.CriticalPath(cost).TotalSeconds;
        if (microbatches == 1)
        {
            Assert.Equal(BlockRefactorTests.Fingerprint(plainDag), BlockRefactorTests.Fingerprint(overlapDag));
            Assert.Equal(plain, overlap);
        }
        else Assert.True(overlap <= plain * (1 + 1e-12), $"overlap {overlap} s > plain {plain} s");
    }

    [Fact]
    public void Merged_plan_adds_one_warm_up_forward_and_pairs_the_steady_state()
    {
        // Oracle: Megatron's combined_1f1b_schedule_for_no_pipelining (pp = 1): F0 alone, (F i+1, B i) pairs, B m-1
        // alone; with pipelining one extra warm-up forward ("num_warmup_microbatches + 1", schedules.py).
        var one = PipelinePlan.MergedForwardBackward(PipelinePlan.Build(1, 1, 3, PipelineSchedule.OneFOneB, true)[0]);
        Assert.Equal("F0c0 F1c0& BW0c0 F2c0& BW1c0 BW2c0", string.Join(" ", one));
        var last = PipelinePlan.Build(2, 1, 4, PipelineSchedule.OneFOneB, true);
        Assert.Equal("F0c1 F1c1& BW0c1 F2c1& BW1c1 F3c1& BW2c1 BW3c1", string.Join(" ", PipelinePlan.MergedForwardBackward(last[1])));
        Assert.Equal("F0c0 F1c0 F2c0& BW0c0 F3c0& BW1c0 BW2c0 BW3c0", string.Join(" ", PipelinePlan.MergedForwardBackward(last[0])));
    }

    [Theory]
    [InlineData("\"ep\": 4, \"pp\": 1, \"dp\": 1, \"mode\": \"inference\"", "training")]
    [InlineData("\"ep\": 1, \"pp\": 1, \"dp\": 4, \"mode\": \"training\"", "expert parallelism")]
    [InlineData("\"ep\": 2, \"pp\": 2, \"dp\": 1, \"mode\": \"training\"", "interleaved")]
    [InlineData("\"ep\": 4, \"pp\": 1, \"dp\": 1, \"mode\": \"training\", \"schedule\": \"gpipe\"", "1f1b")]
    [InlineData("\"ep\": 4, \"pp\": 1, \"dp\": 1, \"mode\": \"training\", \"alltoallChunks\": 2", "alltoallChunks")]
    [InlineData("\"ep\": 4, \"pp\": 1, \"dp\": 1, \"mode\": \"training\", \"attention\": \"tensor-parallel\"", "tensor-parallel")]
    [InlineData("\"ep\": 4, \"pp\": 1, \"dp\": 1, \"mode\": \"training\", \"overlap\": false", "overlap")]
    public void Layouts_megatron_refuses_are_refused_naming_the_field(string fields, string why)
    {
        // Oracle: Megatron's argument checks for --overlap-moe-expert-parallel-comm (megatron/training/arguments.py) and
        // the bar for bad input: one ConfigException naming strategy.moeAllToAllOverlap, its value and the reason.
        var json = $$"""
            { "model": { "layers": 4, "hiddenSize": 512, "attentionHeads": 8, "ffnHiddenSize": 1024, "experts": 8, "topK": 2, "batch": 32, "sequenceLength": 128 },
              "hardware": { "preset": "H100-SXM", "gpus": 4 },
              "strategy": { "tp": 1, "microbatches": 4, "moeAllToAllOverlap": "1f1b", {{fields}} } }
            """;
        var e = Assert.Throws<ConfigException>(() => Scenario.Parse(json));
        Assert.Equal("strategy.moeAllToAllOverlap", e.Field);
        Assert.Equal("\"1f1b\"", e.Value);
        Assert.True(e.Requirement.Contains(why, StringComparison.Ordinal), e.Requirement);
    }

    [Fact]
    public void The_overlap_keeps_one_more_microbatch_of_activations_live()
    {
        // Oracle: Megatron's combined 1F1B runs one extra warm-up forward (schedules.py: "num_warmup_microbatches + 1"),
        // so with one stage two microbatches are in flight instead of one, and a two-stage pipeline's first stage three
        // instead of two; the saved activations grow with them, weights and optimizer do not.
        var model = new ModelSpec("moe", 4, 1024, 8, 2048, 8, 2, 16, 1024);
        foreach (var (pp, plainInFlight) in new[] { (1, 1), (2, 2) })
        {
            var st = new StrategySpec(4, 1, pp, 1, Microbatches: 4) { Mode = WorkloadMode.Training };
            if (pp > 1) st = st with { Schedule = PipelineSchedule.Interleaved, VirtualStages = 2 };
            var hw = H100.WithGpus(st.GpuCount);
            var plain = MemoryModel.Estimate(model, st, hw).Stages[0];
            var overlap = MemoryModel.Estimate(model, st with { MoeAllToAllOverlap = MoeAllToAllOverlap.OneFOneB }, hw).Stages[0];
            if (pp == 1) Assert.Equal(plainInFlight, plain.MicrobatchesInFlight);
            Assert.Equal(plain.MicrobatchesInFlight + 1, overlap.MicrobatchesInFlight);
            Assert.True(overlap.ActivationsBytes > plain.ActivationsBytes);
            Assert.Equal(plain.OptimizerBytes, overlap.OptimizerBytes);
        }
    }
}

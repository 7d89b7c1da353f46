using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// MoE parallel folding with ETP != TP and sequence parallelism inside the MoE block (issue 12 items 1 and 2), as
/// Megatron-Core's MoEAlltoAllTokenDispatcher runs them: each rank routes its own T/TP tokens, all-to-all over the EP
/// group, all-gather over the ETP group, ETP-sharded experts (fc1 column-, fc2 row-split), reduce-scatter over the ETP
/// group, all-to-all back (token_permutation / token_unpermutation; Liu et al. 2025, arXiv 2504.14960 §3).
/// </summary>
public class ExpertTensorParallelTests
{
    // 2 MoE layers, H 1024, 8 heads, F 4096, 8 experts top-2, batch 8 x 256 tokens, uniform routing, bf16, no vocabulary.
    private static readonly ModelSpec Moe = new("moe", 2, 1024, 8, 4096, 8, 2, 8, 256);
    private const double MiB = 1024.0 * 1024;

    private static int[] On(OperatorDag dag, int gpu, OpPhase phase, int layer = 0) => Enumerable.Range(0, dag.Count)
        .Where(op => dag.Participants(op).Contains(gpu) && dag.Phase(op) == phase && dag.Layer(op) == layer).ToArray();

    private static (OpKind Kind, double Bytes, int[] Members)[] MoeCollectives(OperatorDag dag, int gpu, OpPhase phase) =>
        On(dag, gpu, phase).Where(op => dag.Kind(op) is OpKind.AllToAllDispatch or OpKind.AllToAllCombine or OpKind.ExpertTensorAllGather
                or OpKind.ExpertTensorReduceScatter or OpKind.ExpertAllReduce)
            .Select(op => (dag.Kind(op), dag.Bytes(op), dag.GroupMembers(dag.Group(op)).ToArray())).ToArray();

    [Fact]
    public void SequenceParallelMoeBlockExchangesEachRanksOwnTokensThenGathersOverTheTensorGroup()
    {
        // Oracle: hand count with Megatron's dispatcher formulas. EP 2 x TP 2 (ETP = TP) with SP, 4 GPUs: attention
        // data-parallel size 2, T = 8/2 x 256 = 1024 tokens per attention rank, each TP rank routes T/TP = 512.
        // The EP group's 2 x 1024 tokens x top-2 = 4096 copies spread uniformly: 512 per expert, 4 experts a rank = 2048.
        // Dispatch all-to-all per rank: max(sent 512 x 2 = 1024, received 2048 / TP = 1024) tokens x H 1024 x 2 B = 2 MiB
        // over the EP group {0, 2} (same TP rank); all-gather over the TP group {0, 1} to the 2048 tokens of its experts:
        // 2048 x 1024 x 2 = 4 MiB; experts [512, 1024] x [1024, 4096/2]; reduce-scatter 4 MiB; combine all-to-all 2 MiB.
        // Without SP (today) the same layout exchanges all T tokens per TP rank (max(2048, 2048) x 2 KiB = 4 MiB) and
        // all-reduces the experts' outputs over TP (4 MiB).
        var st = new StrategySpec(2, 2, 1, 1) { Mode = WorkloadMode.Training };
        var sp = st with { SequenceParallel = true };
        st.CheckFits(Moe, 4);
        sp.CheckFits(Moe, 4);
        var dag = sp.BuildDag(Moe);
        var fwd = MoeCollectives(dag, 0, OpPhase.Forward);
        Assert.Equal([OpKind.AllToAllDispatch, OpKind.ExpertTensorAllGather, OpKind.ExpertTensorReduceScatter, OpKind.AllToAllCombine], fwd.Select(x => x.Kind));
        Assert.Equal([2 * MiB, 4 * MiB, 4 * MiB, 2 * MiB], fwd.Select(x => x.Bytes));
        Assert.Equal([[0, 2], [0, 1], [0, 1], [0, 2]], fwd.Select(x => x.Members));
        // Backward mirrors it: the output gradient is dispatched (a combine-shaped exchange), gathered, experts, reduce-scattered, returned.
        var bwd = MoeCollectives(dag, 0, OpPhase.BackwardData);
        Assert.Equal([OpKind.AllToAllCombine, OpKind.ExpertTensorAllGather, OpKind.ExpertTensorReduceScatter, OpKind.AllToAllDispatch], bwd.Select(x => x.Kind));
        Assert.Equal([2 * MiB, 4 * MiB, 4 * MiB, 2 * MiB], bwd.Select(x => x.Bytes));
        var plain = MoeCollectives(st.BuildDag(Moe), 0, OpPhase.Forward);
        Assert.Equal([OpKind.AllToAllDispatch, OpKind.ExpertAllReduce, OpKind.AllToAllCombine], plain.Select(x => x.Kind));
        Assert.Equal([4 * MiB, 4 * MiB, 4 * MiB], plain.Select(x => x.Bytes));
        // The router runs on the rank's 512 tokens; each expert GEMM on its 512 tokens with F / TP = 2048.
        var gemms = On(dag, 0, OpPhase.Forward).Where(op => dag.Kind(op).IsMatmulShaped()).ToArray();
        Assert.Equal([new MatmulShape(512, 1024, 8)], gemms.Where(op => dag.Kind(op) == OpKind.Gate).Select(dag.Shape));
        Assert.All(gemms.Where(op => dag.Kind(op) == OpKind.ExpertUp), op => Assert.Equal(new MatmulShape(512, 1024, 2048), dag.Shape(op)));
        Assert.Equal(4, gemms.Where(op => dag.Kind(op) == OpKind.ExpertUp).Sum(dag.Repeat));   // four experts (equal tokens: repeated products)
        // The residual add after the MoE block runs on the rank's 1/TP of the tokens: 3 x 1024 x 1024 x 2 / 2 = 3 MiB.
        var residual = On(dag, 0, OpPhase.Forward).Where(op => dag.Kind(op) == OpKind.Elementwise && dag.Index(op) == 2).Select(dag.Bytes).Last();
        Assert.Equal(3 * MiB, residual);
    }

    [Fact]
    public void FoldedLayoutAttentionTp2ExpertsEp4Etp1PricesTheDispatchOverAllFourRanks()
    {
        // Oracle: hand count, MoE parallel folding (Liu et al. 2025 Fig. 3: attention TP x DP, experts EP x ETP over the
        // same GPUs). 4 GPUs: attention TP 2 x DP 2, experts EP 4 x ETP 1 (EDP 1). T = 8/2 x 256 = 1024 tokens per
        // attention rank, 512 per rank under SP; the expert replica's 4 x 512 tokens x top-2 = 4096 copies, 512 per expert,
        // 2 experts a rank = 1024. All-to-all over {0, 1, 2, 3}: max(1024, 1024) x 2 KiB = 2 MiB; no ETP collective;
        // experts [512, 1024] x [1024, 4096] (unsplit); attention's SP collectives over TP groups {0, 1} and {2, 3}.
        var st = new StrategySpec(4, 2, 1, 1) { Mode = WorkloadMode.Training, ExpertTensorParallelSize = 1, SequenceParallel = true };
        st.CheckFits(Moe, 4);
        Assert.Equal((4, 1, 2), (st.FoldUnitGpus, st.FoldUnits, st.AttentionDataParallelSize));
        var dag = st.BuildDag(Moe);
        var fwd = MoeCollectives(dag, 0, OpPhase.Forward);
        Assert.Equal([OpKind.AllToAllDispatch, OpKind.AllToAllCombine], fwd.Select(x => x.Kind));
        Assert.All(fwd, x => Assert.Equal(2 * MiB, x.Bytes));
        Assert.All(fwd, x => Assert.Equal([0, 1, 2, 3], x.Members));
        var experts = On(dag, 3, OpPhase.Forward).Where(op => dag.Kind(op) == OpKind.ExpertUp).ToArray();
        Assert.Equal(2, experts.Sum(dag.Repeat));
        Assert.All(experts, op => Assert.Equal(new MatmulShape(512, 1024, 4096), dag.Shape(op)));
        var seqGroups = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.SequenceAllGather)
            .Select(op => string.Join(",", dag.GroupMembers(dag.Group(op)).ToArray())).Distinct().Order();
        Assert.Equal(["0,1", "2,3"], seqGroups);
        // Gradients: attention weights are shared by the attention data-parallel group (same TP rank: {0, 2}, {1, 3});
        // experts have EDP 1, so no expert gradient sync.
        var syncGroups = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.GradientAllReduce)
            .Select(op => string.Join(",", dag.GroupMembers(dag.Group(op)).ToArray())).Distinct().Order();
        Assert.Equal(["0,2", "1,3"], syncGroups);
        // Parameters: each rank holds 2 experts x 2 matrices x 1024 x 4096 (ETP 1); attention 4 x 1024 x 1024 / TP 2.
        Assert.Equal(2L * 2 * 1024 * 4096, ParameterCounts.PerLayer(Moe, st, 0).ExpertPerRank);
    }

    [Fact]
    public void FoldedLayoutAttentionTp1ExpertsEtp2GathersOverTheExpertTensorGroup()
    {
        // Oracle: hand count. 4 GPUs: attention TP 1 x DP 4, experts EP 2 x ETP 2 (EDP 1), Megatron's expert rank
        // etp + ETP ep: EP groups {0, 2} and {1, 3}, ETP groups {0, 1} and {2, 3}. T = 8/4 x 256 = 512 tokens a rank;
        // the replica's 4 x 512 x top-2 = 4096 copies, 512 per expert, 4 experts a rank = 2048 tokens. Dispatch:
        // max(sent 1024, received 2048 / ETP 2 = 1024) x 2 KiB = 2 MiB over {0, 2}; ETP all-gather 2048 x 2 KiB = 4 MiB
        // over {0, 1}; experts [512, 1024] x [1024, 4096 / 2]; reduce-scatter 4 MiB; combine 2 MiB.
        var st = new StrategySpec(2, 1, 1, 1) { Mode = WorkloadMode.Training, ExpertTensorParallelSize = 2 };
        st.CheckFits(Moe, 4);
        var dag = st.BuildDag(Moe);
        var fwd = MoeCollectives(dag, 0, OpPhase.Forward);
        Assert.Equal([OpKind.AllToAllDispatch, OpKind.ExpertTensorAllGather, OpKind.ExpertTensorReduceScatter, OpKind.AllToAllCombine], fwd.Select(x => x.Kind));
        Assert.Equal([2 * MiB, 4 * MiB, 4 * MiB, 2 * MiB], fwd.Select(x => x.Bytes));
        Assert.Equal([[0, 2], [0, 1], [0, 1], [0, 2]], fwd.Select(x => x.Members));
        Assert.All(On(dag, 1, OpPhase.Forward).Where(op => dag.Kind(op) == OpKind.ExpertUp), op => Assert.Equal(new MatmulShape(512, 1024, 2048), dag.Shape(op)));
        // Expert gradients: EDP 1, none; attention weights over all 4 ranks (TP 1, attention DP 4).
        var syncGroups = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.GradientAllReduce)
            .Select(op => dag.GroupMembers(dag.Group(op)).Length).Distinct();
        Assert.Equal([4], syncGroups);
        var hw = HardwareCatalog.Get("DGX-H100").WithGpus(4);
        var t = dag.CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds;
        Assert.True(double.IsFinite(t) && t > 0);
    }

    [Fact]
    public void FoldedDagBuiltOnceEqualsTheFullDagsStep()
    {
        // Oracle: the full DAG (every unit built) against the folded one (one unit standing for its images): EP 2 x ETP 1
        // x EDP 2 = 4 GPUs per stage with attention TP 2 x DP 2, PP 2 (8 GPUs): units of lcm(2, 2) = 2 GPUs, 2 a stage.
        var st = new StrategySpec(2, 2, 2, 2, Microbatches: 2) { Mode = WorkloadMode.Training, ExpertTensorParallelSize = 1, SequenceParallel = true };
        st.CheckFits(Moe, 8);
        Assert.Equal((2, 2), (st.FoldUnitGpus, st.FoldUnits));
        var hw = HardwareCatalog.Get("DGX-H100").WithGpus(8);
        var full = st.BuildDag(Moe).CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds;
        var folded = st.BuildDag(Moe, DagFolding.Symmetric).CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds;
        Assert.Equal(full, folded, 9);
    }

    [Fact]
    public void MtpInputUnderSequenceParallelismGathersItsShardedInput()
    {
        // Oracle: Megatron-Core MultiTokenPredictionLayer under SP, by hand: norms on T/TP tokens, the column-parallel
        // eh_proj all-gathers its [T/TP, 2H] input (2A bytes, A = [T, H] = 2048 x 1024 x 2 = 4 MiB at batch 8 x 256 on
        // TP 2 ... here T = 2048, A = 4 MiB), gathers its [T, H/TP] output (A) and scatters it locally; backward
        // all-gathers the output gradient (A) and reduce-scatters the [T, 2H] input gradient (2A).
        var m = new ModelSpec("d", 2, 1024, 8, 4096, 0, 1, 8, 256) { MtpLayers = 1, Vocabulary = 512 };
        var st = new StrategySpec(1, 2, 1, 1) { Mode = WorkloadMode.Training, SequenceParallel = true };
        st.CheckFits(m, 2);
        var dag = st.BuildDag(m);
        var mtp = Enumerable.Range(0, dag.Count).Where(op => dag.Layer(op) == 2 && dag.Participants(op).Contains(0)).ToArray();
        var projection = mtp.First(op => dag.Kind(op) == OpKind.MtpProjection && dag.Phase(op) == OpPhase.Forward);
        var before = mtp.Where(op => op < projection && dag.Kind(op).Category() == OpCategory.Communication).Select(op => (dag.Kind(op), dag.Bytes(op))).ToArray();
        Assert.Equal([(OpKind.SequenceAllGather, 8 * MiB)], before);
        Assert.Contains(mtp, op => dag.Kind(op) == OpKind.PipelineAllGather && dag.Bytes(op) == 4 * MiB);
        var bwd = mtp.Where(op => dag.Phase(op) == OpPhase.BackwardData && dag.Kind(op) is OpKind.SequenceReduceScatter && dag.Bytes(op) == 8 * MiB);
        Assert.Single(bwd);
        Assert.DoesNotContain(mtp, op => dag.Kind(op).Pattern() == CollectivePattern.AllReduce);
        var norms = mtp.Where(op => dag.Kind(op) == OpKind.Elementwise && dag.Phase(op) == OpPhase.Forward && dag.Index(op) == 0).Select(dag.Bytes).Take(2);
        Assert.Equal([4 * MiB, 4 * MiB], norms);   // 2A / TP each
    }

    [Fact]
    public void ScatterGatherUnderSequenceParallelismSendsTheShardWithoutAGather()
    {
        // Oracle: Megatron-LM p2p_communication applies scatter/gather only "if scatter_gather_tensors_in_pipeline and not
        // sequence_parallel": under SP the send is already the [T/TP, H] shard, so with or without scatterGather the
        // DAG is the same (sends A / TP = 1024 tokens of a microbatch x 1024 x 2 B / 2 = 1 MiB, no pipeline all-gather).
        var st = new StrategySpec(1, 2, 2, 1, Microbatches: 2) { Mode = WorkloadMode.Training, SequenceParallel = true };
        var m = new ModelSpec("d", 2, 1024, 8, 4096, 0, 1, 8, 256);
        var a = st.BuildDag(m);
        var b = (st with { ScatterGather = true }).BuildDag(m);
        Assert.Equal(BlockRefactorTests.Fingerprint(a), BlockRefactorTests.Fingerprint(b));
        Assert.DoesNotContain(Enumerable.Range(0, b.Count), op => b.Kind(op) == OpKind.PipelineAllGather);
        Assert.All(Enumerable.Range(0, a.Count).Where(op => a.Kind(op) == OpKind.PipelineSend), op => Assert.Equal(MiB, a.Bytes(op)));
    }

    [Fact]
    public void SequenceParallelMoeLayerKeepsItsNormsAndRouterLogitsOnOneTensorParallelShare()
    {
        // Oracle: hand count of one layer's working set (a forward pass holds one layer's activations), EP 2 x TP 2,
        // T = 1024 tokens a rank, H 1024, bf16, 8 experts: under SP the attention norm's input and output (2H a token,
        // Korthikanti §4.2.2) and the MoE block's (2H) hold 1/TP of the tokens, and so do the router's FP32 logits
        // (8 experts x 4 bytes a token, each rank routes its own T/TP): less by (2 x 1024 x 2 x 1024 x 2 + 1024 x 8 x 4)
        // x (1 - 1/2) = 4,210,688 bytes. The all-to-all buffers stay (the busiest rank receives 2048 tokens either way).
        var st = new StrategySpec(2, 2, 1, 1);
        var hw = HardwareCatalog.Get("DGX-H100").WithGpus(4);
        var plain = MemoryModel.Estimate(Moe, st, hw).Stages[0];
        var sp = MemoryModel.Estimate(Moe, st with { SequenceParallel = true }, hw).Stages[0];
        Assert.Equal(4_210_688, plain.ActivationsBytes - sp.ActivationsBytes, 6);
        Assert.Equal(plain.AllToAllBufferBytes, sp.AllToAllBufferBytes);
        // Folding ETP 1 under TP 2 (EP 4): each rank holds its 2 experts whole (F / ETP = 4096, not 4096 / TP) in each of
        // the 2 layers: 2 layers x 2 experts x 2 matrices x 1024 x 4096 x 2 bytes = 64 MiB of expert weights.
        var folded = new StrategySpec(4, 2, 1, 1) { ExpertTensorParallelSize = 1, SequenceParallel = true, Mode = WorkloadMode.Training };
        Assert.Equal(2.0 * 2 * 2 * 1024 * 4096 * 2, MemoryModel.Estimate(Moe, folded, hw).Stages[0].WeightsBytes
            - ParameterCounts.OnStage(Moe, folded, 0).NonExpert * 2.0, 6);
    }

    [Fact]
    public void SearchEnumeratesExpertTensorParallelAndSequenceParallelAndCountsTheRejections()
    {
        // Oracle: hand enumeration on 2 GPUs, one microbatch. Factorizations EP x X x PP x EDP = 2: (1,1,1,2), (1,1,2,1),
        // (1,2,1,1), (2,1,1,1). ETP "as TP": TP = X, 4 layouts. ETP 1: X must be 1 (3 factorizations), attention TP any
        // divisor of the stage's GPUs other than 1 (that is the "as TP" layout): (1,1,1,2) and (2,1,1,1) give TP 2; (1,1,2,1)
        // has one GPU a stage: 2 layouts. SP both: SP on TP 1 is skipped (the same run), so SP adds the 3 TP-2 layouts: 9.
        // Searched, the 2 folded TP-2 layouts without SP are rejected naming strategy.sequenceParallel (Megatron's rule).
        var template = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        var candidates = StrategySearch.Candidates(2, [1], template, expertTensorParallel: [null, 1], sequenceParallel: [false, true]);
        Assert.Equal(9, candidates.Count);
        Assert.Equal(3, candidates.Count(c => c.SequenceParallel));
        Assert.Equal(4, candidates.Count(c => c.ETP != c.TP));
        Assert.All(candidates, c => Assert.Equal(2, c.GpuCount));
        // SP alone: the 6 layouts once, the TP-1 ones without SP (Megatron-LM turns it off at TP 1), not dropped.
        var spOnly = StrategySearch.Candidates(2, [1], template, expertTensorParallel: [null, 1], sequenceParallel: [true]);
        Assert.Equal(6, spOnly.Count);
        Assert.All(spOnly, c => Assert.Equal(c.TP > 1, c.SequenceParallel));
        var scenario = new Scenario("etp", Moe, HardwareCatalog.Get("DGX-H100").WithGpus(2), template, CostModelSpec.Ideal);
        var result = StrategySearch.Run(scenario, 2, new SearchOptions(Top: 9, Microbatches: [1], SkipMemoryInfeasible: false, ExpertTensorParallel: [null, 1], SequenceParallel: [false, true]));
        Assert.Equal(9, result.Considered);
        var spRejections = result.RejectedByReason.Where(kv => kv.Key.Contains("strategy.sequenceParallel", StringComparison.Ordinal)).Sum(kv => kv.Value);
        Assert.Equal(2, spRejections);
        Assert.Contains(result.Best, b => b.Strategy.ETP != b.Strategy.TP);
    }

    [Theory]
    [InlineData(2, 1, false, "strategy.sequenceParallel")]   // TP 2 folded without SP: Megatron's dispatcher needs it
    [InlineData(1, 2, false, "strategy.rankOrder")]          // a rank order other than the two laid out
    public void FoldingOutsideWhatIsLaidOutIsRefusedNamingTheField(int tp, int etp, bool sp, string field)
    {
        // Oracle: the rules in StrategySpec.CheckExpertTensorParallel, one line naming the field.
        var st = new StrategySpec(2, tp, 1, 1) { ExpertTensorParallelSize = etp, SequenceParallel = sp, RankOrder = field == "strategy.rankOrder" ? "ep-tp-pp-dp" : "tp-ep-pp-dp" };
        var gpus = 2 * etp;
        var e = Assert.Throws<ConfigException>(() => st.CheckFits(Moe, gpus));
        Assert.Equal(field, e.Field);
    }
}

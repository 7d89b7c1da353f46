using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// Context parallelism (issue 12 item 3): Megatron-Core's --context-parallel-size with Transformer Engine's ring
/// attention (AttnFuncWithCPAndKVP2P, cp_comm_type "p2p"), causal load balancing with two chunks per rank.
/// </summary>
public class ContextParallelTests
{
    // Dense GQA model: 2 layers, H 1024, 8 heads of 128, 2 KV heads, F 4096, batch 2 x 512 tokens, no vocabulary.
    private static ModelSpec Gqa(bool causal = true, long batch = 2) =>
        new ModelSpec("gqa", 2, 1024, 8, 4096, 0, 1, batch, 512) { KvHeads = 2, Causal = causal }.Validated();

    private static StrategySpec Training(int dp, int cp, int ep = 1, int tp = 1) =>
        new StrategySpec(ep, tp, 1, dp) { Mode = WorkloadMode.Training, ContextParallelSize = cp };

    private static IEnumerable<int> Ops(OperatorDag dag, Func<int, bool> where) => Enumerable.Range(0, dag.Count).Where(where);

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void RingSendsOneKeyValueBlockPerStepForwardAndBlockPlusGradientBackward(int cp)
    {
        // Oracle: hand count of TE's AttnFuncWithCPAndKVP2P (transformer_engine/pytorch/attention/dot_product_attention/
        // context_parallel.py): forward, steps 0..CP-2 each send the held K/V block to the next rank; backward, step i sends
        // p2p_comm_buffers[i % 2] = [kv, dkv], only kv at i = 0 and only dkv at i = CP-1. Batch 2 sequences over DP = CP
        // ranks carved into one CP group (attention DP 1): each rank holds 2 x 512 / CP tokens; the block is
        // tokens x 2 KV heads x (128 + 128) x 2 bytes.
        var dag = Training(cp, cp).Validated().BuildDag(Gqa());
        long tokens = 2 * 512 / cp;
        long block = tokens * 2 * 256 * 2;
        for (var layer = 0; layer < 2; layer++)
        {
            var sends = Ops(dag, op => dag.Kind(op) == OpKind.ContextParallelSend && dag.Gpu(op) == 0 && dag.Layer(op) == layer).ToArray();
            var forward = sends.Where(op => dag.Phase(op) == OpPhase.Forward).Select(dag.Bytes).ToArray();
            var backward = sends.Where(op => dag.Phase(op) != OpPhase.Forward).Select(dag.Bytes).ToArray();
            Assert.Equal(Enumerable.Repeat((double)block, cp - 1), forward);
            var expected = Enumerable.Range(0, cp).Select(i => (double)((i < cp - 1 ? block : 0) + (i > 0 ? block : 0))).ToArray();
            Assert.Equal(expected, backward);
            Assert.Equal(2.0 * (cp - 1) * block, backward.Sum());
        }
        // Every send goes to the next CP rank (forward) or the previous one (backward), inside the ring.
        foreach (var op in Ops(dag, op => dag.Kind(op) == OpKind.ContextParallelSend))
        {
            var members = dag.GroupMembers(dag.Group(op)).ToArray();
            var to = members.Single(g => g != dag.Gpu(op));
            Assert.Equal(dag.Phase(op) == OpPhase.Forward ? (dag.Gpu(op) + 1) % cp : (dag.Gpu(op) + cp - 1) % cp, to);
            Assert.Equal(CollectivePattern.SendRecv, dag.Kind(op).Pattern());
        }
    }

    [Fact]
    public void MlaRingPassesTheExpandedPerHeadKeysAndValues()
    {
        // Oracle: hand count. With MLA, TE passes the up-projected K (qkNope + qkRope = 192) and V (128) per head: 8 heads
        // on TP 1, 2 x 512 / 2 = 512 tokens a rank: 512 x 8 x (192 + 128) x 2 bytes = 2,621,440 bytes a step.
        var mla = new ModelSpec("mla", 2, 1024, 8, 4096, 0, 1, 2, 512) { Mla = new MlaSpec(0, 512, 128, 64, 128), Causal = true }.Validated();
        var dag = Training(2, 2).Validated().BuildDag(mla);
        var forward = Ops(dag, op => dag.Kind(op) == OpKind.ContextParallelSend && dag.Gpu(op) == 0 && dag.Layer(op) == 0 && dag.Phase(op) == OpPhase.Forward).Select(dag.Bytes).ToArray();
        Assert.Equal([512.0 * 8 * 320 * 2], forward);
    }

    [Theory]
    [InlineData(true, 2)]
    [InlineData(true, 4)]
    [InlineData(false, 2)]
    [InlineData(false, 4)]
    public void AttentionFlopsSummedOverTheRingEqualTheUnsplitAttention(bool causal, int cp)
    {
        // Oracle: the CP = 1 DAG on the same GPUs (DP = CP replicas, each a whole sequence). Causal load balancing: per
        // (sequence, head) the diagonal step covers 2c x (c + 1) pairs and every other step 2c^2 (c = S / 2CP), so the
        // ring sums to CP(2c^2 + 2c) + CP(CP - 1) 2c^2 = S^2/2 + S = S x ceil((S + 1) / 2), the CP = 1 count with the
        // derivation's rounding of attended keys; without a mask 4c^2 a step, CP^2 x 4c^2 = S^2. Exactly, forward and
        // backward, summed over all ranks; and each rank does the same attention work (load balance).
        var model = Gqa(causal, batch: cp);
        var split = Training(cp, cp).Validated().BuildDag(model);
        var whole = Training(cp, 1).Validated().BuildDag(model);
        double Attention(OperatorDag d, Func<int, bool> where) => Ops(d, op => d.Category(op) == OpCategory.Attention && where(op)).Sum(d.Flops);
        foreach (var phase in Enum.GetValues<OpPhase>())
            Assert.Equal(Attention(whole, op => whole.Phase(op) == phase), Attention(split, op => split.Phase(op) == phase));
        Assert.True(Attention(whole, _ => true) > 0);
        var perRank = Enumerable.Range(0, cp).Select(g => Attention(split, op => split.Gpu(op) == g)).ToArray();
        Assert.All(perRank, f => Assert.Equal(perRank[0], f));
        // The linear layers are untouched: every rank has the same tokens as a CP = 1 replica.
        double Linear(OperatorDag d) => Ops(d, op => d.Category(op) == OpCategory.Matmul && d.Gpu(op) == 0).Sum(d.Flops);
        Assert.Equal(Linear(whole), Linear(split));
    }

    [Fact]
    public void GradientsAreReducedOverTheDataParallelWithContextParallelGroup()
    {
        // Oracle: Megatron-Core reduces the (replicated over CP) gradients over the data-parallel group with context
        // parallelism: DP x CP ranks. DP 8 carved into CP 2 x attention DP 4: every gradient all-reduce spans all 8 ranks
        // of the TP rank, each layer's bucket once, with the CP = 1 bytes.
        var model = Gqa(batch: 8);
        var cp = Training(8, 2).Validated().BuildDag(model);
        var plain = Training(8, 1).Validated().BuildDag(model);
        var syncs = Ops(cp, op => cp.Kind(op) == OpKind.GradientAllReduce).ToArray();
        Assert.Equal(2, syncs.Length);
        Assert.All(syncs, op => Assert.Equal(8, cp.GroupMembers(cp.Group(op)).Length));
        Assert.Equal(Ops(plain, op => plain.Kind(op) == OpKind.GradientAllReduce).Select(plain.Bytes), syncs.Select(cp.Bytes));
    }

    [Fact]
    public void MoeRingsInsideAnExpertGroupAndAcrossReplicasBuildAndDispatchTheRanksTokens()
    {
        // Oracle: Megatron's folding (tp-cp-ep-dp order): with CP <= EP the ring joins EP ranks of one replica; with CP > EP
        // it spans CP / EP replicas. Tokens per rank are the CP = 1 layout's (CP is carved out of the data-parallel ranks),
        // so the MoE dispatch carries the same bytes; the rings' sends stay between ranks of equal TP rank.
        var moe = new ModelSpec("moe", 2, 1024, 8, 1024, 8, 2, 8, 512) { Causal = true }.Validated();
        var baseline = new StrategySpec(4, 2, 1, 2) { Mode = WorkloadMode.Training }.Validated().BuildDag(moe);
        long A2a(OperatorDag d) => (long)Ops(d, op => d.Kind(op) == OpKind.AllToAllDispatch).Sum(d.Bytes);
        foreach (var (ep, cp) in new[] { (4, 2), (4, 4), (2, 4) })
        {
            var st = new StrategySpec(ep, 2, 1, 8 / ep) { Mode = WorkloadMode.Training, ContextParallelSize = cp }.Validated();
            var dag = st.BuildDag(moe);
            var folded = st.BuildDag(moe, DagFolding.Symmetric);
            var cost = CostModel.RooflineIdeal(HardwareCatalog.Get("H100-SXM").WithGpus(16));
            Assert.Equal(dag.CriticalPath(cost).TotalSeconds, folded.CriticalPath(cost).TotalSeconds, 9);
            Assert.Equal(ep == 4 ? A2a(baseline) : A2a(new StrategySpec(2, 2, 1, 4) { Mode = WorkloadMode.Training }.Validated().BuildDag(moe)), A2a(dag));
            foreach (var op in Ops(dag, op => dag.Kind(op) == OpKind.ContextParallelSend))
            {
                var m = dag.GroupMembers(dag.Group(op));
                Assert.Equal(m[0] % 2, m[1] % 2);   // same TP rank (TP is innermost in the rank order)
            }
        }
    }

    [Fact]
    public void RingsWorkUnderMoeParallelFoldingWithExpertTensorParallelism()
    {
        // Oracle: the CP = 1 layout on the same GPUs (FLOPs conserved, as above) and the folded DAG (the whole DAG).
        // EP 2, ETP 1, TP 2 with sequence parallelism (Megatron's rule for etp != tp): a folding unit is lcm(2, 2) = 2
        // ranks holding one attention rank, so a CP 2 ring spans two units; the ring's sends stay between equal TP ranks.
        var moe = new ModelSpec("moe", 2, 1024, 8, 1024, 8, 2, 4, 512) { Causal = true }.Validated();
        var st = new StrategySpec(2, 2, 1, 4) { Mode = WorkloadMode.Training, ExpertTensorParallelSize = 1, SequenceParallel = true, ContextParallelSize = 2 }.Validated();
        Assert.Equal(2, st.ContextParallelUnits);
        var dag = st.BuildDag(moe);
        var whole = (st with { ContextParallelSize = 1 }).BuildDag(moe.Validated() with { Batch = 8 });
        double Attention(OperatorDag d) => Ops(d, op => d.Category(op) == OpCategory.Attention).Sum(d.Flops);
        // Batch 4 over attention DP 2 with CP 2 against batch 8 over attention DP 4: per sequence the ring's pairs equal
        // the whole sequence's, so twice the sequences give twice the attention FLOPs.
        Assert.Equal(2 * Attention(dag), Attention(whole));
        Assert.Contains(Ops(dag, _ => true), op => dag.Kind(op) == OpKind.ContextParallelSend);
        foreach (var op in Ops(dag, op => dag.Kind(op) == OpKind.ContextParallelSend))
        {
            var m = dag.GroupMembers(dag.Group(op));
            Assert.Equal(m[0] % 2, m[1] % 2);
        }
        var cost = CostModel.RooflineIdeal(HardwareCatalog.Get("H100-SXM").WithGpus(8));
        Assert.Equal(dag.CriticalPath(cost).TotalSeconds, st.BuildDag(moe, DagFolding.Symmetric).CriticalPath(cost).TotalSeconds, 9);
    }

    [Fact]
    public void WithFreeCommunicationTheStepMatchesTheUnsplitLayoutOnTheSameTokensPerGpu()
    {
        // Oracle (bound): with communication free, a CP = c step on sequences of S does on each GPU the linear work of
        // its S / c tokens of c sequences and 1/c of their attention pairs: the same work as a CP = 1 replica holding one
        // whole sequence (test above). So the two steps agree up to the ring's merge passes and the per-step kernels'
        // extra reads (a few per cent at a long sequence, as CP is used); the CP step is never faster than that work.
        var model = new ModelSpec("long", 2, 4096, 32, 14336, 0, 1, 4, 16384) { KvHeads = 8, Causal = true }.Validated();
        var h = HardwareCatalog.Get("H100-SXM").WithGpus(4);
        var free = new CostModel("free communication", new RooflineCompute(h.Gpu, EfficiencyTable.Ideal), new FreeCommunication());
        var splitPath = Training(4, 4).Validated().BuildDag(model).CriticalPath(free);
        var split = splitPath.TotalSeconds;
        var whole = Training(4, 1).Validated().BuildDag(model).CriticalPath(free).TotalSeconds;
        // The only work the ring adds on a GPU: its merge passes (TE's output / dQ / dKV corrections).
        var d = splitPath.Dag;
        var merges = Ops(d, op => d.Gpu(op) == 0 && d.Kind(op) == OpKind.Elementwise && d.Index(op) == OpKindExtensions.ContextParallelMergeRole).Sum(op => splitPath.Durations[op]);
        Assert.True(merges > 0);
        // Beyond the merges, each ring step re-reads the rank's queries (CP x the Q traffic of one pass; here about 3 %).
        Assert.InRange(split, whole * 0.999, (whole + merges) * 1.05);
    }

    private sealed class FreeCommunication : ICommunicationCostModel
    {
        public string Name => "free";
        public double Seconds(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus) => 0;
    }

    [Fact]
    public void RingSendsOverlapTheAttentionOfThePreviousBlock()
    {
        // Oracle: TE posts step s + 1's send before step s's kernels: on a rank the forward send of step 1 starts before
        // the step-0 attention products end (the DAG lets it: it waits for the block, not for the kernels).
        var model = Gqa(batch: 4);
        var h = HardwareCatalog.Get("H100-SXM").WithGpus(4);
        var cost = CostModel.RooflineIdeal(h);
        var dag = Training(4, 4).Validated().BuildDag(model);
        var path = dag.CriticalPath(cost);
        var sendStep1 = Ops(dag, op => dag.Kind(op) == OpKind.ContextParallelSend && dag.Gpu(op) == 0 && dag.Layer(op) == 0 && dag.Phase(op) == OpPhase.Forward && dag.Index(op) == 1).Single();
        var step1Attention = Ops(dag, op => dag.Kind(op) == OpKind.AttentionScore && dag.Gpu(op) == 0 && dag.Layer(op) == 0 && dag.Phase(op) == OpPhase.Forward).Skip(8).First();
        Assert.True(path.StartSeconds(sendStep1) < path.FinishSeconds(step1Attention));
    }

    [Fact]
    public void OneContextParallelRankLeavesTheDagAsItWas()
    {
        // Oracle: the CP = 1 DAG built with the field spelled out is the default's, operation by operation.
        var model = Gqa();
        var a = Training(2, 1).Validated().BuildDag(model);
        var b = (new StrategySpec(1, 1, 1, 2) { Mode = WorkloadMode.Training }).Validated().BuildDag(model);
        Assert.Equal(a.Count, b.Count);
        Assert.Equal(Ops(a, _ => true).Select(op => (a.Kind(op), a.Gpu(op), a.Bytes(op), a.Flops(op))), Ops(b, _ => true).Select(op => (b.Kind(op), b.Gpu(op), b.Bytes(op), b.Flops(op))));
        Assert.DoesNotContain(Ops(a, _ => true), op => a.Kind(op) == OpKind.ContextParallelSend);
    }

    [Fact]
    public void ActivationsPerRankShrinkByTheContextParallelSize()
    {
        // Oracle: hand reasoning. Same attention data-parallel size (1) and batch: CP = 2 over 2 GPUs holds half of
        // each sequence per rank, so the saved activations (all proportional to the rank's tokens) halve.
        var model = Gqa(batch: 2);
        var h = HardwareCatalog.Get("H100-SXM");
        var one = MemoryModel.Estimate(model, Training(1, 1).Validated(), h.WithGpus(1));
        var two = MemoryModel.Estimate(model, Training(2, 2).Validated(), h.WithGpus(2));
        Assert.Equal(one.Stages[0].ActivationsBytes / 2, two.Stages[0].ActivationsBytes, 6);
    }

    [Theory]
    [InlineData("{\"attentionKernel\": \"materialized\"}", "strategy.contextParallelSize")]
    [InlineData("{\"attention\": \"tensor-parallel\"}", "strategy.attention")]
    public void UnpricedCombinationsAreRefusedNamingTheField(string extra, string field)
    {
        // Oracle: the validation rule (TE ring attention needs the fused kernel and data-parallel attention).
        var model = Gqa();
        var st = Training(2, 2);
        st = extra.Contains("materialized") ? st with { AttentionKernel = AttentionKernel.Materialized } : st with { Attention = AttentionPlacement.TensorParallel };
        var e = Assert.Throws<ConfigException>(() => st.CheckFits(model, st.GpuCount));
        Assert.Contains(field, e.Message);
        var odd = new StrategySpec(2, 1, 1, 3) { Mode = WorkloadMode.Training, ContextParallelSize = 3 };
        var moe = new ModelSpec("moe", 2, 1024, 8, 1024, 8, 2, 6, 528).Validated();
        Assert.Contains("strategy.contextParallelSize", Assert.Throws<ConfigException>(() => odd.CheckFits(moe, odd.GpuCount)).Message);
        // A ring over two replicas with Megatron's merged 1F1B all-to-all overlap (emitted one replica at a time): refused.
        var moe8 = new ModelSpec("moe", 2, 1024, 8, 1024, 8, 2, 8, 512).Validated();
        var merged = new StrategySpec(2, 1, 1, 4) { Mode = WorkloadMode.Training, ContextParallelSize = 4, MoeAllToAllOverlap = MoeAllToAllOverlap.OneFOneB, Microbatches = 2 };
        Assert.Equal("strategy.contextParallelSize", Assert.Throws<ConfigException>(() => merged.CheckFits(moe8, merged.GpuCount)).Field);
        (merged with { ContextParallelSize = 2 }).BuildDag(moe8);   // a ring inside the EP group is emitted with the merged steps
    }
}

public class ContextParallelSearchTests
{
    [Fact]
    public void SearchEnumeratesContextParallelSizesAndCountsWhatItSkips()
    {
        // Oracle: a count by hand: 4 GPUs have 10 ordered (EP, TP, PP, DP) factorizations; with microbatches {1} and
        // context-parallel sizes {1, 2, 4}: 30 candidates. On the dense GQA model (batch 4 x 512, 8 heads) EP > 1 is
        // rejected (counted), CP > EP x DP cannot be carved (counted); CP = 2 and 4 over DP = 4 are evaluated.
        var model = new ModelSpec("gqa", 2, 1024, 8, 4096, 0, 1, 4, 512) { KvHeads = 2, Causal = true }.Validated();
        var template = new StrategySpec(1, 1, 1, 4) { Mode = WorkloadMode.Training };
        var candidates = StrategySearch.Candidates(4, [1], template, contextParallel: [1, 2, 4]);
        Assert.Equal(30, candidates.Count);
        Assert.Equal(10, candidates.Count(c => c.CP == 4));
        var scenario = new Scenario("dense", model, HardwareCatalog.Get("H100-SXM").WithGpus(4), template, CostModelSpec.Ideal);
        var result = StrategySearch.Run(scenario, 4, new SearchOptions(Top: 40, Microbatches: [1], ContextParallel: [1, 2, 4], MaxDegreeOfParallelism: 1));
        Assert.Equal(30, result.Considered);
        Assert.Equal(result.Considered, result.Evaluated + result.Rejected);
        Assert.Contains(result.Best, b => b.Strategy.CP == 2 && b.Strategy.DP == 4);
        Assert.Contains(result.Best, b => b.Strategy.CP == 4 && b.Strategy.DP == 4);
        Assert.Contains(result.RejectedByReason.Keys, r => r.Contains("strategy.ep", StringComparison.Ordinal));
        Assert.Contains(result.RejectedByReason.Keys, r => r.Contains("contextParallelSize", StringComparison.Ordinal) || r.Contains("model.batch", StringComparison.Ordinal));
    }
}

public class ContextParallelImportTests
{
    [Fact]
    public void ALaunchWithContextParallelismImportsAndEvaluates()
    {
        // Oracle: Megatron's arguments by hand: world 2 x 8 = 16, DP = 16 / (TP 2 x PP 1 x CP 2) = 4, so the strategy
        // is EP 1 x TP 2 x DP 8 (EDP over the 8 non-TP ranks) with CP 2 carved out: attention DP 4, microbatches
        // 64 / (1 x 4) = 16; --cp-comm-type p2p is the priced ring (used, not listed), a2a is listed as not modelled.
        const string launch = """
            torchrun --nproc_per_node=8 --nnodes=2 pretrain_gpt.py --num-layers 4 --hidden-size 1024 --num-attention-heads 8 \
                --seq-length 8192 --max-position-embeddings 8192 --micro-batch-size 1 --global-batch-size 64 --bf16 \
                --tensor-model-parallel-size 2 --context-parallel-size 2 --cp-comm-type p2p --vocab-size 32000
            """;
        var r = MegatronImport.Parse(launch);
        Assert.Equal((1, 2, 1, 8, 2), (r.Strategy.EP, r.Strategy.TP, r.Strategy.PP, r.Strategy.DP, r.Strategy.CP));
        Assert.Equal((4, 16), (r.Strategy.AttentionDataParallelSize, r.Strategy.Microbatches));
        Assert.DoesNotContain(r.NotModelled, n => n.Flag == "--cp-comm-type");
        var scenario = Scenario.Parse(r.Scenario("imported", "DGX-H100").ToJsonString());
        var dag = scenario.Strategy.BuildDag(scenario.Model);
        Assert.Contains(Enumerable.Range(0, dag.Count), op => dag.Kind(op) == OpKind.ContextParallelSend);
        var a2a = MegatronImport.Parse(launch.Replace("--cp-comm-type p2p", "--cp-comm-type a2a"));
        Assert.Contains(a2a.NotModelled, n => n.Flag == "--cp-comm-type" && n.Reason.Contains("a2a"));
    }
}

using CsCheck;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Context parallelism over random layouts (its own stream, as for sequence parallelism: CP needs sequences divisible by
/// 2 CP and whole sequences per attention data-parallel rank): CP 2-4 carved out of EP x DP (rings inside an EP group or
/// over whole replicas), TP 1-2, PP 1-2, 1-2 microbatches, dense or MoE, GQA or MLA, causal or not, inference, training
/// and recomputation.
/// </summary>
public class ContextParallelPropertyTests
{
    [Fact]
    public void The_ring_splits_attention_exactly_keeps_every_gemm_and_sends_the_te_byte_counts()
    {
        // Oracles, per case, against the same GPUs with CP = 1 (each rank then holds whole sequences and the same number
        // of tokens): (1) the linear GEMMs are the same list (kind, GPU, shape); (2) attention FLOPs summed over all ranks
        // are equal, per phase (causal load balancing, ContextParallelTests); (3) the ring's sends carry, per layer
        // instance and rank, (CP - 1) K/V blocks forward (and again in a recompute) and 2 (CP - 1) backward (TE's
        // AttnFuncWithCPAndKVP2P); (4) the folded DAG (one ring group of replicas standing for all) prices to the same
        // step as the whole DAG; (5) the step is finite and positive.
        Cases().Sample(c =>
        {
            var model = c.Model;
            var st = c.Strategy;
            var whole = st.BuildDag(model);
            var cpSt = st with { ContextParallelSize = c.Cp };
            var split = cpSt.BuildDag(model);
            string Gemms(OperatorDag d) => string.Join(";", Enumerable.Range(0, d.Count).Where(op => d.Category(op) == OpCategory.Matmul)
                .Select(op => $"{d.Kind(op)}@{d.Gpu(op)}:{d.Shape(op)}:{d.Phase(op)}").Order());
            Assert.Equal(Gemms(whole), Gemms(split));
            foreach (var phase in Enum.GetValues<OpPhase>())
            {
                double Attention(OperatorDag d) => Enumerable.Range(0, d.Count).Where(op => d.Category(op) == OpCategory.Attention && d.Phase(op) == phase).Sum(d.Flops);
                Assert.Equal(Attention(whole), Attention(split));
            }
            var c2 = new LayerContextProbe(model, cpSt);
            var instances = (double)(model.Layers + model.MtpLayers) * c.Microbatches * cpSt.GpuCount / cpSt.PP;   // each GPU runs its stage's layers
            var passes = c.Mode == 0 ? 1 : c.Mode == 1 ? 3 : 4;   // forward (+ backward x2) (+ recompute)
            var sendBytes = Enumerable.Range(0, split.Count).Where(op => split.Kind(op) == OpKind.ContextParallelSend).Sum(split.Bytes);
            Assert.Equal(instances * passes * (c.Cp - 1) * c2.BlockBytes, sendBytes, 1e-9 * (1 + sendBytes));
            var hw = HardwareCatalog.Get("DGX-H100").WithGpus(cpSt.GpuCount);
            var cost = CostModel.RooflineIdeal(hw);
            var t = split.CriticalPath(cost).TotalSeconds;
            Assert.True(double.IsFinite(t) && t > 0, $"{t}");
            Assert.Equal(t, cpSt.BuildDag(model, DagFolding.Symmetric).CriticalPath(cost).TotalSeconds, 9);
        }, iter: (int)Property.Iterations);
    }

    /// <summary>
    /// The stream's layouts: CP 2 or 4 carved out of EP x DP (EP a half, one or two rings' worth for an MoE model), TP 1-2,
    /// 1-<paramref name="maxPp"/> stages of two layers, <paramref name="minMicrobatches"/>-<paramref name="maxMicrobatches"/>
    /// microbatches, dense or MoE, GQA or MLA, causal or not, mode <paramref name="minMode"/>-2 (0 inference, 1 training,
    /// 2 training with recomputation), sequences of 2 CP x 1-24 tokens.
    /// </summary>
    internal static Gen<ContextParallelCase> Cases(int maxPp = 2, int minMicrobatches = 1, int maxMicrobatches = 2, int minMode = 0) =>
        from cp in Gen.OneOf(2, 4)
        from epFactor in Gen.OneOf(0, 1, 2)
        from tp in Gen.Int[1, 2]
        from pp in Gen.Int[1, maxPp]
        from mb in Gen.Int[minMicrobatches, maxMicrobatches]
        from moe in Gen.Bool
        from mla in Gen.Bool
        from causal in Gen.Bool
        from mode in Gen.Int[minMode, 2]
        from chunk in Gen.Int[1, 24]
        from seqPerRank in Gen.Int[1, 2]
        from replicas in Gen.Int[1, 2]
        select new ContextParallelCase(cp, moe ? new[] { cp / 2, cp, 2 * cp }[epFactor] : 1, tp, pp, mb, moe, mla, causal, mode, 2L * cp * chunk, seqPerRank, replicas);

    /// <summary>The block a rank passes around the ring, by hand: tokens / rank x kv heads / TP (MLA: heads / TP) x (d_qk + d_v) x 2 bytes.</summary>
    private sealed class LayerContextProbe(ModelSpec model, StrategySpec st)
    {
        public double BlockBytes => (double)RoutingOutcome.AttentionTokensPerRank(model, st)
            * (model.Mla is not null ? model.AttentionHeads / st.TP : Math.Max(1, model.KeyValueHeads / st.TP))
            * (model.QkHeadDim + model.VHeadDim) * model.ElementBytes;
    }
}

/// <summary>One layout of <see cref="ContextParallelPropertyTests.Cases"/>: its model and its strategy without context parallelism.</summary>
internal sealed record ContextParallelCase(int Cp, int Ep, int Tp, int Pp, int Microbatches, bool Moe, bool Mla, bool Causal, int Mode, long Sequence, int SequencesPerRank, int Replicas)
{
    /// <summary>DP so that EP x DP is a multiple of CP and the ring tiles EP ranks or whole replicas.</summary>
    public int Dp => (Ep >= Cp ? 1 : Cp / Ep) * Replicas;

    public ModelSpec Model => new("cp", 2 * Pp, 64L * 2 * Tp, 2 * Tp, 128, Moe ? 4 * Ep : 0, Moe ? 2 : 1, (long)Ep * Dp * Microbatches * SequencesPerRank, Sequence)
    {
        Causal = Causal,
        KvHeads = Mla ? null : Tp,
        Mla = Mla ? new MlaSpec(0, 32, 32, 16, 32) : null,
    };

    public StrategySpec Strategy => new(Ep, Tp, Pp, Dp, Microbatches: Microbatches)
    {
        Mode = Mode == 0 ? WorkloadMode.Inference : WorkloadMode.Training,
        Recompute = Mode == 2,
    };
}

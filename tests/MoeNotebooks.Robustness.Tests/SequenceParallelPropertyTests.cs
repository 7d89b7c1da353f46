using CsCheck;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Sequence parallelism over random dense layouts (the RandomScenarios stream draws MoE models only, where SP is
/// rejected, so SP gets its own small stream): TP 2-4, PP 1-2, 1-3 microbatches, training or inference, recompute.
/// </summary>
public class SequenceParallelPropertyTests
{
    [Fact]
    public void Sequence_parallelism_swaps_each_tp_all_reduce_for_a_reduce_scatter_and_an_all_gather_and_keeps_the_gemms()
    {
        // Oracle (Korthikanti et al. 2022 §4.2.2, per operation): against the same layout without SP, the GEMMs are the
        // same list (kind, shape, GPU); every TP all-reduce is replaced by one reduce-scatter and one all-gather of the
        // same message, plus one all-gather before each forward logits GEMM; no elementwise pass moves
        // more bytes; pipeline sends move 1/TP; the step prices to a finite positive time.
        var gen =
            from tp in Gen.OneOf(2, 4)
            from pp in Gen.Int[1, 2]
            from mb in Gen.Int[1, 3]
            from layersPerStage in Gen.Int[1, 2]
            from headsPerRank in Gen.Int[1, 3]
            from headDim in Gen.OneOf(8, 16, 64)
            from seqPerMb in Gen.Int[1, 3]
            from seq in Gen.Int[1, 256]
            from vocab in Gen.OneOf(0, 512)
            from training in Gen.Bool
            from recompute in Gen.Bool
            select (tp, pp, mb, layers: pp * layersPerStage, heads: tp * headsPerRank, hidden: (long)tp * headsPerRank * headDim, batch: (long)mb * seqPerMb, seq, vocab, training, recompute);
        gen.Sample(c =>
        {
            var model = new ModelSpec("dense", c.layers, c.hidden, c.heads, 4 * c.hidden, 0, 1, c.batch, c.seq) { Vocabulary = c.vocab };
            var st = new StrategySpec(1, c.tp, c.pp, 1, Microbatches: c.mb)
            { Mode = c.training ? WorkloadMode.Training : WorkloadMode.Inference, Recompute = c.training && c.recompute };
            var plain = st.BuildDag(model);
            var sp = (st with { SequenceParallel = true }).BuildDag(model);
            string Gemms(OperatorDag d) => string.Join(";", Enumerable.Range(0, d.Count).Where(op => d.Kind(op).IsMatmulShaped())
                .Select(op => $"{d.Kind(op)}@{d.Gpu(op)}:{d.Shape(op)}").Order());
            Assert.Equal(Gemms(plain), Gemms(sp));
            var ar = Enumerable.Range(0, plain.Count).Where(op => plain.Kind(op).Pattern() == CollectivePattern.AllReduce).Select(plain.Bytes).ToList();
            var rs = Enumerable.Range(0, sp.Count).Where(op => sp.Kind(op) == OpKind.SequenceReduceScatter).Select(sp.Bytes).ToList();
            var ag = Enumerable.Range(0, sp.Count).Where(op => sp.Kind(op) == OpKind.SequenceAllGather).Select(sp.Bytes).ToList();
            Assert.DoesNotContain(Enumerable.Range(0, sp.Count), op => sp.Kind(op).Pattern() == CollectivePattern.AllReduce);
            Assert.Equal(ar.Order(), rs.Order());
            // Per layer and pass the block collectives pair up (one AG, one RS each); the output layer adds an all-gather
            // before each forward logits GEMM and, training, a reduce-scatter of dX (its plain all-reduce) per microbatch.
            var logitsForwards = Enumerable.Range(0, sp.Count).Count(op => sp.Kind(op) == OpKind.Logits && sp.Phase(op) is OpPhase.Forward or OpPhase.Recompute) / c.tp;
            Assert.Equal(c.vocab > 0 ? logitsForwards - (c.training ? c.mb : 0) : 0, ag.Count - rs.Count);
            double Elementwise(OperatorDag d) => Enumerable.Range(0, d.Count).Where(op => d.Kind(op) == OpKind.Elementwise).Sum(d.Bytes);
            Assert.True(Elementwise(sp) <= Elementwise(plain));
            double Sends(OperatorDag d) => Enumerable.Range(0, d.Count).Where(op => d.Kind(op) == OpKind.PipelineSend).Sum(d.Bytes);
            Assert.Equal(Sends(plain) / c.tp, Sends(sp), 1e-9 * (1 + Sends(plain)));
            var hw = HardwareCatalog.Get("DGX-H100").WithGpus(c.tp * c.pp);
            var t = sp.CriticalPath(CostModel.RooflineIdeal(hw)).TotalSeconds;
            Assert.True(double.IsFinite(t) && t > 0, $"{t}");
        }, iter: 300);
    }
}

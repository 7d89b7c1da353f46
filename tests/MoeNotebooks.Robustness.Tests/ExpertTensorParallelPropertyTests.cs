using System.Text.Json;
using CsCheck;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// MoE parallel folding (ETP drawn independently of TP) and sequence parallelism inside the MoE block over random MoE
/// layouts: EP 1-4, attention TP 1-4, ETP 1-4, EDP 1-2, PP 1-2, 1-2 microbatches, training or forward, recompute,
/// distributed optimizer, uniform or Zipf routing, 2-8 GPUs a node. Its own stream: drawn into the shared
/// RandomScenarios stream, these layouts made Faster_gpus_never_raise_the_total fail on the link-contention model
/// (a faster GPU moved a collective into another's window on a shared NIC: 1.0810 -> 1.1049 ms with contention,
/// 1.0330 -> 1.0329 ms without), a scheduler property that does not depend on ETP or SP.
/// </summary>
public class ExpertTensorParallelPropertyTests
{
    private sealed record Case(int EP, int TP, int ETP, int EDP, int PP, int Mb, int Layers, int Heads, long Hidden, long Ffn,
        int Experts, int TopK, long Batch, long Seq, bool Sp, bool Training, bool Recompute, bool DistOpt, double Zipf, int PerNode)
    {
        public ModelSpec Model => new("etp", Layers, Hidden, Heads, Ffn, Experts, TopK, Batch, Seq)
        {
            Routing = Zipf > 0 ? new RoutingSpec(RoutingDistribution.Zipf, Zipf) : RoutingSpec.Uniform,
        };

        public StrategySpec Strategy => new(EP, TP, PP, EDP, Derivation.Corrected, Mb)
        {
            ExpertTensorParallelSize = ETP, SequenceParallel = Sp, Mode = Training ? WorkloadMode.Training : WorkloadMode.Inference,
            Recompute = Training && Recompute, UseDistributedOptimizer = Training && DistOpt,
        };

        public Scenario Scenario => new Scenario("etp", Model, HardwareCatalog.Get("DGX-H100").WithGpus(Strategy.GpuCount) with { GpusPerNode = PerNode },
            Strategy, CostModelSpec.Ideal).Validated();
    }

    private static Gen<Case> Cases =>
        from ep in Gen.OneOf(1, 2, 4)
        from tp in Gen.OneOf(1, 2, 4)
        from etp in Gen.OneOf(1, 2, 4)
        from edp in Gen.OneOf(1, 2)
        from pp in Gen.OneOf(1, 2)
        where ep * etp * edp * pp <= 16 && ep * etp * edp % tp == 0
        from mb in Gen.Int[1, 2]
        from layers in Gen.Int[pp, 2 * pp]
        from headsPerRank in Gen.Int[1, 2]
        from headDim in Gen.OneOf(8, 16)
        from ffnFactor in Gen.OneOf(1, 2)
        from expertsPerRank in Gen.Int[1, 2]
        from topK in Gen.Int[1, 3]
        from seqPerRank in Gen.Int[1, 2]
        from seq in Gen.Int[1, 64]
        from spDraw in Gen.Bool
        from training in Gen.Bool
        from recompute in Gen.Bool
        from distOpt in Gen.Bool
        from zipf in Gen.OneOf(0.0, 0.0, 1.2)
        from perNode in Gen.OneOf(2, 4, 8)
        let heads = tp * headsPerRank
        let hidden = (long)heads * headDim
        let experts = ep * expertsPerRank
        // Megatron's rule: ETP != TP at TP > 1 needs SP; under SP the sequence is a multiple of TP.
        let sp = tp > 1 && (spDraw || etp != tp)
        let sequence = sp ? Math.Max(tp, seq - seq % tp) : seq
        let attentionDp = ep * etp * edp / tp
        select new Case(ep, tp, etp, edp, pp, mb, layers, heads, hidden, hidden * ffnFactor * etp, experts, Math.Min(topK, experts),
            (long)attentionDp * mb * seqPerRank, sequence, sp, training, recompute, distOpt, zipf, perNode);

    [Fact]
    public void Folded_and_sequence_parallel_moe_layouts_conserve_expert_work_and_fold_exactly()
    {
        // Oracles: (1) conservation by hand: whatever the layout, every routed token copy goes through the up and down
        // GEMMs of one expert once (split over ETP ranks, whose shards add up to the width): forward expert FLOPs =
        // 2 x batch x seq x topK x H x (F_up + F) over the step (no capacity limit, so nothing dropped); each token is
        // routed once when each rank routes its own tokens (SP or TP 1), TP times otherwise (today's TP ranks route
        // all T). (2) The whole DAG against the folded one (FoldingPropertyTests' oracle). (3) The strategy JSON reads
        // back equal.
        long folded = 0, sharded = 0;
        Property.Check(Cases, c =>
        {
            var s = c.Scenario;
            var dag = s.BuildDag(DagFolding.None);
            double expert = 0, gate = 0;
            for (var op = 0; op < dag.Count; op++)
            {
                if (dag.Phase(op) != OpPhase.Forward) continue;
                if (dag.Kind(op) is OpKind.ExpertUp or OpKind.ExpertDown) expert += dag.Flops(op);
                if (dag.Kind(op) == OpKind.Gate) gate += dag.Flops(op);
            }
            var tokens = (double)c.Batch * c.Seq;
            var m = s.Model;
            var fUp = m.GatedFfn ? 2 * m.ExpertFfnHiddenSize : m.ExpertFfnHiddenSize;
            Assert.Equal(2 * tokens * c.TopK * c.Hidden * (fUp + m.ExpertFfnHiddenSize) * c.Layers, expert, 1e-9 * expert);
            var routedOnce = c.Sp || c.TP == 1 || c.ETP != c.TP;
            Assert.Equal(2 * tokens * c.Hidden * c.Experts * c.Layers * (routedOnce ? 1 : c.TP), gate, 1e-9 * gate);
            if (c.ETP != c.TP || c.Sp) sharded++;
            if (FoldingPropertyTests.AssertFoldedEqualsWhole(s)) folded++;
            var t = dag.CriticalPath(s.CreateCostModel()).TotalSeconds;
            Assert.True(double.IsFinite(t) && t > 0, $"{t}");
            using var doc = JsonDocument.Parse(s.Strategy.ToJson().ToJsonString());
            Assert.Equal(s.Strategy, StrategySpec.Read(new JsonObjectReader(doc.RootElement, "strategy", null)));
        }, count: Property.Iterations);
        // Not vacuous: most cases exercise the sharded dispatcher, and some fold.
        Assert.True(sharded > 500 && folded > 100, $"{sharded} sharded, {folded} folded");
    }
}

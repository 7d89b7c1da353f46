using System.Text.Json.Nodes;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Megatron-Core layouts and execution (issue 12): strategy fields, placement, uneven pipelines, gradient sync order.</summary>
public class MegatronLayoutTests
{
    private static readonly HardwareSpec H100 = HardwareCatalog.Get("H100-SXM");
    private static readonly ModelSpec Dense = new("dense", 8, 2048, 16, 8192, 0, 1, 8, 2048) { Vocabulary = 32000 };

    [Fact]
    public void DataParallelSyncOverlapsTheBackwardLayerByLayer()
    {
        // Oracle (the bound): with per-layer buckets issued in backward order, a DP4 step exceeds a DP1 step
        // of the same per-replica work by at most the last bucket's (layer 0's) exposed all-reduce: every other
        // layer's sync runs on the communication stream while earlier layers' backward computes (here each layer's
        // backward takes ~20x its sync). Before the fix the buckets were issued layer 0 first, so the in-order stream
        // waited for the last backward and all eight syncs were exposed.
        var one = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        var four = one with { DP = 4 };
        var cost1 = CostModel.RooflineIdeal(H100.WithGpus(1));
        var cost4 = CostModel.RooflineIdeal(H100.WithGpus(4));
        var t1 = one.BuildDag(Dense).CriticalPath(cost1).TotalSeconds;
        var dag4 = four.BuildDag(Dense with { Batch = 4 * Dense.Batch });
        var d4 = cost4.Price(dag4);
        var t4 = Scheduler.Schedule(dag4, d4).TotalSeconds;
        var syncs = Enumerable.Range(0, dag4.Count).Where(op => dag4.Kind(op) == OpKind.GradientAllReduce && dag4.Gpu(op) == 0).ToArray();
        Assert.Equal(8, syncs.Length);
        Assert.Equal(Enumerable.Range(0, 8).Reverse(), syncs.Select(dag4.Layer));   // issued last layer first
        var lastBucket = d4[syncs[^1]];
        Assert.True(t4 > t1, "DP4 pays at least the last bucket");
        Assert.True(t4 - t1 <= lastBucket * (1 + 1e-9), $"DP4 {t4} s exceeds DP1 {t1} s by more than the last bucket {lastBucket} s (all syncs {syncs.Sum(op => d4[op])} s)");
    }

    [Fact]
    public void WithoutOverlapGradReduceEveryBucketWaitsForTheWholeBackward()
    {
        // Oracle: Megatron without --overlap-grad-reduce reduces all buckets after the backward (finalize_model_grads):
        // the DP4 step is the DP1 step plus the sum of the eight layer all-reduces, back to back on the communication stream.
        var one = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training, OverlapGradReduce = false };
        var t1 = one.BuildDag(Dense).CriticalPath(CostModel.RooflineIdeal(H100.WithGpus(1))).TotalSeconds;
        var dag4 = (one with { DP = 4 }).BuildDag(Dense with { Batch = 4 * Dense.Batch });
        var d4 = CostModel.RooflineIdeal(H100.WithGpus(4)).Price(dag4);
        var syncs = Enumerable.Range(0, dag4.Count).Where(op => dag4.Kind(op) == OpKind.GradientAllReduce && dag4.Gpu(op) == 0).Sum(op => d4[op]);
        Assert.Equal(t1 + syncs, Scheduler.Schedule(dag4, d4).TotalSeconds, (t1 + syncs) * 1e-9);
    }

    [Fact]
    public void DistributedOptimizerReduceScattersGathersAndUpdatesAShard()
    {
        // Oracle: hand byte counts of Megatron's distributed optimizer on a small MoE (4 layers, H 1024, 8 experts
        // of F 4096, EP 4, DP 2, vocabulary 0): per layer the non-expert gradient bucket 4H^2 + 4H + H x experts
        // = 4,206,592 parameters x 2 bytes is reduce-scattered over DP x EP = 8 ranks, each rank's expert bucket
        // 2 experts x 2HF = 16,777,216 parameters x 2 bytes over DP = 2; after Adam on 1/8 and 1/2 of them
        // (28 bytes a parameter) the same buffers, 4 layers' worth, are all-gathered over the same groups.
        var moe = new ModelSpec("moe", 4, 1024, 8, 4096, 8, 2, 32, 256);
        var st = new StrategySpec(4, 1, 1, 2, Microbatches: 2) { Mode = WorkloadMode.Training, UseDistributedOptimizer = true };
        var dag = st.BuildDag(moe);
        const long nonExpert = 4L * 1024 * 1024 + 4 * 1024 + 1024 * 8, expert = 2L * 2 * 1024 * 4096;
        Assert.Equal(nonExpert + expert, ParameterCounts.PerLayer(moe, st, 0).Total);
        var onGpu0 = Enumerable.Range(0, dag.Count).Where(op => dag.Participants(op).Contains(0)).ToArray();
        var rs = onGpu0.Where(op => dag.Kind(op) == OpKind.GradientReduceScatter).ToArray();
        Assert.DoesNotContain(onGpu0, op => dag.Kind(op) == OpKind.GradientAllReduce);
        Assert.Equal(Enumerable.Repeat(2.0 * nonExpert, 4), rs.Where(op => dag.GroupMembers(dag.Group(op)).Length == 8).Select(dag.Bytes));
        Assert.Equal(Enumerable.Repeat(2.0 * expert, 4), rs.Where(op => dag.GroupMembers(dag.Group(op)).Length == 2).Select(dag.Bytes));
        var gathers = onGpu0.Where(op => dag.Kind(op) == OpKind.ParameterAllGather).Select(op => (dag.GroupMembers(dag.Group(op)).Length, dag.Bytes(op))).Order().ToArray();
        // Bucket by bucket (Megatron-Core bucket_size 40M parameters, filled from the last layer: layers 3+2 hold
        // 42M, then layers 1+0): two gathers per group, each of two layers. (Was one gather of all four layers: Megatron
        // gathers per bucket, and --overlap-param-gather spreads the same buckets over the next forward.)
        Assert.Equal([(2, 2 * 2.0 * expert), (2, 2 * 2.0 * expert), (8, 2 * 2.0 * nonExpert), (8, 2 * 2.0 * nonExpert)], gathers);
        var step = onGpu0.Single(op => dag.Kind(op) == OpKind.Elementwise && dag.Phase(op) == OpPhase.Update);
        Assert.Equal(4 * (28.0 * nonExpert / 8 + 28.0 * expert / 2), dag.Bytes(step), 0);
        // Memory: Adam states partitioned as ZeRO-1 (12 bytes a parameter over the reducing ranks).
        var mem = MemoryModel.Estimate(moe, st, H100.WithGpus(8)).Stages[0];
        Assert.Equal(4 * (12.0 * nonExpert / 8 + 12.0 * expert / 2), mem.OptimizerBytes, 0);
    }

    [Fact]
    public void FirstAndLastStageLayersShapeTheDag()
    {
        // Oracle: hand count: 8 layers, pp 3, first stage 2, last stage 2 -> 2, 4, 2 layers; the embedding sits on
        // stage 0 and the output layer on stage 2; per-stage parameters follow the layer counts.
        var st = new StrategySpec(1, 1, 3, 1, Microbatches: 4) { Mode = WorkloadMode.Training, DecoderFirstPipelineNumLayers = 2, DecoderLastPipelineNumLayers = 2 };
        var dag = st.BuildDag(Dense);
        int LayersOn(int gpu) => Enumerable.Range(0, dag.Count).Where(op => dag.Gpu(op) == gpu && dag.Kind(op) == OpKind.QProjection).Select(dag.Layer).Distinct().Count();
        Assert.Equal([2, 4, 2], Enumerable.Range(0, 3).Select(LayersOn));
        Assert.Equal([0, 1], Enumerable.Range(0, dag.Count).Where(op => dag.Gpu(op) == 0 && dag.Kind(op) == OpKind.QProjection).Select(dag.Layer).Distinct().Order());
        Assert.All(Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.Logits), op => Assert.Equal(2, dag.Gpu(op)));
        var perLayer = ParameterCounts.PerLayer(Dense, st).Total;
        Assert.Equal(4 * perLayer, ParameterCounts.OnStage(Dense, st, 1).Total);
        Assert.Equal(2 * perLayer + Dense.Vocabulary * Dense.HiddenSize, ParameterCounts.OnStage(Dense, st, 0).Total);
    }

    [Fact]
    public void FoldingWithExpertTensorParallelEqualToTpIsTodaysLayout()
    {
        // Oracle: MoE parallel folding with ETP = TP (and CP = 1) is today's layout: the same DAG operation by operation.
        var moe = new ModelSpec("moe", 4, 1024, 8, 4096, 8, 2, 32, 256);
        var today = new StrategySpec(4, 2, 2, 2, Microbatches: 4) { Mode = WorkloadMode.Training };
        var folded = today with { ExpertTensorParallelSize = 2 };
        Assert.Equal(BlockRefactorTests.Fingerprint(today.BuildDag(moe)), BlockRefactorTests.Fingerprint(folded.BuildDag(moe)));
        Assert.Equal(today.GpuCount, folded.GpuCount);
        Assert.Equal(8, folded.AttentionDataParallelSize);   // EP x DP
        Assert.Equal(2, folded.ExpertDataParallelSize);
    }

    [Fact]
    public void MegatronRankOrderTellsWhichGroupsStayInsideAnNvlinkDomain()
    {
        // Oracle: Megatron-Core's RankGenerator with order "tp-cp-ep-dp-pp": attention ranks tp + TP(cp + CP(dp + DP pp)),
        // expert ranks etp + ETP(ep + EP(edp + EDP pp)). Hand example: 64 GPUs, TP 2, CP 2, PP 2, EP 8, ETP 1 -> 32 GPUs a
        // stage, attention DP 8, EDP 4. Rank 13 = 1 + 2(0 + 2 x 3): tp 1, cp 0, dp 3; experts: etp 0, ep 5, edp 1.
        var st = new StrategySpec(8, 2, 2, 4) { ExpertTensorParallelSize = 1, ContextParallelSize = 2 };
        Assert.Equal(64, st.GpuCount);
        Assert.Equal(8, st.AttentionDataParallelSize);
        Assert.Equal((1, 0, 3, 0), st.AttentionCoordinates(13));
        Assert.Equal((0, 5, 1, 0), st.ExpertCoordinates(13));
        Assert.Equal([12, 13], st.MegatronGroup(13, "tp"));
        Assert.Equal([13, 15], st.MegatronGroup(13, "cp"));
        Assert.Equal([8, 9, 10, 11, 12, 13, 14, 15], st.MegatronGroup(13, "ep"));
        Assert.Equal([5, 13, 21, 29], st.MegatronGroup(13, "edp"));
        Assert.Equal([13, 45], st.MegatronGroup(13, "pp"));
        Assert.True(StrategySpec.InsideDomain(st.MegatronGroup(13, "ep"), 8));     // EP 8 inside one DGX node
        Assert.False(StrategySpec.InsideDomain(st.MegatronGroup(13, "edp"), 8));   // EDP spans nodes
        // Today's fields with Megatron's nesting: RankOrder "tp-ep-dp-pp" places ranks as Megatron does with ETP = TP.
        var today = new StrategySpec(4, 2, 2, 2) { RankOrder = "tp-ep-dp-pp" };
        for (var r = 0; r < today.GpuCount; r++)
        {
            var (etp, ep, edp, pp) = today.ExpertCoordinates(r);
            Assert.Equal(r, today.Rank(edp, pp, ep, etp));
            var (tp, _, dp, app) = today.AttentionCoordinates(r);
            Assert.Equal(r, today.Rank(dp / 4, app, dp % 4, tp));   // attention DP = ep + EP x dp
        }
    }

    [Fact]
    public void NewStrategyFieldsRoundTripThroughJson()
    {
        // Oracle: Read(ToJson(s)) == s for every new field at a non-default value.
        var s = new StrategySpec(8, 2, 4, 2, Microbatches: 16)
        {
            Mode = WorkloadMode.Training, Schedule = PipelineSchedule.Interleaved, VirtualStages = 2, ExpertTensorParallelSize = 1,
            ContextParallelSize = 2, SequenceParallel = true, UseDistributedOptimizer = true, OverlapGradReduce = false,
            OverlapParamGather = true, DecoderFirstPipelineNumLayers = 6, DecoderLastPipelineNumLayers = 6,
            MoeAllToAllOverlap = MoeAllToAllOverlap.DeepEp,
        };
        Assert.Equal(s, RoundTrip(s));
        var dual = new StrategySpec(1, 1, 4, 1, Microbatches: 8) { Mode = WorkloadMode.Training, Schedule = PipelineSchedule.DualPipe };
        Assert.Equal(dual, RoundTrip(dual));
        var zb = dual with { Schedule = PipelineSchedule.ZeroBubbleH1, MoeAllToAllOverlap = MoeAllToAllOverlap.OneFOneB };
        Assert.Equal(zb, RoundTrip(zb));
        Assert.Equal(new StrategySpec(1, 1, 1, 1), RoundTrip(new StrategySpec(1, 1, 1, 1)));
        Assert.Contains("ETP1", s.ToString());
        Assert.Contains("CP2", s.ToString());
        Assert.Contains("distributed optimizer", s.ToString());
    }

    private static StrategySpec RoundTrip(StrategySpec s)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(s.ToJson().ToJsonString());
        return StrategySpec.Read(new JsonObjectReader(doc.RootElement, "strategy", null));
    }

    [Theory]
    [InlineData("\"contextParallelSize\": 0", "strategy.contextParallelSize", "0")]
    [InlineData("\"expertTensorParallelSize\": -2", "strategy.expertTensorParallelSize", "-2")]
    [InlineData("\"pp\": 3, \"schedule\": \"dualpipe\", \"microbatches\": 6", "strategy.pp", "3")]
    [InlineData("\"pp\": 2, \"schedule\": \"dualpipe\", \"microbatches\": 2", "strategy.microbatches", "2")]
    [InlineData("\"decoderFirstPipelineNumLayers\": 2", "strategy.decoderFirstPipelineNumLayers", "2")]
    [InlineData("\"overlapParamGather\": true", "strategy.overlapParamGather", "true")]
    [InlineData("\"tp\": 4, \"contextParallelSize\": 3, \"dp\": 2", "strategy.tp x contextParallelSize", "4 x 3 = 12")]
    [InlineData("\"moeAllToAllOverlap\": \"sometimes\"", "strategy.moeAllToAllOverlap", "\"sometimes\"")]
    [InlineData("\"useDistributedOptimizer\": true, \"zero\": 1", "strategy.useDistributedOptimizer", "true")]
    public void BadNewFieldsAreRejectedNamingFieldAndValue(string fields, string field, string value)
    {
        // Oracle: the bar for bad input: one ConfigException naming the field and the value.
        using var doc = System.Text.Json.JsonDocument.Parse("{" + fields + "}");
        var e = Assert.Throws<ConfigException>(() => StrategySpec.Read(new JsonObjectReader(doc.RootElement, "strategy", null)));
        Assert.Equal(field, e.Field);
        Assert.Equal(value, e.Value);
    }

    [Fact]
    public void FieldsTheDerivationDoesNotPriceYetAreRejectedNotIgnored()
    {
        // Oracle: honesty: a layout field the DAG does not model must not silently evaluate as if absent.
        var moe = new ModelSpec("moe", 4, 1024, 8, 4096, 8, 2, 32, 256);
        var st = new StrategySpec(4, 2, 1, 1) { ContextParallelSize = 2 };
        var e = Assert.Throws<ConfigException>(() => st.BuildDag(moe));
        Assert.Equal("strategy.contextParallelSize", e.Field);
        Assert.Contains("not priced", e.Message);
    }

    [Fact]
    public void SearchEnumeratesVirtualStagesAndTheDistributedOptimizerAndCountsWhatItSkips()
    {
        // Oracle: a count by hand: 4 = 2^2 has C(5, 3) = 10 ordered (EP, TP, PP, DP) factorizations, 4 of them with PP > 1
        // (PP = 2 with the other 2 in one of 3 places, PP = 4); with
        // microbatches {4}, virtual stages {1, 2} (2 only with PP > 1) and the optimizer {plain, distributed}:
        // (10 + 4) x 2 = 28 candidates. On the dense model EP > 1 is rejected with its reason counted; the rest are
        // evaluated, including interleaved and distributed-optimizer layouts.
        var candidates = StrategySearch.Candidates(4, [4], new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training }, [1, 2], [false, true]);
        Assert.Equal(28, candidates.Count);
        Assert.Equal(8, candidates.Count(c => c.VirtualStages == 2 && c.Schedule == PipelineSchedule.Interleaved && c.PP > 1));
        Assert.Equal(14, candidates.Count(c => c.UseDistributedOptimizer));
        var scenario = new Scenario("dense", Dense with { Layers = 4 }, H100.WithGpus(4), new StrategySpec(1, 1, 1, 4) { Mode = WorkloadMode.Training }, CostModelSpec.Ideal);
        var result = StrategySearch.Run(scenario, 4, new SearchOptions(Top: 40, Microbatches: [4], VirtualStages: [1, 2], DistributedOptimizer: [false, true], MaxDegreeOfParallelism: 1));
        Assert.Equal(28, result.Considered);
        Assert.Equal(result.Considered, result.Evaluated + result.Rejected);
        Assert.Contains(result.RejectedByReason.Keys, r => r.Contains("strategy.ep", StringComparison.Ordinal));
        Assert.Contains(result.Best, b => b.Strategy.UseDistributedOptimizer);
        Assert.Contains(result.Best, b => b.Strategy.VirtualStages == 2);
    }
}

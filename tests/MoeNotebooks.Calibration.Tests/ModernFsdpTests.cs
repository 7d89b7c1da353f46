using MoeNotebooks.Calibration;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>
/// Fully sharded runs (MosaicML MPT's FSDP FULL_SHARD, Megatron-Bridge's Megatron-FSDP) priced as per-layer ZeRO-3 in
/// the suite's slice DAG (issue 14): the gathers and reduce-scatters as the frameworks issue them, and the rows that
/// were listed as not expressible now predicted.
/// </summary>
public class ModernFsdpTests
{
    private const string Header = "case_id,source,model,arch,params_total_B,params_active_B,layers,hidden,ffn_hidden,heads,kv_heads,seq_len,vocab,experts,topk,shared_experts,gpu,num_gpus,precision,global_batch_seqs,micro_batch,TP,PP,VP,CP,EP,DP,sharding,recompute,tflops_per_gpu,mfu_pct,hfu_pct,tokens_per_s_per_gpu,iter_time_s,flops_convention,notes,confidence";

    /// <summary>MPT-70b on 128 A100-40GB as llm-foundry's benchmark table gives it (row mpt_139 of training_modern_public.csv).</summary>
    private const string Mpt70b = "mpt_139,src,MPT-70b,dense (ALiBi; FlashAttention),64.862,64.862,80,8192,32768,64,64,2048,50368,,,,A100-40GB (MosaicML; 1600Gbps RoCE node-node),128,bf16,512,4,1,1,,,,128,FSDP FULL_SHARD (mp_mode PURE),full activation checkpointing,152.6,48.91,65.21,376,,c,n,x";

    private static ModernScenario Scenario(string row)
    {
        var run = ModernRun.Read(new StringReader(Header + "\n" + row + "\n"), "test.csv").Single();
        var (s, reason) = ModernPredictor.ScenarioOf(run);
        Assert.True(s is not null, reason);
        return s!;
    }

    [Fact]
    public void Mpt_fsdp_gathers_and_reduce_scatters_each_layer_with_its_hand_counted_bytes()
    {
        // Oracle: a hand count. MPT-70b layer (h = 8192, FFN 4h = 32768, MHA, two LayerNorms with weight and bias as the
        // core counts them): 4h^2 + 2 x 2h + 2 h x 4h = 268,435,456 + 32,768 + 536,870,912 = 805,339,136 parameters,
        // 1,610,678,272 bytes in bf16 (composer FSDP mixed precision PURE gathers and reduces in bf16). FSDP FULL_SHARD
        // with activation checkpointing (reshard after forward, no reshard inside the backward's recomputed forward):
        // per layer and microbatch one all-gather before the forward, one before the recompute, one reduce-scatter after
        // the backward, each over all 128 data-parallel ranks; the MPT row's columns carry no other communication.
        var s = Scenario(Mpt70b);
        var sharded = ModernPredictor.ShardedReplicas(s.Run, priceDataParallel: true);
        Assert.Equal(128, sharded);
        Assert.Equal(1, ModernPredictor.ShardedReplicas(s.Run, priceDataParallel: false));   // the rungs without DP sync build one replica
        const int microbatches = 2;
        var dag = ModernPredictor.SliceStrategy(s, 1, microbatches, sharded: sharded).BuildDag(ModernPredictor.SliceModel(s, 1, 1, microbatches, s.Preset, sharded), DagFolding.Symmetric);
        Assert.True(dag.IsFolded);
        const double layerBytes = 1_610_678_272;
        var gathers = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.ParameterAllGather && dag.Layer(op) == 0).ToArray();
        var reduces = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.GradientReduceScatter && dag.Layer(op) == 0).ToArray();
        Assert.Equal(2 * microbatches, gathers.Length);
        Assert.Equal(microbatches, reduces.Length);
        Assert.All(gathers.Concat(reduces), op =>
        {
            Assert.Equal(layerBytes, dag.Bytes(op));
            Assert.Equal(128, dag.GroupMembers(dag.Group(op)).Length);
        });
        // The backward regathers before the recompute: the first microbatch's recomputed QProjection waits (through the
        // DAG's edges) for a gather issued in the backward, not only for the forward's.
        var recompute = Enumerable.Range(0, dag.Count).Single(op => dag.Kind(op) == OpKind.QProjection && dag.Phase(op) == OpPhase.Recompute && dag.Microbatch(op) == 0);
        Assert.True(DependsOn(dag, recompute, p => dag.Kind(p) == OpKind.ParameterAllGather && dag.Phase(p) == OpPhase.BackwardData), "the recompute does not wait for a backward gather");
    }

    [Fact]
    public void Fully_sharded_runs_price_no_separate_data_parallel_sync()
    {
        // Oracle: the predictor's contract (class summary): a fully sharded run's DP communication is in the DAG, so the
        // separately priced synchronisation is zero and the gathers' exposed part is in the critical path's parts. The
        // same slice with communication free must be faster: the first layer's gather and the last reduce-scatter of a
        // step cannot hide behind compute.
        var s = Scenario(Mpt70b);
        var datasheet = ModernPredictor.Datasheet.Predict(s, s.Hardware, 1, priceDataParallel: true, s.Preset);
        var free = new ModernPredictor(h => ModernPredictor.Datasheet.CostOf(h) is var c
                ? new CostModel("free communication", c.Compute, new FreeCommunication()) { FusedAttentionHeads = c.FusedAttentionHeads, GroupedExpertGemms = c.GroupedExpertGemms }
                : throw new InvalidOperationException())
            .Predict(s, s.Hardware, 1, priceDataParallel: true, s.Preset);
        Assert.Equal(0, datasheet.DataParallelSeconds);
        Assert.True(datasheet.Parts.OtherCommunication > 0, "no gather on the critical path");
        Assert.Equal(0, free.Parts.OtherCommunication);
        Assert.True(datasheet.Seconds > free.Seconds, $"{datasheet.Seconds} <= {free.Seconds}");
    }

    private sealed class FreeCommunication : ICommunicationCostModel
    {
        public string Name => "free";
        public double Seconds(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus) => 0;
    }

    [Fact]
    public void A_fully_sharded_run_over_pipeline_stages_is_listed_with_its_reason()
    {
        // Oracle: ScenarioOf's contract: the FSDP slice holds TP x DP ranks only; a Megatron-FSDP row with PP = 2 is
        // listed naming the sharding and the layout, never predicted silently as something else.
        var row = "mbridge_x_LLAMA3_70B,src,LLAMA3_70B,dense,70.6,70.6,80,8192,28672,64,8,8192,128256,,,,GB200 NVL72 (per B200-class GPU),64,FP8-CS,256,2,1,2,,1,1,32,Megatron-FSDP (FSDP=32),,1900,,,4300,,c,n,x";
        var run = ModernRun.Read(new StringReader(Header + "\n" + row + "\n"), "test.csv").Single();
        var (s, reason) = ModernPredictor.ScenarioOf(run);
        Assert.Null(s);
        Assert.Contains("Megatron-FSDP", reason);
        Assert.Contains("PP = 2", reason);
    }

    [CalibrationDataFact]
    public void The_six_megatron_fsdp_rows_are_predicted_in_their_own_group()
    {
        // Oracle: training_modern_public.csv, by hand: the Megatron-Bridge rows whose sharding column says
        // "Megatron-FSDP (FSDP=64)" are Llama-3.1-405B on 128 GB200 (25.09) and Llama-3-70B on 64 GB200 (25.09, 25.11,
        // 26.04.01) and 64 GB300 (25.11, 26.04.01). They were listed as "Megatron-FSDP ... not modelled yet"; now each is
        // predicted through the slice's ZeRO-3 DAG, held out of the Blackwell fit (CPU activation offloading not priced).
        string[] ids =
        [
            "mbridge_25.09_LLAMA3_1_405B_DGX-GB200_128g_FP82509p_tp2pp1ep1",
            "mbridge_25.09_LLAMA3_70B_DGX-GB200_64g_FP82509p_tp1pp1ep1",
            "mbridge_25.11_LLAMA3_70B_DGX-GB200_64g_FP8CS_tp1pp1ep1",
            "mbridge_26.04.01_LLAMA3_70B_DGX-GB200_64g_FP8_tp1pp1epn/a",
            "mbridge_25.11_LLAMA3_70B_DGX-GB300_64g_FP8CS_tp1pp1ep1",
            "mbridge_26.04.01_LLAMA3_70B_DGX-GB300_64g_FP8_tp1pp1epn/a",
        ];
        var suite = ModernSuite.Run(RealData.Data);
        var rows = suite.Rows.Where(r => r.Row.Run.IsMegatronFsdp).ToArray();
        Assert.Equal(ids.Order(), rows.Select(r => r.Row.Run.Id).Order());
        Assert.DoesNotContain(suite.Unexpressed, u => u.Run.Sharding.Contains("FSDP"));
        Assert.All(rows, r =>
        {
            Assert.Equal("megatron-fsdp", r.Row.Run.TargetGroup);
            Assert.False(ModernSuite.InFit(r.Row));
            Assert.Equal(0, r.Row.Topology.DataParallelSeconds);
            Assert.True(double.IsFinite(r.LeaveOneModelOut) && r.LeaveOneModelOut > 0);
        });
        Assert.Contains(ModernSuite.Suites(suite), v => v.Name == "training-modern megatron-fsdp" && v.Cases.Count == 6);
    }

    private static bool DependsOn(OperatorDag dag, int op, Func<int, bool> match)
    {
        var seen = new HashSet<int>();
        var stack = new Stack<int>([op]);
        while (stack.Count > 0)
        {
            foreach (var p in dag.Predecessors(stack.Pop()))
            {
                if (match(p)) return true;
                if (seen.Add(p)) stack.Push(p);
            }
        }
        return false;
    }
}

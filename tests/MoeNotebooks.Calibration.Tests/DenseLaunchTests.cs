using MoeNotebooks.Analysis;
using MoeNotebooks.Calibration;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration.Tests;

/// <summary>Issue 14, dense Megatron-Bridge rows as launched: fused attention, sequence parallelism and TE's TP communication overlap.</summary>
public class DenseLaunchTests
{
    private static IReadOnlyList<ModernRun> Runs => ModernRun.Read(RealData.Data.PathOf(ModernSuite.File));

    private static ModernScenario Scenario(string id)
    {
        var (s, reason) = ModernPredictor.ScenarioOf(Runs.Single(r => r.Id == id));
        return s ?? throw new InvalidOperationException(reason);
    }

    [Fact]
    public void The_exposed_share_under_userbuffers_overlap_is_one_sixteenth()
    {
        // Oracle (hand, from the userbuffers configs the Llama scripts use): 8 TP collectives of equal bytes per layer
        // under sequence parallelism; ring-exchange all-gathers and bulk dgrad reduce-scatters hidden; the two forward
        // reduce-scatters pipelined in 4 GEMM chunks expose their last chunk: 2 x (1/4) / 8 = 0.0625.
        Assert.Equal(0.0625, PartFactors.TpCommOverlapExposedShare, 15);
    }

    [CalibrationDataFact]
    public void Llama_rows_run_sequence_parallel_and_overlap_tp_communication_except_nvfp4()
    {
        // Oracle: Megatron-Bridge's Llama scripts (llama31_llm_pretrain.py: tp_comm_overlap = False if precision ==
        // "nvfp4"; recipes with sequence_parallel=True): the GB300 405B TP4 FP8 row overlaps, the NVFP4 row of the same
        // layout does not, the TP1 8B row has neither (Megatron turns sequence parallelism off at TP 1).
        var fp8 = Scenario("mbridge_26.04.01_LLAMA3_1_405B_DGX-GB300_256g_FP8_tp4pp8epn/a");
        var nvfp4 = Scenario("mbridge_26.04.01_LLAMA3_1_405B_DGX-GB300_256g_NVFP4_tp4pp8epn/a");
        var tp1 = Scenario("mbridge_25.11_LLAMA3_8B_DGX-GB300_8g_FP8CSFP8_tp1pp1ep1");
        Assert.True(fp8.SequenceParallel && fp8.TpCommOverlap);
        Assert.True(nvfp4.SequenceParallel && !nvfp4.TpCommOverlap);
        Assert.False(tp1.SequenceParallel || tp1.TpCommOverlap);
        Assert.True(ModernPredictor.SliceStrategy(fp8, 2, 2).SequenceParallel);
        Assert.False(ModernPredictor.SliceStrategy(tp1, 1, 2).SequenceParallel);
    }

    [CalibrationDataFact]
    public void The_launch_rung_exposes_a_sixteenth_of_the_tp_collectives_and_changes_nothing_else()
    {
        // Oracle (hand): the launch rung of a dense row prices the same step as the topology rung; only the TP part is
        // multiplied by 1/16, so under any fit Topology - Launch = (1 - 1/16) x TensorParallel seconds; for NVFP4 0.
        var fit = new GenerationFit("test", 0.9, 1.1, 1.2, 1, 1.3, 0.5, 100, 1);
        var fp8 = ModernSuite.Model(Scenario("mbridge_26.04.01_LLAMA3_1_405B_DGX-GB300_256g_FP8_tp4pp8epn/a"), ModernPredictor.Datasheet);
        var launch = fp8.Steps[ModernRung.Launch];
        Assert.Same(fp8.Steps[ModernRung.Topology].Step, launch.Step);
        Assert.True(launch.Step.Parts.TensorParallel > 0);
        Assert.Equal((1 - 1.0 / 16) * launch.Step.Parts.TensorParallel, fp8.Seconds(fit, ModernRung.Topology) - fp8.Seconds(fit, ModernRung.Launch), 9);
        var nvfp4 = ModernSuite.Model(Scenario("mbridge_26.04.01_LLAMA3_1_405B_DGX-GB300_256g_NVFP4_tp4pp8epn/a"), ModernPredictor.Datasheet);
        Assert.Equal(nvfp4.Seconds(fit, ModernRung.Topology), nvfp4.Seconds(fit, ModernRung.Launch), 12);
    }

    [Fact]
    public void Step_parts_put_the_tp_collectives_on_the_critical_path_in_their_own_part()
    {
        // Oracle: an independent sum over the scheduled critical path by op kind: the TP part is exactly the seconds of
        // the critical sequence-parallel reduce-scatters and all-gathers (TP all-reduces without SP), the other
        // communication part the rest; the parts still sum to the schedule's total.
        var model = ModelPresets.Get("llama3-8b", batch: 4, sequenceLength: 2048) with { Layers = 2 };
        foreach (var sp in new[] { true, false })
        {
            var st = new StrategySpec(1, 4, 1, 1, Derivation.Corrected, 2) { Mode = WorkloadMode.Training, SequenceParallel = sp }.Validated();
            var hw = HardwareCatalog.Get("DGX-B200").WithGpus(4);
            var r = st.BuildDag(model).CriticalPath(ModernPredictor.Datasheet.CostOf(hw));
            var parts = StepParts.Of(r);
            double Sum(Func<OpKind, bool> which) => r.CriticalOps.Where(op => which(r.Dag.Kind(op))).Sum(op => r.Durations[op]);
            var tp = Sum(k => k is OpKind.SequenceReduceScatter or OpKind.SequenceAllGather or OpKind.AttentionAllReduce or OpKind.ExpertAllReduce);
            Assert.True(tp > 0);
            Assert.Equal(tp, parts.TensorParallel, 12);
            Assert.Equal(Sum(k => k.Category() == OpCategory.Communication) - tp, parts.OtherCommunication, 12);
            Assert.Equal(r.TotalSeconds, parts.Total, 9);
        }
    }

    [Fact]
    public void The_datasheet_predictor_prices_attention_as_one_fused_kernel_per_rank_also_as_launched()
    {
        // Oracle: Transformer Engine's fused attention (cuDNN / flash) runs all of a rank's heads in one kernel; the
        // predictor's cost model says so, and the launched cost model (DeepEP all-to-all) keeps it.
        var hw = HardwareCatalog.Get("GB200-NVL72").WithGpus(72);
        Assert.True(ModernPredictor.Datasheet.CostOf(hw).FusedAttentionHeads);
        Assert.True(ModernPredictor.Datasheet.CostFor(hw, AllToAllImplementation.DeepEpNormal).FusedAttentionHeads);
    }

    [CalibrationDataFact]
    public void The_405b_recipe_counts_embedding_and_loss_in_the_pipeline_split()
    {
        // Oracle: Megatron-Bridge's llama31_405b.py (commit 3594df9) sets account_for_embedding_in_pipeline_split and
        // account_for_loss_in_pipeline_split; 126 + 2 = 128 slots divide over PP 16 x VP 4 / 8 and PP 8 x VP 4 / 8, so
        // the middle stages hold 128 / PP layers (8 and 16, by hand). The 70B / 8B recipes do not set them.
        var pp16 = Scenario("mbridge_26.04.01_LLAMA3_1_405B_DGX-GB200_256g_MXFP8_tp4pp16epn/a");
        var pp8 = Scenario("mbridge_26.04.01_LLAMA3_1_405B_DGX-GB300_256g_FP8_tp4pp8epn/a");
        Assert.True(pp16.LossInPipelineSplit && pp8.LossInPipelineSplit);
        Assert.Equal(8, pp16.LayersPerStage);
        Assert.Equal(16, pp8.LayersPerStage);
        Assert.False(Scenario("mbridge_26.04.01_LLAMA3_70B_DGX-GB200_64g_MXFP8_tp2pp4epn/a").LossInPipelineSplit);
        Assert.False(Scenario("mbridge_25.11_LLAMA3_8B_DGX-GB300_8g_FP8CSFP8_tp1pp1ep1").LossInPipelineSplit);
    }

    private static ModernScenario DenseToy(int microbatches, long vocabulary)
    {
        const int pp = 4, layers = 6, dp = 1;   // 6 + 2 slots over 4 stages: 2 layers per middle stage, the last 1 + logits
        var arch = new ModernArchitecture("toy-dense", layers, 1024, 8, 8, 128, 4096, 0, 0, 0, 0, 0, vocabulary, false, null, 0, 0, 0, null, "test");
        var run = new ModernRun("toy", "test", "toy-dense", "toy-dense", ModernFramework.MegatronBridge, "26.04", "dense", "B200 (DGX-B200)", pp * dp, "BF16",
            TrainingPrecision.Bf16, 1024, (long)dp * microbatches, 1, 1, pp, null, 1, 1, dp, "distributed optimizer", false, 100, null, 1000, 0);
        var hw = HardwareCatalog.Get("DGX-B200").WithGpus(run.Gpus);
        var model = new ModelSpec("toy-dense", layers, 1024, 8, 4096, 0, 1, run.GlobalBatch, 1024) { Vocabulary = vocabulary }.Validated();
        return new ModernScenario(run, arch, model, hw, 2, 1, 0);
    }

    [Fact]
    public void With_the_loss_in_the_split_the_logits_leave_the_steady_state_when_a_layer_costs_more()
    {
        // Oracle (the pipeline law by hand): without the split the logits part is (m + (p - 1) / v - (p - 2) / v) t + r =
        // (m + 1) t + r (v = 1), linear in m, so t and r follow from two plain predictions at m = 8 and 12. With the
        // loss in the split a middle stage (2 layers, no logits) is slower than the last (1 layer + logits of a 4096-token
        // vocabulary), so the logits leave every visit: the logits part is r alone and every other part is unchanged.
        var p = ModernPredictor.Datasheet;
        ModernStep Step(int m, bool split) { var s = DenseToy(m, 4096) with { LossInPipelineSplit = split }; return p.Predict(s, s.Hardware, 1, priceDataParallel: false); }
        var plain8 = Step(8, false).Parts;
        var t = (Step(12, false).Parts.Logits - plain8.Logits) / 4;
        var r = plain8.Logits - (8 + 1) * t;
        var split8 = Step(8, true).Parts;
        Assert.True(t > 0);
        Assert.Equal(r, split8.Logits, 1e-9 * plain8.Total);
        Assert.Equal((plain8 with { Logits = 0 }).Total, (split8 with { Logits = 0 }).Total, 1e-12 * plain8.Total);
        Assert.Equal(plain8.DenseGemm, split8.DenseGemm, 1e-12 * plain8.Total);
    }

    [Fact]
    public void With_the_loss_in_the_split_a_last_stage_heavier_than_a_layer_sets_the_pace()
    {
        // Oracle (hand): with a 256k vocabulary the logits cost more than a layer, so the last stage (one layer fewer, the
        // logits) is the slowest: the step is faster than without the split by (m + 1) x one layer's time per microbatch
        // at most, and still carries logits in its steady state (more than the edge alone).
        var p = ModernPredictor.Datasheet;
        ModernStep Step(int m, bool split) { var s = DenseToy(m, 262144) with { LossInPipelineSplit = split }; return p.Predict(s, s.Hardware, 1, priceDataParallel: false); }
        var plain = Step(8, false).Parts;
        var split = Step(8, true).Parts;
        Assert.True(split.Total < plain.Total, $"split {split.Total} vs plain {plain.Total}");
        Assert.Equal(plain.Logits, split.Logits, 1e-12 * plain.Total);
        Assert.True(split.DenseGemm < plain.DenseGemm);
    }

    [CalibrationDataFact]
    public void Megatron_fsdp_rows_offload_their_launch_configs_layers_priced_by_bytes_over_the_host_link()
    {
        // Oracle (hand): llama3_workload_base_configs.py (commit 00919dc) offloads 40 layers on GB200 FP8-CS at micro-batch 2;
        // the row has GBS 256 over DP 64: m = 2, so 80 offloaded layer-microbatch visits. Bytes per layer (MemoryModel's
        // count, Llama-3-70B, TP 1, 2 x 8192 = 16384 tokens, bf16): per token 2 x (2h + 2h + 2 h_kv + 2h + 3f) + 4 heads =
        // 2 x (6 x 8192 + 2 x 1024 + 3 x 28672) + 4 x 64 = 274,688 B, so 4,500,488,192 B per layer; over GB200's host link
        // (225 GB/s per GPU per direction, 5 us) x = 0.020002170 s. The exposed seconds are 80 x (max(0, x - t) + max(0,
        // x - 2t)) with t a third of a layer-microbatch's GEMM, attention and memory-bound seconds under the fit, summed
        // here from the breakdown; the step without the offload fields is that much shorter.
        var s = Scenario("mbridge_25.11_LLAMA3_70B_DGX-GB200_64g_FP8CS_tp1pp1ep1");
        Assert.Equal(40, s.CpuOffloadedLayers);
        Assert.Equal(4_500_488_192.0, ModernPredictor.OffloadBytesPerLayer(s), 0);
        var row = ModernSuite.Model(s, ModernPredictor.Datasheet);
        var (step, k) = row.Steps[ModernRung.Launch];
        Assert.Equal(80, k.OffloadLayerVisits);
        Assert.Equal(4_500_488_192.0 / 225e9 + 5e-6, k.OffloadSecondsPerLayer, 12);
        var fit = new GenerationFit("test", 1.1, 1.2, 1.3, 1, 1.2, 0.5, 1000, 1);
        var b = row.Breakdown(fit);
        var t = (b["dense GEMMs"] + b["expert GEMMs"] + b["attention"] + b["elementwise"]) / step.LayerMicrobatches / 3;
        var x = k.OffloadSecondsPerLayer;
        var exposed = 80 * (Math.Max(0, x - t) + Math.Max(0, x - 2 * t));
        Assert.True(exposed > 0, $"x {x * 1e3:F2} ms, forward {t * 1e3:F2} ms");
        Assert.Equal(exposed, b["CPU offload exposed"], 12);
        var without = row with { Steps = new Dictionary<ModernRung, (ModernStep, PartFactors)>(row.Steps) { [ModernRung.Launch] = (step, k with { OffloadLayerVisits = 0 }) } };
        Assert.Equal(exposed, row.Seconds(fit) - without.Seconds(fit), 12);
        // A dense row without FSDP offloads nothing.
        Assert.Equal(0, Scenario("mbridge_26.04.01_LLAMA3_70B_DGX-GB300_64g_MXFP8_tp1pp4epn/a").CpuOffloadedLayers);
    }
}

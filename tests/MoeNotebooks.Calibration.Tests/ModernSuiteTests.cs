using System.Text.Json;
using MoeNotebooks.Analysis;
using MoeNotebooks.Calibration;
using MoeNotebooks.Config;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration.Tests;

public class ModernSuiteTests
{
    private static IReadOnlyList<ModernRun> Runs => ModernRun.Read(RealData.Data.PathOf(ModernSuite.File));
    private static ModernSuiteResult Suite => ModernSuite.Run(RealData.Data);

    [CalibrationDataFact]
    public void Every_row_is_predicted_or_listed_with_its_reason()
    {
        // Oracle: the README's count of the file (119 Megatron-Bridge + 78 MPT rows) and the file's case ids.
        var runs = Runs;
        Assert.Equal(197, runs.Count);
        Assert.Equal(119, runs.Count(r => r.Framework == ModernFramework.MegatronBridge));
        var accounted = Suite.Rows.Select(r => r.Row.Run.Id).Concat(Suite.Unexpressed.Select(u => u.Run.Id)).ToArray();
        Assert.Equal(runs.Select(r => r.Id).Order(), accounted.Order());
        Assert.All(Suite.Unexpressed, u => Assert.False(string.IsNullOrWhiteSpace(u.Reason)));
        // Hybrid Mamba models (Nemotron-3) have the Mamba block since issue 14's hybrid work (this test listed them as not
        // expressible before): the families with a public config are predicted, in their own group; Nemotron 3.5 Lightning,
        // with none, is listed with that reason.
        var hybrids = runs.Where(r => r.Family.StartsWith("Nemotron")).ToArray();
        Assert.Equal(24, hybrids.Length);
        Assert.All(hybrids, r => Assert.Equal("hybrid", r.TargetGroup));
        Assert.All(hybrids.Where(r => r.Family == "Nemotron-3-5-Lightning"), r => Assert.Contains(Suite.Unexpressed, u => u.Run.Id == r.Id && u.Reason.Contains("no architecture")));
        Assert.All(hybrids.Where(r => r.Family == "Nemotron-3-Nano"), r => Assert.Contains(Suite.Rows, x => x.Row.Run.Id == r.Id));
        // Every Nemotron-3 Super and Ultra row is predicted, the five Super TP 2 x EP 64 x DP 32 rows folded (ETP 1) as the
        // MoE rows are (they were listed behind ModernPredictor.FoldHybridRows until the hybrid slice was priced by its
        // kernels and the SSD factor fitted).
        Assert.All(hybrids.Where(r => r.Family is "Nemotron-3-Super" or "Nemotron-3-Ultra"), r => Assert.Contains(Suite.Rows, x => x.Row.Run.Id == r.Id));
        Assert.Equal(5, Suite.Rows.Count(x => x.Row.Run.Family == "Nemotron-3-Super" && x.Row.Run.EP > x.Row.Run.DP && ModernPredictor.FoldsExperts(x.Row.Run)));
    }

    [CalibrationDataFact]
    public void Megatron_flops_reproduce_the_published_columns_of_every_row()
    {
        // Oracle: each Megatron-Bridge row publishes both tokens/s per GPU and model TFLOP/s per GPU; Megatron-LM's
        // num_floating_point_operations (megatron/training/training.py) over the architecture (public configs) must
        // turn one into the other: TFLOP/s = F(sequence) x tokens/s / sequence.
        var checkedRows = 0;
        foreach (var run in Runs.Where(r => r.Framework == ModernFramework.MegatronBridge))
        {
            if (!ModernArchitecture.Catalog.TryGetValue(run.Family, out var arch)) continue;
            var f = MegatronFlops.AsPublished(arch, run, run.MtpLayersOverride ?? arch.MtpLayers);
            var tflops = f.Total * run.MeasuredTokensPerSecondPerGpu / run.SequenceLength / 1e12;
            Assert.True(Math.Abs(tflops / run.MeasuredTflopsPerGpu - 1) < 0.02, $"{run.Id}: {tflops:F0} vs published {run.MeasuredTflopsPerGpu} TFLOP/s");
            checkedRows++;
        }
        Assert.True(checkedRows >= 80, $"only {checkedRows} rows checked");
    }

    [Fact]
    public void Megatron_hybrid_flops_of_nemotron3_nano_by_hand()
    {
        // Oracle: Megatron-LM's hybrid branch (training.py hybrid_flops) evaluated by hand for the Nano config, per token,
        // forward: attention 6 x 4 x 4096 x (2688 + 2688 x 2/32 + 8192/2) = 683,409,408; Mamba 23 x (2 x 2688 x (2 x 5376
        // + 2 x 8 x 128 + 64) + 7 x 5376 x 128 + 2 x 5376 x 2688) = 2,366,128,128 (Megatron's d_in = 2 x hidden = 5376);
        // MoE 23 x (4 x 2688 x 1856 x 6 + 4 x 2688 x 3712) = 3,671,851,008; logits 2 x 2688 x 131072 = 704,643,072;
        // x3 for forward and backward = 22,278,094,848 per token. The published row (726 TFLOP/s at 32,768 tokens/s per
        // GPU) implies 22.156e9: 0.55 % apart.
        var a = ModernArchitecture.Catalog["Nemotron-3-Nano"];
        var f = MegatronFlops.PerSequence(a, 8192, 0);
        Assert.Equal(22_278_094_848.0 * 8192, f.Total, 1.0);
        Assert.Equal(3 * 683_409_408.0 * 8192, f.AttentionProjections + f.AttentionCore, 1.0);
        Assert.Equal(3 * 2_366_128_128.0 * 8192, f.MambaProjections + f.MambaScan, 1.0);
        Assert.Equal(3 * 704_643_072.0 * 8192, f.Logits, 1.0);
        Assert.True(Math.Abs(f.Total / 8192 / (726e12 / 32768) - 1) < 0.006);
    }

    [Fact]
    public void Megatron_flops_of_llama3_8b_by_hand()
    {
        // Oracle: hand derivation for Llama-3-8B at s = 8192 (h 4096, 32 heads of 128, 8 KV groups, SwiGLU 14336,
        // vocab 128256, 32 layers), per sequence, 3 x 2mnk per GEMM and the causal half of the scores:
        //   QKV+O: 6 x s x (4096 x (4096 + 2 x 1024) + 4096 x 4096) x 32
        //   core:  6 x s x (4096 x 8192 / 2 x 2) x 32
        //   MLP:   6 x s x 4096 x 14336 x 3 x 32;   logits: 6 x s x 4096 x 128256.
        const double s = 8192;
        var arch = ModernArchitecture.Catalog["Llama-3-8B"];
        var f = MegatronFlops.PerSequence(arch, 8192, 0);
        Assert.Equal(6 * s * (4096.0 * 6144 + 4096.0 * 4096) * 32, f.AttentionProjections, 1e-9 * f.AttentionProjections);
        Assert.Equal(6 * s * (4096.0 * 8192) * 32, f.AttentionCore, 1e-9 * f.AttentionCore);
        Assert.Equal(6 * s * 4096.0 * 14336 * 3 * 32, f.DenseMlp, 1e-9 * f.DenseMlp);
        Assert.Equal(6 * s * 4096.0 * 128256, f.Logits, 1e-9 * f.Logits);
        Assert.Equal(0, f.RoutedExperts);
    }

    [Fact]
    public void An_unknown_precision_is_rejected_naming_field_and_value()
    {
        var header = "case_id,source,model,arch,params_total_B,params_active_B,layers,hidden,ffn_hidden,heads,kv_heads,seq_len,vocab,experts,topk,shared_experts,gpu,num_gpus,precision,global_batch_seqs,micro_batch,TP,PP,VP,CP,EP,DP,sharding,recompute,tflops_per_gpu,mfu_pct,hfu_pct,tokens_per_s_per_gpu,iter_time_s,flops_convention,notes,confidence";
        var row = "mpt_1,src,MPT-125m,dense,0.149,0.149,12,768,3072,12,12,2048,50368,,,,A100-40GB,8,FP6,256,32,1,1,,,,8,FSDP,none,100,30,30,1000,,c,n,x";
        var e = Assert.Throws<ConfigException>(() => ModernRun.Read(new StringReader(header + "\n" + row + "\n"), "test.csv"));
        Assert.Contains("precision", e.Message);
        Assert.Contains("FP6", e.Message);
        var bad = row.Replace(",8,FSDP", ",4,FSDP");   // DP 4 on 8 GPUs
        var e2 = Assert.Throws<ConfigException>(() => ModernRun.Read(new StringReader(header + "\n" + bad.Replace("FP6", "bf16") + "\n"), "test.csv"));
        Assert.Contains("DP", e2.Message);
        Assert.Contains("num_gpus = 8", e2.Message);
    }

    /// <summary>A small MoE row and its scenario, with layers, EP and PP the test chooses.</summary>
    private static ModernScenario Small(int pp, int ep, int layers, int microbatches, int? vp = null)
    {
        var arch = new ModernArchitecture("toy-moe", layers, 1024, 8, 8, 128, 2048, 512, 8, 2, 0, 0, 32000, false, null, 0, 0, 0, null, "test");
        var dp = 2 * ep;
        var run = new ModernRun("toy", "test", "toy-moe", "toy-moe", ModernFramework.MegatronBridge, "26.04", "moe", "B200 (DGX-B200)", pp * dp, "BF16",
            TrainingPrecision.Bf16, 512, (long)dp * microbatches, 1, 1, pp, vp, 1, ep, dp, "distributed optimizer", false, 100, null, 1000, 0);
        var hw = HardwareCatalog.Get("DGX-B200").WithGpus(run.Gpus);
        var model = new ModelSpec("toy-moe", layers, 1024, 8, 512, 8, 2, run.GlobalBatch, 512) { Vocabulary = 32000 }.Validated();
        var v = vp ?? 1;
        return new ModernScenario(run, arch, model, hw, v * (int)Math.Ceiling(layers / (double)(pp * v)), v, 0);
    }

    /// <summary>The full DAG of one replica (EP ranks x PP stages), all microbatches: the oracle for the slice law.</summary>
    private static double FullReplica(ModernScenario s, int virtualStages)
    {
        var st = new StrategySpec(s.Run.EP, 1, s.Run.PP, 1, Derivation.Corrected, s.Run.Microbatches)
        {
            Mode = WorkloadMode.Training,
            Schedule = virtualStages > 1 ? PipelineSchedule.Interleaved : PipelineSchedule.OneFOneB,
            VirtualStages = virtualStages,
            RankOrder = "tp-ep-dp-pp",
        }.Validated();
        var model = s.Model with { Batch = (long)s.Run.EP * s.Run.Microbatches * s.Run.MicroBatch };
        return st.BuildDag(model).CriticalPath(ModernPredictor.Datasheet.CostOf(s.Hardware)).TotalSeconds;
    }

    [Theory]
    [InlineData(4, 2, 8, 8)]    // 4 stages of 2 layers, EP 2, 8 microbatches
    [InlineData(2, 2, 6, 6)]    // 2 stages of 3 layers
    [InlineData(1, 2, 4, 5)]    // no pipeline: 4 layers, 5 microbatches
    [InlineData(8, 1, 8, 16)]   // 8 stages of one layer, no EP
    public void Slice_law_matches_the_full_dag(int pp, int ep, int layers, int microbatches)
    {
        // Oracle: the full DAG of the replica (every stage, every microbatch) scheduled on the same cost model.
        var s = Small(pp, ep, layers, microbatches);
        var law = ModernPredictor.Datasheet.Predict(s, s.Hardware, 1, priceDataParallel: false).Parts.Total;
        var full = FullReplica(s, 1);
        Assert.True(Math.Abs(law / full - 1) < 0.02, $"slice law {law * 1e3:F3} ms vs full DAG {full * 1e3:F3} ms");
    }

    [Theory]
    [InlineData(4, 2, 8, 8)]
    [InlineData(1, 4, 4, 6)]
    public void Slice_law_matches_the_full_dag_for_a_modern_block_model(int pp, int ep, int layers, int microbatches)
    {
        // Oracle: the full DAG, for a model with issue 11's blocks (GQA, SwiGLU, causal attention, a shared expert,
        // router and permutation passes) and an FP8 recipe, as the suite's preset rungs simulate them.
        var s = Small(pp, ep, layers, microbatches);
        var modern = (s.Model with { KvHeads = 2, FfnActivation = FfnActivation.Swiglu, Causal = true, SharedExperts = 1, MoeMemoryBoundOps = true,
            Precision = PrecisionRecipe.Get("mxfp8") }).Validated();
        s = s with { Model = modern };
        var law = ModernPredictor.Datasheet.Predict(s, s.Hardware, 1, priceDataParallel: false).Parts.Total;
        var full = FullReplica(s, 1);
        Assert.True(Math.Abs(law / full - 1) < 0.02, $"slice law {law * 1e3:F3} ms vs full DAG {full * 1e3:F3} ms");
    }

    [Theory]
    [InlineData(1, 2, "MEM*EME", 4)]
    [InlineData(2, 2, "MEM*MEM*", 6)]
    public void Slice_law_matches_the_full_dag_for_a_hybrid_model(int pp, int ep, string pattern, int microbatches)
    {
        // Oracle: the full DAG of the replica (every stage, every microbatch, the real pattern) on the same cost model.
        // The hybrid law extends the slice per layer kind (a base unit "ME*" and one more layer of each kind).
        var s = Small(pp, ep, pattern.Length, microbatches);
        var hybrid = (s.Model with { HybridOverridePattern = pattern, Causal = true, FfnActivation = FfnActivation.SquaredRelu, MoeMemoryBoundOps = true,
            MambaNumHeads = 16, MambaHeadDim = 64, MambaStateDim = 64, MambaNumGroups = 2 }).Validated();
        s = s with { Model = hybrid };
        var law = ModernPredictor.Datasheet.Predict(s, s.Hardware, 1, priceDataParallel: false).Parts.Total;
        var full = FullReplica(s, 1);
        Assert.True(Math.Abs(law / full - 1) < 0.02, $"slice law {law * 1e3:F3} ms vs full DAG {full * 1e3:F3} ms");
    }

    /// <summary>A small MoE row with TP 2 and EP 8 over DP 4 (EP larger than DP: Megatron folds the experts, ETP 1).</summary>
    private static ModernScenario SmallFolded(int pp, int layers, int microbatches)
    {
        var arch = new ModernArchitecture("toy-moe", layers, 1024, 8, 8, 128, 2048, 512, 8, 2, 0, 0, 32000, false, null, 0, 0, 0, null, "test");
        const int tp = 2, ep = 8, dp = 4;
        var run = new ModernRun("toy-folded", "test", "toy-moe", "toy-moe", ModernFramework.MegatronBridge, "26.04", "moe", "B200 (DGX-B200)", pp * tp * dp, "BF16",
            TrainingPrecision.Bf16, 512, (long)dp * microbatches, 1, tp, pp, null, 1, ep, dp, "distributed optimizer", false, 100, null, 1000, 0);
        var hw = HardwareCatalog.Get("DGX-B200").WithGpus(run.Gpus);
        var model = new ModelSpec("toy-moe", layers, 1024, 8, 512, 8, 2, run.GlobalBatch, 512) { Vocabulary = 32000 }.Validated();
        return new ModernScenario(run, arch, model, hw, (int)Math.Ceiling(layers / (double)pp), 1, 0);
    }

    [Fact]
    public void Ep_larger_than_dp_folds_the_experts_as_megatron_core_lays_them_out()
    {
        // Oracle (hand, Megatron-Core parallel_state): TP 2 x DP 4 = 8 GPUs per stage hold the experts as ETP x EP x EDP;
        // EP 8 with the default ETP = TP = 2 would need 16, so ETP = 1 and EDP = 8 / (8 x 1) = 1. The folding unit is
        // lcm(TP 2, EP 8 x ETP 1) = 8 GPUs: the whole stage, with 8 / TP = 4 attention data-parallel ranks. Dense
        // gradients reduce over the DP group of rank 0 in the order tp-cp-dp-pp, {0, 2, 4, 6}; expert gradients over the
        // EDP group {0} (nothing to reduce).
        var s = SmallFolded(2, 4, 4);
        Assert.True(ModernPredictor.FoldsExperts(s.Run));
        Assert.Equal(1, ModernPredictor.ExpertTensorParallel(s.Run));
        Assert.Equal(8, ModernPredictor.FoldUnitGpus(s.Run));
        Assert.Equal(4, ModernPredictor.SliceAttentionRanks(s.Run));
        var st = ModernPredictor.SliceStrategy(s, 2, 2);
        Assert.Equal((8, 2, 1, 1, 16), (st.EP, st.TP, st.ETP, st.DP, st.GpuCount));
        Assert.Equal(4, st.AttentionDataParallelSize);
        Assert.True(st.SequenceParallel);   // Megatron-Core asserts sequence parallelism with TP > 1 and EP > 1
        Assert.Equal(4L * 2 * 1, ModernPredictor.SliceModel(s, 2, 2, 2).Batch);
        var real = new StrategySpec(8, 2, 2, 1) { ExpertTensorParallelSize = 1 };
        Assert.Equal([0, 2, 4, 6], real.MegatronGroup(0, "dp"));
        Assert.Equal([0], real.MegatronGroup(0, "edp"));
        // Rows that divide DP keep the unfolded slice (ETP = TP), and a row whose EP divides neither DP nor TP x DP is listed with the reason.
        Assert.False(ModernPredictor.FoldsExperts(Small(2, 2, 4, 4).Run));
        var odd = s.Run with { EP = 16 };
        Assert.False(ModernPredictor.FoldsExperts(odd));
        var (none, reason) = ModernPredictor.ScenarioOf(odd with { Family = "Qwen3-30B-A3B" });
        Assert.Null(none);
        Assert.Contains("EP = 16 divides neither DP = 4 nor the GPUs of a stage TP x DP = 8", reason);
    }

    [Fact]
    public void A_megatron_bridge_moe_row_with_tp_above_one_runs_its_experts_at_etp_1()
    {
        // Oracle (hand, Megatron-Core parallel_state with Megatron-Bridge's expert_tensor_parallel_size=1): TP 2 x DP 8 =
        // 16 GPUs per stage, EP 8 dividing DP. With ETP 1 the experts lay out as ETP 1 x EP 8 x EDP 2 over the 16 ranks in
        // the order etp-ep-edp-pp: rank 0's EP group is {0..7} (one 8-GPU NVLink node), its EDP group {0, 8}; the folding
        // unit is lcm(TP 2, EP 8 x ETP 1) = 8 GPUs holding 8 / TP = 4 attention data-parallel ranks. Dense gradients reduce
        // over the DP group of rank 0 in the order tp-cp-dp-pp, {0, 2, ..., 14}. With the default ETP = TP the EP group of
        // rank 0 would be {0, 2, ..., 14}, spanning two nodes.
        const int tp = 2, ep = 8, dp = 8;
        var arch = new ModernArchitecture("toy-moe", 4, 1024, 8, 8, 128, 2048, 512, 8, 2, 0, 0, 32000, false, null, 0, 0, 0, null, "test");
        var run = new ModernRun("toy-etp1", "test", "toy-moe", "toy-moe", ModernFramework.MegatronBridge, "26.04", "moe", "B200 (DGX-B200)", tp * dp, "BF16",
            TrainingPrecision.Bf16, 512, dp * 4L, 1, tp, 1, null, 1, ep, dp, "distributed optimizer", false, 100, null, 1000, 0);
        Assert.True(ModernPredictor.FoldsExperts(run));
        Assert.Equal(1, ModernPredictor.ExpertTensorParallel(run));
        Assert.Equal(8, ModernPredictor.FoldUnitGpus(run));
        Assert.Equal(4, ModernPredictor.SliceAttentionRanks(run));
        Assert.Equal(1, ModernPredictor.SliceReplicas(run));
        var real = new StrategySpec(ep, tp, 1, tp * dp / ep) { ExpertTensorParallelSize = 1 };
        Assert.Equal(16, real.GpuCount);
        Assert.Equal([0, 2, 4, 6, 8, 10, 12, 14], real.MegatronGroup(0, "dp"));
        Assert.Equal([0, 8], real.MegatronGroup(0, "edp"));
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7], real.MegatronGroup(0, "ep"));
        // TP 1 rows and rows of other frameworks keep Megatron's default ETP = TP (nothing to fold at TP 1).
        Assert.False(ModernPredictor.FoldsExperts(run with { TP = 1, Gpus = dp }));
        Assert.False(ModernPredictor.FoldsExperts(run with { Framework = ModernFramework.MosaicMpt }));
        Assert.Equal(tp, ModernPredictor.ExpertTensorParallel(run with { Framework = ModernFramework.MosaicMpt }));
    }

    [Theory]
    [InlineData(2, 4, 4)]   // two stages of two layers
    [InlineData(4, 8, 8)]   // four stages (the slice holds two), 8 microbatches
    public void Folded_slice_law_matches_the_full_folded_dag(int pp, int layers, int microbatches)
    {
        // Oracle: the full DAG of the folded layout (every stage of the 8-GPU unit, every microbatch: EP 8 x TP 2 x ETP 1,
        // sequence parallel, Megatron order) scheduled on the same cost model.
        var s = SmallFolded(pp, layers, microbatches);
        var law = ModernPredictor.Datasheet.Predict(s, s.Hardware, 1, priceDataParallel: false).Parts.Total;
        var st = new StrategySpec(8, 2, pp, 1, Derivation.Corrected, microbatches)
        {
            Mode = WorkloadMode.Training, ExpertTensorParallelSize = 1, SequenceParallel = true, RankOrder = "tp-ep-dp-pp",
        }.Validated();
        var full = st.BuildDag(s.Model with { Batch = 4L * microbatches * s.Run.MicroBatch }).CriticalPath(ModernPredictor.Datasheet.CostOf(s.Hardware)).TotalSeconds;
        Assert.True(Math.Abs(law / full - 1) < 0.02, $"slice law {law * 1e3:F3} ms vs full folded DAG {full * 1e3:F3} ms");
    }

    [CalibrationDataFact]
    public void The_ep_larger_than_dp_moe_row_is_predicted_folded()
    {
        // Oracle: the file's one MoE row with EP 64 over TP 2 x DP 32 (Qwen3-235B-A22B on 64 GB200): predicted, not listed.
        var row = Runs.Single(r => r.TargetGroup == "moe" && r.EP > r.DP);
        Assert.Equal((2, 64, 32), (row.TP, row.EP, row.DP));
        Assert.Contains(Suite.Rows, x => x.Row.Run.Id == row.Id);
        Assert.DoesNotContain(Suite.Unexpressed, u => u.Run.TargetGroup == "moe");
    }

    [Fact]
    public void A_synchronised_moe_layer_forward_is_host_bound_where_the_host_is_slower_than_the_layer()
    {
        // Oracle (hand): a toy row, 8 experts over EP 2 = 4 local experts per MoE layer, every layer MoE, no recompute. A
        // step of 1,000 layer-microbatch visits whose expert GEMMs take 3 s and attention 1.5 s: 4.5 s of layer work, a
        // third of it forward, 1.5 ms per visit. Host time 400 us per local expert: 4 x 0.4 = 1.6 ms of launches per
        // visit, 0.1 ms more than the GPU's forward of the layer, so 1,000 x 0.1 ms = 0.1 s idle. At 300 us: 1.2 ms <
        // 1.5 ms, nothing exposed. Full recompute launches the forward twice (8 launches, 3.2 ms) against a forward share
        // of 2/4 (2.25 ms): 0.95 ms x 1,000. A full-iteration CUDA graph replays the step without host launches, a dense
        // model launches no experts, a token-drop run never synchronises: nothing exposed.
        var s = Small(1, 2, 4, 4);
        var step = new ModernStep(StepParts.Zero with { ExpertGemm = 3, Attention = 1.5 }, 0, 1000, 0);
        var k = PartFactors.One.WithExpertLaunches(s);
        Assert.Equal((4.0, 1.0, 1.0 / 3), (k.ExpertLaunches, k.MoeLayerShare, k.ForwardShare));
        ModernRowModel Row(PartFactors f) => new(s, Enum.GetValues<ModernRung>().ToDictionary(r => r, _ => (step, f)), null);
        var fit = GenerationFit.Unfitted("blackwell") with { ExpertLaunchMicroseconds = 400 };
        Assert.Equal(0.1, Row(k).ExposedLaunchSeconds(fit), 9);
        Assert.Equal(4.5 + 0.1, Row(k).Seconds(fit), 9);
        Assert.Equal(0, Row(k).ExposedLaunchSeconds(fit with { ExpertLaunchMicroseconds = 300 }));
        var recompute = PartFactors.One.WithExpertLaunches(s with { Run = s.Run with { Recompute = true } });
        Assert.Equal((8.0, 0.5), (recompute.ExpertLaunches, recompute.ForwardShare));
        Assert.Equal(0.95, Row(recompute).ExposedLaunchSeconds(fit), 9);
        var launch = BridgeLaunchCatalog.Published.Launches.First(l => l.CudaGraphImpl == "full_iteration");
        Assert.Equal(0, PartFactors.One.WithExpertLaunches(s with { Launch = launch }).ExpertLaunches);
        Assert.Equal(0, PartFactors.One.WithExpertLaunches(s with { Architecture = s.Architecture with { Experts = 0 } }).ExpertLaunches);
        // A token-drop run pads every expert to its capacity (Megatron-Bridge's apply_moe_token_drop): the counts are host
        // constants, no sync, the host launches ahead of the GPU: nothing exposed.
        var tokenDrop = s with { Run = s.Run with { Model = s.Run.Model + " tokendrop" } };
        Assert.True(tokenDrop.Run.TokenDrop);
        Assert.Equal(0, PartFactors.One.WithExpertLaunches(tokenDrop).ExpertLaunches);
    }

    [Fact]
    public void A_layer_visit_pays_the_framework_overhead_unless_a_full_graph_or_its_host_bound_forward_covers_it()
    {
        // Oracle (hand): 1,000 layer-microbatch visits at 2,000 us of fitted overhead each = 2 s on top of 3 s of expert
        // GEMMs. A token-drop MoE row (no host sync) and a dense row pay all of it; a launch replaying the whole step as
        // one CUDA graph (cuda_graph_impl "full_iteration") none; a dropless MoE row none on its MoE layers, whose forward
        // is priced host-bound instead (ExposedLaunchSeconds), so with every layer MoE none, and with 1 dense first layer
        // of 4 a quarter (0.5 s). A scoped graph (attention, router, preprocessing captured) changes nothing of it.
        var s = Small(1, 2, 4, 4);
        var step = new ModernStep(StepParts.Zero with { ExpertGemm = 3 }, 0, 1000, 0);
        ModernRowModel Row(ModernScenario sc, PartFactors f) => new(sc, Enum.GetValues<ModernRung>().ToDictionary(r => r, _ => (step, f)), null);
        var fit = GenerationFit.Unfitted("blackwell") with { OverheadMicroseconds = 2000 };
        var tokenDrop = s with { Run = s.Run with { Model = s.Run.Model + " tokendrop" } };
        var dropping = PartFactors.One.WithExpertLaunches(tokenDrop);
        Assert.Equal(1, dropping.HostOverheadShare);
        Assert.Equal(5, Row(tokenDrop, dropping).Seconds(fit), 9);
        Assert.Equal(2, Row(tokenDrop, dropping).Breakdown(fit)["framework overhead"], 9);
        Assert.Equal(1, PartFactors.One.WithExpertLaunches(s with { Architecture = s.Architecture with { Experts = 0 } }).HostOverheadShare);
        var full = PartFactors.One.WithExpertLaunches(s with { Launch = BridgeLaunchCatalog.Published.Launches.First(l => l.CudaGraphImpl == "full_iteration") });
        Assert.Equal(0, full.HostOverheadShare);
        Assert.Equal(3, Row(s, full).Seconds(fit), 9);
        Assert.Equal(0, Row(s, full).Breakdown(fit)["framework overhead"]);
        var dropless = PartFactors.One.WithExpertLaunches(s);
        Assert.Equal(0, dropless.HostOverheadShare);
        var denseFirst = s with { Architecture = s.Architecture with { DenseLayers = 1 } };
        Assert.Equal(4, denseFirst.Architecture.Layers);
        var oneDense = PartFactors.One.WithExpertLaunches(denseFirst);
        Assert.Equal((0.75, 0.25), (oneDense.MoeLayerShare, oneDense.HostOverheadShare));
        Assert.Equal(0.5, Row(denseFirst, oneDense).FrameworkOverheadSeconds(fit), 9);
        var scoped = BridgeLaunchCatalog.Published.Launches.First(l => l.CudaGraphImpl == "transformer_engine");
        Assert.Equal(0, PartFactors.One.WithExpertLaunches(s with { Launch = scoped }).HostOverheadShare);
        Assert.Equal(1, PartFactors.One.WithExpertLaunches(tokenDrop with { Launch = scoped }).HostOverheadShare);
    }

    [Fact]
    public void Interleaving_enters_through_the_bubble_term_within_a_few_percent_of_the_full_dag()
    {
        // Oracle: the full interleaved DAG. The slice runs plain 1F1B; the law puts v into the bubble (p - 1) / v only.
        var s = Small(4, 1, 16, 8, vp: 2);
        var law = ModernPredictor.Datasheet.Predict(s, s.Hardware, 2, priceDataParallel: false).Parts.Total;
        var full = FullReplica(s, 2);
        Assert.True(Math.Abs(law / full - 1) < 0.05, $"slice law {law * 1e3:F3} ms vs full interleaved DAG {full * 1e3:F3} ms");
    }

    [Fact]
    public void The_naive_rung_sees_nvlink_domains_of_at_most_8_gpus_and_links_at_line_rate()
    {
        // Oracle: by definition of the rung; an 8-GPU node at line rate is left as it is (same object), a 16-GPU domain
        // becomes 8, and a NIC's measured point-to-point fraction (DGX-B200's ConnectX-7: 0.746) goes back to 1 with
        // nothing else changed.
        var a100 = HardwareCatalog.Get("DGX-A100").WithGpus(64);
        Assert.Same(a100, ModernSuite.NaiveHardware(a100));
        var dgx = HardwareCatalog.Get("DGX-B200").WithGpus(64);
        Assert.True(dgx.InterNode.PointToPointEfficiency < 1);
        Assert.Equal(dgx with { InterNode = dgx.InterNode with { PointToPointEfficiency = 1 } }, ModernSuite.NaiveHardware(dgx));
        var big = (dgx with { GpusPerNode = 16 }).Validated();
        var naive = ModernSuite.NaiveHardware(big);
        Assert.Equal(8, naive.GpusPerNode);
        Assert.Equal(64, naive.GpuCount);
        Assert.Equal(big.Gpu, naive.Gpu);
        Assert.Equal(1, naive.InterNode.PointToPointEfficiency);
    }

    [Theory]
    [InlineData("GB200-NVL72", 256, 64)]   // 64 trays: largest divisor of 64 up to 18 is 16 trays = 64 GPUs
    [InlineData("GB300-NVL72", 64, 64)]    // 16 trays <= 18: one segment of all of them
    [InlineData("GB200-NVL72", 8, 8)]      // 2 trays
    [InlineData("GB200-NVL72", 288, 72)]   // 72 trays: 18-tray segments, whole racks
    [InlineData("GB200-NVL72", 80, 40)]    // 20 trays: largest divisor up to 18 is 10
    [InlineData("DGX-B200", 256, 8)]       // the NVLink domain is the host: unchanged
    public void Jobs_on_rack_scale_systems_run_in_the_launchers_nvlink_segments(string preset, int gpus, int domain)
    {
        // Oracle: Megatron-Bridge scripts/performance/README.md, --segment: "4-GPU-node jobs use all nodes when the job
        // has at most 18 nodes, otherwise the largest divisor of the node count up to 18" (by hand per case).
        var hardware = ModernPredictor.LaunchedOn(HardwareCatalog.Get(preset), gpus);
        Assert.Equal(gpus, hardware.GpuCount);
        Assert.Equal(domain, hardware.GpusPerNvlinkDomain);
    }

    [CalibrationDataFact]
    public void One_fit_per_generation_is_shown_beside_its_cross_validated_error()
    {
        var suite = Suite;
        Assert.Equal(suite.Rows.Select(r => r.Row.Run.Generation).Distinct().Order(), suite.Fits.Keys.Order());
        var suites = ModernSuite.Suites(suite);
        foreach (var s in suites.Where(s => s.Cases.Count > 0))
        {
            Assert.Contains(s.Notes, n => n.StartsWith("fit: "));
            Assert.Contains(s.Notes, n => n.Contains("in-sample MAPE"));
        }
        // Oracle (independent refit): a row's LOMO prediction is the generation fitted without its model's rows.
        var row = suite.Rows.First(r => r.Row.Run.Framework == ModernFramework.MosaicMpt);
        var others = suite.Rows.Where(r => r.Row.Run.Generation == row.Row.Run.Generation && r.Row.Run.Family != row.Row.Run.Family).Select(r => r.Row).ToArray();
        var refit = ModernSuite.Fit(row.Row.Run.Generation, others);
        Assert.Equal(row.LeaveOneModelOut, row.Row.Metric(row.Row.Seconds(refit)), 1e-9 * row.LeaveOneModelOut);
    }

    [CalibrationDataFact]
    public void Validate_verb_prints_the_modern_suites_and_their_ablation()
    {
        var stdout = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["validate", "--format", "json"], stdout, new StringWriter()));
        using var doc = JsonDocument.Parse(stdout.ToString());
        var names = doc.RootElement.GetProperty("suites").EnumerateArray().Select(s => s.GetProperty("name").GetString()).ToArray();
        Assert.Contains("training-modern moe", names);
        Assert.Contains("training-modern dense", names);
        Assert.Contains("training-modern mpt", names);
        var ablation = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["validate", "--ablation", "modern"], ablation, new StringWriter()));
        foreach (var rung in Suite.Ablation) Assert.Contains($"training-modern {rung.Name}", ablation.ToString());
    }
}

public class CalibratedRangeTests
{
    private static readonly IReadOnlyDictionary<string, GenerationRange> Ranges = new Dictionary<string, GenerationRange>
    {
        ["blackwell"] = new("blackwell", new HashSet<string> { "DGX-B200" }, new HashSet<string> { "bf16", "fp8" }, 8, 256, 4096, 8192, HasMoe: true),
    };

    private static readonly ModelSpec Moe = new ModelSpec("m", 4, 1024, 8, 4096, 8, 2, 64, 4096).Validated();

    [Fact]
    public void A_training_step_inside_the_range_has_no_warning_and_each_way_out_names_itself()
    {
        // Oracle: the range above, by hand.
        var hw = HardwareCatalog.Get("DGX-B200").WithGpus(16);
        var st = new StrategySpec(8, 1, 1, 2) { Mode = WorkloadMode.Training };
        Assert.Empty(CalibratedRange.Warnings(Ranges, Moe, st, hw, "bf16"));
        Assert.Contains(CalibratedRange.Warnings(Ranges, Moe with { SequenceLength = 32768 }, st, hw, "bf16"), w => w.Contains("sequence length 32768") && w.Contains("4096-8192"));
        Assert.Contains(CalibratedRange.Warnings(Ranges, Moe, st with { DP = 64 }, hw, "bf16"), w => w.Contains("512 GPUs") && w.Contains("8-256"));
        Assert.Contains(CalibratedRange.Warnings(Ranges, Moe, st, hw, "fp4"), w => w.Contains("precision fp4"));
        var hopper = HardwareCatalog.Get("DGX-H100").WithGpus(16);
        Assert.Contains(CalibratedRange.Warnings(Ranges, Moe, st, hopper, "bf16"), w => w.Contains("hopper") && w.Contains("blackwell"));
    }

    [CalibrationDataFact]
    public void Evaluate_prints_the_warning_for_a_training_scenario_outside_the_validated_generations()
    {
        // Oracle: training_modern_public.csv has no Hopper run; ep16-training is a training step on DGX-H100.
        var stdout = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["evaluate", Path.Combine(Repo.Root, "data", "scenarios", "ep16-training.json"), "--format", "json"], stdout, new StringWriter()));
        using var doc = JsonDocument.Parse(stdout.ToString());
        var warnings = doc.RootElement.GetProperty("warnings").EnumerateArray().Select(w => w.GetString()!).ToArray();
        Assert.Contains(warnings, w => w.Contains("hopper") && w.Contains("outside the calibrated range"));
        var table = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["evaluate", Path.Combine(Repo.Root, "data", "scenarios", "ep16-training.json")], table, new StringWriter()));
        Assert.Contains("Warnings", table.ToString());
    }
}

internal static class Repo
{
    /// <summary>The repository root: the first folder above the test binaries holding MoeNotebooks.sln.</summary>
    public static string Root
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (!File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) dir = dir.Parent ?? throw new InvalidOperationException("MoeNotebooks.sln not found above the test binaries");
            return dir.FullName;
        }
    }
}

/// <summary>
/// The targets on leave-one-model-out MAPE (MoE <= 12 %, dense <= 8 %, MPT <= 10 %). A target not met yet is
/// said so in its test's name, which holds the achieved figure (plus under a point) as a regression bound only, so a
/// change that makes the predictions worse fails; the bound becomes the target when it is reached. Oracle: the
/// published runs of training_modern_public.csv, each predicted by factors fitted without its model's rows.
/// </summary>
public class ModernTargetTests
{
    private static ModernSuiteResult Suite => ModernSuite.Run(RealData.Data);

    private static double Lomo(string group) =>
        ModernSuiteResult.Mape(Suite.Rows.Where(r => r.Row.Run.TargetGroup == group).Select(r => r.LomoErrorPct));

    [CalibrationDataFact]
    public void Verdicts_and_error_shares_add_up_to_the_groups_figures()
    {
        // Oracle: the per-family MAPEs recombined by hand, independent of the per-row sums ErrorShares takes. A group's MAPE
        // is the row-weighted mean of its families' MAPEs; the group without family f is (n x MAPE - n_f x MAPE_f) / (n - n_f);
        // f's share of the summed absolute error is n_f x MAPE_f / (n x MAPE). Each verdict's margin is the target less
        // Lomo(group), the figure the target tests below assert.
        var suite = Suite;
        var verdicts = suite.Verdicts();
        Assert.Equal(ModernSuite.TargetsPct.Keys.Order(), verdicts.Select(v => v.Group).Order());
        foreach (var v in verdicts)
        {
            // A family's figures within the group (Llama-3-70B has rows in two groups: dense and megatron-fsdp).
            var families = suite.Rows.Where(r => r.Row.Run.TargetGroup == v.Group).GroupBy(r => r.Row.Run.Family)
                .ToDictionary(g => g.Key, g => (Rows: g.Count(), Lomo: ModernSuiteResult.Mape(g.Select(r => r.LomoErrorPct))));
            Assert.Equal(Lomo(v.Group), v.LomoPct, 9);
            Assert.Equal(ModernSuite.TargetsPct[v.Group] - v.LomoPct, v.MarginPts, 9);
            Assert.Equal(v.LomoPct <= v.TargetPct, v.Met);
            Assert.StartsWith(v.Met ? "met by " : "missed by ", v.Text);
            var shares = suite.ErrorShares(v.Group);
            Assert.Equal(v.Rows, shares.Sum(f => f.Rows));
            Assert.Equal(100, shares.Sum(f => f.SharePct), 6);
            Assert.True(shares.Zip(shares.Skip(1)).All(p => p.First.SharePct >= p.Second.SharePct), $"{v.Group}: shares not largest first");
            foreach (var f in shares)
            {
                var (rows, lomo) = families[f.Family];
                Assert.Equal(rows, f.Rows);
                Assert.Equal(lomo, f.LomoPct, 9);
                Assert.Equal(100 * rows * lomo / (v.Rows * v.LomoPct), f.SharePct, 6);
                if (rows == v.Rows) Assert.True(double.IsNaN(f.GroupLomoWithoutPct));
                else Assert.Equal((v.Rows * v.LomoPct - rows * lomo) / (v.Rows - rows), f.GroupLomoWithoutPct, 6);
            }
        }
    }

    [CalibrationDataFact]
    public void Moe_lomo_mape_TARGET_12pct_MISSED_regression_bound_17_1pct()
    {
        // After the other groups' landings (dense 405B pipeline split, hybrid ETP 1, GPT-OSS physics): 22.8 %; token-drop
        // rows launch their experts without a host sync (padded to capacity): 22.7 %. Bound = achieved + 0.9.
        // Then DeepEP's normal kernels priced as they send (each token once per distinct destination node over RDMA and
        // once per distinct rank over NVLink, LinkCommunication.PriceRouted): 24.1 -> 23.8 %, the DeepSeek-V3 DGX-B200
        // EP 32 DeepEP row -51 -> -17 %, DeepSeek-V3 LOMO 11.6 -> 9.4 %. Bound = achieved + 0.9.
        // Session 15, then: 17.1 -> 16.2 %: NCCL's point-to-point transfers across nodes (its all-to-all, PXN's, pipeline
        // sends) at the NIC's measured fraction of line rate, 0.746 (DGX H100 send/recv between two nodes over ConnectX-7,
        // the NIC of DGX-B200 and GB200 too; assumed for ConnectX-8; LinkSpec.PointToPointEfficiency). The all-to-all
        // factor falls from x1.17 to x1.05; GPT-OSS-120B 37.9 -> 34.6 % (its EP 64 rows over 8 DGX nodes). Bound =
        // achieved + 0.9.
        // Session 15: 19.1 -> 17.1 %: the fit minimises the error in the rows' own metric (model TFLOP/s, MFU), the MAPE
        // the suite reports, instead of the error in step seconds (ModernRowModel.MetricError); GPT-OSS-120B 41.9 ->
        // 37.9 %, Qwen3-30B-A3B 18.7 -> 12.5 %. Bound = achieved + 0.9.
        // Session 14, then: 20.8 -> 19.1 %: a dropless MoE layer's forward priced host-bound (the host's launches of the
        // local experts against the layer's forward, in place of the per-layer overhead on those visits), the host time per
        // expert fitted with the shared factors (361 us). Qwen3-235B-A22B 18.8 -> 11.0 % (its micro-batch-1 PP 8 rows had
        // paid 3 ms of overhead per layer visit). Bound = achieved + 0.9.
        // Session 14: 22.2 -> 20.8 %: the Qwen3 MXFP8 rows of each configuration's newest release (26.08 on GB200 /
        // GB300, 26.06 on DGX-B300) launched as Megatron-Bridge's flat recipes launch them (full-iteration CUDA graphs,
        // the MoE all-to-all overlapped); they had the older scoped-graph config. Bound = achieved + 0.9.
        // Stop 21: 26.4 -> 24.1 %: the experts' exposed host launches in the fit as a second stage fitted on the MoE rows
        // only (127 us per local expert on Blackwell; the shared factors as without it, so no dense row moves);
        // Qwen3-30B-A3B LOMO 26.2 -> 16.6 % (its micro-batch-1 MXFP8 B200 rows +71 / +64 -> +25 / +20 %). Bound = achieved + 0.9.
        // Stop 12: 29.9 % on 57 rows -> 28.2 % on 58: the EP 64 > DP 32 row (Qwen3-235B-A22B, TP 2) predicted with its
        // experts folded over TP x DP (ETP 1) and the per-generation fit restarted until Nelder-Mead stops gaining;
        // after the dense rows' TP overlap and fused attention merged: 26.4 % (the exposed expert host launches, which
        // took it to 24.5 %, were built but held at 0 in the fit then). Bound = achieved + 1.
        // Stop 11: 44.9 -> 29.9 % on the same 57 rows: jobs on NVL72 racks placed in the launcher's 64-GPU NVLink
        // segments (EP 64 no longer straddles two racks: 42.1 -> 31.8 %), then each row as launched (Megatron-Bridge's
        // published moe_a2a_overlap / DeepEP settings: 31.8 -> 29.4 %) and the layouts of issue 12. Bound = achieved + 1.
        // The bound was 37 % while every multi-node collective was priced as one ring through one NIC per GPU. With
        // topology-aware collectives (issue 13: NCCL's ring over all 8 rails, hierarchical and NVLS forms) the DGX-B200
        // MoE runs' data-parallel and gradient collectives are several times faster and those 14 rows come out faster
        // (47.4 % with only them); the DGX-B300 and GB200 / GB300 NVL72 presets (issue 11 item 5) add 43 MoE rows.
        // Achieved on all 57 rows: 44.9 %; bound = achieved + 1.
        var mape = Lomo("moe");
        Assert.True(mape <= 17.1, $"MoE leave-one-model-out MAPE {mape:F1} % (target 12 %, regression bound 17.1 %)");
    }

    [CalibrationDataFact]
    public void Dense_lomo_mape_TARGET_8pct_MET_regression_bound_8pct()
    {
        // Stop 21: Llama-3.1-405B's pipeline split as its recipe sets it (account_for_embedding/loss_in_pipeline_split:
        // the last stage holds one layer fewer and the logits, so the middle stages set the pace without the logits):
        // 9.9 -> 7.4 % (the 405B rows had been 7-18 % too slow out of sample, the 8B / 70B rows too fast). The target is
        // met; the bound is the target.
        // Only the DGX-B200 Llama-3-8B rows were expressible until the GB200/GB300/B300 presets landed (issue 11 item 5,
        // with issue 13's collectives); the test now covers the rest of the dense rows and the target is missed: 8.9 %
        // on them. Bound = achieved + under a point, as for the other targets. Issue 12's context parallelism expresses
        // the six CP = 2 Llama-3.1-405B rows (DGX-B200 TP4 PP8, GB300 TP2 PP8), which were listed as not expressible:
        // their LOMO errors are -8.0, -7.5, -20.3, -22.3, -17.2, -15.5 % (the GB300 FP8 rows without CP at TP4 PP8 are
        // -16 / -17 %), and with them in the Blackwell fit the 23 earlier rows move 7.9 -> 8.6 %: 10.0 % on 29 rows.
        // The set of rows changed, not the predictions of a fixed set; the bound follows the achieved figure (9.5 % on 29
        // rows after every issue-12 layout and the launch settings landed; bound = achieved + 1).
        // Then the dense rows as Megatron-Bridge launches them: Transformer Engine's fused attention priced as one kernel
        // over a rank's heads (the score matrix on chip, waves and launch shared: the CP ring rows had paid a 5 us launch
        // per head and ring step), sequence parallelism in the Llama recipes, and TE's userbuffers TP overlap exposing
        // 1/16 of the TP collectives (off for NVFP4, as the scripts set it): 9.5 -> 9.4 % (in-sample 8.5 -> 6.7 %).
        var mape = Lomo("dense");
        Assert.True(mape <= 8, $"dense leave-one-model-out MAPE {mape:F1} % (target 8 %, met)");
    }

    [CalibrationDataFact]
    public void Hybrid_lomo_mape_TARGET_12pct_MET_regression_bound_8pct()
    {
        // The 18 Nemotron-3 hybrid (Mamba-2 + attention + MoE) rows in the Blackwell fit (ModernSuite.HybridRowsInFit):
        // the Mamba mixer priced as mamba_ssm's kernels by their HBM bytes, their shortfall fitted once per generation
        // (the SSD factor, from the hybrid rows of the other models in leave-one-model-out). 53.4 % (SSD by shape, held
        // out) -> 50.5 % (kernel bytes, held out) -> 20.0 % (in the fit) -> 12.7 % with the dense rows' launch work
        // (main at 45a43ea: per-layer overhead 3.6 ms, SSD x1.53) -> 12.2 % on main at 0eac293 -> 10.0 % on 23 rows with the
        // five Super TP2 x EP64 x DP32 rows folded and the Ultra TP2 row at ETP 1 (Megatron-Bridge's
        // expert_tensor_parallel_size=1) -> 8.6 % with the Super NVFP4 recipe's last 14 of 88 layers in BF16
        // (nemotron_3_super_bf16_with_nvfp4_mixed) -> 6.8 % on main at ca25d9e, once the Super B200/B300/GB200 rows carry their
        // perf-recipe launches (hybridep) and DeepEP's per-node de-duplication prices the B200 EP 64 rows (-29/-31 -> +9/-3 %).
        // Bound = achieved + 1.2 (the shared fit still moves as the other groups land).
        var mape = Lomo("hybrid");
        Assert.True(mape <= 8, $"hybrid leave-one-model-out MAPE {mape:F1} % (target 12 %, regression bound 8 %)");
    }

    [CalibrationDataFact]
    public void Hybrid_rows_in_the_fit_leave_the_other_rows_as_they_were()
    {
        // Oracle: the two-stage fit's definition: the shared factors are fitted on the rows without Mamba layers, so the
        // Blackwell fit with the hybrid rows equals the fit of the other rows alone in every shared factor, and only the
        // SSD factor (fitted on the hybrid rows, > 1: the Triton kernels fall short of the HBM-bytes bound) differs.
        var blackwell = Suite.Rows.Where(r => r.Row.Run.Generation == "blackwell").Select(r => r.Row).ToArray();
        // (The rows held out of every fit, the Megatron-FSDP ones, ModernSuite.InFit, are out of both.)
        var without = ModernSuite.Fit("blackwell", blackwell.Where(r => r.Scenario.Architecture.Hybrid is null && ModernSuite.InFit(r)).ToArray());
        var with = Suite.Fits["blackwell"];
        Assert.Equal(without with { Rows = with.Rows, Ssd = with.Ssd }, with);
        Assert.True(with.Ssd > 1, $"SSD factor {with.Ssd:F2}");
        Assert.Equal(1, without.Ssd);
    }

    [CalibrationDataFact]
    public void The_host_time_per_expert_moves_only_the_rows_that_synchronise_and_launch_experts()
    {
        // Oracle: the definition of the host-bound forward (ModernRowModel.ExposedLaunchSeconds): it acts on dropless MoE
        // layers whose counts come to the host. Every Blackwell row that launches no experts (dense, Megatron-FSDP,
        // hybrid, token-drop, full-iteration CUDA graphs) predicts the same seconds, to the last bit, with the fitted host
        // time per expert or with none; the fitted time is positive and some MoE row does move (non-vacuity).
        var blackwell = Suite.Rows.Where(r => r.Row.Run.Generation == "blackwell").Select(r => r.Row).ToArray();
        var fit = Suite.Fits["blackwell"];
        Assert.True(fit.ExpertLaunchMicroseconds > 0, $"host time per expert {fit.ExpertLaunchMicroseconds:F0} us");
        var none = fit with { ExpertLaunchMicroseconds = 0 };
        var still = blackwell.Where(r => !ModernSuite.LaunchesExperts(r)).ToArray();
        Assert.Contains(still, r => r.Run.TargetGroup == "dense");
        Assert.Contains(still, r => r.Run.TargetGroup == "hybrid");
        Assert.Contains(still, r => r.Run.TargetGroup == "moe" && r.Scenario.Launch?.CudaGraphImpl == "full_iteration");
        Assert.Contains(still, r => r.Run.TokenDrop);
        Assert.All(still, r => Assert.Equal(r.Seconds(none), r.Seconds(fit)));
        Assert.Contains(blackwell.Where(ModernSuite.LaunchesExperts), r => r.Seconds(fit) > r.Seconds(none));
    }

    [CalibrationDataFact]
    public void Megatron_fsdp_lomo_mape_TARGET_8pct_MET_regression_bound_8pct()
    {
        // Session 14: 9.8 -> 7.8 %: a dropless MoE layer's forward priced host-bound in place of the per-layer overhead,
        // so the overhead (3.0 -> 1.85 ms) and the GEMM factor (x1.07 -> x1.15) are fitted on the rows that pay them; five
        // of the six rows are still too fast. The target is met; the bound is the target.
        // Stop 21, then: their launches' CPU activation offloading (20, 40 and 92 layers) priced by bytes over the host link
        // (NVLink-C2C), overlapped with the next layer as Transformer Engine's double buffer does: 19.6 -> 11.3 %, still
        // out of the fit (all six too fast: ModernSuite.MegatronFsdpRowsInFit). Bound = achieved + 0.9.
        // Stop 21: with the 405B pipeline split in the Blackwell fit (the dense rows' factors move): 24.0 -> 19.6 %.
        // Bound = achieved + 0.9.
        // The six Megatron-FSDP Llama-3 rows (listed as not expressible until per-layer ZeRO-3 entered the slice),
        // predicted with the Blackwell fit made without them: 29.1 %, all too fast (their launch configs offload 20 to 40
        // layers' activations to the CPU, not priced). Bound = achieved + 0.9.
        var mape = Lomo("megatron-fsdp");
        Assert.True(mape <= 8, $"Megatron-FSDP leave-one-model-out MAPE {mape:F1} % (target 8 %, met)");
    }

    [CalibrationDataFact]
    public void Mpt_lomo_mape_TARGET_10pct_MET_regression_bound_8pct()
    {
        // 10.2 % while FSDP was a fitted exposed share of per-microbatch gathers and attention was priced as two GEMMs
        // writing the score matrix to HBM; per-layer FSDP in the slice's DAG (10.8 %), then llm-foundry's fused Triton
        // flash attention (scores on chip, CostModel.FusedAttentionHeads; the hd-64 models were memory-bound on a score matrix
        // the kernel never writes): 7.5 % on the 78 rows. Bound = achieved + 0.5; the target (10 %) is met.
        var mape = Lomo("mpt");
        Assert.True(mape <= 8, $"MPT leave-one-model-out MAPE {mape:F1} % (target 10 %, regression bound 8 %)");
    }

    [Fact]
    public void The_cores_mtp_flops_match_megatrons_convention_for_deepseek_v3()
    {
        // Oracle: Megatron-LM's num_floating_point_operations as transcribed in ModernArchitecture (MegatronFlops): one
        // MTP depth adds one more MoE layer, the 2H x H projection (with 3H for its norms) and one more logits term. The
        // core's DAG (DeepSeek-V3 preset, 2 layers, one sequence of 4096) must add the same per sequence; tolerance 1 %
        // for MLA's latent-norm and small-term conventions that differ between the two counts.
        const long seq = 4096;
        var megatron = MegatronFlops.PerSequence(ModernArchitecture.Catalog["DeepSeek-V3"], seq, 1).Total - MegatronFlops.PerSequence(ModernArchitecture.Catalog["DeepSeek-V3"], seq, 0).Total;
        var m = ModelPresets.Get("deepseek-v3", batch: 1, sequenceLength: seq) with { Layers = 2, DenseLayers = 0 };
        var training = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        double Flops(ModelSpec model) { var dag = training.BuildDag(model); return Enumerable.Range(0, dag.Count).Sum(op => dag.Flops(op)); }
        var core = Flops(m) - Flops(m with { MtpLayers = 0 });
        Assert.True(Math.Abs(core - megatron) <= 0.01 * megatron, $"core {core:E4} vs Megatron {megatron:E4} FLOPs per sequence for one MTP depth");
    }
}

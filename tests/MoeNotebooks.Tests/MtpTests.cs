using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Multi-token-prediction depths (model.mtpLayers): parameters, FLOPs and where the DAG places them.</summary>
public sealed class MtpTests
{
    private const long H = 7168, V = 129280;

    // DeepSeek-V3's MoE layer by hand from its config.json (q_lora_rank 1536, kv_lora_rank 512, qk_nope 128, qk_rope 64,
    // v 128, 128 heads, 256 routed + 1 shared SwiGLU experts of 2048, top-8): the GEMM weights one token touches.
    private const long Mla = H * 1536 + 1536L * 128 * 192 + H * (512 + 64) + 512L * 128 * (128 + 128) + 128L * 128 * H;
    private const long Router = H * 256, Shared = 3 * H * 2048, Expert = 3 * H * 2048;
    private const long Projection = 2 * H * H;

    [Fact]
    public void DeepSeek_v3_main_model_is_671B_and_with_its_MTP_module_685B()
    {
        // Oracle: Hugging Face model card of deepseek-ai/DeepSeek-V3: "671B of the Main Model weights and 14B of the
        // Multi-Token Prediction (MTP) Module weights" (685B in all), within 1 %; and the MTP depth's own weights by hand:
        // one MoE layer (MLA + its two norms and MLA's two latent norms, router, shared and 256 routed experts), the
        // projection M [2H -> H] and two RMSNorms. (The card's 14B also stores copies of the shared embedding and head,
        // 2VH = 1.85B, which are one matrix each here; the 685B total is met either way within 1 %.)
        var p = ParameterCounts.Of(ModelPresets.Get("deepseek-v3", batch: 1));
        var mtpByHand = Mla + 4 * H + 1536 + 512 + Router + Shared + 256 * Expert + Projection + 2 * H;
        Assert.Equal(mtpByHand, p.Mtp);
        Assert.True(Math.Abs(p.Total - 671e9) <= 0.01 * 671e9, $"main {p.Total / 1e9:F2}B vs 671B");
        Assert.True(Math.Abs(p.TotalWithMtp - 685e9) <= 0.01 * 685e9, $"main + MTP {p.TotalWithMtp / 1e9:F2}B vs 685B");
        Assert.Equal(Mla + 4 * H + 1536 + 512 + Router + Shared + 8 * Expert + Projection + 2 * H, p.MtpActiveNonEmbedding);
        // Presets other than DeepSeek-V3, GLM-4.5 / GLM-4.5-Air (one MTP layer each, arXiv:2508.06471 Table 1) and the
        // Nemotron-3 Super/Ultra hybrids (two depths each, their own presets' sources) have none.
        Assert.All(ModelPresets.Names.Where(n => n is not ("deepseek-v3" or "glm4.5" or "glm4.5-air" or "nemotron3-super" or "nemotron3-ultra")), n => Assert.Equal(0, ModelPresets.Get(n, batch: 1).MtpLayers));
    }

    private static double Flops(OperatorDag dag) => Enumerable.Range(0, dag.Count).Sum(op => dag.Flops(op));

    [Fact]
    public void Training_flops_per_token_add_6_N_mtp_plus_attention_plus_one_more_head()
    {
        // Oracle (by hand): one MTP depth adds, per token, 3 x (forward, dX, dW) the forward's 2 FLOPs per active GEMM
        // weight of its MoE layer (MLA, router, shared + top-8 experts), of its projection 2H x H and of one more pass
        // through the shared output head V x H, plus its causal attention 2 x heads x (qk + v) x 2049 keys (s = 4096:
        // (s + 1) / 2 rounded up). Megatron-LM's num_floating_point_operations adds MTP the same way (one more layer,
        // the projection and one more logits term; see the calibration test comparing with ModernArchitecture).
        var m = ModelPresets.Get("deepseek-v3", batch: 1) with { Layers = 2, DenseLayers = 0 };
        var training = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        var with = Flops(training.BuildDag(m));
        var without = Flops(training.BuildDag(m with { MtpLayers = 0 }));
        var attention = 2.0 * 128 * (192 + 128) * 2049;
        var perToken = 3 * (2.0 * (Mla + Router + Shared + 8 * Expert + Projection + V * H) + attention);
        Assert.Equal(perToken, (with - without) / m.Tokens, perToken * 1e-9);
        // The library's closed form counts them too.
        Assert.Equal(with / m.Tokens, ModelSummary.TrainingFlopsPerToken(m).Total, with / m.Tokens * 1e-9);
    }

    [Fact]
    public void Mtp_depths_run_on_the_last_stage_after_the_main_layers()
    {
        // Oracle: the DeepSeek-V3 report §2.2 structure: per depth one projection [T, 2H] x [2H, H/TP] (column-parallel),
        // one transformer layer, one more logits GEMM; all on the last pipeline stage (Megatron-LM places the MTP block
        // with the output layer), with forward, recompute (when asked) and backward (dX and dW) GEMMs.
        var m = ModelPresets.Get("deepseek-v3", batch: 8, sequenceLength: 1024) with { Layers = 4, DenseLayers = 1 };
        var st = new StrategySpec(1, 2, 2, 1, Derivation.Corrected, 2) { Mode = WorkloadMode.Training, Recompute = true }.Validated();
        var dag = st.BuildDag(m);
        var lastStage = new[] { st.Rank(0, 1, 0, 0), st.Rank(0, 1, 0, 1) }.ToHashSet();
        var mtpOps = Enumerable.Range(0, dag.Count).Where(op => dag.Layer(op) == m.Layers).ToArray();
        Assert.NotEmpty(mtpOps);
        var projections = mtpOps.Where(op => dag.Kind(op) == OpKind.MtpProjection).ToArray();
        long tokens = 4 * 1024;   // 8 sequences / 2 microbatches
        // Per microbatch and TP rank: forward, recompute, dX, dW.
        Assert.Equal(2 * 2 * 4, projections.Length);
        Assert.Contains(projections, op => dag.Shape(op) == new MatmulShape(tokens, 2 * H, H / 2));
        Assert.Equal(2 * 2, projections.Count(op => dag.Phase(op) == OpPhase.Recompute));
        Assert.Equal(2 * 2 * 3, mtpOps.Count(op => dag.Kind(op) == OpKind.Logits));   // forward, dX, dW
        Assert.True(mtpOps.Where(op => dag.Kind(op) == OpKind.ExpertUp).Any());        // its layer is an MoE layer
        Assert.All(mtpOps.Where(op => dag.Kind(op).Category() != OpCategory.Communication), op => Assert.Contains(dag.Gpu(op), lastStage));
    }

    [Fact]
    public void Mtp_with_sequence_parallelism_is_priced()
    {
        // Was refused until the MTP input under sequence-sharded activations was priced (its hand byte counts are in
        // ExpertTensorParallelTests.MtpInputUnderSequenceParallelismGathersItsShardedInput). Oracle here: SP keeps the
        // GEMM list (Korthikanti §4.2.2) and leaves no TP all-reduce in the MTP depth.
        var m = ModelPresets.Get("llama3-8b", batch: 8, sequenceLength: 1024) with { Layers = 2, MtpLayers = 1 };
        var st = new StrategySpec(1, 2, 1, 1) { Mode = WorkloadMode.Training, SequenceParallel = true };
        st.CheckFits(m, st.GpuCount);
        var dag = st.BuildDag(m);
        var plain = (st with { SequenceParallel = false }).BuildDag(m);
        string Gemms(OperatorDag d) => string.Join(";", Enumerable.Range(0, d.Count).Where(op => d.Kind(op).IsMatmulShaped()).Select(op => $"{d.Kind(op)}:{d.Shape(op)}").Order());
        Assert.Equal(Gemms(plain), Gemms(dag));
        Assert.DoesNotContain(Enumerable.Range(0, dag.Count), op => dag.Layer(op) == 2 && dag.Kind(op).Pattern() == CollectivePattern.AllReduce);
    }
}

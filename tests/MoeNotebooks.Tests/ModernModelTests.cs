using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Model presets, the modern architecture blocks (GQA, MLA, sliding windows, SwiGLU, shared experts) and precision recipes.</summary>
public sealed class ModernModelTests
{
    public static TheoryData<string> PublishedPresets => new(ModelPresets.All.Where(p => p.Published is not null).Select(p => p.Name));

    [Theory]
    [MemberData(nameof(PublishedPresets))]
    public void Parameter_counts_match_the_publishers_figures(string name)
    {
        // Oracle: the figure each publisher states (cited in data/models/<name>.json "published.source"). Tolerance: 1 %,
        // or one unit of the figure's last digit when it is published to fewer digits ("3.3B" is 3.25-3.35B rounded or
        // 3.3-3.4B truncated), with the publisher's convention for which embedding matrices count as active.
        var preset = ModelPresets.Preset(name);
        var counts = ParameterCounts.Of(preset.Model);
        var (total, totalUnit) = PublishedParameters.Parse(preset.Published!.Total);
        var (active, activeUnit) = PublishedParameters.Parse(preset.Published.Active);
        var activeCount = counts.Active(preset.Published.ActiveCounts);
        Assert.True(Math.Abs(counts.Total - total) <= Math.Max(0.01 * total, totalUnit), $"{name}: total {counts.Total / 1e9:F2}B vs published {preset.Published.Total}");
        Assert.True(Math.Abs(activeCount - active) <= Math.Max(0.01 * active, activeUnit), $"{name}: active {activeCount / 1e9:F3}B vs published {preset.Published.Active}");
    }

    [Fact]
    public void Every_listed_preset_exists_with_sources()
    {
        // Oracle: the list of presets.
        foreach (var name in new[] { "mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3", "gpt-oss-120b", "kimi-k2", "llama3-8b", "llama3-70b", "llama3-405b", "gpt3-175b", "seed-moe" })
        {
            var p = ModelPresets.Preset(name);
            Assert.NotEmpty(p.Sources);
            Assert.Equal(name, p.Model.Name);
        }
    }

    [Fact]
    public void The_founding_preset_is_the_founding_scenarios_model()
    {
        // Oracle: data/scenarios/ep16.json's model written out in full.
        var s = MoeNotebooks.Config.Scenario.Load(TestPaths.Scenario("ep16"));
        Assert.Equal(s.Model with { Name = "seed-moe" }, ModelPresets.Get("seed-moe", s.Model.Batch));
    }

    private static OperatorDag Build(ModelSpec m, StrategySpec? st = null) => (st ?? new StrategySpec(1, 1, 1, 1)).BuildDag(m);

    private static int[] Ops(OperatorDag dag, OpKind kind, int layer, OpPhase phase = OpPhase.Forward) =>
        Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == kind && dag.Layer(op) == layer && dag.Phase(op) == phase).ToArray();

    /// <summary><paramref name="count"/> products of <paramref name="shape"/> (a repeated operation counts its products: a rank's heads).</summary>
    private static void AssertOps(OperatorDag dag, OpKind kind, int layer, int count, MatmulShape shape)
    {
        var ops = Ops(dag, kind, layer);
        var products = ops.Sum(dag.Repeat);
        Assert.True(count == products, $"{kind} in layer {layer}: {products} products in {ops.Length} ops, expected {count}");
        foreach (var op in ops)
        {
            Assert.Equal(shape, dag.Shape(op));
            Assert.Equal(dag.Repeat(op) * 2.0 * shape.Batch * shape.M * shape.K * shape.N, dag.Flops(op));
        }
    }

    private static void AssertBytes(OperatorDag dag, OpKind kind, int layer, double bytes)
    {
        var ops = Ops(dag, kind, layer);
        Assert.NotEmpty(ops);
        foreach (var op in ops) Assert.Equal(bytes, dag.Bytes(op));
    }

    [Fact]
    public void Qwen3_30b_a3b_layer_operations_match_a_hand_derivation()
    {
        // Oracle (by hand, one sequence of s = 4096 tokens, one GPU, uniform routing): H = 2048, 32 query heads and 4 KV
        // heads of d = 128 (heads x d = 4096 != H), SwiGLU experts F = 768, 128 experts top-8 -> 4096 x 8 / 128 = 256 tokens each.
        // Q [4096, 2048] x [2048, 32 x 128]; K, V [4096, 2048] x [2048, 4 x 128]; causal: query i sees i keys, mean
        // (4096 + 1) / 2 -> 2049 (rounded up) as N of the per-head products; O [4096, 4096] x [4096, 2048];
        // gate [4096, 2048] x [2048, 128]; expert up (gate and up fused) [256, 2048] x [2048, 2 x 768], down [256, 768] x [768, 2048].
        var m = ModelPresets.Get("qwen3-30b-a3b", batch: 1) with { Layers = 2 };
        var dag = Build(m);
        AssertOps(dag, OpKind.QProjection, 0, 1, new(4096, 2048, 4096));
        AssertOps(dag, OpKind.KProjection, 0, 1, new(4096, 2048, 512));
        AssertOps(dag, OpKind.VProjection, 0, 1, new(4096, 2048, 512));
        AssertOps(dag, OpKind.AttentionScore, 0, 32, new(4096, 128, 2049));
        AssertOps(dag, OpKind.AttentionValue, 0, 32, new(4096, 2049, 128));
        AssertOps(dag, OpKind.OutputProjection, 0, 1, new(4096, 4096, 2048));
        AssertOps(dag, OpKind.Gate, 0, 1, new(4096, 2048, 128));
        AssertOps(dag, OpKind.ExpertUp, 0, 128, new(256, 2048, 1536));
        AssertOps(dag, OpKind.ExpertDown, 0, 128, new(256, 768, 2048));
        AssertOps(dag, OpKind.SharedExpertUp, 0, 0, default);
        // Memory-bound passes (bf16 = 2 bytes): router softmax/top-k reads and writes 4096 x 128 fp32 and writes 4096 x 8
        // (weight, index) pairs of 8 bytes; permute reads [4096, 2048] and writes 32768 copies; unpermute also reads
        // 32768 fp32 weights; the SwiGLU activation reads [256, 1536] and writes [256, 768].
        AssertBytes(dag, OpKind.RouterTopK, 0, 2 * 4096 * 128 * 4 + 4096 * 8 * 8);
        AssertBytes(dag, OpKind.Permute, 0, 4096 * 2048 * 2 + 32768L * 2048 * 2);
        AssertBytes(dag, OpKind.Unpermute, 0, 4096 * 2048 * 2 + 32768L * 2048 * 2 + 32768 * 4);
        var activations = Ops(dag, OpKind.Elementwise, 0).Where(op => dag.Index(op) == 7).ToArray();
        Assert.Equal(128, activations.Sum(dag.Repeat));   // one pass per expert (a run of experts with equal tokens is one repeated pass)
        Assert.All(activations, op => Assert.Equal(3.0 * 256 * 768 * 2 * dag.Repeat(op), dag.Bytes(op)));
    }

    [Fact]
    public void DeepSeek_v3_layer_operations_match_a_hand_derivation()
    {
        // Oracle (by hand, s = 4096, one GPU, uniform routing): MLA with 128 heads: q down [4096, 7168] x [7168, 1536],
        // q up [4096, 1536] x [1536, 128 x (128 + 64)]; kv down [4096, 7168] x [7168, 512 + 64], kv up [4096, 512] x
        // [512, 128 x (128 + 128)]; scores per head [4096, 192] x [192, 2049 causal keys], values [4096, 2049] x [2049, 128];
        // O [4096, 128 x 128] x [16384, 7168]. Layers 0-2 dense SwiGLU F = 18432: up [4096, 7168] x [7168, 2 x 18432],
        // down [4096, 18432] x [18432, 7168]. Layer 3 MoE: gate [4096, 7168] x [7168, 256]; 1 shared expert F = 2048 over
        // all 4096 tokens; 256 routed experts top-8 -> 4096 x 8 / 256 = 128 tokens each, up [128, 7168] x [7168, 4096].
        var m = ModelPresets.Get("deepseek-v3", batch: 1) with { Layers = 4 };
        var dag = Build(m);
        foreach (var layer in new[] { 0, 3 })
        {
            AssertOps(dag, OpKind.QDownProjection, layer, 1, new(4096, 7168, 1536));
            AssertOps(dag, OpKind.QUpProjection, layer, 1, new(4096, 1536, 128 * 192));
            AssertOps(dag, OpKind.KvDownProjection, layer, 1, new(4096, 7168, 576));
            AssertOps(dag, OpKind.KvUpProjection, layer, 1, new(4096, 512, 128 * 256));
            AssertOps(dag, OpKind.AttentionScore, layer, 128, new(4096, 192, 2049));
            AssertOps(dag, OpKind.AttentionValue, layer, 128, new(4096, 2049, 128));
            AssertOps(dag, OpKind.OutputProjection, layer, 1, new(4096, 16384, 7168));
            AssertOps(dag, OpKind.QProjection, layer, 0, default);
            AssertOps(dag, OpKind.KProjection, layer, 0, default);
        }
        for (var layer = 0; layer < 3; layer++)
        {
            AssertOps(dag, OpKind.DenseUp, layer, 1, new(4096, 7168, 36864));
            AssertOps(dag, OpKind.DenseDown, layer, 1, new(4096, 18432, 7168));
            AssertOps(dag, OpKind.Gate, layer, 0, default);
        }
        AssertOps(dag, OpKind.DenseUp, 3, 0, default);
        AssertOps(dag, OpKind.Gate, 3, 1, new(4096, 7168, 256));
        AssertOps(dag, OpKind.SharedExpertUp, 3, 1, new(4096, 7168, 4096));
        AssertOps(dag, OpKind.SharedExpertDown, 3, 1, new(4096, 2048, 7168));
        AssertOps(dag, OpKind.ExpertUp, 3, 256, new(128, 7168, 4096));
        AssertOps(dag, OpKind.ExpertDown, 3, 256, new(128, 2048, 7168));
    }

    [Fact]
    public void Gpt_oss_120b_alternates_sliding_and_full_attention()
    {
        // Oracle (by hand, s = 4096): even layers slide over 128 tokens, odd layers are full; causal. A sliding layer's
        // query i sees min(i, 128) keys: (128 x 129 / 2 + (4096 - 128) x 128) / 4096 = 516160 / 4096 = 126.02 -> 127;
        // a full layer's (4096 + 1) / 2 -> 2049. 64 heads of 64: Q [4096, 2880] x [2880, 4096], K, V [2880, 8 x 64];
        // 128 experts top-4 -> 128 tokens each, SwiGLU F = 2880: up [128, 2880] x [2880, 5760].
        var m = ModelPresets.Get("gpt-oss-120b", batch: 1) with { Layers = 2 };
        var dag = Build(m);
        AssertOps(dag, OpKind.AttentionScore, 0, 64, new(4096, 64, 127));
        AssertOps(dag, OpKind.AttentionValue, 0, 64, new(4096, 127, 64));
        AssertOps(dag, OpKind.AttentionScore, 1, 64, new(4096, 64, 2049));
        AssertOps(dag, OpKind.QProjection, 1, 1, new(4096, 2880, 4096));
        AssertOps(dag, OpKind.KProjection, 1, 1, new(4096, 2880, 512));
        AssertOps(dag, OpKind.OutputProjection, 1, 1, new(4096, 4096, 2880));
        AssertOps(dag, OpKind.ExpertUp, 1, 128, new(128, 2880, 5760));
        AssertOps(dag, OpKind.ExpertDown, 1, 128, new(128, 2880, 2880));
    }

    // Hybrid presets (one block per layer) have their own hand count: MambaTests.Training_flops_per_token_of_a_hybrid_are_6N_plus_attention_plus_the_ssd_scan.
    public static TheoryData<string> AllPresets => new(ModelPresets.Names.Where(n => n != "seed-moe" && n != "kimi-k2" && n != "llama3-405b" && !ModelPresets.Get(n, batch: 1).IsHybrid));

    [Theory]
    [MemberData(nameof(AllPresets))]
    public void Training_flops_per_token_are_6N_plus_causal_attention(string name)
    {
        // Oracle: the standard count (Kaplan et al. 2020 §2.1; Narayanan et al. SC21 appendix): a training step is 3x
        // the forward (forward, dX, dW); the forward does 2 FLOPs per active GEMM parameter per token (N: attention,
        // router, top-k routed and shared experts, output layer; not the embedding lookup nor norms) plus, per layer and
        // head, 2 x (qk + v head dims) x attended keys for the score and value products, where causal masking halves the
        // keys ((s + 1) / 2) and a sliding window caps them. Independent of the DAG: parameters from ParameterCounts
        // (checked against the publishers above), keys from the closed form. Two layers keep the DAG small.
        // The main model only (MtpLayers 0): the MTP depths have their own test below.
        var m = ModelPresets.Get(name, batch: 1) with { Layers = 2, DenseLayers = 0, MtpLayers = 0 };
        var dag = Build(m, new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training });
        var dagFlops = Enumerable.Range(0, dag.Count).Sum(op => dag.Flops(op));
        var p = ParameterCounts.Of(m);
        var norms = 4L * m.HiddenSize * m.Layers + (m.Mla is { } mla ? m.Layers * (mla.QLoraRank + mla.KvLoraRank) : 0);
        var n = p.Active("output") - norms;
        double s = m.SequenceLength, attention = 0;
        for (var layer = 0; layer < m.Layers; layer++)
        {
            var w = m.AttentionKindOf(layer) == AttentionLayerKind.Sliding ? m.SlidingWindow!.Value : s;
            var keys = Math.Ceiling((w * (w + 1) / 2 + (s - w) * w) / s);
            attention += 2.0 * m.AttentionHeads * (m.QkHeadDim + m.VHeadDim) * keys;
        }
        var expected = 3 * (2.0 * n + attention);
        Assert.Equal(expected, dagFlops / m.Tokens, expected * 1e-9);
        Assert.Equal(expected, ModelSummary.TrainingFlopsPerToken(m).Total, expected * 1e-9);
        // Causal halving: the bidirectional count is larger by the other half of the attention term.
        var bidirectional = Build(m with { Causal = false }, new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training });
        Assert.True(Enumerable.Range(0, bidirectional.Count).Sum(op => bidirectional.Flops(op)) > dagFlops);
    }

    private static ModelSpec SmallMoe(PrecisionRecipe? recipe) =>
        new ModelSpec("small", 2, 1024, 8, 4096, 8, 2, 16, 512) { Causal = true, FfnActivation = FfnActivation.Swiglu, MoeMemoryBoundOps = true, Precision = recipe };

    private static ModelSpec MidMoe(PrecisionRecipe? recipe) => SmallMoe(recipe) with { HiddenSize = 4096, AttentionHeads = 32, FfnHiddenSize = 14336, Batch = 8, SequenceLength = 2048 };

    [Fact]
    public void An_fp8_gemm_is_priced_at_the_fp8_rate_while_attention_and_all_reduces_keep_bf16()
    {
        // Oracle: roofline-ideal on H100-SXM (bf16 989 TFLOP/s, fp8 1979 TFLOP/s, HBM 3.35 TB/s): a compute-bound GEMM
        // takes FLOPs / peak at its dtype; the attention products stay at the bf16 peak; the TP all-reduce carries the
        // same bf16 bytes as without the recipe; quantize passes read 2 + 2 (current-scaling amax) bytes per element and
        // write the fp8 copy and, in training, its transposed copy (1 + 1).
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(2);
        var cost = CostModel.RooflineIdeal(hw);
        var st = new StrategySpec(1, 2, 1, 1) { Mode = WorkloadMode.Training };
        var fp8 = st.BuildDag(MidMoe(PrecisionRecipe.Get("fp8-current")));
        var bf16 = st.BuildDag(MidMoe(null));
        var q = Ops(fp8, OpKind.QProjection, 0)[0];
        Assert.Equal("fp8", fp8.MatmulDtype(q));
        Assert.Equal(fp8.Flops(q) / 1.979e15, cost.Seconds(fp8, q), 1e-15);
        var score = Ops(fp8, OpKind.AttentionScore, 0)[0];
        Assert.Equal("bf16", fp8.MatmulDtype(score));
        Assert.Equal(Math.Max(fp8.Flops(score) / 989e12, fp8.Bytes(score) / 3.35e12), cost.Seconds(fp8, score), 1e-15);
        Assert.Equal("bf16", fp8.MatmulDtype(Ops(fp8, OpKind.Gate, 0)[0]));
        Assert.Equal(Ops(bf16, OpKind.AttentionAllReduce, 0).Select(op => bf16.Bytes(op)), Ops(fp8, OpKind.AttentionAllReduce, 0).Select(op => fp8.Bytes(op)));
        Assert.Equal(fp8.Flops(q), bf16.Flops(Ops(bf16, OpKind.QProjection, 0)[0]));
        // The Q projection's fp8 operands are half the bf16 bytes.
        Assert.Equal(bf16.Bytes(Ops(bf16, OpKind.QProjection, 0)[0]) / 2, fp8.Bytes(q));
        // Quantize of the attention input [tokens = 8 x 2048, H = 4096] in the forward: 16384 x 4096 x (2 + 2 + 1 + 1).
        var quantizes = Ops(fp8, OpKind.Quantize, 0);
        Assert.Contains(quantizes, op => fp8.Bytes(op) == 16384.0 * 4096 * 6);
        Assert.Empty(Ops(bf16, OpKind.Quantize, 0));
        // The same scenario, end to end: faster with fp8 GEMMs, but not twice as fast (attention, quantize, comms).
        var tBf16 = bf16.CriticalPath(cost).TotalSeconds;
        var tFp8 = fp8.CriticalPath(cost).TotalSeconds;
        Assert.InRange(tFp8, tBf16 / 2, tBf16);
    }

    [Fact]
    public void Memory_keeps_fp32_master_weights_and_optimizer_states_under_a_precision_recipe()
    {
        // Oracle: mixed-precision Adam (Rajbhandari et al., ZeRO, SC20): 2 (bf16 weights) + 2 (bf16 gradients) + 12
        // (fp32 master, momentum, variance) bytes per parameter whatever the GEMM precision; a legacy all-fp8 model
        // (dtype "fp8") holds 1 + 1 + 12.
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(1);
        var st = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        var recipe = Analysis.MemoryModel.Estimate(SmallMoe(PrecisionRecipe.Get("mxfp8")), st, hw).Stages[0];
        var p = ParameterCounts.OnStage(SmallMoe(null), st, 0).Total;
        Assert.Equal(2.0 * p, recipe.WeightsBytes);
        Assert.Equal(2.0 * p, recipe.GradientsBytes);
        Assert.Equal(12.0 * p, recipe.OptimizerBytes);
    }

    [Fact]
    public void Activation_memory_follows_kv_heads_and_gated_ffns()
    {
        // Oracle (by hand): an inference working set holds one layer's activations; with 2 instead of 8 KV heads of 128
        // the saved K and V shrink by 2 x (8 - 2) x 128 elements per token; a gated FFN saves [2F] + [F] instead of
        // [F] + [F] per expert token, one more F = 4096 per token here (top-2 of 8 uniform experts on one GPU: 2 x tokens).
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(1);
        var st = new StrategySpec(1, 1, 1, 1);
        var mha = new ModelSpec("m", 2, 1024, 8, 4096, 8, 2, 16, 512) { HeadDim = 128 };
        double tokens = 16 * 512;
        double Acts(ModelSpec m) => Analysis.MemoryModel.Estimate(m, st, hw).Stages[0].ActivationsBytes;
        Assert.Equal(2 * tokens * 2 * 6 * 128, Acts(mha) - Acts(mha with { KvHeads = 2 }), 1e-3);
        Assert.Equal(2 * (2 * tokens) * 4096, Acts(mha with { FfnActivation = FfnActivation.Swiglu }) - Acts(mha), 1e-3);
    }

    [Fact]
    public void Nvfp4_gemms_use_the_fp4_peak_or_fail_clearly()
    {
        // Oracle: H100 lists no fp4 peak (Hopper tensor cores have no FP4), so an nvfp4 scenario on it is rejected
        // naming model.precision; the DAG records fp4 GEMMs with half-byte operands.
        var json = """
            { "model": { "preset": "qwen3-30b-a3b", "layers": 2, "batch": 8, "sequenceLength": 1024, "precision": "nvfp4" },
              "hardware": { "preset": "H100-SXM", "gpus": 8 }, "strategy": { "ep": 8 } }
            """;
        var e = Assert.Throws<ConfigException>(() => MoeNotebooks.Config.Scenario.Parse(json));
        Assert.Equal("model.precision", e.Field);
        Assert.Contains("fp4", e.Message);
        var dag = new StrategySpec(1, 1, 1, 1).BuildDag(ModelPresets.Get("qwen3-30b-a3b", 1, 1024) with { Layers = 1, Precision = PrecisionRecipe.Get("nvfp4") });
        var up = Ops(dag, OpKind.ExpertUp, 0)[0];
        Assert.Equal("fp4", dag.MatmulDtype(up));
        Assert.Equal(dag.Shape(up).Elements * 0.5 * dag.Repeat(up), dag.Bytes(up));   // each expert's operands (experts with equal tokens are one repeated product)
    }

    public static TheoryData<string> RoundTripModels => new(ModelPresets.Names);

    [Theory]
    [MemberData(nameof(RoundTripModels))]
    public void Every_model_field_round_trips_through_json(string name)
    {
        // Oracle: the description itself: write it, read it back, write again; every field equal.
        var m = ModelPresets.Get(name, 64, 2048);
        if (!m.IsDense) m = m with { Precision = PrecisionRecipe.Get("mxfp8") with { Fp8Dispatch = true }, Routing = new RoutingSpec(RoutingDistribution.Zipf, 1.1, CapacityFactor: 1.25), SharedExpertFfnHiddenSize = 512 };
        var json = m.ToJson();
        using var doc = JsonObjectReader.Parse(json, null);
        var back = ModelSpec.Read(new JsonObjectReader(doc.RootElement, "model", null));
        Assert.Equal(json, back.ToJson());
        Assert.Equal(m.HeadDim, back.HeadDim);
        Assert.Equal(m.Mla, back.Mla);
        Assert.Equal(m.Precision, back.Precision);
        Assert.Equal(m.AttentionPattern ?? [], back.AttentionPattern ?? []);
        Assert.Equal(m with { AttentionPattern = null, Routing = RoutingSpec.Uniform }, back with { AttentionPattern = null, Routing = RoutingSpec.Uniform });
    }

    private static string Scenario(string model, string strategy = "\"ep\": 8", int gpus = 8) => $$"""
        { "model": { {{model}} }, "hardware": { "preset": "H100-SXM", "gpus": {{gpus}} }, "strategy": { {{strategy}} } }
        """;

    private const string Small = "\"layers\": 4, \"hiddenSize\": 1024, \"attentionHeads\": 8, \"ffnHiddenSize\": 4096, \"experts\": 8, \"topK\": 2, \"batch\": 64, \"sequenceLength\": 256";

    public static TheoryData<string, string, string> BadModels => new()
    {
        // Oracle for each: the rule it breaks; the message names the field and the value written.
        { Scenario(Small + ", \"kvHeads\": 3"), "model.kvHeads", "3" },
        { Scenario(Small.Replace("\"attentionHeads\": 8", "\"attentionHeads\": 12") + ", \"headDim\": 64, \"kvHeads\": 3", "\"tp\": 2, \"ep\": 1", 2), "model.kvHeads", "3" },
        { Scenario(Small + ", \"headDim\": 0"), "model.headDim", "0" },
        { Scenario(Small + ", \"slidingWindow\": 128, \"attentionPattern\": [\"sliding\", \"full\", \"full\"]"), "model.attentionPattern", "[3 entries]" },
        { Scenario(Small + ", \"slidingWindow\": 128, \"attentionPattern\": [\"sliding\", \"wide\"]"), "model.attentionPattern[1]", "\"wide\"" },
        { Scenario(Small + ", \"precision\": \"fp6\""), "model.precision", "\"fp6\"" },
        { Scenario(Small + ", \"precision\": { \"recipe\": \"mxfp8\", \"fp8Dispatch\": \"yes\" }"), "model.precision.fp8Dispatch", "\"yes\"" },
        { Scenario(Small + ", \"dtype\": \"fp4\""), "model.dtype", "\"fp4\"" },
        { Scenario(Small + ", \"denseLayers\": 4"), "model.denseLayers", "4" },
        { Scenario(Small + ", \"mtpLayers\": 17, \"vocabulary\": 1000"), "model.mtpLayers", "17" },
        { Scenario(Small + ", \"mtpLayers\": -1, \"vocabulary\": 1000"), "model.mtpLayers", "-1" },
        { Scenario(Small + ", \"mtpLayers\": 1"), "model.mtpLayers", "1" },
        { Scenario(Small + ", \"mla\": { \"kvLoraRank\": 0, \"qkNopeHeadDim\": 64, \"qkRopeHeadDim\": 32, \"vHeadDim\": 64 }"), "model.mla.kvLoraRank", "0" },
        { Scenario(Small + ", \"moeFfnHiddenSize\": 7", "\"tp\": 2, \"ep\": 4"), "model.moeFfnHiddenSize", "7" },
        { Scenario("\"preset\": \"qwen3-30b-a3\", \"batch\": 8"), "model.preset", "\"qwen3-30b-a3\"" },
        { Scenario("\"preset\": \"qwen3-30b-a3b\", \"batch\": 8, \"kvHead\": 2"), "model.kvHead", "2" },
        { Scenario("\"preset\": \"qwen3-30b-a3b\""), "model.batch", null! },
    };

    [Theory]
    [MemberData(nameof(BadModels))]
    public void Bad_model_values_are_rejected_naming_field_and_value(string json, string field, string value)
    {
        var e = Assert.Throws<ConfigException>(() => MoeNotebooks.Config.Scenario.Parse(json));
        Assert.Equal(field, e.Field);
        Assert.Equal(value, e.Value);
    }

    [Fact]
    public void All_to_all_bytes_per_token_match_a_hand_count()
    {
        // Oracle (by hand): Qwen3-30B-A3B at EP 8 sends each token's 8 copies of H = 2048 bf16 elements off-rank with
        // probability 7/8, in 48 MoE layers, four times per step (dispatch, combine, and both again in the backward):
        // 48 x 8 x 2048 x 7/8 x 2 bytes x 4 = 5,505,024 bytes. EP 1 and dense models move nothing.
        var m = ModelPresets.Get("qwen3-30b-a3b");
        Assert.Equal(5_505_024, ModelSummary.AllToAllBytesPerToken(m, 8), 1e-6);
        Assert.Equal(0, ModelSummary.AllToAllBytesPerToken(m, 1));
        Assert.Equal(0, ModelSummary.AllToAllBytesPerToken(ModelPresets.Get("llama3-8b"), 8));
    }

    [Fact]
    public void A_misspelt_preset_gets_a_did_you_mean()
    {
        var e = Assert.Throws<ConfigException>(() => ModelPresets.Get("deepsek-v3"));
        Assert.Contains("did you mean \"deepseek-v3\"", e.Message);
    }

    [Fact]
    public void A_scenario_names_a_preset_and_overrides_fields()
    {
        // Oracle: the preset file's values, with the scenario's batch, sequence length and layers on top.
        var s = MoeNotebooks.Config.Scenario.Parse(Scenario("\"preset\": \"qwen3-30b-a3b\", \"batch\": 16, \"sequenceLength\": 2048, \"layers\": 4, \"precision\": \"fp8-delayed\""));
        Assert.Equal(ModelPresets.Get("qwen3-30b-a3b", 16, 2048) with { Layers = 4, Precision = PrecisionRecipe.Get("fp8-delayed") }, s.Model);
        Assert.Equal(4, s.Model.KeyValueHeads);
        Assert.Equal(128, s.Model.HeadDim);
    }
}

using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Hybrid models (Megatron's --hybrid-override-pattern): the Mamba-2 block, its tensor parallelism, parameters and validation.</summary>
public sealed class MambaTests
{
    /// <summary>
    /// A small hybrid: H 256, one Mamba-2 layer ('M': 8 heads of 32, d_inner 256, state 16, 2 groups, chunk 64) and one
    /// attention layer ('*'), dense (no MoE layer), 2 sequences of 256 tokens.
    /// </summary>
    private static ModelSpec Tiny(string pattern = "M*") => new ModelSpec("tiny-hybrid", pattern.Length, 256, 4, 512, 0, 1, 2, 256)
    {
        Causal = true, HybridOverridePattern = pattern, MambaStateDim = 16, MambaHeadDim = 32, MambaNumGroups = 2, MambaNumHeads = 8, MambaChunkSize = 64,
    }.Validated();

    private static int[] Ops(OperatorDag dag, OpKind kind, OpPhase? phase = OpPhase.Forward) =>
        Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == kind && (phase is null || dag.Phase(op) == phase)).ToArray();

    [Fact]
    public void Mamba_layer_operations_match_the_ssd_chunked_algorithm_by_hand()
    {
        // Oracle: the Mamba-2 paper's chunked SSD algorithm (Dao and Gu 2024, arXiv:2405.21060 §6) and Megatron-Core's
        // MambaMixer shapes, by hand. T = 2 x 256 = 512 tokens; chunks c = 2 sequences x 256 / 64 = 8.
        var dag = new StrategySpec(1, 1, 1, 1).BuildDag(Tiny());
        // in_proj [T, H] x [H, 2 d_inner + 2 G N + heads] = [512, 256] x [256, 512 + 64 + 8 = 584]; out_proj [512, 256] x [256, 256].
        Assert.Equal(new MatmulShape(512, 256, 584), dag.Shape(Ops(dag, OpKind.MambaInProjection).Single()));
        Assert.Equal(new MatmulShape(512, 256, 256), dag.Shape(Ops(dag, OpKind.MambaOutProjection).Single()));
        // Scan: C B^T [64, 16] x [16, 64] over c x G = 16; (L o CB^T) X [64, 64] x [64, 32] over c x heads = 64;
        // chunk states B^T X [16, 64] x [64, 32] over 64; state output C h [64, 16] x [16, 32] over 64.
        var scan = Ops(dag, OpKind.MambaChunkScan).Select(dag.Shape).ToArray();
        Assert.Equal(new MatmulShape[] { new(64, 16, 64, 16), new(64, 64, 32, 64), new(16, 64, 32, 64), new(64, 16, 32, 64) }, scan);
        // Scan FLOPs 2 T (Q N G + Q P heads + 2 N P heads) = 2 x 512 x (2048 + 16384 + 8192) = 27,262,976.
        Assert.Equal(27_262_976, Ops(dag, OpKind.MambaChunkScan).Sum(dag.Flops));
        Assert.Equal(27_262_976 / 512.0 / 2, ModelSummary.SsdScanFlopsPerToken(Tiny()) / 2);
        // Conv1d over x, B, C (256 + 2 x 2 x 16 = 320 channels): read and write T x 320 bf16 = 655,360 bytes.
        Assert.Equal(655_360, dag.Bytes(Ops(dag, OpKind.MambaConv).Single()));
        // Gated norm: read y and z, write the result, T x 256 each = 786,432 bytes.
        Assert.Equal(786_432, dag.Bytes(Ops(dag, OpKind.MambaGatedNorm).Single()));
        // State passing: fp32 states [heads 8, P 32, N 16] read and written per chunk (8 x 16,384 x 2 = 262,144) and
        // the per-token dt, dA cumulative sums (512 x 8 x 4 x 2 = 32,768).
        Assert.Equal(294_912, dag.Bytes(Ops(dag, OpKind.MambaStatePassing).Single()));
        // The attention layer is layer 1 alone; the Mamba layer has no attention product.
        Assert.All(Ops(dag, OpKind.AttentionScore), op => Assert.Equal(1, dag.Layer(op)));
        Assert.All(Ops(dag, OpKind.MambaChunkScan), op => Assert.Equal(0, dag.Layer(op)));
    }

    [Fact]
    public void The_backward_doubles_every_product_and_recompute_reruns_the_forward()
    {
        // Oracle: dX = dY W^T and dW = X^T dY each cost what the forward product costs (2x in all); full recomputation
        // reruns the forward products once.
        var st = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training, Recompute = true };
        var dag = st.BuildDag(Tiny());
        foreach (var kind in new[] { OpKind.MambaInProjection, OpKind.MambaOutProjection, OpKind.MambaChunkScan })
        {
            var forward = Ops(dag, kind).Sum(dag.Flops);
            Assert.Equal(forward, Ops(dag, kind, OpPhase.Recompute).Sum(dag.Flops));
            Assert.Equal(2 * forward, Ops(dag, kind, OpPhase.BackwardData).Sum(dag.Flops) + Ops(dag, kind, OpPhase.BackwardWeight).Sum(dag.Flops));
        }
    }

    [Fact]
    public void Tensor_parallelism_splits_a_mamba_layer_without_changing_its_sums()
    {
        // Oracle: an independent algorithm, TP = 1: Megatron-Core's MambaMixer splits heads, groups and d_inner over TP
        // (in_proj column-parallel, out_proj row-parallel), so the ranks' products and bytes sum to the unsplit layer's;
        // only TP = 2 adds the all-reduce after the out-projection (with the full [T, H] activation).
        var one = new StrategySpec(1, 1, 1, 1).BuildDag(Tiny("M"));
        var two = new StrategySpec(1, 2, 1, 1).BuildDag(Tiny("M"));
        foreach (var kind in new[] { OpKind.MambaInProjection, OpKind.MambaOutProjection, OpKind.MambaChunkScan })
            Assert.Equal(Ops(one, kind).Sum(one.Flops), Ops(two, kind).Sum(two.Flops));
        foreach (var kind in new[] { OpKind.MambaConv, OpKind.MambaGatedNorm, OpKind.MambaStatePassing })
            Assert.Equal(Ops(one, kind).Sum(one.Bytes), Ops(two, kind).Sum(two.Bytes));
        Assert.Empty(Ops(one, OpKind.AttentionAllReduce));
        var allReduce = Ops(two, OpKind.AttentionAllReduce).Single();
        Assert.Equal(512.0 * 256 * 2, two.Bytes(allReduce));
        Assert.Equal(2, Ops(two, OpKind.MambaInProjection).Length);
        Assert.Equal(new MatmulShape(512, 256, 292), two.Shape(Ops(two, OpKind.MambaInProjection)[0]));
        // Parameters split the same way: two ranks hold the unsplit layer's weights (less one copy of the replicated pre-norm).
        var m = Tiny("M");
        Assert.Equal(ParameterCounts.PerLayer(m, new StrategySpec(1, 1, 1, 1), 0).Total - 256,
            2 * (ParameterCounts.PerLayer(m, new StrategySpec(1, 2, 1, 1), 0).Total - 256));
    }

    [Fact]
    public void Mamba_layer_parameters_of_nemotron3_nano_by_hand()
    {
        // Oracle: Megatron-Core MambaMixer's parameters for the Nano config (H 2688, 64 heads of 64, state 128, 8 groups),
        // by hand: in_proj 2688 x (8192 + 2048 + 64) = 27,697,152; conv1d (4096 + 2048) x (4 + 1) = 30,720; A_log, D,
        // dt_bias 3 x 64 = 192; gated norm 4096; out_proj 4096 x 2688 = 11,010,048; the layer's pre-norm 2688.
        var m = ModelPresets.Get("nemotron3-nano", batch: 1);
        Assert.Equal(HybridLayerKind.Mamba, m.LayerKindOf(0));
        Assert.Equal(27_697_152 + 30_720 + 192 + 4096 + 11_010_048 + 2688, ParameterCounts.PerLayer(m, new StrategySpec(1, 1, 1, 1), 0).Total);
        // The pattern: 23 Mamba, 23 MoE, 6 attention layers (Megatron-Bridge docs: "23 Mamba-2 and MoE layers, along with 6 Attention layers").
        Assert.Equal((23, 23, 6), (m.CountLayers(HybridLayerKind.Mamba), m.CountLayers(HybridLayerKind.Moe), m.CountLayers(HybridLayerKind.Attention)));
    }

    [Fact]
    public void Training_flops_per_token_of_a_hybrid_are_6N_plus_attention_plus_the_ssd_scan()
    {
        // Oracle: a hand count from the Nano config, independent of ParameterCounts: 3 x (2 x GEMM parameters a token
        // touches + attention products + the SSD scan), here for the four layers "ME*E" at s = 1024.
        const double H = 2688, V = 131072, S = 1024;
        var m = ModelPresets.Get("nemotron3-nano", 1, (long)S) with { Layers = 4, HybridOverridePattern = "ME*E" };
        var mamba = H * (2 * 4096 + 2 * 8 * 128 + 64) + 4096 * H;
        var moe = H * 128 + 6 * 2 * H * 1856 + 2 * H * 3712;                 // router, top-6 squared-ReLU experts, the shared expert
        var attention = H * 32 * 128 + 2 * H * 2 * 128 + 32 * 128 * H;       // Q, K, V (2 KV heads), O
        var keys = Math.Ceiling(S * (S + 1) / 2 / S);                          // causal: 513 keys per query on average
        var core = 2 * 32 * (128 + 128) * keys;
        var scan = 2 * (128 * 128 * 8 + 128 * 64 * 64 + 2 * 128 * 64 * 64);   // Q N G + Q P heads + 2 N P heads, Q = 128
        var expected = 3 * (2 * (mamba + 2 * moe + attention + V * H) + core + scan);
        var dag = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training }.BuildDag(m);
        Assert.Equal(expected, Enumerable.Range(0, dag.Count).Sum(dag.Flops) / m.Tokens, expected * 1e-9);
        Assert.Equal(expected, ModelSummary.TrainingFlopsPerToken(m).Total, expected * 1e-9);
    }

    [Fact]
    public void A_latent_moe_runs_its_experts_and_all_to_all_in_the_latent_width()
    {
        // Oracle (by hand, Megatron --moe-latent-size): tokens are projected [T, H] x [H, L] before the dispatch and
        // back after the combine; experts are [m, L] x [L, F] and [m, F] x [F, L]; the all-to-all moves L-wide tokens.
        var m = new ModelSpec("latent", 2, 512, 4, 256, 8, 2, 4, 128) { HybridOverridePattern = "*E", MoeLatentSize = 128, FfnActivation = FfnActivation.SquaredRelu }.Validated();
        var dag = new StrategySpec(2, 1, 1, 1).BuildDag(m);
        var t = 4 * 128 / 2;   // tokens per EP rank
        Assert.All(Ops(dag, OpKind.MoeLatentDown), op => Assert.Equal(new MatmulShape(t, 512, 128), dag.Shape(op)));
        Assert.All(Ops(dag, OpKind.MoeLatentUp), op => Assert.Equal(new MatmulShape(t, 128, 512), dag.Shape(op)));
        Assert.All(Ops(dag, OpKind.ExpertUp), op => Assert.Equal(128, dag.Shape(op).K));
        Assert.All(Ops(dag, OpKind.ExpertDown), op => Assert.Equal(128, dag.Shape(op).N));
        // Uniform routing: each rank sends its t x 2 copies, L x 2 bytes each.
        Assert.All(Ops(dag, OpKind.AllToAllDispatch), op => Assert.Equal(t * 2 * 128.0 * 2, dag.Bytes(op)));
    }

    private static string Scenario(string model, string strategy = "\"ep\": 1", int gpus = 1) => $$"""
        { "model": { {{model}} }, "hardware": { "preset": "H100-SXM", "gpus": {{gpus}} }, "strategy": { {{strategy}} } }
        """;

    private const string Hybrid = "\"layers\": 4, \"hiddenSize\": 1024, \"attentionHeads\": 8, \"ffnHiddenSize\": 4096, \"experts\": 8, \"topK\": 2, \"batch\": 64, \"sequenceLength\": 256, \"mambaNumHeads\": 8, \"mambaHeadDim\": 64";

    public static TheoryData<string, string, string> BadHybrids => new()
    {
        // Oracle for each: the rule it breaks (Megatron-LM's pattern symbols and MambaMixer's asserts); the message names field and value.
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*E\""), "model.hybridOverridePattern", "\"M*E\" (3 symbols)" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*EX\""), "model.hybridOverridePattern[3]", "'X'" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*EM\", \"mambaNumGroups\": 3"), "model.mambaNumGroups", "3" },
        { Scenario(Hybrid.Replace(", \"mambaNumHeads\": 8, \"mambaHeadDim\": 64", "") + ", \"mambaStateDim\": 16"), "model.mambaStateDim", "16" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*EM\", \"mambaChunkSize\": 0"), "model.mambaChunkSize", "0" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*EM\", \"mambaStateDim\": -5"), "model.mambaStateDim", "-5" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*EM\", \"mambaNumGroups\": 2", "\"tp\": 4", 4), "model.mambaNumGroups", "2" },
        { Scenario(Hybrid.Replace("\"mambaNumHeads\": 8", "\"mambaNumHeads\": 6") + ", \"hybridOverridePattern\": \"M*EM\", \"mambaNumGroups\": 2", "\"tp\": 4", 4), "model.mambaNumHeads", "6" },
        { Scenario(Hybrid.Replace("\"experts\": 8, \"topK\": 2", "\"experts\": 0") + ", \"hybridOverridePattern\": \"M*EM\""), "model.hybridOverridePattern", "\"M*EM\"" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*-M\""), "model.experts", "8" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*EM\", \"denseLayers\": 1"), "model.denseLayers", "1" },
        { Scenario(Hybrid.Replace("\"experts\": 8, \"topK\": 2", "\"experts\": 0").Replace(", \"mambaNumHeads\": 8, \"mambaHeadDim\": 64", "") + ", \"moeLatentSize\": 64"), "model.moeLatentSize", "64" },
        { Scenario(Hybrid + ", \"hybridOverridePattern\": \"M*EM\", \"moeLatentSize\": 0"), "model.moeLatentSize", "0" },
    };

    [Theory]
    [MemberData(nameof(BadHybrids))]
    public void Bad_hybrid_values_are_rejected_naming_field_and_value(string json, string field, string value)
    {
        var e = Assert.Throws<ConfigException>(() => MoeNotebooks.Config.Scenario.Parse(json));
        Assert.Equal(field, e.Field);
        Assert.Equal(value, e.Value);
    }

    [Fact]
    public void The_nemotron_scenario_evaluates_with_its_mamba_operations()
    {
        // Oracle: the scenario file names the Nano preset (23 Mamba layers); its DAG holds one in-projection per Mamba
        // layer, microbatch and rank in the forward (23 x 4 x 8) and the conv, scan and gated-norm passes beside them.
        var scenario = MoeNotebooks.Config.Scenario.Load(TestPaths.Scenario("nemotron3-nano-ep8-training"));
        var dag = scenario.Strategy.BuildDag(scenario.Model);
        Assert.Equal(23 * 4 * 8, Ops(dag, OpKind.MambaInProjection).Length);
        Assert.Equal(23 * 4 * 8, Ops(dag, OpKind.MambaConv).Length);
        Assert.Equal(4 * 23 * 4 * 8, Ops(dag, OpKind.MambaChunkScan).Length);
        var total = dag.CriticalPath(scenario.CreateCostModel()).TotalSeconds;
        Assert.True(total > 0 && double.IsFinite(total));
    }
}

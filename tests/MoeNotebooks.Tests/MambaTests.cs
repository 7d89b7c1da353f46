using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
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
        // The SSD kernels' products, in mamba_ssm's order (_chunk_state_fwd, _bmm_chunk_fwd, _chunk_scan_fwd): chunk
        // states B^T X [16, 64] x [64, 32] over c x heads = 64; C B^T [64, 16] x [16, 64] over c x G = 16; the chunk scan
        // accumulates C h and (L o CB^T) X into one tile, [64, 16 + 64] x [16 + 64, 32] over 64.
        var scan = Ops(dag, OpKind.MambaChunkScan).Select(dag.Shape).ToArray();
        Assert.Equal(new MatmulShape[] { new(16, 64, 32, 64), new(64, 16, 64, 16), new(64, 80, 32, 64) }, scan);
        // Scan FLOPs 2 T (Q N G + Q P heads + 2 N P heads) = 2 x 512 x (2048 + 16384 + 8192) = 27,262,976.
        Assert.Equal(27_262_976, Ops(dag, OpKind.MambaChunkScan).Sum(dag.Flops));
        Assert.Equal(27_262_976 / 512.0 / 2, ModelSummary.SsdScanFlopsPerToken(Tiny()) / 2);
        // HBM bytes of each kernel, by hand (bf16 E = 2, fp32 4; X = T x 256 = 131,072, B or C = T x G N = 16,384,
        // states S = c heads P N = 32,768, CB = c G Q^2 = 65,536, dt per token and head 4,096; two sequences per rank,
        // so MambaMixer's layout copies run):
        // conv: copy zxBCdt (2 x 512 x 584 x 2 = 1,196,032) + read and write xBC (2 x 512 x 320 x 2 = 655,360).
        Assert.Equal(1_851_392, dag.Bytes(Ops(dag, OpKind.MambaConv).Single()));
        // chunk state: cumsum (dt 8,192 + dt, dA fp32 32,768) + x 262,144 + B 32,768 + dt, dA 32,768 + states fp32 131,072.
        // bmm: read C, B (65,536) + write CB fp32 (262,144). chunk scan: CB 262,144 + x 262,144 + C 32,768 + states bf16
        // 65,536 + dt, dA 32,768 + y 262,144.
        Assert.Equal(new[] { 499_712.0, 327_680, 917_504 }, Ops(dag, OpKind.MambaChunkScan).Select(dag.Bytes).ToArray());
        // Gated norm: read y and z, write the result (3 x 262,144) + the output layout copy (2 x 262,144).
        Assert.Equal(1_310_720, dag.Bytes(Ops(dag, OpKind.MambaGatedNorm).Single()));
        // State passing: read the fp32 states, write them in bf16: 32,768 x (4 + 2).
        Assert.Equal(196_608, dag.Bytes(Ops(dag, OpKind.MambaStatePassing).Single()));
        // The attention layer is layer 1 alone; the Mamba layer has no attention product.
        Assert.All(Ops(dag, OpKind.AttentionScore), op => Assert.Equal(1, dag.Layer(op)));
        Assert.All(Ops(dag, OpKind.MambaChunkScan), op => Assert.Equal(0, dag.Layer(op)));
    }

    [Fact]
    public void The_backward_doubles_every_projection_and_recompute_reruns_the_forward()
    {
        // Oracle: dX = dY W^T and dW = X^T dY each cost what the forward product costs (2x in all); full recomputation
        // reruns the forward products once.
        var st = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training, Recompute = true };
        var dag = st.BuildDag(Tiny());
        foreach (var kind in new[] { OpKind.MambaInProjection, OpKind.MambaOutProjection, OpKind.MambaChunkScan })
            Assert.Equal(Ops(dag, kind).Sum(dag.Flops), Ops(dag, kind, OpPhase.Recompute).Sum(dag.Flops));
        foreach (var kind in new[] { OpKind.MambaInProjection, OpKind.MambaOutProjection })
            Assert.Equal(2 * Ops(dag, kind).Sum(dag.Flops), Ops(dag, kind, OpPhase.BackwardData).Sum(dag.Flops) + Ops(dag, kind, OpPhase.BackwardWeight).Sum(dag.Flops));
    }

    [Fact]
    public void The_ssd_backward_runs_mamba_ssm_kernels_by_hand()
    {
        // Oracle: mamba_ssm's _mamba_chunk_scan_combined_bwd (ssd_combined.py), kernel by kernel, by hand for the tiny
        // layer (Q 64, N 16, P 32, c 8, G 2, heads 8). Products: CB and the chunk states recomputed (2,097,152 +
        // 4,194,304), dstates = dout^T C (4,194,304), dx over the forward scan's tile (20,971,520), dB = x dstates^T and
        // dC = dout states^T (4,194,304 each), dCB = dout x^T (2 x 64 x 32 x 64 x 64 = 16,777,216), the two
        // _bmm_chunk_bwd (2 x 64 x 64 x 16 x 32 = 4,194,304), ddA from (dout x^T) o CB (16,777,216): 77,594,624 FLOPs,
        // no weight gradient.
        var dag = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training }.BuildDag(Tiny());
        Assert.Equal(77_594_624, Ops(dag, OpKind.MambaChunkScan, OpPhase.BackwardData).Sum(dag.Flops));
        Assert.Empty(Ops(dag, OpKind.MambaChunkScan, OpPhase.BackwardWeight));
        // Bytes of the backward's kernels by hand (see the forward test for the element counts): gated norm backward
        // (dy layout copy 524,288 + read dy, y, z and write dy, dz 1,310,720), conv recomputed (655,360) and backward
        // (read xBC, dxBC_conv, write dxBC 983,040 + the dzxBCdt layout copy 1,196,032), state passing recomputed in
        // fp32 (cumsum 40,960 + 2 x 131,072) and backward (read states, dstates fp32 262,144, write both bf16 131,072).
        Assert.Equal(1_835_008, dag.Bytes(Ops(dag, OpKind.MambaGatedNorm, OpPhase.BackwardData).Single()));
        Assert.Equal(new[] { 655_360.0, 2_179_072 }, Ops(dag, OpKind.MambaConv, OpPhase.BackwardData).Select(dag.Bytes).ToArray());
        Assert.Equal(new[] { 303_104.0, 393_216 }, Ops(dag, OpKind.MambaStatePassing, OpPhase.BackwardData).Select(dag.Bytes).ToArray());
        // The SSD kernels: bmm and chunk state recomputed (327,680, 499,712); dstates (C 32,768 + dout 262,144 + dA
        // 16,384 + dstates fp32 131,072); dx (x, dout, dx 786,432 + CB 262,144 + dt, dA 32,768 + B 32,768 + dstates
        // 65,536 + ddt 16,384); dB (x 262,144 + dstates 65,536 + dt, dA 32,768 + B, dB 65,536 + ddA 16,384); dC (states
        // 65,536 + dout 262,144 + dA 16,384 + C, dC 65,536 + ddA 16,384); dCB (x, dout 524,288 + dt, dA 32,768 + dCB
        // 262,144); the two bmm backward (2 x (3 x 32,768 + 262,144)); ddA (x, dout 524,288 + dt, dA 32,768 + CB
        // 262,144 + ddA and the cumsum backward 16,384 + 16,384 + 16,384).
        Assert.Equal(new[] { 327_680.0, 499_712, 442_368, 1_196_032, 442_368, 425_984, 819_200, 720_896, 868_352 },
            Ops(dag, OpKind.MambaChunkScan, OpPhase.BackwardData).Select(dag.Bytes).ToArray());
    }

    [Fact]
    public void A_fused_ssd_kernel_costs_the_slower_of_its_products_and_its_bytes()
    {
        // Oracle: the definition of a fused kernel's price, max(products by shape, bytes / HBM), checked against the
        // cost model's own two terms for every SSD kernel of the tiny layer.
        var dag = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training }.BuildDag(Tiny());
        var h100 = HardwareCatalog.Get("H100-SXM").WithGpus(1);
        var cost = new CostModel("tile-wave", new TileWaveCompute(h100.Gpu, TileWaveTable.Get("hopper")), new LinkCommunication(h100));
        foreach (var op in Ops(dag, OpKind.MambaChunkScan, null))
        {
            var products = cost.Compute.MatmulSeconds(dag.Shape(op), dag.MatmulDtype(op), (int)dag.MatmulOperandBytes(op));
            Assert.Equal(Math.Max(products, cost.Compute.ElementwiseSeconds(dag.KernelBytes(op))), cost.Seconds(dag, op));
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
        Assert.Equal(expected, ModelSummary.TrainingFlopsPerToken(m).Total, expected * 1e-9);
        // The DAG runs the SSD backward as mamba_ssm's kernels (see The_ssd_backward_runs_mamba_ssm_kernels_by_hand):
        // per token 2 (3 Q N G + 5 N P heads + 3 Q P heads), CB and the chunk states recomputed, not 2x the forward.
        var ssdBackward = 2.0 * (3 * 128 * 128 * 8 + 5 * 128 * 64 * 64 + 3 * 128 * 64 * 64);
        var executed = expected - 2 * scan + ssdBackward;
        var dag = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training }.BuildDag(m);
        Assert.Equal(executed, Enumerable.Range(0, dag.Count).Sum(dag.Flops) / m.Tokens, executed * 1e-9);
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
        Assert.Equal(3 * 23 * 4 * 8, Ops(dag, OpKind.MambaChunkScan).Length);   // chunk state, bmm, chunk scan
        var total = dag.CriticalPath(scenario.CreateCostModel()).TotalSeconds;
        Assert.True(total > 0 && double.IsFinite(total));
    }
}

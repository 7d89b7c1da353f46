using System.Text.Json;
using MoeNotebooks.Analysis;
using MoeNotebooks.Costs;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// Megatron-Core's selective recomputation (<c>--recompute-granularity selective --recompute-modules</c>,
/// <see cref="StrategySpec.RecomputeModules"/>): the DAG's recompute work per module, the memory it saves, the
/// Megatron flags both ways and the refusals.
/// </summary>
public sealed class SelectiveRecomputeTests
{
    private static StrategySpec Training(int ep = 1, int tp = 1) => new(ep, tp, 1, 1, Microbatches: 2) { Mode = WorkloadMode.Training };

    private static Dictionary<OpKind, double> RecomputeFlopsByKind(OperatorDag dag) =>
        Enumerable.Range(0, dag.Count).Where(op => dag.Phase(op) == OpPhase.Recompute && dag.Kind(op).IsMatmulShaped())
            .GroupBy(dag.Kind).ToDictionary(g => g.Key, g => g.Sum(dag.Flops));

    private static double RecomputeBytes(OperatorDag dag, Func<OpKind, bool> kind) =>
        Enumerable.Range(0, dag.Count).Where(op => dag.Phase(op) == OpPhase.Recompute && kind(dag.Kind(op))).Sum(dag.Bytes);

    [Fact]
    public void Core_attention_and_moe_recompute_what_full_recompute_reruns_without_the_projections()
    {
        // Oracle: the full-recomputation DAG, emitted by another path (each layer's whole forward rerun before its
        // backward). core_attn + moe must rerun exactly its score and value products, gate and expert GEMMs (FLOPs per
        // kind) and its all-to-all bytes, and none of its attention projections.
        var m = ModelPresets.Get("qwen3-30b-a3b", batch: 4) with { Layers = 2 };
        var full = Training(ep: 2) with { Recompute = true };
        var selective = Training(ep: 2) with { RecomputeModules = RecomputeModules.CoreAttn | RecomputeModules.Moe };
        var f = RecomputeFlopsByKind(full.BuildDag(m));
        var s = RecomputeFlopsByKind(selective.BuildDag(m));
        foreach (var kind in new[] { OpKind.AttentionScore, OpKind.AttentionValue, OpKind.Gate, OpKind.ExpertUp, OpKind.ExpertDown })
        {
            Assert.True(f[kind] > 0, $"{kind} absent from the full recompute");
            Assert.Equal(f[kind], s[kind], f[kind] * 1e-12);
        }
        foreach (var kind in new[] { OpKind.QProjection, OpKind.KProjection, OpKind.VProjection, OpKind.OutputProjection })
        {
            Assert.True(f[kind] > 0);
            Assert.False(s.ContainsKey(kind), $"{kind} recomputed selectively");
        }
        static bool AllToAll(OpKind k) => k is OpKind.AllToAllDispatch or OpKind.AllToAllCombine;
        var a2a = RecomputeBytes(full.BuildDag(m), AllToAll);
        Assert.True(a2a > 0);
        Assert.Equal(a2a, RecomputeBytes(selective.BuildDag(m), AllToAll), a2a * 1e-12);
    }

    [Fact]
    public void Moe_act_and_layernorm_rerun_the_activation_and_the_norms_by_hand_count()
    {
        // Oracle: hand count. GPT-OSS cut to 2 layers, one sequence of 4096 tokens per microbatch, 2 microbatches, top-4
        // of 128 experts, uniform routing: 4096 x 4 / 128 = 128 tokens per expert, f = 2880, bf16. moe_act reruns per
        // expert the clamp passes (8 x 128 x 2880 x 2 B = 5,898,240 B) and the GLU (reads [128, 5760], writes [128, 2880]:
        // 3 x 128 x 2880 x 2 B = 2,211,840 B); layernorm reruns two norms per layer (read + write [4096, 2880] x 2 B =
        // 47,185,920 B each). Per layer and microbatch: 128 x 8,110,080 + 2 x 47,185,920 B.
        var m = ModelPresets.Get("gpt-oss-120b", batch: 2) with { Layers = 2 };
        var dag = (Training() with { RecomputeModules = RecomputeModules.MoeAct | RecomputeModules.Layernorm }).BuildDag(m);
        var bytes = RecomputeBytes(dag, k => k == OpKind.Elementwise);
        Assert.Equal(2 * 2 * (128 * 8_110_080.0 + 2 * 47_185_920.0), bytes);
        Assert.Empty(RecomputeFlopsByKind(dag));   // no GEMM reruns
    }

    [Fact]
    public void Mla_up_proj_reruns_the_two_up_projections()
    {
        // Oracle: hand count of DeepSeek-V3's up-projections, q_up [T, 1536] x [1536, 128 x 192] and kv_up [T, 512] x
        // [512, 128 x (128 + 128)], 2 T K N FLOPs each, on every one of the 8 EP ranks (data-parallel attention, T the
        // rank's tokens per microbatch), 2 layers, 2 microbatches.
        var m = ModelPresets.Get("deepseek-v3", batch: 16) with { Layers = 2, DenseLayers = 0, MtpLayers = 0 };
        var dag = (Training(ep: 8) with { RecomputeModules = RecomputeModules.MlaUpProj }).BuildDag(m);
        var flops = RecomputeFlopsByKind(dag);
        double t = RoutingOutcome.AttentionTokensPerRank(m, Training(ep: 8));
        Assert.Equal(4096, t);   // 16 sequences of 4096 over 8 ranks and 2 microbatches: one each
        var perRankLayerMb = 2 * t * 1536 * (128 * 192) + 2 * t * 512 * (128 * 256);
        Assert.Equal(2 * 2 * 8 * perRankLayerMb, flops[OpKind.QUpProjection] + flops[OpKind.KvUpProjection], 1.0);
        Assert.Equal(new HashSet<OpKind> { OpKind.QUpProjection, OpKind.KvUpProjection }, flops.Keys.ToHashSet());
    }

    [Fact]
    public void Selective_recompute_costs_time_between_none_and_full_and_saves_memory()
    {
        // Oracle: ordering (each listed module adds work the full recompute also does; full reruns projections too) and
        // the memory model's hand count for moe_act: with one stage the peak holds the in-flight microbatch's layers, so
        // dropping the experts' [routed tokens, f] activation output saves it on each of the 2 layers, less the one
        // layer's output the backward brings back while it runs: (2 - 1) x (4096 x 4) x 2880 x 2 B at one sequence
        // per microbatch.
        var m = ModelPresets.Get("gpt-oss-120b", batch: 2) with { Layers = 2 };
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(1);
        var cost = CostModel.RooflineIdeal(hw);
        double Seconds(StrategySpec st) => st.BuildDag(m).CriticalPath(cost).TotalSeconds;
        var none = Seconds(Training());
        var some = Seconds(Training() with { RecomputeModules = RecomputeModules.MoeAct | RecomputeModules.Layernorm | RecomputeModules.CoreAttn });
        var full = Seconds(Training() with { Recompute = true });
        Assert.True(none < some && some < full, $"{none} < {some} < {full}");
        var saved = MemoryModel.Estimate(m, Training(), hw).PeakBytesPerGpu - MemoryModel.Estimate(m, Training() with { RecomputeModules = RecomputeModules.MoeAct }, hw).PeakBytesPerGpu;
        Assert.Equal(1.0 * 4096 * 4 * 2880 * 2, saved, 1.0);
    }

    [Fact]
    public void Search_tries_each_recompute_setting_once_per_layout()
    {
        // Oracle: counting. Full recomputation, none and moe_act are three settings per layout; full carries no modules;
        // modules alone do not add full recomputation.
        var plain = StrategySearch.Candidates(8, [2], Training(), recompute: [false]);
        var all = StrategySearch.Candidates(8, [2], Training(), recompute: [false, true], recomputeModules: [RecomputeModules.None, RecomputeModules.MoeAct]);
        Assert.Equal(3 * plain.Count, all.Count);
        Assert.All(all.Where(s => s.Recompute), s => Assert.Equal(RecomputeModules.None, s.RecomputeModules));
        Assert.Equal(plain.Count, all.Count(s => s.RecomputeModules == RecomputeModules.MoeAct));
        Assert.DoesNotContain(StrategySearch.Candidates(8, [2], Training(), recomputeModules: [RecomputeModules.MoeAct]), s => s.Recompute);
    }

    [Fact]
    public void Megatron_flags_import_and_export_the_module_list()
    {
        // Oracle: Megatron-LM's arguments: --recompute-granularity selective with --recompute-modules (nargs '*'),
        // defaulting to ["core_attn"].
        var command = MegatronImportTests.Qwen3Moe + " --recompute-granularity selective --recompute-modules layernorm moe_act";
        var r = MegatronImport.Parse(command);
        Assert.Equal(RecomputeModules.Layernorm | RecomputeModules.MoeAct, r.Strategy.RecomputeModules);
        Assert.Empty(r.Unknown);
        Assert.DoesNotContain(r.NotModelled, n => n.Flag == "--recompute-granularity");
        Assert.Contains("--recompute-granularity selective --recompute-modules layernorm moe_act", MegatronImportResult.ToMegatronFlags(r.Strategy, r.Model, r.Gpus));
        Assert.Equal(RecomputeModules.CoreAttn, MegatronImport.Parse(MegatronImportTests.Qwen3Moe + " --recompute-granularity selective").Strategy.RecomputeModules);
        var bad = Assert.Throws<ConfigException>(() => MegatronImport.Parse(MegatronImportTests.Qwen3Moe + " --recompute-granularity selective --recompute-modules mlp attn"));
        Assert.Contains("--recompute-modules[1] = \"attn\"", bad.Message);
    }

    [Theory]
    [InlineData("""{ "recompute": true, "recomputeModules": ["moe_act"] }""", "cannot be combined with \"recompute\": true")]
    [InlineData("""{ "recomputeModules": ["moe_act", "attn"] }""", "strategy.recomputeModules[1] = \"attn\": is not a recompute module; valid: core_attn, mla_up_proj, layernorm, moe_act, shared_experts, mlp, moe")]
    [InlineData("""{ "recomputeModules": "moe_act" }""", "strategy.recomputeModules = \"moe_act\": must be an array of module names")]
    [InlineData("""{ "recomputeModules": [1] }""", "strategy.recomputeModules[0] = 1: must be a module name")]
    public void Bad_module_lists_are_refused_with_one_line(string json, string expected)
    {
        using var doc = JsonDocument.Parse(json);
        var e = Assert.Throws<ConfigException>(() => StrategySpec.Read(new JsonObjectReader(doc.RootElement, "strategy", null)));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Scenario_json_round_trips_the_module_list()
    {
        // Oracle: the round trip (StrategySpec.ToJson read back by StrategySpec.Read equals the strategy).
        var st = Training() with { RecomputeModules = RecomputeModules.Moe | RecomputeModules.Layernorm };
        using var doc = JsonDocument.Parse(st.ToJson().ToJsonString());
        Assert.Equal(st, StrategySpec.Read(new JsonObjectReader(doc.RootElement, "strategy", null)));
        Assert.Contains("recompute layernorm moe", st.ToString());
    }

    [Fact]
    public void Command_line_sets_read_and_print_as_megatron_lists_them()
    {
        // Oracle: Megatron's module strings (TransformerConfig.recompute_modules) and its command line's
        // space-separated list; a value outside the seven modules is not a set of them.
        Assert.Equal(RecomputeModules.Layernorm | RecomputeModules.MoeAct, RecomputeModulesText.ParseSet("f", "layernorm+moe_act"));
        Assert.Equal(RecomputeModules.Layernorm | RecomputeModules.MoeAct, RecomputeModulesText.ParseSet("f", "moe_act, layernorm"));
        Assert.Equal(RecomputeModules.None, RecomputeModulesText.ParseSet("f", "none"));
        Assert.Equal("layernorm moe_act", (RecomputeModules.MoeAct | RecomputeModules.Layernorm).ToText());
        Assert.Equal("none", RecomputeModules.None.ToText());
        Assert.Equal(7, RecomputeModulesText.All.MegatronNames().Count);
        var e = Assert.Throws<ConfigException>(() => (Training() with { RecomputeModules = (RecomputeModules)128 }).Validated());
        Assert.Contains("must combine only Megatron's modules", e.Message);
    }

    [Fact]
    public void Shipped_deepseek_v3_with_selective_recomputation_fits_where_the_published_bf16_layout_does_not()
    {
        // Oracle: the published scenario (same model, hardware and layout; the files differ only in recomputeModules) and
        // the memory model's verdicts: 122.9 GB per GPU as published in BF16, 76.4 GB with layernorm, mla_up_proj, moe_act.
        var published = Scenario.Load(TestPaths.Scenario("deepseek-v3"));
        var recompute = Scenario.Load(TestPaths.Scenario("deepseek-v3-recompute"));
        Assert.Equal(RecomputeModules.Layernorm | RecomputeModules.MlaUpProj | RecomputeModules.MoeAct, recompute.Strategy.RecomputeModules);
        Assert.Equal(published.Strategy with { RecomputeModules = recompute.Strategy.RecomputeModules }, recompute.Strategy);
        Assert.Equal(published.Model, recompute.Model);
        Assert.Equal(published.Hardware, recompute.Hardware);
        Assert.False(MemoryModel.Estimate(published.Model, published.Strategy, published.Hardware).Feasible);
        Assert.True(MemoryModel.Estimate(recompute.Model, recompute.Strategy, recompute.Hardware).Feasible);
    }
}

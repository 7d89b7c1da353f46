using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// GPT-OSS's clamped GLU (Megatron-Core <c>activation_func_clamp_value</c>): the unfused clamp passes ahead of the fused
/// activation kernel, priced as memory-bound work in the FFN chain, and the field's validation.
/// </summary>
public sealed class ActivationClampTests
{
    private static int[] ClampOps(OperatorDag dag, int layer, OpPhase phase) =>
        Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.Elementwise && dag.Index(op) == OpKindExtensions.ActivationClampRole
            && dag.Layer(op) == layer && dag.Phase(op) == phase).ToArray();

    [Fact]
    public void Gpt_oss_experts_pay_the_clamp_passes_megatron_core_runs_unfused()
    {
        // Oracle: hand count from megatron/core/fusions/fused_bias_geglu.py weighted_bias_quick_geglu_impl (chunk, two
        // clamps, torch.cat before the fused kernel). One sequence of 4096 tokens, top-4 of 128 experts, uniform routing:
        // 4096 x 4 / 128 = 128 tokens per expert; f = 2880; bf16 (2 bytes).
        // Forward: clamp of each [128, 2880] half read + written (4 x 128 x 2880), cat of [128, 5760] read + written
        // (4 x 128 x 2880): 8 x 128 x 2880 x 2 B = 5,898,240 B per expert.
        // Backward: two clamp backwards read gradient and saved input, write the gradient (6 x 128 x 2880), the chunk's
        // backward joins the halves (4 x 128 x 2880): 10 x 128 x 2880 x 2 B = 7,372,800 B per expert.
        var m = ModelPresets.Get("gpt-oss-120b", batch: 1) with { Layers = 2 };
        Assert.Equal(7.0, m.ActivationClampValue);
        var dag = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training }.BuildDag(m);
        foreach (var layer in new[] { 0, 1 })
        {
            // One pass per expert (experts with equal tokens are one repeated pass, OperatorDag.Repeat).
            var forward = ClampOps(dag, layer, OpPhase.Forward);
            Assert.Equal(128, forward.Sum(dag.Repeat));
            Assert.All(forward, op => Assert.Equal(5_898_240.0 * dag.Repeat(op), dag.Bytes(op)));
            var backward = ClampOps(dag, layer, OpPhase.BackwardData);
            Assert.Equal(128, backward.Sum(dag.Repeat));
            Assert.All(backward, op => Assert.Equal(7_372_800.0 * dag.Repeat(op), dag.Bytes(op)));
        }
        // Each clamp sits between the expert's up projection and its activation (forward), after the activation's
        // backward and before the up projection's backward (backward).
        var f0 = ClampOps(dag, 1, OpPhase.Forward)[0];
        Assert.Equal(OpKind.ExpertUp, dag.Kind(dag.Predecessors(f0)[0]));
    }

    [Fact]
    public void Without_a_clamp_the_ffn_chain_is_unchanged()
    {
        // Oracle: the same DAG with the clamp taken out has exactly the clamp operations fewer and the same bytes
        // otherwise (the clamp adds operations and nothing else).
        var m = ModelPresets.Get("gpt-oss-120b", batch: 1) with { Layers = 2 };
        var st = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        var with = st.BuildDag(m);
        var without = st.BuildDag(m with { ActivationClampValue = null });
        var clampOps = Enumerable.Range(0, with.Count).Where(op => with.Kind(op) == OpKind.Elementwise && with.Index(op) == OpKindExtensions.ActivationClampRole).ToArray();
        Assert.Equal(2 * 2 * 128, clampOps.Sum(with.Repeat));   // passes (a run of experts with equal tokens is one repeated pass)
        Assert.Equal(without.Count + clampOps.Length, with.Count);
        double Total(OperatorDag d) => Enumerable.Range(0, d.Count).Where(op => d.Category(op) == OpCategory.Elementwise).Sum(d.Bytes);
        Assert.Equal(Total(without) + clampOps.Sum(with.Bytes), Total(with), 1e-6);
        Assert.DoesNotContain(Enumerable.Range(0, without.Count), op => without.Kind(op) == OpKind.Elementwise && without.Index(op) == OpKindExtensions.ActivationClampRole);
    }

    [Fact]
    public void A_fused_grouped_mlp_clamps_inside_its_kernels()
    {
        // Oracle: Megatron-Bridge's cutedsl_fused_grouped_mlp runs the routed experts' GLU (clamp included) inside the
        // CuTe DSL grouped-GEMM kernels: no clamp operation is left for the routed experts; everything else is the same
        // DAG as without the clamp.
        var m = ModelPresets.Get("gpt-oss-120b", batch: 1) with { Layers = 2 };
        var st = new StrategySpec(1, 1, 1, 1) { Mode = WorkloadMode.Training };
        var fused = (st with { CutedslFusedGroupedMlp = true }).BuildDag(m);
        Assert.DoesNotContain(Enumerable.Range(0, fused.Count), op => fused.Kind(op) == OpKind.Elementwise && fused.Index(op) == OpKindExtensions.ActivationClampRole);
        Assert.Equal(st.BuildDag(m with { ActivationClampValue = null }).Count, fused.Count);
    }

    [Fact]
    public void The_fused_grouped_mlp_flag_round_trips_and_defaults_off()
    {
        // Oracle: the description itself: written, read back, equal; absent in JSON = false (Megatron-Bridge's default).
        var st = new StrategySpec(8, 1, 1, 1) { CutedslFusedGroupedMlp = true };
        var json = st.ToJson().ToJsonString();
        Assert.Contains("\"cutedslFusedGroupedMlp\": true", json.Replace(":true", ": true"));
        using var doc = JsonObjectReader.Parse(json, null);
        Assert.Equal(st, StrategySpec.Read(new JsonObjectReader(doc.RootElement, "strategy", null)));
        using var plain = JsonObjectReader.Parse("""{ "ep": 8 }""", null);
        Assert.False(StrategySpec.Read(new JsonObjectReader(plain.RootElement, "strategy", null)).CutedslFusedGroupedMlp);
    }

    [Theory]
    [InlineData(0.0, "positive")]
    [InlineData(-7.0, "positive")]
    public void A_clamp_that_is_not_positive_is_refused(double value, string says)
    {
        // Oracle: Megatron-Core clamps to [-c, c]; c <= 0 is no clamp at all. The error names the field and the value.
        var json = $$"""
            { "model": { "preset": "gpt-oss-120b", "layers": 2, "batch": 8, "activationClampValue": {{value.ToString(System.Globalization.CultureInfo.InvariantCulture)}} },
              "hardware": { "preset": "H100-SXM", "gpus": 8 }, "strategy": { "ep": 8 } }
            """;
        var e = Assert.Throws<ConfigException>(() => Scenario.Parse(json));
        Assert.Equal("model.activationClampValue", e.Field);
        Assert.Contains(says, e.Message);
    }

    [Fact]
    public void A_clamp_on_an_ungated_ffn_is_refused()
    {
        // Oracle: Megatron-Core clamps the gate and linear halves of a GLU's fc1; a plain GELU FFN has no halves.
        var json = """
            { "model": { "preset": "gpt3-175b", "layers": 2, "batch": 8, "activationClampValue": 7.0 },
              "hardware": { "preset": "H100-SXM", "gpus": 8 }, "strategy": { "tp": 8 } }
            """;
        var e = Assert.Throws<ConfigException>(() => Scenario.Parse(json));
        Assert.Equal("model.activationClampValue", e.Field);
        Assert.Contains("gated", e.Message);
    }
}

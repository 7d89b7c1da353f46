using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

/// <summary>Oracles: hand derivations from the founding document's shapes and the seed model's sizes.</summary>
public class StrategyProfileTests
{
    private static Evaluation Evaluate(string name) => Scenario.Load(TestPaths.Scenario(name)).Evaluate();

    [Fact]
    public void Seed_ep16_uses_full_matrices_no_communication_and_even_load()
    {
        var p = StrategyProfile.Of(Evaluate("seed-ep16"));
        Assert.Equal("[10240000 x 8192] x [8192 x 8192]", p.QProjectionShape);
        Assert.Equal("Q projection", p.LargestMatmulOperation);
        // Hand sum of the document's per-layer terms: 4 projections, 16 x 2 head products, gate, expert up + down.
        const double T = 10240000, H = 8192;
        var expected = 4 * 2 * T * H * H + 16 * 2 * (2 * T * 512 * 10000) + 2 * T * H * 16 + 2 * (2 * 640000 * H * 32768);
        Assert.Equal(expected, p.MatmulFlopsPerLayerOnGpu0, expected * 1e-12);
        Assert.Equal(0, p.CommunicationOperations);
        Assert.Equal(0, p.CommunicationBytesPerGpu);
        Assert.Equal(1.0, p.ComputeImbalance, 12);
        Assert.Equal(1.0, p.ExpertTokenImbalance, 12);
        Assert.Equal(0, p.IdleShare, 12);
    }

    [Fact]
    public void Seed_tp8_pp2_sends_one_activation_per_gpu_between_stages()
    {
        var p = StrategyProfile.Of(Evaluate("seed-tp8-pp2"));
        Assert.Equal("[10240000 x 1024] x [1024 x 1024]", p.QProjectionShape);
        // 8 sends (one per TP rank), each [T, H] bf16, each GPU in exactly one of them.
        Assert.Equal(8, p.CommunicationOperations);
        Assert.Equal(10240000.0 * 8192 * 2, p.CommunicationBytesPerGpu, 1);
        // One microbatch through two stages: each stage waits while the other works, so a large idle share.
        Assert.InRange(p.IdleShare, 0.3, 0.5);
    }

    [Fact]
    public void Zipf_routing_loads_the_first_expert_rank_most()
    {
        var uniform = Scenario.Load(TestPaths.Scenario("ep16"));
        var zipf = uniform with { Model = uniform.Model with { Routing = new RoutingSpec(RoutingDistribution.Zipf, 1.0) } };
        var p = StrategyProfile.Of(zipf.Evaluate());
        // Zipf s = 1 over 16 experts: the hottest gets 1 / H_16 of the tokens, the mean 1/16: ratio 16 / H_16.
        var h16 = Enumerable.Range(1, 16).Sum(i => 1.0 / i);
        Assert.Equal(16 / h16, p.ExpertTokenImbalance, 2);
        Assert.True(p.ComputeImbalance > 1.2, $"compute imbalance {p.ComputeImbalance}");
        Assert.Equal(1.0, StrategyProfile.Of(uniform.Evaluate()).ExpertTokenImbalance, 12);
    }
}

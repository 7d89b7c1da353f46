using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Issue 14: attention heads priced as shares of one fused attention kernel per rank (<c>costModel.fusedAttention</c>, kind tile-wave).</summary>
public class FusedAttentionTests
{
    private static readonly HardwareSpec H100 = HardwareCatalog.Get("H100-SXM");

    [Fact]
    public void A_head_shares_the_waves_and_the_launch_and_never_streams_its_scores()
    {
        // Oracle (hand, data/gemm/hopper.json: 256x128 tile at relative efficiency 1.0, 128x128 at 0.9, memory efficiency
        // 0.85, launch 5 us; H100 SXM 132 SMs, achievable bf16 794.5 TFLOP/s, HBM 3.35 TB/s): one head's causal score
        // product at s = 4096, d = 128, (s + 1) / 2 = 2049 keys: [4096, 128] x [128, 2049]. Alone its kernel writes the
        // [4096, 2049] scores to HBM, which takes longer than its compute (at most 3 waves of 256 x 128 tiles, 16 x 17 =
        // 272 tiles on 132 SMs): memory-bound, plus 5 us. In a fused kernel of 32 heads: 272 / 132 of a 256 x 128 wave
        // (fewest tile-waves: 128 x 256 needs 32 x 9 = 288, 128 x 128 at 0.9 544 / 132 x 0.5 / 0.9 = 2.29 waves, 128 x 64
        // at 0.8 1056 / 132 x 0.25 / 0.8 = 2.5), HBM carries only Q [4096, 128] and K [128, 2049], and 5/32 us.
        var tw = new TileWaveCompute(H100.Gpu, TileWaveTable.Get("hopper"));
        var head = new MatmulShape(4096, 128, 2049);
        var wave = 2.0 * 256 * 128 * 128 / (794.5e12 / 132);
        var hbm = 3.35e12 * 0.85;
        var aloneMemory = (4096.0 * 128 + 128.0 * 2049 + 4096.0 * 2049) * 2 / hbm;
        Assert.True(3 * wave < aloneMemory);
        Assert.Equal(aloneMemory + 5e-6, tw.MatmulSeconds(head, "bf16", 2), 1e-15);
        var fusedMemory = (4096.0 * 128 + 128.0 * 2049) * 2 / hbm;
        Assert.Equal(Math.Max(272.0 / 132 * wave, fusedMemory) + 5e-6 / 32, tw.FusedAttentionSeconds(head, "bf16", 2, 32), 1e-15);
        // The value product [4096, 2049] x [2049, 128]: the probabilities (the largest operand, here A) stay on chip;
        // V [2049, 128] and the output [4096, 128] stream. Its 16 x 1 tiles of 256 x 128 = 16 per head.
        var value = new MatmulShape(4096, 2049, 128);
        var valueWave = 2.0 * 256 * 128 * 2049 / (794.5e12 / 132);
        var valueMemory = (2049.0 * 128 + 4096.0 * 128) * 2 / hbm;
        Assert.Equal(Math.Max(16.0 / 132 * valueWave, valueMemory) + 5e-6 / 32, tw.FusedAttentionSeconds(value, "bf16", 2, 32), 1e-15);
        Assert.Throws<ArgumentOutOfRangeException>(() => tw.FusedAttentionSeconds(head, "bf16", 2, 0));
    }

    private static Scenario Llama(bool fused, string kernel = "fused") => Scenario.Parse($$"""
        { "model": { "preset": "llama3-8b", "batch": 4, "sequenceLength": 4096, "layers": 2 },
          "hardware": { "preset": "H100-SXM", "gpus": 2 },
          "strategy": { "ep": 1, "tp": 2, "pp": 1, "dp": 1, "mode": "training", "microbatches": 2, "attentionKernel": "{{kernel}}" },
          "costModel": { "kind": "tile-wave"{{(fused ? ", \"fusedAttention\": true" : "")}} } }
        """);

    [Fact]
    public void Fused_pricing_changes_only_the_attention_products_of_a_fused_dag()
    {
        // Oracle: each head's product is priced by FusedAttentionSeconds with the rank's heads as the group (Llama-3 8B:
        // 32 heads over TP 2 = 16); every other operation is priced exactly as without the option; and a head's share is
        // never dearer than its lone kernel (fractional waves <= whole waves, fewer HBM bytes, 1/16 of the launch).
        var plain = Llama(false).Evaluate(DagFolding.None);
        var fused = Llama(true).Evaluate(DagFolding.None);
        var dag = plain.Dag;
        Assert.Equal(16, dag.AttentionHeadsPerRank);
        var tw = new TileWaveCompute(H100.Gpu, TileWaveTable.Get("hopper"));
        var p = plain.Cost.Price(dag);
        var f = fused.Cost.Price(dag);
        var heads = 0;
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Kind(op) is OpKind.AttentionScore or OpKind.AttentionValue)
            {
                heads++;
                Assert.Equal(dag.Repeat(op) * tw.FusedAttentionSeconds(dag.Shape(op), "bf16", 2, 16), f[op], 1e-18);   // the rank's heads back to back
                Assert.True(f[op] <= p[op], dag.Name(op));
            }
            else Assert.Equal(p[op], f[op]);
        }
        Assert.True(heads > 0);
        Assert.True(fused.TotalSeconds < plain.TotalSeconds);
    }

    [Fact]
    public void Materialized_scores_have_no_fused_kernel_to_share()
    {
        // Oracle: the 2021 kernels write the scores to HBM (strategy.attentionKernel "materialized"): the DAG carries no
        // fused heads, so the option prices every operation as without it (SC21's execution stays as it was).
        var plain = Llama(false, "materialized").Evaluate(DagFolding.None);
        var fused = Llama(true, "materialized").Evaluate(DagFolding.None);
        Assert.Equal(0, plain.Dag.AttentionHeadsPerRank);
        Assert.Equal(plain.Cost.Price(plain.Dag), fused.Cost.Price(plain.Dag));
    }

    [Fact]
    public void Fused_attention_is_refused_where_it_is_not_priced()
    {
        // Oracle: the bar for bad input: the roofline has no waves or launches to share; naming the field and value.
        var e = Assert.Throws<ConfigException>(() => Scenario.Parse("""
            { "model": { "preset": "llama3-8b", "batch": 4, "sequenceLength": 4096, "layers": 2 },
              "hardware": { "preset": "H100-SXM", "gpus": 2 },
              "strategy": { "ep": 1, "tp": 2, "pp": 1, "dp": 1 },
              "costModel": { "kind": "roofline-ideal", "fusedAttention": true } }
            """));
        Assert.Equal("costModel.fusedAttention", e.Field);
        Assert.Equal("true", e.Value);
    }
}

using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Issue 12: routed-expert GEMMs as one grouped GEMM per rank (<c>costModel.groupedGemm</c>, kind tile-wave).</summary>
public class GroupedGemmTests
{
    private static readonly HardwareSpec H100 = HardwareCatalog.Get("H100-SXM");

    [Fact]
    public void A_grouped_member_keeps_its_tiles_shares_the_waves_and_a_launch()
    {
        // Oracle (hand, data/gemm/hopper.json: 256x128 tile at relative efficiency 1.0, launch 5 us; H100 SXM 132 SMs,
        // achievable bf16 794.5 TFLOP/s): an expert up projection of Qwen3-30B-A3B at EP 8 with 2048 tokens per expert,
        // [2048, 2048] x [2048, 1536]. Alone its best tile is 128 x 64 (relative efficiency 0.8): 16 x 24 = 384 tiles in
        // 3 waves (the 256 x 128 tile's 96 tiles leave 36 of 132 SMs idle in its one wave): 3 x 2 x 128 x 64 x 2048 /
        // (794.5e12 / 132 x 0.8) s + 5 us. In a grouped GEMM of 16 experts the waves are shared: 96/132 of a 256 x 128
        // wave, 2 x 256 x 128 x 2048 / (794.5e12 / 132) s, and 5/16 us.
        var tw = new TileWaveCompute(H100.Gpu, TileWaveTable.Get("hopper"));
        var shape = new MatmulShape(2048, 2048, 1536);
        var wave = 2.0 * 256 * 128 * 2048 / (794.5e12 / 132);
        Assert.Equal(3 * 2.0 * 128 * 64 * 2048 / (794.5e12 / 132 * 0.8) + 5e-6, tw.MatmulSeconds(shape, "bf16", 2), 1e-15);
        Assert.Equal(96.0 / 132 * wave + 5e-6 / 16, tw.GroupedMatmulSeconds(shape, "bf16", 2, 16), 1e-15);
        // Small m per expert: 100 tokens pad one row of 128-row tiles (the 128 x 256 orientation, 1 x 6 tiles: as much
        // compute as 128 tokens), and the member is bound by reading its [2048, 1536] weights from HBM (3.35 TB/s x 0.85).
        var memory = (100.0 * 2048 + 2048.0 * 1536 + 100.0 * 1536) * 2 / (3.35e12 * 0.85);
        Assert.Equal(Math.Max(6.0 / 132 * wave, memory) + 5e-6 / 16, tw.GroupedMatmulSeconds(new MatmulShape(100, 2048, 1536), "bf16", 2, 16), 1e-15);
        Assert.True(memory > 6.0 / 132 * wave);
    }

    private static Scenario Qwen(bool grouped) => Scenario.Parse($$"""
        { "model": { "preset": "qwen3-30b-a3b", "batch": 8, "sequenceLength": 4096, "layers": 2 },
          "hardware": { "preset": "H100-SXM", "gpus": 8 },
          "strategy": { "ep": 8, "tp": 1, "pp": 1, "dp": 1, "mode": "training", "microbatches": 1 },
          "costModel": { "kind": "tile-wave"{{(grouped ? ", \"groupedGemm\": true" : "")}} } }
        """);

    [Fact]
    public void Grouped_pricing_changes_only_the_expert_gemms_and_makes_them_no_slower()
    {
        // Oracle: the grouped member's compute (fractional waves) is at most the lone kernel's (whole waves) and its
        // launch a 1/G share, so every expert GEMM is priced no higher; every other operation is priced the same.
        var plain = Qwen(false).Evaluate(DagFolding.None);
        var grouped = Qwen(true).Evaluate(DagFolding.None);
        var dag = plain.Dag;
        Assert.Equal(16, dag.ExpertsPerRank);
        var p = plain.Cost.Price(dag);
        var g = grouped.Cost.Price(dag);
        var experts = 0;
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Kind(op) is OpKind.ExpertUp or OpKind.ExpertDown) { experts++; Assert.True(g[op] <= p[op], dag.Name(op)); }
            else Assert.Equal(p[op], g[op]);
        }
        Assert.True(experts > 0);
        Assert.True(grouped.TotalSeconds < plain.TotalSeconds);
    }

    [Fact]
    public void Grouped_gemm_is_refused_where_it_is_not_priced()
    {
        // Oracle: the bar for bad input: the roofline has no waves or launches to share; naming the field and value.
        var e = Assert.Throws<ConfigException>(() => Scenario.Parse("""
            { "model": { "preset": "qwen3-30b-a3b", "batch": 8, "sequenceLength": 4096, "layers": 2 },
              "hardware": { "preset": "H100-SXM", "gpus": 8 },
              "strategy": { "ep": 8, "tp": 1, "pp": 1, "dp": 1 },
              "costModel": { "kind": "roofline-ideal", "groupedGemm": true } }
            """));
        Assert.Equal("costModel.groupedGemm", e.Field);
        Assert.Equal("true", e.Value);
    }
}

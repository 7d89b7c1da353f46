using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// One repeated product (<see cref="DagBuilder.AddRepeatedMatmul"/>) standing for n identical products issued back to
/// back on a GPU. Oracles: a hand derivation (n products' FLOPs, bytes and seconds; the schedule of n products one after
/// another on one stream), and the founding scenarios built one head and one expert at a time.
/// The random-scenario property is RepeatedProductPropertyTests (robustness suite).
/// </summary>
public sealed class RepeatedProductTests
{
    private static readonly HardwareSpec H100 = HardwareCatalog.Get("H100-SXM").WithGpus(2);

    [Fact]
    public void A_repeated_product_is_n_products_back_to_back()
    {
        // Hand derivation: a norm, then 4 score products of [512 x 64] x [64 x 512] over 2 sequences, then a projection;
        // the same with the four products as one repeated operation. Same stream, so the projection starts when the
        // fourth product ends in both: 4 x t(product) after the norm.
        var shape = new MatmulShape(512, 64, 512, 2);
        var cost = CostModel.RooflineIdeal(H100);
        OperatorDag Build(bool repeated)
        {
            var b = new DagBuilder(2);
            var norm = b.AddElementwise(0, 1 << 20, 0, []);
            int[] heads = repeated
                ? [b.AddRepeatedMatmul(OpKind.AttentionScore, 0, shape, 4, 0, [norm], index: 8)]
                : Enumerable.Range(0, 4).Select(h => b.AddMatmul(OpKind.AttentionScore, 0, shape, 0, [norm], index: 8 + h)).ToArray();
            b.AddMatmul(OpKind.OutputProjection, 0, new MatmulShape(512, 256, 256), 0, heads);
            return b.Build();
        }
        var apart = Build(false);
        var dag = Build(true);
        var op = dag.Count - 2;
        Assert.Equal(4, dag.Repeat(op));
        Assert.Equal(shape, dag.Shape(op));
        Assert.Equal(4 * 2.0 * 2 * 512 * 64 * 512, dag.Flops(op));
        Assert.Equal(4 * shape.Elements * 2.0, dag.Bytes(op));
        var one = cost.Compute.MatmulSeconds(shape, "bf16", 2);
        Assert.Equal(4 * one, cost.Seconds(dag, op), 1e-18);
        Assert.Equal("L0.AttentionScore[h8..h11]@gpu0", dag.Name(op));
        var a = apart.CriticalPath(cost);
        var r = dag.CriticalPath(cost);
        Assert.Equal(a.TotalSeconds, r.TotalSeconds, a.TotalSeconds * 1e-15);
        Assert.Equal(a.StartSeconds(apart.Count - 1), r.StartSeconds(dag.Count - 1), a.TotalSeconds * 1e-15);
        // The formula writes it as 4 x Get_Time(...), as it writes the four products.
        var fa = RuntimeFormula.FromCriticalPath(a).MatmulTerms;
        var fr = RuntimeFormula.FromCriticalPath(r).MatmulTerms;
        Assert.Equal(fa, fr);
        Assert.Contains(fr, t => t.M == 512 && t.K == 64 && t.N == 512 && t.Count == 4);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-3)]
    public void A_repeat_below_one_is_refused_naming_it(int repeat)
    {
        var b = new DagBuilder(1);
        var e = Assert.Throws<DagException>(() => b.AddRepeatedMatmul(OpKind.AttentionValue, 0, new MatmulShape(8, 8, 8), repeat, 0, []));
        Assert.Contains($"repeat >= 1, got {repeat}", e.Message);
    }

    [Theory]
    [InlineData("ep16")]
    [InlineData("tp8-pp2")]
    [InlineData("ep16-training")]
    [InlineData("tp8-pp2-training")]
    public void Founding_scenarios_schedule_as_one_product_at_a_time(string name)
    {
        // Oracle: the one-at-a-time DAG of the same scenario (BuildDagProductsApart), whole, priced and scheduled the same way.
        var s = Scenario.Load(TestPaths.Scenario(name));
        var cost = s.CreateCostModel();
        var apart = s.Strategy.BuildDagProductsApart(s.Model).CriticalPath(cost);
        var dag = s.BuildDag();
        var repeated = dag.CriticalPath(cost);
        Assert.True(dag.Count < apart.Dag.Count, $"{name}: {dag.Count} operations, one at a time {apart.Dag.Count}");
        Assert.Equal(apart.TotalSeconds, repeated.TotalSeconds, apart.TotalSeconds * 1e-12);
        foreach (var (k, v) in apart.CriticalPathSecondsByCategory) Assert.Equal(v, repeated.CriticalPathSecondsByCategory[k], apart.TotalSeconds * 1e-12);
    }
}

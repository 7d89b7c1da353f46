using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Perf.Tests;

/// <summary>The fast path (price classes, allocation-free pass, TotalSeconds) against <see cref="ReferencePath"/>: bitwise equal.</summary>
public class FastPathTests
{
    public static TheoryData<string> Founding() => new(Repo.Founding);

    private static void AssertSame(OperatorDag dag, CostModel cost)
    {
        var reference = ReferencePath.Price(cost, dag);
        var fast = cost.Price(dag);
        Assert.Equal(reference, fast); // exact double equality, element by element
        var (total, start, finish, path) = ReferencePath.Schedule(dag, reference, cost);
        var result = dag.CriticalPath(cost);
        Assert.Equal(BitConverter.DoubleToInt64Bits(total), BitConverter.DoubleToInt64Bits(result.TotalSeconds));
        Assert.Equal(BitConverter.DoubleToInt64Bits(total), BitConverter.DoubleToInt64Bits(dag.TotalSeconds(cost)));
        Assert.Equal(path, result.CriticalOps);
        for (var op = 0; op < dag.Count; op++)
        {
            Assert.Equal(start[op], result.StartSeconds(op));
            Assert.Equal(finish[op], result.FinishSeconds(op));
        }
    }

    [Theory]
    [MemberData(nameof(Founding))]
    public void Founding_scenarios_match_the_reference_bit_for_bit(string name)
    {
        var s = Repo.Scenario(name);
        AssertSame(s.BuildDag(), s.CreateCostModel());
        Assert.True(s.Evaluate().TotalSeconds > 0);
    }

    [Theory]
    [InlineData("ep16-training", true)]
    [InlineData("tp8-pp2-training", true)]
    [InlineData("tp8-pp2-training", false)]
    [InlineData("ep16", false)]
    public void Training_steps_and_the_no_overlap_switch_match_the_reference_bit_for_bit(string name, bool overlap)
    {
        // Exercises pipeline sends beside the streams, gradient collectives and communication on the compute stream.
        var s = Repo.Scenario(name);
        s = s with { Strategy = s.Strategy with { OverlapCommunication = overlap } };
        AssertSame(s.BuildDag(), s.CreateCostModel());
    }

    [Fact]
    public void Random_scenarios_match_the_reference_bit_for_bit()
    {
        // Oracle: ReferencePath on the same DAG. Scenarios drawn from a seeded generator over strategies and sizes;
        // the efficiency-table cost model is included so size-dependent pricing is exercised.
        var rng = new Random(20240611);
        var checkedCount = 0;
        var hardware = new[] { "H100-SXM", "H200", "A100-80GB" };
        for (var attempt = 0; attempt < 400 && checkedCount < 40; attempt++)
        {
            int Pick(params int[] xs) => xs[rng.Next(xs.Length)];
            var model = new ModelSpec("random", Pick(2, 4, 6), Pick(1024, 2048, 4096), Pick(8, 16, 32), Pick(4096, 8192), Pick(4, 8, 16), Pick(1, 2), Pick(16, 32, 64), Pick(512, 1024, 2048));
            var strategy = new StrategySpec(Pick(1, 2, 4), Pick(1, 2, 4), Pick(1, 2), Pick(1, 2), Derivation.Corrected, Pick(1, 2, 4))
            {
                Mode = rng.Next(2) == 0 ? WorkloadMode.Inference : WorkloadMode.Training,
                OverlapCommunication = rng.Next(4) != 0,
            };
            var hw = HardwareCatalog.Get(hardware[rng.Next(hardware.Length)]).WithGpus(strategy.GpuCount);
            var costSpec = rng.Next(2) == 0 ? CostModelSpec.Ideal : new CostModelSpec(CostModelKind.RooflineEfficiency, EfficiencyTable.Get("typical-hopper"));
            var scenario = new Scenario("random", model, hw, strategy, costSpec);
            try { scenario.Validated(); }
            catch (ConfigException) { continue; }
            AssertSame(scenario.BuildDag(), scenario.CreateCostModel());
            checkedCount++;
        }
        Assert.True(checkedCount >= 20, $"only {checkedCount} random scenarios were valid");
    }

    [Fact]
    public void Price_classes_group_only_operations_priced_alike()
    {
        // Oracle: the definition — equal class means equal shape (matmul-shaped), or equal bytes and group (others).
        var dag = Repo.Scenario("tp8-pp2").BuildDag();
        Assert.True(dag.PriceClassCount < dag.Count / 10, $"{dag.PriceClassCount} classes for {dag.Count} operations");
        var first = new Dictionary<int, int>();
        for (var op = 0; op < dag.Count; op++)
        {
            if (!first.TryGetValue(dag.PriceClassOf(op), out var rep)) { first[dag.PriceClassOf(op)] = op; continue; }
            Assert.Equal(dag.Kind(rep).IsMatmulShaped(), dag.Kind(op).IsMatmulShaped());
            Assert.Equal(dag.Shape(rep), dag.Shape(op));
            Assert.Equal(dag.Bytes(rep), dag.Bytes(op));
            Assert.Equal(dag.Group(rep), dag.Group(op));
        }
    }

    [Fact]
    public void Builder_reuses_groups_and_rejects_bad_ones()
    {
        var b = new DagBuilder(8);
        var g1 = b.Group([3, 1, 2]);
        Assert.Equal(g1, b.Group([1, 2, 3]));
        Assert.NotEqual(g1, b.Group([1, 2]));
        Assert.Throws<DagException>(() => b.Group([1, 1]));
        Assert.Throws<DagException>(() => b.Group([1, 9]));
        b.EnsureCapacity(1000, 1000);
        var a = b.AddMatmul(OpKind.QProjection, 0, new(2, 3, 4), 0, []);
        Assert.Throws<DagException>(() => b.AddElementwise(0, 10, 0, [a + 1]));
        var dag = b.Build();
        Assert.Equal(1, dag.Count);
        Assert.Equal(new MatmulShape(2, 3, 4), dag.Shape(0));
        Assert.Equal(0, dag.EdgeCount);
    }
}

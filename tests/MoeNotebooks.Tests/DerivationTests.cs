using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>Oracle: shapes derived by hand from Megatron-LM's sharding rules for the founding model (T = 10,240,000, H = 8192, 16 heads, F = 32768, 16 experts).</summary>
public class DerivationTests
{
    /// <summary>The matmul-shaped operations of layer 0 on GPU 0, with the products each stands for (<see cref="OperatorDag.Repeat"/>).</summary>
    private static IEnumerable<(OpKind Kind, MatmulShape Shape, int Products)> FirstLayerOnGpu0(OperatorDag dag) =>
        Enumerable.Range(0, dag.Count)
            .Where(op => dag.Gpu(op) == 0 && dag.Layer(op) == 0 && dag.Kind(op).IsMatmulShaped())
            .Select(op => (dag.Kind(op), dag.Shape(op), dag.Repeat(op)));

    [Fact]
    public void TensorParallelUsesColumnThenRowParallelShapesWithFullHeads()
    {
        var dag = new StrategySpec(1, 8, 2, 1).BuildDag(ModelSpec.Seed);
        var ops = FirstLayerOnGpu0(dag).ToList();
        Assert.Equal(new MatmulShape(10240000, 8192, 1024), ops.Single(o => o.Kind == OpKind.QProjection).Shape);   // [T,H] x [H,H/8]
        Assert.Equal(new MatmulShape(10240000, 1024, 8192), ops.Single(o => o.Kind == OpKind.OutputProjection).Shape); // [T,H/8] x [H/8,H]
        var scores = Enumerable.Range(0, dag.Count).Where(op => dag.Gpu(op) == 0 && dag.Layer(op) == 0 && dag.Microbatch(op) == 0 && dag.Phase(op) == OpPhase.Forward && dag.Kind(op) == OpKind.AttentionScore).ToList();
        var score = Assert.Single(scores);                                              // the rank's heads, one repeated product
        Assert.Equal(2, dag.Repeat(score));                                             // 16 heads / 8 ranks
        Assert.Equal(new MatmulShape(10000, 512, 10000, 1024), dag.Shape(score));      // full head dim 512, per sequence
        var ups = ops.Where(o => o.Kind == OpKind.ExpertUp).ToList();
        Assert.Equal(16, ups.Sum(u => u.Products));                                      // every expert, sharded over TP
        Assert.All(ups, u => Assert.Equal(new MatmulShape(640000, 8192, 4096), u.Shape)); // [T/16, H] x [H, F/8]
    }

    [Fact]
    public void TensorParallelFlopsEqualOneEighthOfTheUnshardedLayer()
    {
        // Sharding splits work, it does not change it: the 8 ranks of a stage together do the full layer's FLOPs.
        var dag = new StrategySpec(1, 8, 2, 1).BuildDag(ModelSpec.Seed);
        double perRank = Enumerable.Range(0, dag.Count).Where(op => dag.Gpu(op) == 0 && dag.Layer(op) == 0).Sum(dag.Flops);
        const double T = 10240000, H = 8192, S = 10000, F = 32768;
        var layer = 4 * 2 * T * H * H            // Q, K, V, O
                    + 2 * 2 * T * S * H          // scores and values over all heads: 2 x (2 T S d) x heads
                    + 2 * T * H * F * 2;         // expert up and down over all T tokens (top-1)
        var gateFlops = 2 * T * H * 16;          // replicated on each rank
        Assert.Equal(layer / 8 + gateFlops, perRank, layer * 1e-12);
    }

    [Fact]
    public void SeedTensorParallelShardsBothDimensionsAsTheDocumentWrites()
    {
        var dag = new StrategySpec(1, 8, 2, 1, Derivation.Seed).BuildDag(ModelSpec.Seed);
        var ops = FirstLayerOnGpu0(dag).ToList();
        Assert.Equal(new MatmulShape(10240000, 1024, 1024), ops.First(o => o.Kind == OpKind.QProjection).Shape);
        Assert.Equal(new MatmulShape(10240000, 64, 10000), ops.First(o => o.Kind == OpKind.AttentionScore).Shape);
        Assert.Equal(8, ops.Count(o => o.Kind == OpKind.ExpertUp));
        Assert.DoesNotContain(ops, o => o.Kind == OpKind.Gate);
    }

    [Fact]
    public void ExpertParallelSplitsTokensAndAddsAllToAll()
    {
        var dag = new StrategySpec(16, 1, 1, 1).BuildDag(ModelSpec.Seed);
        var ops = FirstLayerOnGpu0(dag).ToList();
        Assert.Equal(new MatmulShape(640000, 8192, 8192), ops.First(o => o.Kind == OpKind.QProjection).Shape); // T / 16 tokens
        Assert.Equal(new MatmulShape(640000, 8192, 32768), ops.Single(o => o.Kind == OpKind.ExpertUp).Shape); // one expert, T/16 tokens
        var dispatch = Enumerable.Range(0, dag.Count).Where(op => dag.Kind(op) == OpKind.AllToAllDispatch && dag.Layer(op) == 0).ToList();
        var op = Assert.Single(dispatch);
        Assert.Equal(16, dag.Participants(op).Length);
        Assert.Equal(640000.0 * 8192 * 2, dag.Bytes(op));  // each rank sends its T/16 tokens x H x 2 B
    }

    [Fact]
    public void PipelineSplitsLayersEvenlyAndSendsOncePerBoundary()
    {
        var model = ModelSpec.Seed with { Layers = 6, Batch = 8, SequenceLength = 128 };
        var dag = new StrategySpec(1, 2, 3, 1).BuildDag(model);
        int StageOf(int gpu) => gpu / 2;
        for (var op = 0; op < dag.Count; op++)
            if (dag.Layer(op) >= 0 && dag.Category(op) != OpCategory.Communication)
                Assert.Equal(dag.Layer(op) / 2, StageOf(dag.Gpu(op)));
        Assert.Equal(2 * 2, Enumerable.Range(0, dag.Count).Count(op => dag.Kind(op) == OpKind.PipelineSend)); // 2 boundaries x 2 TP ranks
        Assert.Equal([(0, 3), (3, 3)], CorrectedDerivation.SplitLayers(6, 2));
        Assert.Equal([(0, 3), (3, 2), (5, 2)], CorrectedDerivation.SplitLayers(7, 3));
    }

    [Fact]
    public void MicrobatchesShrinkTheBubble()
    {
        // GPipe forward with p stages of equal time t and m microbatches takes (m + p - 1) t / m per batch:
        // more microbatches, shorter total (until per-microbatch overheads dominate).
        var model = ModelSpec.Seed with { Batch = 64, SequenceLength = 2048 };
        var hw = HardwareCatalog.Get("H100-SXM").WithGpus(16);
        double Total(int mb) => new StrategySpec(1, 8, 2, 1, Microbatches: mb).BuildDag(model)
            .CriticalPath(Costs.CostModel.RooflineIdeal(hw)).TotalSeconds;
        Assert.True(Total(4) < Total(1));
        Assert.True(Total(8) < Total(4));
    }

    [Theory]
    [InlineData("seed-ep16")]
    [InlineData("ep16")]
    [InlineData("tp8-pp2-training")]
    public void Reserving_room_up_front_builds_the_same_dag(string name)
    {
        // Oracle: the DAG built with no reservation (arrays grown by doubling), compared field by field.
        var s = Scenario.Load(TestPaths.Scenario(name));
        var grown = s.Strategy.Derivation == Derivation.Seed ? SeedDerivation.Build(s.Model, s.Strategy) : CorrectedDerivation.Build(s.Model, s.Strategy);
        var reserved = s.BuildDag();
        Assert.Equal(grown.Count, reserved.Count);
        Assert.Equal(grown.EdgeCount, reserved.EdgeCount);
        Assert.Equal(grown.PriceClassCount, reserved.PriceClassCount);
        for (var op = 0; op < grown.Count; op++)
        {
            Assert.Equal((grown.Kind(op), grown.Phase(op), grown.Gpu(op), grown.Group(op), grown.Layer(op), grown.Microbatch(op), grown.Index(op), grown.PriceClassOf(op), grown.Bytes(op)),
                         (reserved.Kind(op), reserved.Phase(op), reserved.Gpu(op), reserved.Group(op), reserved.Layer(op), reserved.Microbatch(op), reserved.Index(op), reserved.PriceClassOf(op), reserved.Bytes(op)));
            Assert.True(grown.Predecessors(op).SequenceEqual(reserved.Predecessors(op)));
        }
    }
}

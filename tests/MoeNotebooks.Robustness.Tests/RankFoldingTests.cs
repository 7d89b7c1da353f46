using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Rank folding (issue 15 item 1, <see cref="RankSymmetry"/>): TP ranks of a group and, under uniform routing, EP ranks
/// built once. Oracle everywhere: the whole DAG of the same scenario (<see cref="DagFolding.None"/>), built, priced and
/// scheduled by the same code, through <see cref="FoldingPropertyTests.AssertFoldedEqualsWhole(Scenario, out string)"/>
/// (total, critical path operation by operation, breakdowns, per-GPU usage, operation counts to 1e-12); the random
/// stream of <see cref="FoldingPropertyTests"/> (10^4 cases) checks the same property over drawn layouts.
/// </summary>
public class RankFoldingTests
{
    private static Scenario Shipped(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var path = Path.Combine(dir.FullName, "data", "scenarios", name + ".json");
            if (File.Exists(path)) return Scenario.Load(path);
        }
        throw new FileNotFoundException($"data/scenarios/{name}.json not found above {AppContext.BaseDirectory}");
    }

    private static Scenario Relaid(Scenario s, Func<StrategySpec, StrategySpec> change, Func<HardwareSpec, HardwareSpec>? hardware = null, long? batch = null)
    {
        var st = change(s.Strategy);
        var hw = s.Hardware.WithGpus(st.GpuCount);
        if (hardware is not null) hw = hardware(hw).Validated();
        return new Scenario(s.Name, s.Model with { Batch = batch ?? s.Model.Batch }, hw, st, s.CostModel).Validated();
    }

    [Theory]
    [InlineData("tp8-pp2", "8 TP ranks -> 1 representative per stage")]
    [InlineData("ep16", "16 EP ranks -> 1 representative per stage")]
    [InlineData("tp8-pp2-training", "8 TP ranks -> 1 representative per stage")]
    [InlineData("deepseek-v3-ep64-forward", "64 EP ranks -> 1 representative per stage")]
    public void Shipped_scenarios_fold_their_ranks_exactly(string name, string folded)
    {
        var s = Shipped(name);
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(s, out var description));
        Assert.Equal(folded, description);
    }

    [Fact]
    public void Ranks_and_replicas_fold_together_exactly()
    {
        // tp8-pp2-training on two replicas: 8 TP ranks x 2 replicas per representative (16 GPUs).
        var s = Relaid(Shipped("tp8-pp2-training"), st => st with { DP = 2, Microbatches = 8 }, batch: Shipped("tp8-pp2-training").Model.Batch / 8 * 2);
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(s, out var description));
        Assert.Equal("8 TP ranks x 2 DP replicas -> 1 representative per stage", description);
        var dag = s.BuildDag(DagFolding.Symmetric);
        Assert.Equal(16, dag.FoldFactor);
        // The built part is about a sixteenth of the whole (collectives spanning the classes are built once).
        Assert.True(dag.Count * 12 < s.BuildDag().Count, $"built {dag.Count} of {s.BuildDag().Count}");
    }

    [Fact]
    public void Skewed_routing_keeps_the_ep_ranks_apart_and_folds_tp()
    {
        // ep16-training routes with Zipf s = 1 skew: EP rank 0 holds the hottest experts, so EP ranks differ; the TP
        // ranks within each EP rank stay identical.
        var s = Relaid(Shipped("ep16-training"), st => st with { EP = 4, TP = 2, Microbatches = 4 }, batch: 64);
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(s, out var description));
        Assert.Equal("2 TP ranks -> 1 representative per stage (EP ranks kept apart: skewed routing)", description);
        // The same layout under uniform routing folds both.
        var uniform = s with { Model = s.Model with { Routing = RoutingSpec.Uniform } };
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(uniform, out var both));
        Assert.Equal("2 TP ranks x 4 EP ranks -> 1 representative per stage", both);
    }

    [Fact]
    public void Tp_ranks_sharing_a_nic_fold_replicas_only()
    {
        // Four NICs for eight GPUs: TP ranks 0 and 1 send their pipeline activations through one NIC, where the
        // scheduler's contention delays the later-issued one, so TP ranks are not identical; the fold keeps them
        // apart (RankFoldPricing's link check) and folds the two replicas only.
        var s = Relaid(Shipped("tp8-pp2"), st => st with { DP = 2 }, hw => hw with { NicCount = 4 }, batch: Shipped("tp8-pp2").Model.Batch * 2);
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(s, out var description));
        Assert.Equal("2 DP replicas -> 1 representative per stage", description);
        // With a NIC per GPU the TP ranks fold too.
        var railed = Relaid(Shipped("tp8-pp2"), st => st with { DP = 2 }, batch: Shipped("tp8-pp2").Model.Batch * 2);
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(railed, out var both));
        Assert.Equal("8 TP ranks x 2 DP replicas -> 1 representative per stage", both);
    }

    /// <summary>
    /// DeepSeek-V3's placement in small (data/scenarios/deepseek-v3.json's shape): EP 16 over two H800 nodes, PP 2 and
    /// DP 2 across nodes, training with the distributed optimizer. Each EP rank's pipeline sends and gradient
    /// all-reduces use its own NIC, which the EP all-to-all occupies too, so the images of the representative's traffic
    /// share links with built traffic. With one NIC per GPU the links fold with their GPUs (RankFoldPricing's projected
    /// links); with two GPUs per NIC the EP ranks behind one NIC contend and stay apart. Oracle: the whole DAG.
    /// </summary>
    [Theory]
    [InlineData(8, 1, "16 EP ranks x 2 DP replicas -> 1 representative per stage")]
    [InlineData(8, 2, "16 EP ranks x 2 DP replicas -> 1 representative per stage")]
    [InlineData(4, 1, "2 DP replicas -> 1 representative per stage")]
    public void Deepseek_v3_placement_folds_ep_ranks_with_their_nics(int nicsPerNode, int tp, string folded)
    {
        var s = Scenario.Parse($$"""
            { "name": "dsv3-small",
              "model": { "layers": 4, "hiddenSize": 512, "attentionHeads": 8, "ffnHiddenSize": 1024, "experts": 32, "topK": 2,
                         "batch": 128, "sequenceLength": 256, "dtype": "bf16" },
              "hardware": { "preset": "H800", "gpus": {{32 * tp * 2}}, "nicsPerNode": {{nicsPerNode}} },
              "strategy": { "ep": 16, "tp": {{tp}}, "pp": 2, "dp": 2, "mode": "training", "microbatches": 4, "schedule": "1f1b",
                            "useDistributedOptimizer": true } }
            """).Validated();
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(s, out var description));
        Assert.Equal(tp > 1 ? folded.Replace("16 EP", "2 TP ranks x 16 EP", StringComparison.Ordinal) : folded, description);
        // Not vacuous: contention bites in the whole DAG (its total differs from the schedule without links).
        var cost = s.CreateCostModel();
        var whole = s.BuildDag(DagFolding.None);
        var durations = cost.Price(whole);
        Assert.NotEqual(Analysis.Scheduler.Schedule(whole, durations).TotalSeconds, Analysis.Scheduler.Schedule(whole, durations, cost.Name, cost.Footprints(whole)).TotalSeconds);
    }

    [Fact]
    public void Builder_refuses_a_folded_rank_that_issues_other_operations()
    {
        // Hand-built: GPU 1 folded onto GPU 0. The same matmul is not appended again (its id is GPU 0's); a different
        // shape, or other predecessors, is refused.
        var b = new DagBuilder(2);
        b.FoldRanksOnto([0, 0], [[0, 1], [1, 0]], [false, true]);
        var a0 = b.AddMatmul(OpKind.DenseUp, 0, new MatmulShape(8, 8, 8), 0, []);
        var a1 = b.AddMatmul(OpKind.DenseUp, 1, new MatmulShape(8, 8, 8), 0, []);
        Assert.Equal(a0, a1);
        var all = b.AddCommunication(OpKind.ExpertAllReduce, b.Group([0, 1]), 64, 0, [a0, a1]);
        Assert.Equal(2, b.Count);
        b.AddElementwise(0, 100, 0, [all]);
        Assert.Throws<RankFoldException>(() => b.AddElementwise(1, 200, 0, [all]));
        var c = new DagBuilder(2);
        c.FoldRanksOnto([0, 0], [[0, 1], [1, 0]], [false, true]);
        var x = c.AddMatmul(OpKind.DenseUp, 0, new MatmulShape(8, 8, 8), 0, []);
        c.AddMatmul(OpKind.DenseUp, 0, new MatmulShape(8, 8, 8), 0, [x]);
        c.AddMatmul(OpKind.DenseUp, 1, new MatmulShape(8, 8, 8), 0, []);
        Assert.Throws<RankFoldException>(() => c.AddMatmul(OpKind.DenseUp, 1, new MatmulShape(8, 8, 8), 0, []));
    }

    [Fact]
    public void Cli_evaluate_says_what_was_folded()
    {
        // Oracle: the rank fold's description (above) and the whole DAG's total (--fold none), identical.
        var path = Path.Combine(Path.GetTempPath(), $"rankfold-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, """
            { "name": "rankfold", "model": { "layers": 4, "hiddenSize": 8192, "attentionHeads": 16, "ffnHiddenSize": 32768, "experts": 16, "topK": 1,
                                              "batch": 1024, "sequenceLength": 10000, "dtype": "bf16" },
              "hardware": { "preset": "H100-SXM", "gpus": 32 }, "strategy": { "tp": 8, "pp": 2, "dp": 2 } }
            """);
        try
        {
            var (code, table, _) = InvalidInputMatrix.Cli(["evaluate", path]);
            Assert.Equal(0, code);
            Assert.Contains("Folded     8 TP ranks x 2 DP replicas -> 1 representative per stage", table, StringComparison.Ordinal);
            var (c1, folded, _) = InvalidInputMatrix.Cli(["evaluate", path, "--format", "json"]);
            var (c2, whole, _) = InvalidInputMatrix.Cli(["evaluate", path, "--format", "json", "--fold", "none"]);
            Assert.Equal((0, 0), (c1, c2));
            static double Total(string json) => System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("totalSeconds").GetDouble();
            Assert.Equal(Total(whole), Total(folded));
        }
        finally { File.Delete(path); }
    }
}

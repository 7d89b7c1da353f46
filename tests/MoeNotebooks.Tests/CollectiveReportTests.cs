using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;
using Xunit;

namespace MoeNotebooks.Tests;

/// <summary>
/// The distinct-collectives table (<see cref="CollectiveReport.Of"/>) counts every communication operation once, under
/// its kind and price class. Oracle: the DAG's communication operations grouped by (kind, price class) with LINQ.
/// </summary>
public class CollectiveReportTests
{
    [Theory]
    [InlineData("tp8-pp2-training")]   // TP all-reduces of attention and MLP share price classes (same bytes, same group)
    [InlineData("ep16-training")]
    [InlineData("deepseek-v3-ep64-forward")]
    public void Rows_count_each_communication_operation_once_by_kind_and_price_class(string name)
    {
        var s = Scenario.Load(TestPaths.Scenario(name));
        var dag = s.BuildDag(DagFolding.Symmetric);
        var cost = s.CreateCostModel();
        var groups = Enumerable.Range(0, dag.Count).Where(op => dag.Category(op) == OpCategory.Communication)
            .GroupBy(op => (dag.Kind(op), dag.PriceClassOf(op))).ToArray();
        var rows = CollectiveReport.Of(dag, cost);
        Assert.Equal(groups.Length, rows.Count);
        Assert.Equal(groups.Sum(g => g.Count()), rows.Sum(r => r.Count));
        foreach (var byKind in groups.GroupBy(g => g.Key.Item1))
            Assert.Equal(byKind.Select(g => g.Count()).Order(), rows.Where(r => r.Kind == byKind.Key).Select(r => r.Count).Order());
        // Most total time first.
        for (var i = 1; i < rows.Count; i++) Assert.True(rows[i - 1].Seconds * rows[i - 1].Count >= rows[i].Seconds * rows[i].Count);
    }

    /// <summary>The case the table keeps apart from the common one: the theory above covers it only if a class is shared.</summary>
    [Fact]
    public void Tp8_pp2_training_has_a_price_class_two_kinds_share()
    {
        var s = Scenario.Load(TestPaths.Scenario("tp8-pp2-training"));
        var dag = s.BuildDag(DagFolding.Symmetric);
        var kindsByClass = Enumerable.Range(0, dag.Count).Where(op => dag.Category(op) == OpCategory.Communication)
            .GroupBy(dag.PriceClassOf, dag.Kind).Select(g => g.Distinct().Count());
        Assert.Contains(kindsByClass, kinds => kinds > 1);
    }
}

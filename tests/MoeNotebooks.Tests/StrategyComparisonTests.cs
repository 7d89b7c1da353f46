using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

public class StrategyComparisonTests
{
    private static ComparisonRow Row(string series, double x, double? seconds) =>
        new(series, SweepAxisKind.SequenceLength, x, x.ToString(System.Globalization.CultureInfo.InvariantCulture), seconds, true, 0, null,
            seconds is null ? "invalid on purpose" : null);

    [Fact]
    public void CrossoverOfTwoStraightLinesIsWhereTheyMeet()
    {
        // Oracle: hand algebra. A = 1 + x, B = 4 - x/2 meet where 1 + x = 4 - x/2, i.e. x = 2, at 3 s. The points
        // at x = 0, 1, 3, 4 bracket it (no sample at 2), and an invalid A point at x = 5 is ignored.
        var rows = new[] { 0.0, 1, 3, 4 }.SelectMany(x => new[] { Row("A", x, 1 + x), Row("B", x, 4 - x / 2) })
            .Append(Row("A", 5, null)).Append(Row("B", 5, 1.5)).ToArray();
        var c = Assert.Single(StrategyComparison.Crossovers(rows, "A", "B"));
        Assert.Equal(1, c.LowerValue);
        Assert.Equal(3, c.UpperValue);
        Assert.Equal(2, c.AtValue, 12);
        Assert.Equal(3, c.AtSeconds, 12);
        Assert.Equal("A", c.FasterBelow);
        Assert.Equal("B", c.FasterAbove);
        // Swapping the roles gives the same place with the roles swapped.
        var swapped = Assert.Single(StrategyComparison.Crossovers(rows, "B", "A"));
        Assert.Equal(2, swapped.AtValue, 12);
        Assert.Equal("A", swapped.FasterBelow);
        // Several pairs at once: pair by pair, in the order given.
        var both = StrategyComparison.Crossovers(rows, [("A", "B"), ("B", "A")]);
        Assert.Equal(new[] { "A", "B" }, both.Select(x => x.SeriesA));
    }

    [Fact]
    public void ExactTiesCountOnceAndTouchingIsNoCrossover()
    {
        // Oracle: hand-made differences. A - B = -3, 0, 3 changes sign once, at the tie x = 2;
        // A - B = -1, 0, -1 touches without swapping; equal everywhere swaps nothing.
        var crossing = new[] { Row("A", 0, 1), Row("B", 0, 4), Row("A", 2, 3), Row("B", 2, 3), Row("A", 4, 5), Row("B", 4, 2) };
        var c = Assert.Single(StrategyComparison.Crossovers(crossing, "A", "B"));
        Assert.Equal(2, c.AtValue);
        Assert.Equal(3, c.AtSeconds);
        var touching = new[] { Row("A", 0, 1), Row("B", 0, 2), Row("A", 2, 3), Row("B", 2, 3), Row("A", 4, 1), Row("B", 4, 2) };
        Assert.Empty(StrategyComparison.Crossovers(touching, "A", "B"));
        var equal = new[] { Row("A", 0, 1), Row("B", 0, 1), Row("A", 1, 2), Row("B", 1, 2) };
        Assert.Empty(StrategyComparison.Crossovers(equal, "A", "B"));
    }

    [Fact]
    public void TwoSwapsGiveTwoCrossoversInAxisOrder()
    {
        // Oracle: A = (x - 2)^2 against B = 1 sampled at 0..4: A - B = 3, 0, -1, 0, 3 has sign changes at the
        // ties x = 1 and x = 3, given unordered rows.
        var xs = new[] { 4.0, 0, 2, 1, 3 };
        var rows = xs.SelectMany(x => new[] { Row("A", x, (x - 2) * (x - 2)), Row("B", x, 1) }).ToArray();
        var cs = StrategyComparison.Crossovers(rows, "A", "B");
        Assert.Equal(new[] { 1.0, 3.0 }, cs.Select(c => c.AtValue));
        Assert.Equal("B", cs[0].FasterBelow);
        Assert.Equal("A", cs[1].FasterBelow);
    }

    [Fact]
    public void InvalidPointsAreReportedWithTheConfigReason()
    {
        // Oracle: StrategySpec.CheckFits: EP = 16 needs experts divisible by 16, so 8 experts is invalid for EP=16
        // (and reported, not thrown) while TP=8 x PP=2 accepts it.
        var ep = Scenario.Load(TestPaths.Scenario("ep16"));
        var tp = Scenario.Load(TestPaths.Scenario("tp8-pp2"));
        var rows = StrategyComparison.Compare([ep, tp], SweepAxisKind.Experts, [8, 16]);
        var bad = rows.Single(r => r.Series == "ep16" && r.Value == 8);
        Assert.False(bad.IsValid);
        Assert.Null(bad.TotalSeconds);
        Assert.Contains("model.experts", bad.Invalid, StringComparison.Ordinal);
        Assert.Contains("strategy.ep = 16", bad.Invalid, StringComparison.Ordinal);
        Assert.All(rows.Where(r => r != bad), r => Assert.True(r.IsValid && r.TotalSeconds > 0 && r.BreakdownSeconds!.Count == 5));
        // A non-integer or out-of-catalog value is reported too.
        var odd = StrategyComparison.Compare([tp], SweepAxisKind.SequenceLength, [1.5]).Single();
        Assert.Contains("model.sequenceLength", odd.Invalid, StringComparison.Ordinal);
        var noPreset = StrategyComparison.Compare([tp], SweepAxisKind.GpuType, [99]).Single();
        Assert.Contains("hardware.preset", noPreset.Invalid, StringComparison.Ordinal);
    }

    [Fact]
    public void RowsComeInSeriesThenGivenValueOrderAndMatchSequentialEvaluation()
    {
        // Oracle: an independent sequential evaluation of each varied scenario (one thread), compared exactly.
        var ep = Scenario.Load(TestPaths.Scenario("ep16"));
        var tp = Scenario.Load(TestPaths.Scenario("tp8-pp2"));
        double[] values = [4000, 1000, 2000];
        var parallel = StrategyComparison.Compare([tp, ep], SweepAxisKind.SequenceLength, values);
        Assert.Equal(new[] { "tp8-pp2", "tp8-pp2", "tp8-pp2", "ep16", "ep16", "ep16" }, parallel.Select(r => r.Series));
        Assert.Equal(values.Concat(values), parallel.Select(r => r.Value));
        var again = StrategyComparison.Compare([tp, ep], SweepAxisKind.SequenceLength, values, maxParallelism: 1);
        Assert.Equal(again.Select(r => r.TotalSeconds), parallel.Select(r => r.TotalSeconds));
        foreach (var r in parallel)
        {
            var s = r.Series == "ep16" ? ep : tp;
            var expected = (s with { Model = s.Model with { SequenceLength = (long)r.Value } }).Evaluate().TotalSeconds;
            Assert.Equal(expected, r.TotalSeconds);
        }
    }

    [Fact]
    public void VaryKeepsScenariosValidWhereARuleAllows()
    {
        // Oracle: the rules in SweepAxisKind's documentation, checked field by field.
        var ep = Scenario.Load(TestPaths.Scenario("ep16"));
        var tp = Scenario.Load(TestPaths.Scenario("tp8-pp2"));
        var wide = StrategyComparison.Vary(tp, SweepAxisKind.HiddenSize, 4096);
        Assert.Equal((4096L, 16384L, 16), (wide.Model.HiddenSize, wide.Model.FfnHiddenSize, wide.Model.AttentionHeads));

        var ep32 = StrategyComparison.Vary(ep, SweepAxisKind.GpuCount, 32);
        Assert.Equal((32, 32, 2048L, 32), (ep32.Strategy.EP, ep32.Model.Experts, ep32.Model.Batch, ep32.Hardware.GpuCount));
        var tp32 = StrategyComparison.Vary(tp, SweepAxisKind.GpuCount, 32);
        Assert.Equal((8, 2, 2, 32, 2048L), (tp32.Strategy.TP, tp32.Strategy.PP, tp32.Strategy.DP, tp32.Model.Experts, tp32.Model.Batch));
        var e = Assert.Throws<ConfigException>(() => StrategyComparison.Vary(tp, SweepAxisKind.GpuCount, 8));
        Assert.Equal("hardware.gpus", e.Field);

        var h200 = StrategyComparison.Vary(ep, "H200");
        Assert.Equal(("H200", 16), (h200.Hardware.Name, h200.Hardware.GpuCount));
        Assert.Equal("H200", SweepAxisKind.GpuType.Label(StrategyComparison.IndexOf("h200")));

        var skew = StrategyComparison.Vary(ep, SweepAxisKind.ZipfExponent, 1.0);
        Assert.Equal(RoutingDistribution.Zipf, skew.Model.Routing.Distribution);
        Assert.Equal(4, StrategyComparison.Vary(ep, SweepAxisKind.AllToAllChunks, 4).Strategy.AllToAllChunks);
    }

    [Fact]
    public void GridHoldsRatiosOfSeparateEvaluationsAndNaNWhereInvalid()
    {
        // Oracle: the two scenarios evaluated one by one; EP=16 cannot take 8 experts (NaN with the reason).
        var ep = Scenario.Load(TestPaths.Scenario("ep16"));
        var tp = Scenario.Load(TestPaths.Scenario("tp8-pp2"));
        var grid = StrategyComparison.Grid(ep, tp, SweepAxisKind.SequenceLength, [1000, 2000], SweepAxisKind.Experts, [8, 32]);
        Assert.Equal(2, grid.Ratio.GetLength(0));
        Assert.Equal(2, grid.Ratio.GetLength(1));
        Assert.True(double.IsNaN(grid.Ratio[0, 1]));
        Assert.Contains("ep16: ", grid.Invalid[0, 1], StringComparison.Ordinal);
        Assert.Contains("model.experts", grid.Invalid[0, 1], StringComparison.Ordinal);
        Scenario At(Scenario s, long seq, int experts) => s with { Model = s.Model with { SequenceLength = seq, Experts = experts } };
        var expected = At(ep, 2000, 32).Evaluate().TotalSeconds / At(tp, 2000, 32).Evaluate().TotalSeconds;
        Assert.Equal(expected, grid.Ratio[1, 1], 12);
        Assert.Null(grid.Invalid[1, 1]);
        Assert.Equal(new[] { "1000", "2000" }, grid.XLabels);
    }

    [Fact]
    public void RelativeToDividesByTheSeriesOwnBaseline()
    {
        // Oracle: hand arithmetic, 6 / 2 = 3 and 5 / 5 = 1; a series with an invalid baseline is left out.
        var rows = new[] { Row("A", 0, 2), Row("A", 1, 6), Row("B", 0, 5), Row("C", 0, null), Row("C", 1, 4) };
        var rel = StrategyComparison.RelativeTo(rows, 0);
        Assert.Equal(new[] { ("A", 1.0), ("A", 3.0), ("B", 1.0) }, rel.Select(r => (r.Series, r.Ratio)));
    }

    [Fact]
    public void WinnersNameTheFasterSeriesAndTheRatio()
    {
        // Oracle: hand arithmetic. At x = 0: A 2 s vs B 4 s, A faster by 2x; at x = 1: A 6 s vs B 3 s, B by 2x;
        // at x = 2 B is invalid, so no verdict.
        var rows = new[] { Row("A", 0, 2), Row("B", 0, 4), Row("A", 1, 6), Row("B", 1, 3), Row("A", 2, 1), Row("B", 2, null) };
        var w = StrategyComparison.Winners(rows, "A", "B");
        Assert.Equal(new[] { ("A", 2.0), ("B", 2.0) }, w.Select(x => (x.Faster, x.Ratio)));
        Assert.Equal(new[] { 0.0, 1.0 }, w.Select(x => x.Value));
    }
}

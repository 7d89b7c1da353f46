using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

/// <summary>
/// The sweep marks memory-infeasible points as <c>moe search</c> rejects them. Oracles: the memory model called directly
/// on each point's scenario (the verdict search uses), and the founding configuration's known verdict (one
/// microbatch does not fit: one activation tensor is 168 GB; the README and MemoryModelTests).
/// </summary>
public class SweepMemoryTests
{
    private static Sweep Grid() => Sweep.Parse(
        """{ "base": "ep16.json", "grid": { "strategy.microbatches": [1, 16] } }""",
        "test grid", Path.Combine(TestPaths.RepoRoot, "data", "scenarios"));

    [Fact]
    public void Every_valid_point_carries_the_memory_verdict_and_peak_bytes_search_would_use()
    {
        var rows = new List<SweepRow>();
        var summary = Grid().Run(rows.Add);
        Assert.Equal(2, rows.Count);
        var ep16 = Scenario.Load(TestPaths.Scenario("ep16"));
        foreach (var (row, microbatches) in rows.Zip(new[] { 1, 16 }))
        {
            var point = ep16 with { Strategy = ep16.Strategy with { Microbatches = microbatches } };
            var expected = MemoryModel.Estimate(point.Model, point.Strategy, point.Hardware);
            Assert.Equal(expected.Feasible, row.FitsInMemory);
            Assert.Equal(expected.PeakBytesPerGpu, row.PeakBytesPerGpu);
        }

        Assert.False(rows[0].FitsInMemory); // the founding batch in one microbatch does not fit
        Assert.True(rows[1].FitsInMemory);
        Assert.Equal(1, summary.MemoryInfeasible);
        Assert.Equal(rows[1], summary.FastestFitting);
    }

    [Fact]
    public void Csv_has_the_verdict_and_peak_bytes_columns()
    {
        var sweep = Grid();
        var text = new StringWriter();
        sweep.WriteCsv(text);
        var lines = text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.EndsWith(",memory_verdict,peak_bytes_per_gpu", lines[0].TrimEnd());
        Assert.Contains(",does not fit,", lines[1], StringComparison.Ordinal);
        Assert.Contains(",fits,", lines[2], StringComparison.Ordinal);
    }
}

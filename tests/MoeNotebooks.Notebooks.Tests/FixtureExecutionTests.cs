using MoeNotebooks.Reports;

namespace MoeNotebooks.Notebooks.Tests;

public sealed class FixtureExecutionTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Smoke_fixture_runs_and_produces_chart_table_and_text()
    {
        var result = await NotebookRunner.RunAsync(RepoPaths.Fixture("report-smoke.ipynb"), p => output.WriteLine($"cell {p.CellNumber} {(p.Finished ? "done" : "start")} {p.Elapsed}"));
        foreach (var cell in result.Cells)
        {
            output.WriteLine($"--- cell {cell.Number} ({cell.KernelName}) {cell.Duration}");
            foreach (var o in cell.Outputs)
            {
                foreach (var (mime, value) in o.Values)
                {
                    output.WriteLine($"[{o.Kind} {mime}] {value[..Math.Min(value.Length, 3000)]}");
                }
            }
        }

        Assert.True(result.Succeeded, result.Failure?.ToString());
    }
}

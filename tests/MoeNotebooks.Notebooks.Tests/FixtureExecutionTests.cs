using MoeNotebooks.Reports;

namespace MoeNotebooks.Notebooks.Tests;

[Collection(SmokeNotebookCollection.Name)]
public sealed class FixtureExecutionTests(SmokeNotebookFixture smoke, ITestOutputHelper output)
{
    [Fact]
    public void Smoke_fixture_runs_every_cell()
    {
        output.WriteLine($"executed in {smoke.Notebook.Duration}; per cell: " +
            string.Join(", ", smoke.Notebook.Cells.Where(c => c.Executed).Select(c => $"{c.Number}: {c.Duration.TotalSeconds:0.0} s")));
        Assert.True(smoke.Notebook.Succeeded, smoke.Notebook.Failure?.ToString());
        Assert.All(smoke.Notebook.Cells.Where(c => !c.IsMarkdown), c => Assert.True(c.Executed, $"cell {c.Number} did not run"));
        Assert.Equal(7, smoke.Notebook.Cells.Count);
        Assert.Equal(2, smoke.Notebook.Cells.Count(c => c.IsMarkdown));
    }

    [Fact]
    public void Progress_is_reported_before_and_after_each_code_cell()
    {
        Assert.Equal(10, smoke.Progress.Count);
        Assert.StartsWith("cell 2 code 1/5 start", smoke.Progress[0], StringComparison.Ordinal);
        Assert.StartsWith("cell 7 code 5/5 done", smoke.Progress[^1], StringComparison.Ordinal);
    }

    [Fact]
    public void Chart_cells_are_formatted_as_plotly_html_by_the_kernel_extension()
    {
        var charts = Displays(smoke.Notebook).Where(h => h.Contains("Plotly.newPlot", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, charts.Count);
        Assert.Contains("Speed-up vs GPUs", charts[0], StringComparison.Ordinal);
        Assert.Contains("GPUs (count)", charts[0], StringComparison.Ordinal);
        Assert.Contains("\"base\":[0.0,0.0]", charts[1], StringComparison.Ordinal);
    }

    [Fact]
    public void DataFrame_and_stdout_are_captured()
    {
        var cell = smoke.Notebook.Cells[4];
        var table = Assert.Single(cell.Outputs, o => o.Kind == CellOutputKind.Display).Values[CellOutput.Html];
        // Shown by TableDisplay (changed from Microsoft.Data.Analysis' formatter, issue 16): no index column, numbers
        // right-aligned and rounded, nothing breaks inside a token, sideways scroll.
        Assert.Contains("class=\"moe-table\" style=\"overflow-x:auto", table, StringComparison.Ordinal);
        Assert.Contains(">DurationMs</th>", table, StringComparison.Ordinal);
        Assert.DoesNotContain(">index<", table, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("white-space:nowrap;text-align:right;font-variant-numeric:tabular-nums\">1.250</td>", table, StringComparison.Ordinal);
        Assert.Contains("all-to-all", table, StringComparison.Ordinal);
        var stdout = Assert.Single(cell.Outputs, o => o.Kind == CellOutputKind.StandardOutput).Values[CellOutput.PlainText];
        Assert.Equal("<script>alert(1)</script>", stdout.Trim());
    }

    [Fact]
    public async Task Failing_fixture_names_notebook_and_cell()
    {
        var result = await NotebookRunner.RunAsync(RepoPaths.Fixture("fails-in-cell-3.ipynb"));

        var failure = Assert.IsType<NotebookFailure>(result.Failure);
        Assert.Equal(3, failure.CellNumber);
        Assert.Equal(2, failure.CodeCellNumber);
        Assert.Contains("deliberate failure in cell 3", failure.Message, StringComparison.Ordinal);
        var line = failure.ToString();
        Assert.Contains("fails-in-cell-3.ipynb", line, StringComparison.Ordinal);
        Assert.Contains("cell 3 (code cell 2) failed: System.InvalidOperationException: deliberate failure in cell 3", line, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', line);
        Assert.Equal("answer = 42", result.Cells[1].Outputs.Single().Values[CellOutput.PlainText].Trim());
        Assert.False(result.Cells[3].Executed);
    }

    [Fact]
    public void Charts_need_no_network_and_only_the_first_one_of_the_kernel_brings_plotly_js()
    {
        // Oracle: ChartDisplay's contract. Both fixture charts run in one kernel; plotly.js is inlined in the first
        // chart's output only, and no output loads require.js or plotly.js from a CDN (Plotly.NET.Interactive's own
        // formatter did: https://cdn.plot.ly/plotly-2.28.0.min and cdnjs' require.js).
        var charts = Displays(smoke.Notebook).Where(h => h.Contains("Plotly.newPlot", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, charts.Count);
        Assert.Contains(MoeNotebooks.Interactive.ChartDisplay.InlinePlotlyMarker, charts[0], StringComparison.Ordinal);
        Assert.Contains(MoeNotebooks.Interactive.PlotlyJs.Source[..200], charts[0], StringComparison.Ordinal);
        Assert.DoesNotContain(MoeNotebooks.Interactive.ChartDisplay.InlinePlotlyMarker, charts[1], StringComparison.Ordinal);
        foreach (var chart in charts)
        {
            Assert.DoesNotContain("cdn.plot.ly", chart, StringComparison.Ordinal);
            Assert.DoesNotContain("require.js", chart, StringComparison.Ordinal);
            Assert.DoesNotContain("<script src=", chart, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task RunOrThrow_throws_NotebookCellException()
    {
        var ex = await Assert.ThrowsAsync<NotebookCellException>(() => NotebookRunner.RunOrThrowAsync(RepoPaths.Fixture("fails-in-cell-3.ipynb")));
        Assert.Equal(3, ex.CellNumber);
        Assert.EndsWith("fails-in-cell-3.ipynb", ex.NotebookPath, StringComparison.Ordinal);
        Assert.Contains("cell 3", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Working_directory_is_the_notebook_folder_and_is_restored()
    {
        var dir = Directory.CreateTempSubdirectory("moe-nb-").FullName;
        try
        {
            var before = Environment.CurrentDirectory;
            var path = Path.Combine(dir, "cwd.ipynb");
            File.WriteAllText(path, NotebookJson.Code("System.Console.Write(System.Environment.CurrentDirectory);"));
            var result = await NotebookRunner.RunOrThrowAsync(path);
            Assert.Equal(dir, result.Cells[0].Outputs.Single().Values[CellOutput.PlainText]);
            Assert.Equal(before, Environment.CurrentDirectory);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static IEnumerable<string> Displays(ExecutedNotebook notebook) =>
        notebook.Cells.SelectMany(c => c.Outputs)
            .Where(o => o.Kind == CellOutputKind.Display && o.Values.ContainsKey(CellOutput.Html))
            .Select(o => o.Values[CellOutput.Html]);
}

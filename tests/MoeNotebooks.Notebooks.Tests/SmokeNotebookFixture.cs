using MoeNotebooks.Interactive;
using MoeNotebooks.Reports;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Executes Fixtures/report-smoke.ipynb once for all report tests. Before that it deliberately loads this repo's
/// MoeNotebooks.Core and MoeNotebooks.Interactive from the test's own bin/ (as the CLI process would have them), so the
/// run proves that the notebook's <c>#r "…/.build/notebooks/…dll"</c> still works when those assemblies are loaded.
/// </summary>
public sealed class SmokeNotebookFixture : IAsyncLifetime
{
    public ExecutedNotebook Notebook { get; private set; } = null!;

    public string Html { get; private set; } = null!;

    public List<string> Progress { get; } = [];

    /// <summary>The rendered report, written to a fresh temp folder (for the browser test).</summary>
    public string ReportPath { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _ = Charts.Line("preload", "x", "y", [("s", 1, 1)]);
        _ = typeof(MoeNotebooks.Config.ModelSpec).Assembly.GetName();
        Notebook = await NotebookRunner.RunAsync(
            RepoPaths.Fixture("report-smoke.ipynb"),
            p => Progress.Add($"cell {p.CellNumber} code {p.CodeCellNumber}/{p.CodeCellCount} {(p.Finished ? "done" : "start")} at {p.Elapsed}"));
        Html = HtmlReportWriter.Render(Notebook, "tests/MoeNotebooks.Notebooks.Tests/Fixtures/report-smoke.ipynb");
        ReportPath = Path.Combine(Directory.CreateTempSubdirectory("moe-smoke-report-").FullName, "report-smoke.html");
        await File.WriteAllTextAsync(ReportPath, Html);
    }

    public Task DisposeAsync()
    {
        Directory.Delete(Path.GetDirectoryName(ReportPath)!, recursive: true);
        return Task.CompletedTask;
    }
}

/// <summary>Shares one execution of the smoke fixture between the test classes that inspect it.</summary>
[CollectionDefinition(Name)]
public sealed class SmokeNotebookCollection : ICollectionFixture<SmokeNotebookFixture>
{
    public const string Name = "report-smoke notebook";
}

using MoeNotebooks.Interactive;
using MoeNotebooks.Reports;
using PlotlyJs = MoeNotebooks.Reports.PlotlyJs;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Issue 16's report features: readable tables (rounding), collapsed setup cells, the parameters in the header, an
/// index with purpose, headline numbers, status and run time, one-notebook runs that keep the other rows, and the
/// shared-assets option. Oracles: hand-worked values and the documented contracts of each piece.
/// </summary>
[Collection(SmokeNotebookCollection.Name)]
public sealed class ReportFeatureTests(SmokeNotebookFixture smoke)
{
    [Theory]
    // Hand-worked: 4 significant digits for non-integers, thousands separators for integers, scientific outside 1e-3..1e9.
    [InlineData(38.79341, "38.79")]
    [InlineData(5.968923171850859, "5.969")]
    [InlineData(0.37, "0.3700")]
    [InlineData(10240000, "10,240,000")]
    [InlineData(1234.5678, "1,235")]
    [InlineData(0.000123456, "1.235E-4")]
    [InlineData(2.5e12, "2,500,000,000,000")]
    [InlineData(3.3e9 + 0.5, "3.3E+9")]
    public void Table_numbers_are_rounded_for_reading(double value, string shown) =>
        Assert.Equal(shown, TableDisplay.FormatNumber(value));

    [Fact]
    public void Setup_cells_and_installed_packages_are_collapsed_so_the_report_opens_on_its_title()
    {
        var html = smoke.Html;
        var firstDetails = html.IndexOf("<details class=\"setup\">", StringComparison.Ordinal);
        Assert.True(firstDetails > 0, "no collapsed setup cell");
        Assert.Equal(2, html.Split("<details class=\"setup\">").Length - 1);
        // Everything the setup cells show (their code, the kernel's "Installed Packages") sits inside the details.
        var setupEnd = html.LastIndexOf("</details>", StringComparison.Ordinal);
        foreach (var text in new[] { "Setup 1/2", "#r &quot;nuget: Plotly.NET" })
        {
            var at = html.IndexOf(text, html.IndexOf("<main>", StringComparison.Ordinal), StringComparison.Ordinal);
            Assert.InRange(at, firstDetails, setupEnd);
        }

        var installed = html.IndexOf("Installed Packages", StringComparison.Ordinal);
        Assert.True(installed < 0 || (installed > firstDetails && installed < setupEnd), "Installed Packages outside the collapsed setup");
    }

    [Fact]
    public void The_report_carries_plotly_js_once_even_though_the_first_chart_brought_its_own()
    {
        Assert.Equal(1, smoke.Html.Split("/* plotly.js ").Length - 1);
        Assert.DoesNotContain(ChartDisplay.InlinePlotlyMarker, smoke.Html, StringComparison.Ordinal);
    }

    private static ExecutedNotebook Executed(string name, params (string Source, bool Markdown, CellOutput[] Outputs)[] cells)
    {
        var code = 0;
        return new ExecutedNotebook($"/x/notebooks/{name}.ipynb",
            cells.Select((c, i) => new ExecutedCell(i + 1, c.Markdown ? null : ++code, c.Markdown ? "markdown" : "csharp", c.Source, c.Outputs, TimeSpan.FromSeconds(1), !c.Markdown)).ToList(),
            TimeSpan.FromSeconds(12.5), null);
    }

    private static CellOutput Html(string html) => new(CellOutputKind.Display, new Dictionary<string, string> { [CellOutput.Html] = html });

    [Fact]
    public void Summary_reads_purpose_parameters_headlines_and_skips()
    {
        var notebook = Executed("07-demo",
            ("# 07 · Demo: what the index shows\n\nText.", true, []),
            ("## Parameters", true, []),
            ("// Parameters: change these, then Run All.\nvar scenarioFile = \"../data/scenarios/ep16.json\";\nvar zipf = 1.0;   // routing skew\n  var nested = 3; // indented: not a parameter", false, []),
            ("Headlines.Show(...)", false, [Html(Headlines.ToHtmlForTests(("EP=16 <forward>", 5.968923, "s")))]),
            ("Headlines.Skipped(...)", false, [Html(Headlines.ToHtmlForTests("no GPU trace & no measurements"))]));
        var summary = NotebookSummary.Of(notebook, "notebooks/07-demo.ipynb", "07-demo.html");
        Assert.Equal("Demo: what the index shows", summary.Purpose);
        Assert.Equal([new NotebookParameter("scenarioFile", "\"../data/scenarios/ep16.json\"", null), new NotebookParameter("zipf", "1.0", "routing skew")], summary.Parameters);
        Assert.Equal([new HeadlineNumber("EP=16 <forward>", 5.968923, "s")], summary.Headlines);
        Assert.Equal(NotebookStatus.Skipped, summary.Status);
        Assert.Equal("no GPU trace & no measurements", summary.Reason);
        Assert.Equal(summary.ToJson(), NotebookSummary.TryLoad(WriteTemp(summary.ToJson()))?.ToJson()); // round trip

        var html = HtmlReportWriter.Render(notebook, "notebooks/07-demo.ipynb");
        Assert.Contains("<table class=\"parameters\">", html, StringComparison.Ordinal);
        Assert.Contains("<code>zipf</code></th><td><code>1.0</code></td><td>routing skew</td>", html, StringComparison.Ordinal);
        Assert.Contains("<p class=\"skip-banner\">Skipped: no GPU trace &amp; no measurements</p>", html, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("# 07 · Demo: what the index shows", "Demo: what the index shows")]
    [InlineData("# 06 — Calibration and validation: how wrong is the model?", "Calibration and validation: how wrong is the model?")]
    [InlineData("# Plain title", "Plain title")]
    public void Purpose_is_the_title_without_its_number(string heading, string purpose) =>
        Assert.Equal(purpose, NotebookSummary.PurposeOf(Executed("x", (heading, true, []))));

    private static string WriteTemp(string text)
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("moe-summary-").FullName, "s.json");
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void One_notebook_run_updates_its_row_and_keeps_the_others()
    {
        var root = Directory.CreateTempSubdirectory("moe-report-one-").FullName;
        try
        {
            var notebooks = Directory.CreateDirectory(Path.Combine(root, "notebooks")).FullName;
            File.WriteAllText(Path.Combine(notebooks, "01-first.ipynb"), NotebookJson.Build([("markdown", "# 01 · First purpose"), ("code", "Console.WriteLine(1);")]));
            File.WriteAllText(Path.Combine(notebooks, "02-second.ipynb"), NotebookJson.Build([("markdown", "# 02 · Second purpose"), ("code", "Console.WriteLine(2);")]));
            var outDir = Path.Combine(root, "out");

            var log = new StringWriter();
            Assert.Equal(ReportCommand.ExitOk, ReportCommand.Run(root, outDir, log, [Path.Combine(notebooks, "02-second.ipynb")]));
            Assert.Contains("report: 1 notebook(s)", log.ToString(), StringComparison.Ordinal);
            Assert.False(File.Exists(Path.Combine(outDir, "01-first.html")));
            var index = File.ReadAllText(Path.Combine(outDir, "index.html"));
            Assert.Contains("not run yet (<code>moe report notebooks/01-first.ipynb</code>)", index, StringComparison.Ordinal);
            Assert.Contains("<a href=\"02-second.html\">02-second</a></td><td class=\"purpose-cell\">Second purpose</td>", index, StringComparison.Ordinal);

            Assert.Equal(ReportCommand.ExitOk, ReportCommand.Run(root, outDir, new StringWriter(), [Path.Combine(notebooks, "01-first.ipynb")], sharedAssets: true));
            index = File.ReadAllText(Path.Combine(outDir, "index.html"));
            Assert.DoesNotContain("not run yet", index, StringComparison.Ordinal);
            Assert.Contains("First purpose", index, StringComparison.Ordinal);
            Assert.Contains("Second purpose", index, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(outDir, PlotlyJs.FileName)), "--shared-assets writes plotly.js beside the reports");

            var bad = new StringWriter();
            Assert.Equal(ReportCommand.ExitUsage, ReportCommand.Run(root, outDir, bad, [Path.Combine(notebooks, "09-missing.ipynb")]));
            Assert.Contains("error: notebook = ", bad.ToString(), StringComparison.Ordinal);
            Assert.Contains("01-first.ipynb, 02-second.ipynb", bad.ToString(), StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Shared_assets_reference_the_copy_beside_the_report_instead_of_inlining()
    {
        var html = HtmlReportWriter.Render(smoke.Notebook, "fixture", sharedAssets: true);
        Assert.Contains($"<script src=\"{PlotlyJs.FileName}\"></script>", html, StringComparison.Ordinal);
        Assert.DoesNotContain("/* plotly.js ", html, StringComparison.Ordinal);
        Assert.True(html.Length < smoke.Html.Length / 4, "the shared-assets page should be a fraction of the single-file one");
    }
}

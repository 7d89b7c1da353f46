using System.Text.RegularExpressions;
using MoeNotebooks.Reports;

namespace MoeNotebooks.Notebooks.Tests;

[Collection(SmokeNotebookCollection.Name)]
public sealed partial class HtmlReportTests(SmokeNotebookFixture smoke)
{
    [Fact]
    public void Plotly_js_is_inlined_exactly_once()
    {
        var source = PlotlyJs.Source;
        Assert.True(source.Length > 1_000_000, "plotly.js resource looks too small");
        var probe = source.Substring(source.Length / 2, 80);
        Assert.Equal(1, Count(source, probe));
        Assert.Equal(1, Count(smoke.Html, probe));
        Assert.Equal(1, Count(smoke.Html, "inlined from Plotly.NET.dll"));
        Assert.Equal("2.28.0", PlotlyJs.Version);
        Assert.True(smoke.Html.Length < source.Length + 500_000, $"report is {smoke.Html.Length} chars");
    }

    [Fact]
    public void Report_has_no_network_references()
    {
        var html = smoke.Html;
        Assert.DoesNotContain("src=\"http", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("href=\"http", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("src='http", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("cdn.plot.ly", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("cdnjs", html, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(ScriptLoadOfUrl().Matches(html));
        Assert.Empty(ExternalStylesheetOrFont().Matches(html));
    }

    [Fact]
    public void Chart_html_is_kept_and_wired_to_the_require_shim()
    {
        Assert.Equal(2, Regex.Matches(smoke.Html, @"Plotly\.newPlot\('[0-9a-f-]{36}'").Count);
        Assert.Contains("window.requirejs = load;", smoke.Html, StringComparison.Ordinal);
        // The shim must follow plotly.js, or plotly's UMD header would register through it instead of setting window.Plotly.
        Assert.True(smoke.Html.IndexOf("window.requirejs = load;", StringComparison.Ordinal) > smoke.Html.IndexOf("inlined from Plotly.NET.dll", StringComparison.Ordinal));
    }

    [Fact]
    public void Code_and_text_outputs_are_html_escaped()
    {
        Assert.DoesNotContain("<script>alert(1)</script>", smoke.Html, StringComparison.Ordinal);
        // Once in the code cell's source, once in its stdout.
        Assert.Equal(2, Count(smoke.Html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
        Assert.Contains("<pre class=\"output stdout\">&lt;script&gt;alert(1)&lt;/script&gt;", smoke.Html, StringComparison.Ordinal);
    }

    [Fact]
    public void Table_values_such_as_scenario_names_are_html_escaped()
    {
        // The fixture puts "<script>alert(2)</script>" into a DataFrame cell (as a scenario name would be): the
        // DataFrame's HTML formatter output is embedded as HTML, so it must arrive escaped, never as a live script.
        Assert.DoesNotContain("<script>alert(2)</script>", smoke.Html, StringComparison.Ordinal);
        Assert.Contains("&lt;script&gt;alert(2)&lt;/script&gt;", smoke.Html, StringComparison.Ordinal);
    }

    [Fact]
    public void Markdown_is_rendered_with_pipe_tables()
    {
        Assert.Contains("<h1 id=\"report-smoke-fixture\">Report smoke fixture</h1>", smoke.Html, StringComparison.Ordinal);
        Assert.Contains("<th>strategy</th>", smoke.Html, StringComparison.Ordinal);
        Assert.Contains("<td>experts split across GPUs</td>", smoke.Html, StringComparison.Ordinal);
        Assert.Contains("<strong>markdown</strong>", smoke.Html, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Failed_notebook_report_shows_the_failure_and_cells_not_run()
    {
        var result = await NotebookRunner.RunAsync(RepoPaths.Fixture("fails-in-cell-3.ipynb"));
        var html = HtmlReportWriter.Render(result);
        Assert.Contains("class=\"failure-banner\"", html, StringComparison.Ordinal);
        Assert.Contains("cell 3 (code cell 2) failed", html, StringComparison.Ordinal);
        Assert.Contains("<section class=\"cell code state-failed\" id=\"cell-3\">", html, StringComparison.Ordinal);
        Assert.Contains("<section class=\"cell code state-not-run\" id=\"cell-4\">", html, StringComparison.Ordinal);
        Assert.DoesNotContain("inlined from Plotly.NET.dll", html, StringComparison.Ordinal);
    }

    [Fact]
    public void External_resources_in_cell_html_are_neutralised()
    {
        const string html = """
            <script src="https://example.org/x.js"></script><img src='http://example.org/a.png'>
            <link rel="stylesheet" href="https://example.org/s.css">
            <script>requirejs.config({paths:{plotly:'https://cdn.plot.ly/plotly-2.28.0.min'}}); s.setAttribute("src", "https://cdnjs.cloudflare.com/r.js");</script>
            <a href="https://example.org/doc">a link is navigation, not a load</a>
            """;
        var result = HtmlReportWriter.NeutraliseExternalResources(html);
        Assert.DoesNotContain("https://example.org/x.js", result, StringComparison.Ordinal);
        Assert.DoesNotContain("http://example.org/a.png", result, StringComparison.Ordinal);
        Assert.DoesNotContain("s.css", result, StringComparison.Ordinal);
        Assert.DoesNotContain("cdn.plot.ly", result, StringComparison.Ordinal);
        Assert.DoesNotContain("cdnjs", result, StringComparison.Ordinal);
        Assert.Contains("<a href=\"https://example.org/doc\">", result, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReportBuilder_writes_pages_and_index_and_names_the_failing_cell()
    {
        var root = Directory.CreateTempSubdirectory("moe-report-").FullName;
        try
        {
            var notebooks = Directory.CreateDirectory(Path.Combine(root, "notebooks")).FullName;
            File.Copy(RepoPaths.Fixture("fails-in-cell-3.ipynb"), Path.Combine(notebooks, "02-broken.ipynb"));
            File.WriteAllText(Path.Combine(notebooks, "03-garbage.ipynb"), "{ not json");
            File.WriteAllText(Path.Combine(notebooks, "01-fine.ipynb"), NotebookJson.Build([("markdown", "# Fine"), ("code", "Console.WriteLine(1 + 1);")]));
            var log = new StringWriter();

            var exit = ReportCommand.Run(root, Path.Combine(root, "out"), log);

            var text = log.ToString();
            Assert.Equal(ReportCommand.ExitNotebookFailed, exit);
            Assert.Contains("error: notebooks/02-broken.ipynb: cell 3 (code cell 2) failed: System.InvalidOperationException: deliberate failure in cell 3", text, StringComparison.Ordinal);
            Assert.Contains("error: notebooks/03-garbage.ipynb: could not be run: ", text, StringComparison.Ordinal);
            Assert.True(text.IndexOf("[1/3] notebooks/01-fine.ipynb", StringComparison.Ordinal) < text.IndexOf("[2/3] notebooks/02-broken.ipynb", StringComparison.Ordinal), text);
            Assert.True(File.Exists(Path.Combine(root, "out", "01-fine.html")));
            Assert.True(File.Exists(Path.Combine(root, "out", "02-broken.html")));
            var index = File.ReadAllText(Path.Combine(root, "out", "index.html"));
            Assert.Contains("<a href=\"01-fine.html\">01-fine</a>", index, StringComparison.Ordinal);
            Assert.Contains("<span class=\"failed\">failed</span>: cell 3 (code cell 2) failed: System.InvalidOperationException: deliberate failure in cell 3", index, StringComparison.Ordinal);
            Assert.Contains("<span class=\"failed\">failed</span>: could not be run:", index, StringComparison.Ordinal);
            Assert.Contains("<span class=\"ok\">ok</span>", index, StringComparison.Ordinal);
            Assert.Matches(@"<td>\d+(\.\d)? m?s</td>", index);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void ReportCommand_without_notebooks_folder_is_a_usage_error()
    {
        var log = new StringWriter();
        Assert.Equal(ReportCommand.ExitUsage, ReportCommand.Run(Path.Combine(Path.GetTempPath(), "no-such-moe-repo"), Path.GetTempPath(), log));
        Assert.Contains("no notebooks folder", log.ToString(), StringComparison.Ordinal);
    }

    private static int Count(string text, string value)
    {
        var count = 0;
        for (var i = text.IndexOf(value, StringComparison.Ordinal); i >= 0; i = text.IndexOf(value, i + value.Length, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    [GeneratedRegex(@"(<script[^>]*\bsrc\s*=\s*['""]?\s*(https?:)?//)|(setAttribute\(\s*['""]src['""]\s*,\s*['""]https?:)|(paths\s*:\s*\{[^}]*https?:)", RegexOptions.IgnoreCase)]
    private static partial Regex ScriptLoadOfUrl();

    [GeneratedRegex(@"(<link[^>]*href\s*=\s*['""]?\s*(https?:)?//)|(@import\s+url\(\s*['""]?https?:)|(@font-face[^}]*url\(\s*['""]?https?:)", RegexOptions.IgnoreCase)]
    private static partial Regex ExternalStylesheetOrFont();
}

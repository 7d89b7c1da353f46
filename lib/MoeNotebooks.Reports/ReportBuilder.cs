using System.Globalization;
using System.Net;
using System.Text;

namespace MoeNotebooks.Reports;

/// <summary>One notebook's part of a report run.</summary>
public sealed record NotebookReport(string NotebookPath, string DisplayPath, string HtmlPath, TimeSpan Duration, NotebookFailure? Failure)
{
    public bool Succeeded => Failure is null;
}

/// <summary>A report run over a folder of notebooks.</summary>
public sealed record ReportResult(IReadOnlyList<NotebookReport> Notebooks, string IndexPath)
{
    public bool Succeeded => Notebooks.All(n => n.Succeeded);
}

/// <summary>
/// Runs the notebooks of a folder (all, sorted by file name, or only the ones asked for), writes
/// <c>&lt;out&gt;/&lt;name&gt;.html</c> for each (failed ones too, with the failing cell marked) and
/// <c>&lt;name&gt;.summary.json</c> beside it, then rebuilds <c>index.html</c> from the summaries of EVERY notebook of the
/// folder (so a one-notebook run updates its row and keeps the others' last results).
/// </summary>
public static class ReportBuilder
{
    public static async Task<ReportResult> BuildAsync(
        string notebooksDirectory, string outDirectory, TextWriter log, string? displayRoot = null, CancellationToken cancellationToken = default,
        IReadOnlyList<string>? only = null, bool sharedAssets = false)
    {
        ArgumentNullException.ThrowIfNull(log);
        var all = Directory.GetFiles(notebooksDirectory, "*.ipynb").Order(StringComparer.Ordinal).ToList();
        var notebooks = only is null ? all : only.Select(Path.GetFullPath).ToList();
        Directory.CreateDirectory(outDirectory);
        var root = displayRoot ?? Path.GetDirectoryName(Path.GetFullPath(notebooksDirectory))!;
        log.WriteLine($"report: {notebooks.Count} notebook(s) in {Path.GetRelativePath(root, notebooksDirectory)} -> {outDirectory}");
        if (sharedAssets)
        {
            var asset = Path.Combine(outDirectory, PlotlyJs.FileName);
            WriteText(asset, PlotlyJs.Source);
            log.WriteLine($"report: shared plotly.js -> {asset}");
        }

        var reports = new List<NotebookReport>();
        for (var i = 0; i < notebooks.Count; i++)
        {
            var path = notebooks[i];
            var display = Path.GetRelativePath(root, path);
            log.WriteLine($"[{i + 1}/{notebooks.Count}] {display}");
            ExecutedNotebook executed;
            try
            {
                executed = await NotebookRunner.RunAsync(
                    path,
                    p =>
                    {
                        if (p.Finished)
                        {
                            log.WriteLine($"    cell {p.CellNumber} (code cell {p.CodeCellNumber}/{p.CodeCellCount}) done at {HtmlReportWriter.FormatDuration(p.Elapsed)}");
                        }
                    },
                    cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                executed = new ExecutedNotebook(path, [], TimeSpan.Zero, new NotebookFailure(display, 0, 0, $"{ex.GetType().Name}: {ex.Message}"));
            }

            var failure = executed.Failure is { } f ? f with { NotebookPath = display } : null;
            executed = executed with { Failure = failure };
            var htmlPath = Path.Combine(outDirectory, executed.Name + ".html");
            WriteText(htmlPath, HtmlReportWriter.Render(executed, display, sharedAssets));
            var summary = NotebookSummary.Of(executed, display, executed.Name + ".html");
            WriteText(SummaryPath(outDirectory, executed.Name), summary.ToJson());
            reports.Add(new NotebookReport(path, display, htmlPath, executed.Duration, failure));
            log.WriteLine(summary.Status switch
            {
                NotebookStatus.Ok => $"    ok in {HtmlReportWriter.FormatDuration(executed.Duration)} -> {htmlPath}",
                NotebookStatus.Skipped => $"    skipped in part ({summary.Reason}) in {HtmlReportWriter.FormatDuration(executed.Duration)} -> {htmlPath}",
                _ => $"error: {failure}",
            });
        }

        var indexPath = Path.Combine(outDirectory, "index.html");
        var rows = all.Select(n => (Name: Path.GetFileNameWithoutExtension(n), Display: Path.GetRelativePath(root, n)))
            .Select(n => (n.Name, n.Display, Summary: NotebookSummary.TryLoad(SummaryPath(outDirectory, n.Name))))
            .ToList();
        WriteText(indexPath, RenderIndex(rows));
        var failed = reports.Count(r => !r.Succeeded);
        log.WriteLine(failed == 0
            ? $"report: {reports.Count} notebook(s) ok -> {indexPath}"
            : $"report: {failed} of {reports.Count} notebook(s) FAILED -> {indexPath}");
        return new ReportResult(reports, indexPath);
    }

    /// <summary><c>&lt;out&gt;/&lt;name&gt;.summary.json</c>.</summary>
    public static string SummaryPath(string outDirectory, string notebookName) => Path.Combine(outDirectory, notebookName + ".summary.json");

    // Written to a temporary file first, then moved over the old one: a reader never sees half a report.
    private static void WriteText(string path, string text)
    {
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, text, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>
    /// The index page: one row per notebook of the folder with its purpose, headline numbers, status (ok,
    /// skipped with the reason, failed with the cell, or not run yet) and run time.
    /// </summary>
    public static string RenderIndex(IReadOnlyList<(string Name, string Display, NotebookSummary? Summary)> notebooks)
    {
        ArgumentNullException.ThrowIfNull(notebooks);
        var c = CultureInfo.InvariantCulture;
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>MoeNotebooks reports</title>\n<style>\n")
            .Append(HtmlReportWriter.Css).Append("td.purpose-cell, td.headlines { white-space: normal; min-width: 16em; }\n")
            .Append("</style>\n</head>\n<body>\n<main>\n<header class=\"report-header\"><h1>MoeNotebooks reports</h1>\n<p class=\"meta\">")
            .Append(notebooks.Count).Append(" notebook(s) · index rebuilt ")
            .Append(WebUtility.HtmlEncode(DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", c)))
            .Append("</p></header>\n");
        if (notebooks.Count == 0)
        {
            html.Append("<p>No notebooks found.</p>\n");
        }
        else
        {
            html.Append("<div class=\"output html\"><table>\n<thead><tr><th>notebook</th><th>purpose</th><th>headline numbers</th><th>status</th><th>run time</th><th>generated</th></tr></thead>\n<tbody>\n");
            foreach (var (name, display, summary) in notebooks)
            {
                html.Append("<tr><td>");
                if (summary is null)
                {
                    html.Append(WebUtility.HtmlEncode(name)).Append("</td><td class=\"purpose-cell\"></td><td class=\"headlines\"></td><td>not run yet (<code>moe report ")
                        .Append(WebUtility.HtmlEncode(display)).Append("</code>)</td><td></td><td></td></tr>\n");
                    continue;
                }

                html.Append("<a href=\"").Append(Uri.EscapeDataString(summary.HtmlFile)).Append("\">").Append(WebUtility.HtmlEncode(name)).Append("</a></td>")
                    .Append("<td class=\"purpose-cell\">").Append(WebUtility.HtmlEncode(summary.Purpose)).Append("</td><td class=\"headlines\">")
                    .Append(string.Join("<br>", summary.Headlines.Select(h =>
                        WebUtility.HtmlEncode($"{h.Name}: {MoeNotebooks.Interactive.TableDisplay.FormatNumber(h.Value)} {h.Unit}".TrimEnd()))))
                    .Append("</td><td>")
                    .Append(summary.Status switch
                    {
                        NotebookStatus.Ok => "<span class=\"ok\">ok</span>",
                        NotebookStatus.Skipped => "<span class=\"skipped\">skipped</span>: " + WebUtility.HtmlEncode(summary.Reason ?? ""),
                        _ => "<span class=\"failed\">failed</span>: " + WebUtility.HtmlEncode(summary.Reason ?? ""),
                    })
                    .Append("</td><td>").Append(HtmlReportWriter.FormatDuration(TimeSpan.FromSeconds(summary.DurationSeconds)))
                    .Append("</td><td>").Append(WebUtility.HtmlEncode(summary.GeneratedUtc.ToString("yyyy-MM-dd HH:mm", c))).Append("</td></tr>\n");
            }

            html.Append("</tbody>\n</table></div>\n");
        }

        html.Append("</main>\n</body>\n</html>\n");
        return html.ToString();
    }
}

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
/// Runs every <c>*.ipynb</c> in a folder (sorted by file name), writes <c>&lt;out&gt;/&lt;name&gt;.html</c> for each
/// (failed ones too, with the failing cell marked) and an <c>index.html</c> with links, status and durations.
/// </summary>
public static class ReportBuilder
{
    public static async Task<ReportResult> BuildAsync(
        string notebooksDirectory, string outDirectory, TextWriter log, string? displayRoot = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(log);
        var notebooks = Directory.GetFiles(notebooksDirectory, "*.ipynb").Order(StringComparer.Ordinal).ToList();
        Directory.CreateDirectory(outDirectory);
        var root = displayRoot ?? Path.GetDirectoryName(Path.GetFullPath(notebooksDirectory))!;
        log.WriteLine($"report: {notebooks.Count} notebook(s) in {Path.GetRelativePath(root, notebooksDirectory)} -> {outDirectory}");
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
            HtmlReportWriter.Write(executed, htmlPath, display);
            reports.Add(new NotebookReport(path, display, htmlPath, executed.Duration, failure));
            log.WriteLine(failure is null
                ? $"    ok in {HtmlReportWriter.FormatDuration(executed.Duration)} -> {htmlPath}"
                : $"error: {failure}");
        }

        var indexPath = Path.Combine(outDirectory, "index.html");
        File.WriteAllText(indexPath, RenderIndex(reports), new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
        var failed = reports.Count(r => !r.Succeeded);
        log.WriteLine(failed == 0
            ? $"report: {reports.Count} notebook(s) ok -> {indexPath}"
            : $"report: {failed} of {reports.Count} notebook(s) FAILED -> {indexPath}");
        return new ReportResult(reports, indexPath);
    }

    /// <summary>The index page: one row per notebook with a link, status and duration.</summary>
    public static string RenderIndex(IReadOnlyList<NotebookReport> reports)
    {
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>MoeNotebooks reports</title>\n<style>\n")
            .Append(HtmlReportWriter.Css).Append("</style>\n</head>\n<body>\n<main>\n<header class=\"report-header\"><h1>MoeNotebooks reports</h1>\n<p class=\"meta\">")
            .Append(reports.Count).Append(" notebook(s) · generated ")
            .Append(WebUtility.HtmlEncode(DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture)))
            .Append("</p></header>\n");
        if (reports.Count == 0)
        {
            html.Append("<p>No notebooks found.</p>\n");
        }
        else
        {
            html.Append("<table>\n<thead><tr><th>notebook</th><th>status</th><th>duration</th></tr></thead>\n<tbody>\n");
            foreach (var report in reports)
            {
                var name = Path.GetFileName(report.HtmlPath);
                html.Append("<tr><td><a href=\"").Append(Uri.EscapeDataString(name)).Append("\">")
                    .Append(WebUtility.HtmlEncode(Path.GetFileNameWithoutExtension(report.NotebookPath))).Append("</a></td><td>")
                    .Append(report.Failure is { } f
                        ? "<span class=\"failed\">failed</span>: " + WebUtility.HtmlEncode(f.ToString()[(f.NotebookPath.Length + 2)..])
                        : "<span class=\"ok\">ok</span>")
                    .Append("</td><td>").Append(HtmlReportWriter.FormatDuration(report.Duration)).Append("</td></tr>\n");
            }

            html.Append("</tbody>\n</table>\n");
        }

        html.Append("</main>\n</body>\n</html>\n");
        return html.ToString();
    }
}

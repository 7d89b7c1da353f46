using System.Globalization;
using System.Net;
using System.Text;
using System.Text.RegularExpressions;
using Markdig;

namespace MoeNotebooks.Reports;

/// <summary>
/// Turns an executed notebook into ONE self-contained HTML file: no external scripts, stylesheets or fonts.
/// plotly.js is inlined once (when a chart is present) together with a tiny require/define shim, because
/// Plotly.NET.Interactive's chart HTML loads plotly through requirejs from a CDN.
/// </summary>
public static partial class HtmlReportWriter
{
    private static readonly MarkdownPipeline Markdown = new MarkdownPipelineBuilder().UseAdvancedExtensions().Build();

    /// <summary>
    /// Stands in for requirejs: <c>requirejs.config(...)</c> returns a loader, and <c>require(['plotly'], cb)</c> calls
    /// <c>cb</c> with the inlined <c>Plotly</c> global. Must come AFTER plotly.js (whose UMD header would otherwise
    /// register with this <c>define</c> instead of setting the global).
    /// </summary>
    internal const string RequireShim = """
        (function () {
          var modules = { plotly: window.Plotly };
          function load(deps, callback) {
            var resolved = (deps || []).map(function (d) {
              if (!(d in modules)) { throw new Error('offline report: module "' + d + '" is not inlined'); }
              return modules[d];
            });
            if (typeof callback === 'function') { callback.apply(window, resolved); }
          }
          load.config = function () { return load; };
          window.requirejs = load;
          window.require = load;
          window.define = function (name, deps, factory) {
            if (typeof name === 'string' && typeof factory === 'function') { modules[name] = factory(); }
          };
        })();
        """;

    /// <summary>Writes the report to <paramref name="outputPath"/> (directories created as needed).</summary>
    public static void Write(ExecutedNotebook notebook, string outputPath, string? displayPath = null, bool sharedAssets = false)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(outputPath))!);
        File.WriteAllText(outputPath, Render(notebook, displayPath, sharedAssets), new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
    }

    /// <summary>
    /// The whole HTML document: a header (title, purpose, status, the parameters the notebook ran with), then the
    /// cells; the setup cells (and the kernel's "Installed Packages" list they print) are collapsed. plotly.js is
    /// inlined once, or, with <paramref name="sharedAssets"/>, loaded from <see cref="PlotlyJs.FileName"/> beside the
    /// report.
    /// </summary>
    public static string Render(ExecutedNotebook notebook, string? displayPath = null, bool sharedAssets = false)
    {
        var body = new StringBuilder();
        foreach (var cell in notebook.Cells)
        {
            RenderCell(body, cell);
        }

        var summary = NotebookSummary.Of(notebook, displayPath ?? Path.GetFileName(notebook.Path), notebook.Name + ".html");
        var bodyHtml = body.ToString();
        var html = new StringBuilder();
        html.Append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
            .Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
            .Append("<title>").Append(Encode(notebook.Name)).Append("</title>\n")
            .Append("<style>\n").Append(Css).Append("</style>\n");
        if (HasPlotlyChart(notebook))
        {
            AppendPlotly(html, sharedAssets);
        }

        html.Append("</head>\n<body>\n<main>\n<header class=\"report-header\">\n")
            .Append("<h1>").Append(Encode(notebook.Name)).Append("</h1>\n")
            .Append("<p class=\"purpose\">").Append(Encode(summary.Purpose)).Append("</p>\n")
            .Append("<p class=\"meta\">").Append(Encode(displayPath ?? Path.GetFileName(notebook.Path)))
            .Append(" · executed in ").Append(FormatDuration(notebook.Duration))
            .Append(" · ").Append(summary.Status switch
            {
                NotebookStatus.Ok => "<span class=\"ok\">all cells succeeded</span>",
                NotebookStatus.Skipped => "<span class=\"skipped\">skipped in part</span>",
                _ => "<span class=\"failed\">FAILED</span>",
            })
            .Append("</p>\n");
        if (notebook.Failure is { } failure)
        {
            html.Append("<p class=\"failure-banner\">").Append(Encode(failure.ToString())).Append("</p>\n");
        }
        else if (summary.Status == NotebookStatus.Skipped)
        {
            html.Append("<p class=\"skip-banner\">Skipped: ").Append(Encode(summary.Reason ?? "")).Append("</p>\n");
        }

        if (summary.Parameters.Count > 0)
        {
            html.Append("<table class=\"parameters\"><caption>Parameters this report ran with (the notebook's parameters cell)</caption>\n<tbody>\n");
            foreach (var parameter in summary.Parameters)
            {
                html.Append("<tr><th><code>").Append(Encode(parameter.Name)).Append("</code></th><td><code>").Append(Encode(parameter.Value))
                    .Append("</code></td><td>").Append(Encode(parameter.Note ?? "")).Append("</td></tr>\n");
            }

            html.Append("</tbody></table>\n");
        }

        html.Append("</header>\n").Append(bodyHtml).Append("</main>\n</body>\n</html>\n");
        return html.ToString();
    }

    /// <summary>True when some cell displayed Plotly chart HTML (so the report needs plotly.js).</summary>
    public static bool HasPlotlyChart(ExecutedNotebook notebook) =>
        notebook.Cells.SelectMany(c => c.Outputs).Any(o =>
            o.Kind == CellOutputKind.Display &&
            o.Values.TryGetValue(CellOutput.Html, out var html) &&
            html.Contains("Plotly.newPlot", StringComparison.Ordinal));

    /// <summary>Appends plotly.js (inlined, or a reference to the shared copy beside the report) and the require shim.</summary>
    internal static void AppendPlotly(StringBuilder html, bool sharedAssets = false)
    {
        if (sharedAssets)
        {
            html.Append("<script src=\"").Append(PlotlyJs.FileName).Append("\"></script>\n");
        }
        else
        {
            html.Append("<script>/* plotly.js ").Append(PlotlyJs.Version).Append(" (MIT), inlined from Plotly.NET.dll */\n")
                .Append(PlotlyJs.Source).Append("\n</script>\n");
        }

        html.Append("<script>\n").Append(RequireShim).Append("\n</script>\n");
    }

    /// <summary>True for the setup cells (source starting with "// Setup"), which reports show collapsed.</summary>
    public static bool IsSetupCell(ExecutedCell cell) => !cell.IsMarkdown && cell.Source.TrimStart().StartsWith("// Setup", StringComparison.Ordinal);

    /// <summary>Drops the plotly.js that the notebook's first chart carries inline (the report brings its own copy).</summary>
    public static string WithoutInlinePlotly(string html) => InlinePlotlyScript().Replace(html, "");

    private static void RenderCell(StringBuilder html, ExecutedCell cell)
    {
        if (cell.IsMarkdown)
        {
            html.Append("<section class=\"cell markdown\" id=\"cell-").Append(cell.Number).Append("\">\n")
                .Append(Markdig.Markdown.ToHtml(cell.Source, Markdown))
                .Append("</section>\n");
            return;
        }

        var state = !cell.Executed ? "state-not-run" : cell.Failed ? "state-failed" : "state-ok";
        var setup = IsSetupCell(cell);
        if (setup)
        {
            var firstLine = cell.Source.TrimStart().Split('\n', 2)[0].TrimStart('/', ' ');
            html.Append("<details class=\"setup\"").Append(cell.Failed ? " open" : "").Append("><summary>")
                .Append(Encode(firstLine)).Append(cell.Executed ? " · " + FormatDuration(cell.Duration) : " · not run")
                .Append(cell.Failed ? " · FAILED" : "").Append("</summary>\n");
        }

        html.Append("<section class=\"cell code ").Append(state).Append("\" id=\"cell-").Append(cell.Number).Append("\">\n")
            .Append("<div class=\"cell-label\">cell ").Append(cell.Number)
            .Append(cell.Executed ? " · " + FormatDuration(cell.Duration) : " · not run")
            .Append("</div>\n<pre class=\"source\"><code class=\"language-csharp\">").Append(Encode(cell.Source)).Append("</code></pre>\n");
        StringBuilder? stream = null;
        var streamKind = CellOutputKind.StandardOutput;
        foreach (var output in cell.Outputs)
        {
            if (output.Kind is CellOutputKind.StandardOutput or CellOutputKind.StandardError)
            {
                if (stream is not null && streamKind != output.Kind)
                {
                    FlushStream(html, stream, streamKind);
                    stream = null;
                }

                stream ??= new StringBuilder();
                streamKind = output.Kind;
                stream.Append(output.Values.TryGetValue(CellOutput.PlainText, out var text) ? text : string.Concat(output.Values.Values));
                continue;
            }

            if (stream is not null)
            {
                FlushStream(html, stream, streamKind);
                stream = null;
            }

            if (output.Kind == CellOutputKind.Error)
            {
                html.Append("<pre class=\"output error\">").Append(Encode(output.Values[CellOutput.PlainText])).Append("</pre>\n");
            }
            else if (output.Values.TryGetValue(CellOutput.Html, out var htmlValue))
            {
                html.Append("<div class=\"output html\">").Append(NeutraliseExternalResources(WithoutInlinePlotly(htmlValue))).Append("</div>\n");
            }
            else if (output.Values.TryGetValue(CellOutput.PlainText, out var plain))
            {
                html.Append("<pre class=\"output text\">").Append(Encode(plain)).Append("</pre>\n");
            }
        }

        if (stream is not null)
        {
            FlushStream(html, stream, streamKind);
        }

        html.Append("</section>\n");
        if (setup)
        {
            html.Append("</details>\n");
        }
    }

    private static void FlushStream(StringBuilder html, StringBuilder stream, CellOutputKind kind) =>
        html.Append("<pre class=\"output ").Append(kind == CellOutputKind.StandardError ? "stderr" : "stdout").Append("\">")
            .Append(Encode(stream.ToString())).Append("</pre>\n");

    /// <summary>
    /// Keeps cell HTML offline: inside &lt;script&gt; blocks every quoted http(s) URL (Plotly.NET's requirejs path to
    /// cdn.plot.ly, its fallback loader for require.js) is replaced by an inert <c>about:blank</c>; <c>src</c>/<c>href</c>
    /// attributes of script, link and img elements that point at http(s) are removed likewise.
    /// </summary>
    public static string NeutraliseExternalResources(string html)
    {
        var scriptsDone = ScriptBlock().Replace(html, m => QuotedUrl().Replace(m.Value, q => q.Groups["q"].Value + "about:blank" + q.Groups["q"].Value));
        return ResourceAttribute().Replace(scriptsDone, m => m.Groups["pre"].Value + "\"about:blank\"");
    }

    internal static string Encode(string text) => WebUtility.HtmlEncode(text);

    internal static string FormatDuration(TimeSpan duration) =>
        duration.TotalSeconds >= 1
            ? duration.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture) + " s"
            : duration.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture) + " ms";

    [GeneratedRegex(@"<script\b[^>]*>.*?</script\s*>", RegexOptions.Singleline | RegexOptions.IgnoreCase)]
    private static partial Regex ScriptBlock();

    [GeneratedRegex(@"<script\b[^>]*\bdata-moenotebooks-plotly\b[^>]*>.*?</script\s*>\n?", RegexOptions.Singleline | RegexOptions.IgnoreCase)]
    private static partial Regex InlinePlotlyScript();

    [GeneratedRegex(@"(?<q>['""])https?://[^'""]*\k<q>", RegexOptions.IgnoreCase)]
    private static partial Regex QuotedUrl();

    [GeneratedRegex(@"(?<pre><(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*)(?<q>['""])https?://[^'""]*\k<q>", RegexOptions.IgnoreCase)]
    private static partial Regex ResourceAttribute();

    internal const string Css = """
        :root { --fg: #1f2430; --muted: #6b7280; --bg: #ffffff; --code-bg: #f6f8fa; --border: #e5e7eb; --accent: #2563eb; --bad: #b91c1c; --good: #15803d; }
        * { box-sizing: border-box; }
        body { margin: 0; color: var(--fg); background: var(--bg); font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
        main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; }
        h1, h2, h3 { line-height: 1.25; }
        a { color: var(--accent); }
        .report-header { border-bottom: 1px solid var(--border); margin-bottom: 16px; }
        .report-header h1 { margin: 8px 0 4px; }
        .meta { color: var(--muted); margin: 0 0 12px; }
        .ok { color: var(--good); font-weight: 600; }
        .failed { color: var(--bad); font-weight: 600; }
        .failure-banner { background: #fef2f2; border: 1px solid #fecaca; color: var(--bad); padding: 8px 12px; border-radius: 6px; font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; white-space: pre-wrap; }
        .cell { margin: 16px 0; }
        .cell.code { border-left: 3px solid var(--border); padding-left: 12px; }
        .cell.code.state-failed { border-left-color: var(--bad); }
        .cell.code.state-not-run { opacity: 0.55; }
        .cell-label { color: var(--muted); font-size: 12px; margin-bottom: 4px; }
        pre { margin: 6px 0; padding: 10px 12px; overflow-x: auto; border-radius: 6px; font: 13px/1.45 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-word; }
        pre.source { background: var(--code-bg); border: 1px solid var(--border); }
        pre.output { background: #fbfbfb; border: 1px dashed var(--border); }
        pre.stderr { color: #92400e; background: #fffbeb; }
        pre.error { color: var(--bad); background: #fef2f2; border-color: #fecaca; }
        .output.html { margin: 6px 0; overflow-x: auto; max-width: 100%; }
        table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
        th, td { border: 1px solid var(--border); padding: 4px 10px; text-align: left; white-space: nowrap; word-break: normal; overflow-wrap: normal; }
        thead th { background: var(--code-bg); }
        .output.html table pre { padding: 0; border: 0; background: none; white-space: pre; word-break: normal; }
        .purpose { font-size: 17px; margin: 0 0 6px; }
        .skipped { color: #92400e; font-weight: 600; }
        .skip-banner { background: #fffbeb; border: 1px solid #fde68a; color: #92400e; padding: 8px 12px; border-radius: 6px; }
        table.parameters { font-size: 13px; }
        table.parameters caption { text-align: left; color: var(--muted); padding-bottom: 4px; }
        table.parameters td:last-child { white-space: normal; color: var(--muted); }
        details.setup { margin: 8px 0; color: var(--muted); }
        details.setup > summary { cursor: pointer; font-size: 13px; }
        .moe-headlines ul { margin: 4px 0; }
        .markdown code { background: var(--code-bg); padding: 1px 4px; border-radius: 4px; font-size: 90%; }
        """;
}

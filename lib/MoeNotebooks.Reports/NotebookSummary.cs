using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace MoeNotebooks.Reports;

/// <summary>How a notebook's report ended: every cell ran (ok), it ran but said it could not make part of its point
/// (skipped, with the reason), or a cell failed.</summary>
public enum NotebookStatus
{
    Ok,
    Skipped,
    Failed,
}

/// <summary>One parameter of a notebook's parameters cell: <c>var name = value; // note</c>.</summary>
public sealed record NotebookParameter(string Name, string Value, string? Note);

/// <summary>One headline number a notebook showed with <c>Headlines.Show</c>.</summary>
public sealed record HeadlineNumber(string Name, double Value, string Unit);

/// <summary>
/// What the index page shows for one notebook, saved beside its report as <c>&lt;name&gt;.summary.json</c> so a
/// one-notebook run (<c>moe report notebooks/03-....ipynb</c>) can rebuild the index with the others' last results.
/// </summary>
public sealed partial record NotebookSummary(
    string Name,
    string DisplayPath,
    string HtmlFile,
    string Purpose,
    NotebookStatus Status,
    string? Reason,
    double DurationSeconds,
    DateTimeOffset GeneratedUtc,
    IReadOnlyList<HeadlineNumber> Headlines,
    IReadOnlyList<NotebookParameter> Parameters)
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>The summary saved at <paramref name="path"/>, or null when absent or unreadable (the index then says
    /// "not run yet").</summary>
    public static NotebookSummary? TryLoad(string path)
    {
        try
        {
            return File.Exists(path) ? JsonSerializer.Deserialize<NotebookSummary>(File.ReadAllText(path), Json) : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Builds the summary of an executed notebook.</summary>
    public static NotebookSummary Of(ExecutedNotebook notebook, string displayPath, string htmlFile)
    {
        var skipped = SkipReasons(notebook).ToList();
        var status = notebook.Failure is not null ? NotebookStatus.Failed : skipped.Count > 0 ? NotebookStatus.Skipped : NotebookStatus.Ok;
        var reason = notebook.Failure is { } f
            ? f.ToString()[(f.NotebookPath.Length + 2)..]
            : skipped.Count > 0 ? string.Join("; ", skipped) : null;
        return new NotebookSummary(notebook.Name, displayPath, htmlFile, PurposeOf(notebook), status, reason,
            notebook.Duration.TotalSeconds, DateTimeOffset.UtcNow, HeadlineNumbers(notebook).ToList(), ParametersOf(notebook));
    }

    /// <summary>The notebook's title (its first markdown heading), without a leading "01 ·" number.</summary>
    public static string PurposeOf(ExecutedNotebook notebook)
    {
        var heading = notebook.Cells.Where(c => c.IsMarkdown)
            .SelectMany(c => c.Source.Split('\n'))
            .Select(l => l.Trim())
            .FirstOrDefault(l => l.StartsWith("# ", StringComparison.Ordinal));
        return heading is null ? notebook.Name : NumberPrefix().Replace(heading[2..].Trim(), "");
    }

    /// <summary>
    /// The parameters cell: the first code cell starting with <c>// Parameters</c>, or the first code cell after a
    /// markdown cell headed "## Parameters"; one entry per top-level <c>var name = value;</c> line.
    /// </summary>
    public static IReadOnlyList<NotebookParameter> ParametersOf(ExecutedNotebook notebook)
    {
        var cells = notebook.Cells;
        var cell = cells.FirstOrDefault(c => !c.IsMarkdown && c.Source.TrimStart().StartsWith("// Parameters", StringComparison.Ordinal));
        if (cell is null)
        {
            var heading = cells.ToList().FindIndex(c => c.IsMarkdown && c.Source.TrimStart().StartsWith("## Parameters", StringComparison.Ordinal));
            cell = heading < 0 ? null : cells.Skip(heading + 1).FirstOrDefault(c => !c.IsMarkdown);
        }

        return cell is null
            ? []
            : ParameterLine().Matches(cell.Source)
                .Select(m => new NotebookParameter(m.Groups["name"].Value, m.Groups["value"].Value.Trim(),
                    m.Groups["note"].Success ? m.Groups["note"].Value.Trim() : null))
                .ToList();
    }

    private static IEnumerable<string> HtmlOutputs(ExecutedNotebook notebook) =>
        notebook.Cells.SelectMany(c => c.Outputs)
            .Where(o => o.Kind == CellOutputKind.Display && o.Values.ContainsKey(CellOutput.Html))
            .Select(o => o.Values[CellOutput.Html]);

    private static IEnumerable<HeadlineNumber> HeadlineNumbers(ExecutedNotebook notebook) =>
        HtmlOutputs(notebook).SelectMany(h => HeadlineElement().Matches(h))
            .Select(m => new HeadlineNumber(
                WebUtility.HtmlDecode(m.Groups["name"].Value),
                double.Parse(m.Groups["value"].Value, System.Globalization.CultureInfo.InvariantCulture),
                WebUtility.HtmlDecode(m.Groups["unit"].Value)));

    private static IEnumerable<string> SkipReasons(ExecutedNotebook notebook) =>
        HtmlOutputs(notebook).SelectMany(h => SkippedElement().Matches(h)).Select(m => WebUtility.HtmlDecode(m.Groups["reason"].Value));

    [GeneratedRegex(@"^\d+\s*[·.:—–-]\s*")]
    private static partial Regex NumberPrefix();

    [GeneratedRegex(@"^var\s+(?<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?<value>[^;\n]+);[ \t]*(//(?<note>[^\n]*))?", RegexOptions.Multiline)]
    private static partial Regex ParameterLine();

    [GeneratedRegex(@"class=""moe-headline"" data-name=""(?<name>[^""]*)"" data-value=""(?<value>[^""]*)"" data-unit=""(?<unit>[^""]*)""")]
    private static partial Regex HeadlineElement();

    [GeneratedRegex(@"class=""moe-skipped"" data-reason=""(?<reason>[^""]*)""")]
    private static partial Regex SkippedElement();
}

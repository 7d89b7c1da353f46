using System.Text.Json;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>Minimal Polyglot-style .ipynb documents for tests.</summary>
internal static class NotebookJson
{
    public static string Code(params string[] cells) =>
        Build(cells.Select(c => ("code", c)));

    /// <summary>The format before nbformat 4.5 cell ids and C# language_info (for tests of the format check).</summary>
    public static string Legacy(params string[] cells) =>
        Build(cells.Select(c => ("code", c)), legacy: true);

    public static string Build(IEnumerable<(string Kind, string Source)> cells, bool legacy = false) =>
        JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["cells"] = cells.Select(c => c.Kind == "markdown"
                ? new Dictionary<string, object> { ["cell_type"] = "markdown", ["metadata"] = new { }, ["source"] = c.Source }
                : new Dictionary<string, object>
                {
                    ["cell_type"] = "code",
                    ["execution_count"] = 0,
                    ["metadata"] = new Dictionary<string, object> { ["polyglot_notebook"] = new Dictionary<string, string> { ["kernelName"] = "csharp" } },
                    ["outputs"] = Array.Empty<object>(),
                    ["source"] = c.Source,
                }).Select((cell, i) =>
                {
                    if (!legacy)
                    {
                        cell["id"] = $"cell-{i + 1}";
                    }

                    return cell;
                }).ToArray(),
            ["metadata"] = new Dictionary<string, object>
            {
                ["kernelspec"] = new Dictionary<string, string> { ["display_name"] = ".NET (C#)", ["language"] = "C#", ["name"] = ".net-csharp" },
                ["language_info"] = legacy
                    ? new Dictionary<string, string> { ["name"] = "polyglot-notebook" }
                    : new Dictionary<string, string> { ["name"] = "C#", ["pygments_lexer"] = "csharp", ["mimetype"] = "text/x-csharp", ["file_extension"] = ".cs" },
            },
            ["nbformat"] = 4,
            ["nbformat_minor"] = 5,
        });
}

using System.Text.Json;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>Minimal Polyglot-style .ipynb documents for tests.</summary>
internal static class NotebookJson
{
    public static string Code(params string[] cells) =>
        Build(cells.Select(c => ("code", c)));

    public static string Build(IEnumerable<(string Kind, string Source)> cells) =>
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
                }).ToArray(),
            ["metadata"] = new Dictionary<string, object>
            {
                ["kernelspec"] = new Dictionary<string, string> { ["display_name"] = ".NET (C#)", ["language"] = "C#", ["name"] = ".net-csharp" },
                ["language_info"] = new Dictionary<string, string> { ["name"] = "polyglot-notebook" },
            },
            ["nbformat"] = 4,
            ["nbformat_minor"] = 5,
        });
}

using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Every notebook (and fixture) is a valid nbformat 4.5 document as Jupyter, nbconvert and VS Code expect: cell ids,
/// C# language_info, the .NET kernelspec and the Polyglot kernel name on each code cell. Oracle: the nbformat 4.5
/// format description (https://nbformat.readthedocs.io/en/latest/format_description.html: cell "id" required from
/// 4.5, [a-zA-Z0-9-_]{1,64}, unique) and the language_info the .NET Interactive Jupyter kernel reports for C#.
/// Fix a failing notebook with <c>dotnet run tools/normalize-notebooks.cs</c>.
/// </summary>
public sealed partial class NotebookFormatTests
{
    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.GetFiles(RepoPaths.Notebooks, "*.ipynb").Concat(Directory.GetFiles(RepoPaths.Fixtures, "*.ipynb"))
                     .Order(StringComparer.Ordinal))
        {
            data.Add(Path.GetRelativePath(RepoPaths.Root, file));
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Files))]
    public void Notebook_is_nbformat_4_5_with_cell_ids_and_CSharp_language_info(string relativePath)
    {
        var problems = Problems(File.ReadAllText(Path.Combine(RepoPaths.Root, relativePath)));
        Assert.True(problems.Count == 0,
            $"{relativePath}:\n  {string.Join("\n  ", problems)}\nrun: dotnet run tools/normalize-notebooks.cs");
    }

    /// <summary>notebooks/README.md's ```csharp blocks starting "// Setup 1/2" and "// Setup 2/2" (their single source).</summary>
    internal static (string Build, string Load) CanonicalSetupCells()
    {
        var readme = File.ReadAllText(Path.Combine(RepoPaths.Notebooks, "README.md")).Replace("\r\n", "\n", StringComparison.Ordinal);
        var blocks = Regex.Matches(readme, "```csharp\n(?<code>.*?)\n```", RegexOptions.Singleline).Select(m => m.Groups["code"].Value).ToList();
        return (blocks.First(b => b.StartsWith("// Setup 1/2", StringComparison.Ordinal)),
                blocks.First(b => b.StartsWith("// Setup 2/2", StringComparison.Ordinal)));
    }

    public static TheoryData<string> Notebooks()
    {
        var data = new TheoryData<string>();
        foreach (var file in Directory.GetFiles(RepoPaths.Notebooks, "*.ipynb").Order(StringComparer.Ordinal))
        {
            data.Add(Path.GetFileName(file));
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Notebooks))]
    public void Notebook_starts_with_the_canonical_setup_cells(string notebook)
    {
        // Oracle: notebooks/README.md's two setup blocks, verbatim (the tool copies them into every notebook).
        var cells = JsonNode.Parse(File.ReadAllText(Path.Combine(RepoPaths.Notebooks, notebook)))!["cells"]!.AsArray()
            .Where(c => (string?)c!["cell_type"] == "code")
            .Select(c => c!["source"] is JsonArray lines ? string.Concat(lines.Select(l => (string?)l)) : (string?)c["source"] ?? "")
            .Take(2)
            .ToList();
        var (build, load) = CanonicalSetupCells();
        Assert.True(cells.Count == 2 && cells[0] == build && cells[1] == load,
            $"notebooks/{notebook}: code cells 1 and 2 are not notebooks/README.md's setup cells; run: dotnet run tools/normalize-notebooks.cs");
    }

    [Fact]
    public void The_check_rejects_a_notebook_without_ids_or_CSharp_language_info()
    {
        // Oracle: the minimal document NotebookJson.Legacy builds has no cell ids and language_info "polyglot-notebook",
        // the format the notebooks had before nbformat 4.5 ids (nbconvert: "MissingIDFieldWarning").
        var problems = Problems(NotebookJson.Legacy("var x = 1;", "x"));
        Assert.Contains(problems, p => p.Contains("cell 1 has no id", StringComparison.Ordinal));
        Assert.Contains(problems, p => p.Contains("language_info.name", StringComparison.Ordinal));
        Assert.Empty(Problems(NotebookJson.Code("var x = 1;", "x")));
    }

    /// <summary>Every way the document departs from nbformat 4.5 + C# metadata, one line each.</summary>
    internal static List<string> Problems(string json)
    {
        var problems = new List<string>();
        var notebook = JsonNode.Parse(json)!.AsObject();
        if ((int?)notebook["nbformat"] != 4 || (int?)notebook["nbformat_minor"] < 5)
        {
            problems.Add($"nbformat {notebook["nbformat"]}.{notebook["nbformat_minor"]}, expected 4.5");
        }

        var metadata = notebook["metadata"];
        if ((string?)metadata?["language_info"]?["name"] != "C#" || (string?)metadata?["language_info"]?["pygments_lexer"] != "csharp")
        {
            problems.Add($"metadata.language_info.name/pygments_lexer are '{metadata?["language_info"]?["name"]}'/'{metadata?["language_info"]?["pygments_lexer"]}', expected 'C#'/'csharp'");
        }

        if ((string?)metadata?["kernelspec"]?["name"] != ".net-csharp")
        {
            problems.Add($"metadata.kernelspec.name is '{metadata?["kernelspec"]?["name"]}', expected '.net-csharp'");
        }

        var ids = new HashSet<string>(StringComparer.Ordinal);
        var cells = notebook["cells"]!.AsArray();
        for (var i = 0; i < cells.Count; i++)
        {
            var cell = cells[i]!;
            var id = (string?)cell["id"];
            if (id is null)
            {
                problems.Add($"cell {i + 1} has no id");
            }
            else if (!CellId().IsMatch(id))
            {
                problems.Add($"cell {i + 1} id '{id}' is not [a-zA-Z0-9-_]{{1,64}}");
            }
            else if (!ids.Add(id))
            {
                problems.Add($"cell {i + 1} id '{id}' is used by an earlier cell");
            }

            if ((string?)cell["cell_type"] == "code" && cell["metadata"]?["polyglot_notebook"]?["kernelName"] is null)
            {
                problems.Add($"code cell {i + 1} has no metadata.polyglot_notebook.kernelName");
            }
        }

        return problems;
    }

    [GeneratedRegex("^[a-zA-Z0-9-_]{1,64}$")]
    private static partial Regex CellId();
}

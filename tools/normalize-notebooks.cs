// Normalizes the repository's notebooks to the format Jupyter, nbconvert, VS Code and the tests expect.
// Idempotent: a second run changes nothing (it prints "unchanged" for every file).
//
//   dotnet run tools/normalize-notebooks.cs                 # notebooks/*.ipynb and the test fixtures
//   dotnet run tools/normalize-notebooks.cs -- a.ipynb ...  # only these files
//   dotnet run tools/normalize-notebooks.cs -- --check      # exit 1 and list the files that would change
//
// What it does (nbformat 4.5, https://nbformat.readthedocs.io/en/latest/format_description.html):
// - nbformat 4, nbformat_minor 5;
// - every cell has an "id" ([a-zA-Z0-9-_]{1,64}, unique in the notebook); an existing valid, unique id is kept, a
//   missing one is derived from the notebook's name, the cell's position and source (deterministic);
// - metadata.language_info describes C# (name, pygments_lexer, mimetype, file_extension) so nbconvert and GitHub
//   highlight the cells as C#; the kernelspec and the Polyglot metadata (.NET Interactive) are kept/added;
// - every code cell carries the Polyglot kernel name (csharp) unless it names another kernel;
// - keys sorted and one-space indentation, as Jupyter writes notebooks, so saving in Jupyter changes little.
// - a code cell whose source starts with "// Setup 1/2" or "// Setup 2/2" becomes the canonical setup cell, the
//   first ```csharp block starting with that line in notebooks/README.md (their single source).
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

var check = args.Contains("--check");
var files = args.Where(a => a != "--check").ToList();
var root = FindRoot(Environment.CurrentDirectory);
if (files.Count == 0)
{
    files.AddRange(Directory.GetFiles(Path.Combine(root, "notebooks"), "*.ipynb"));
    var fixtures = Path.Combine(root, "tests", "MoeNotebooks.Notebooks.Tests", "Fixtures");
    if (Directory.Exists(fixtures))
    {
        files.AddRange(Directory.GetFiles(fixtures, "*.ipynb"));
    }
}

var setupCells = SetupCells(Path.Combine(root, "notebooks", "README.md"));
var changed = 0;
foreach (var file in files.Order(StringComparer.Ordinal))
{
    var before = File.ReadAllText(file);
    string after;
    try
    {
        after = Normalize(before, Path.GetFileNameWithoutExtension(file), setupCells);
    }
    catch (Exception e) when (e is JsonException or InvalidOperationException)
    {
        Console.Error.WriteLine($"{file}: not a notebook this tool can normalize: {e.Message}");
        return 2;
    }

    var relative = Path.GetRelativePath(Environment.CurrentDirectory, file);
    if (before == after)
    {
        Console.WriteLine($"unchanged  {relative}");
        continue;
    }

    changed++;
    if (check)
    {
        Console.WriteLine($"would fix  {relative}");
        continue;
    }

    var temporary = file + ".tmp";
    File.WriteAllText(temporary, after, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));
    File.Move(temporary, file, overwrite: true);
    Console.WriteLine($"normalized {relative}");
}

return check && changed > 0 ? 1 : 0;

static string Normalize(string json, string notebookName, IReadOnlyDictionary<string, string> setupCells)
{
    var notebook = JsonNode.Parse(json)?.AsObject() ?? throw new InvalidOperationException("the file is not a JSON object");
    var cells = notebook["cells"]?.AsArray() ?? throw new InvalidOperationException("no \"cells\" array");
    notebook["nbformat"] = 4;
    notebook["nbformat_minor"] = 5;

    var metadata = notebook["metadata"] as JsonObject ?? new JsonObject();
    notebook["metadata"] = metadata;
    metadata["kernelspec"] = new JsonObject
    {
        ["display_name"] = ".NET (C#)",
        ["language"] = "C#",
        ["name"] = ".net-csharp",
    };
    // The values the .NET Interactive Jupyter kernel reports for C#; pygments_lexer/name select the highlighter.
    metadata["language_info"] = new JsonObject
    {
        ["file_extension"] = ".cs",
        ["mimetype"] = "text/x-csharp",
        ["name"] = "C#",
        ["pygments_lexer"] = "csharp",
    };
    if (metadata["polyglot_notebook"] is null)
    {
        metadata["polyglot_notebook"] = new JsonObject
        {
            ["kernelInfo"] = new JsonObject
            {
                ["defaultKernelName"] = "csharp",
                ["items"] = new JsonArray(new JsonObject { ["aliases"] = new JsonArray(), ["name"] = "csharp" }),
            },
        };
    }

    var validId = new Regex("^[a-zA-Z0-9-_]{1,64}$");
    var used = new HashSet<string>(StringComparer.Ordinal);
    for (var i = 0; i < cells.Count; i++)
    {
        var cell = cells[i]?.AsObject() ?? throw new InvalidOperationException($"cell {i + 1} is not an object");
        var id = (cell["id"] as JsonValue)?.TryGetValue<string>(out var s) == true ? s : null;
        if (id is null || !validId.IsMatch(id) || !used.Add(id))
        {
            var source = SourceText(cell["source"]);
            for (var salt = 0; ; salt++)
            {
                var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{notebookName}\n{i}\n{salt}\n{source}"));
                id = Convert.ToHexStringLower(hash)[..12];
                if (used.Add(id))
                {
                    break;
                }
            }

            cell["id"] = id;
        }

        if ((string?)cell["cell_type"] == "code")
        {
            var text = SourceText(cell["source"]);
            foreach (var (marker, canonical) in setupCells)
            {
                if (text.StartsWith(marker, StringComparison.Ordinal) && text != canonical)
                {
                    cell["source"] = SourceLines(canonical);
                }
            }

            cell["outputs"] ??= new JsonArray();
            if (!cell.ContainsKey("execution_count"))
            {
                cell["execution_count"] = null;
            }

            var cellMetadata = cell["metadata"] as JsonObject ?? new JsonObject();
            cell["metadata"] = cellMetadata;
            var polyglot = cellMetadata["polyglot_notebook"] as JsonObject ?? new JsonObject();
            cellMetadata["polyglot_notebook"] = polyglot;
            polyglot["kernelName"] ??= "csharp";
        }
        else
        {
            cell["metadata"] ??= new JsonObject();
        }
    }

    var options = new JsonSerializerOptions
    {
        WriteIndented = true,
        IndentSize = 1,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
    return Sorted(notebook)!.ToJsonString(options) + "\n";
}

static string SourceText(JsonNode? source) => source switch
{
    JsonArray lines => string.Concat(lines.Select(l => (string?)l)),
    JsonValue value => (string?)value ?? "",
    _ => "",
};

// Jupyter stores a source as lines, each but the last ending in "\n".
static JsonArray SourceLines(string text)
{
    var lines = new JsonArray();
    var start = 0;
    while (start < text.Length)
    {
        var end = text.IndexOf('\n', start);
        end = end < 0 ? text.Length : end + 1;
        lines.Add((JsonNode)JsonValue.Create(text[start..end]));
        start = end;
    }

    return lines;
}

// The ```csharp blocks of notebooks/README.md that start with "// Setup 1/2" and "// Setup 2/2", by that first line.
static Dictionary<string, string> SetupCells(string readme)
{
    var blocks = Regex.Matches(File.ReadAllText(readme).Replace("\r\n", "\n"), "```csharp\n(?<code>.*?)\n```", RegexOptions.Singleline)
        .Select(m => m.Groups["code"].Value)
        .ToList();
    var cells = new Dictionary<string, string>(StringComparer.Ordinal);
    foreach (var marker in new[] { "// Setup 1/2", "// Setup 2/2" })
    {
        cells[marker] = blocks.FirstOrDefault(b => b.StartsWith(marker, StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"{readme} has no ```csharp block starting with \"{marker}\"");
    }

    return cells;
}

static JsonNode? Sorted(JsonNode? node) => node switch
{
    JsonObject o => new JsonObject(o.OrderBy(p => p.Key, StringComparer.Ordinal)
        .Select(p => KeyValuePair.Create(p.Key, Sorted(p.Value)))),
    JsonArray a => new JsonArray(a.Select(Sorted).ToArray()),
    null => null,
    _ => JsonNode.Parse(node.ToJsonString()),
};

static string FindRoot(string start)
{
    for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
    {
        if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln")))
        {
            return dir.FullName;
        }
    }

    throw new InvalidOperationException($"MoeNotebooks.sln not found above {start}; run the tool inside the repository.");
}

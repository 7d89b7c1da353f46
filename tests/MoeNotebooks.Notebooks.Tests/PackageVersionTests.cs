using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>Notebooks must ask for the same package versions as the projects (Directory.Packages.props).</summary>
public sealed partial class PackageVersionTests
{
    [Fact]
    public void Every_nuget_reference_in_notebooks_and_fixtures_matches_Directory_Packages_props()
    {
        var central = XDocument.Load(Path.Combine(RepoPaths.Root, "Directory.Packages.props"))
            .Descendants("PackageVersion")
            .ToDictionary(e => (string)e.Attribute("Include")!, e => (string)e.Attribute("Version")!, StringComparer.OrdinalIgnoreCase);
        var files = NotebookFiles().ToList();
        var problems = new List<string>();
        var checkedCount = 0;
        foreach (var file in files)
        {
            var text = File.ReadAllText(file);
            foreach (Match m in NugetReference().Matches(text))
            {
                checkedCount++;
                var name = m.Groups["name"].Value.Trim();
                var version = m.Groups["version"].Success ? m.Groups["version"].Value.Trim() : null;
                var where = $"{Path.GetRelativePath(RepoPaths.Root, file)}: #r \"nuget: {name}{(version is null ? "" : ", " + version)}\"";
                if (version is null)
                {
                    problems.Add($"{where} has no version (pin the one in Directory.Packages.props)");
                }
                else if (!central.TryGetValue(name, out var expected))
                {
                    problems.Add($"{where}: {name} is not in Directory.Packages.props (add it there)");
                }
                else if (version != expected)
                {
                    problems.Add($"{where}: Directory.Packages.props has {expected}");
                }
            }
        }

        Assert.True(checkedCount >= 4, $"expected the fixtures' #r \"nuget: ...\" lines to be found, found {checkedCount} in {files.Count} files");
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    [Theory]
    [InlineData("#r \"nuget: Plotly.NET, 6.0.0\"", "Plotly.NET", "6.0.0")]
    [InlineData("#r \\\"nuget:Plotly.NET.Interactive,6.0.0\\\"", "Plotly.NET.Interactive", "6.0.0")]
    [InlineData("#r \"nuget: Markdig\"", "Markdig", null)]
    public void Reference_pattern_reads_name_and_version_from_source_or_json(string line, string name, string? version)
    {
        var m = NugetReference().Match(line);
        Assert.True(m.Success);
        Assert.Equal(name, m.Groups["name"].Value.Trim());
        Assert.Equal(version, m.Groups["version"].Success ? m.Groups["version"].Value.Trim() : null);
    }

    private static IEnumerable<string> NotebookFiles()
    {
        var notebooks = Directory.Exists(RepoPaths.Notebooks)
            ? Directory.EnumerateFiles(RepoPaths.Notebooks, "*.*", SearchOption.AllDirectories)
            : [];
        return notebooks.Concat(Directory.EnumerateFiles(RepoPaths.Fixtures, "*.*", SearchOption.AllDirectories))
            .Where(f => f.EndsWith(".ipynb", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".dib", StringComparison.OrdinalIgnoreCase));
    }

    // Matches both raw source (#r "nuget: X, 1.0") and .ipynb JSON, where the quotes are escaped (#r \"nuget: X, 1.0\").
    [GeneratedRegex(@"#r\s+\\?""nuget:\s*(?<name>[^,""\\]+?)\s*(,\s*(?<version>[^""\\]+?))?\s*\\?""", RegexOptions.IgnoreCase)]
    private static partial Regex NugetReference();
}

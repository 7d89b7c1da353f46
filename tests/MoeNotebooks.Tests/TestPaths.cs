namespace MoeNotebooks.Tests;

/// <summary>Locates the repository and the shared data beside it.</summary>
internal static class TestPaths
{
    public static string RepoRoot { get; } = FindRoot();

    public static string Scenario(string name) => Path.Combine(RepoRoot, "data", "scenarios", name + ".json");

    /// <summary>The founding document, or null where ../shared is absent.</summary>
    public static string? SeedDocument
    {
        get
        {
            var path = Path.Combine(RepoRoot, "..", "shared", "seed", "dag-performance-analysis.md");
            return File.Exists(path) ? path : null;
        }
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) return dir.FullName;
        throw new InvalidOperationException("MoeNotebooks.sln not found above " + AppContext.BaseDirectory);
    }
}

namespace MoeNotebooks.Tests;

/// <summary>Locates the repository and the shared data beside it.</summary>
internal static class TestPaths
{
    public static string RepoRoot { get; } = FindRoot();

    public static string Scenario(string name) => Path.Combine(RepoRoot, "data", "scenarios", name + ".json");

    /// <summary>Where the founding document is when ../shared is beside the repository.</summary>
    public static string SeedDocumentPath => Path.Combine(RepoRoot, "..", "shared", "seed", "dag-performance-analysis.md");

    /// <summary>The founding document, or null where ../shared is absent.</summary>
    public static string? SeedDocument => File.Exists(SeedDocumentPath) ? SeedDocumentPath : null;

    internal static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) return dir.FullName;
        throw new InvalidOperationException("MoeNotebooks.sln not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>
/// A fact about the founding document itself (not its transcription): skipped, saying where it looked, where
/// ../shared/seed is absent. Tests that only need the formulas use SeedDocument.FormulaOrTranscription instead and
/// always run.
/// </summary>
public sealed class SeedDocumentFactAttribute : FactAttribute
{
    // The reason is also put in the display name: `dotnet test` prints skipped tests by name at its default verbosity,
    // but not their reason.
    public SeedDocumentFactAttribute([System.Runtime.CompilerServices.CallerMemberName] string test = "")
    {
        if (TestPaths.SeedDocument is null)
        {
            Skip = $"the founding document is not at {Path.GetFullPath(TestPaths.SeedDocumentPath)} (../shared/seed beside the repository); the formula tests compare against the library's transcription instead";
            DisplayName = $"{test} [SKIPPED: {Skip}]";
        }
    }
}

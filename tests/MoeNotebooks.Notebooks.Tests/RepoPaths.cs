namespace MoeNotebooks.Notebooks.Tests;

/// <summary>Paths in the source tree (tests run notebooks where they live, not copies in bin/).</summary>
internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Notebooks => Path.Combine(Root, "notebooks");

    public static string Fixtures => Path.Combine(Root, "tests", "MoeNotebooks.Notebooks.Tests", "Fixtures");

    public static string Fixture(string name) => Path.Combine(Fixtures, name);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"MoeNotebooks.sln not found above {AppContext.BaseDirectory}.");
    }
}

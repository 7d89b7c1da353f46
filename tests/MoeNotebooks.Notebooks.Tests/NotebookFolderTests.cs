namespace MoeNotebooks.Notebooks.Tests;

/// <summary>Every notebooks/*.ipynb must run top to bottom in a fresh kernel.</summary>
public sealed class NotebookFolderTests(ITestOutputHelper output)
{
    /// <summary>Placeholder row used while notebooks/ has no notebook (xunit fails a theory that has no data).</summary>
    public const string NoNotebooks = "(no notebooks yet)";

    public static TheoryData<string> Notebooks()
    {
        var data = new TheoryData<string>();
        var names = Directory.Exists(RepoPaths.Notebooks)
            ? Directory.GetFiles(RepoPaths.Notebooks, "*.ipynb").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList()
            : [];
        if (names.Count == 0)
        {
            data.Add(NoNotebooks);
        }

        foreach (var name in names)
        {
            data.Add(name!);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Notebooks))]
    public async Task Notebook_runs_without_errors(string notebook)
    {
        if (notebook == NoNotebooks)
        {
            Assert.True(!Directory.Exists(RepoPaths.Notebooks) || Directory.GetFiles(RepoPaths.Notebooks, "*.ipynb").Length == 0);
            output.WriteLine("notebooks/ has no .ipynb files yet: nothing to run.");
            return;
        }

        var result = await ExecutedNotebooks.Get(
            notebook,
            p => output.WriteLine($"cell {p.CellNumber} {(p.Finished ? "done" : "started")} at {p.Elapsed.TotalSeconds:0.0} s"));
        Assert.True(result.Succeeded, $"notebooks/{notebook}: {result.Failure}");
    }
}

namespace MoeNotebooks.Reports;

/// <summary>Entry point for the CLI's <c>moe report</c> verb.</summary>
public static class ReportCommand
{
    /// <summary>Success, or no notebooks to run.</summary>
    public const int ExitOk = 0;

    /// <summary>At least one notebook failed (the log names notebook and cell).</summary>
    public const int ExitNotebookFailed = 1;

    /// <summary>Bad arguments: no <c>notebooks/</c> folder under the repository root.</summary>
    public const int ExitUsage = 2;

    /// <summary>
    /// Runs every <c>&lt;repoRoot&gt;/notebooks/*.ipynb</c> (or only <paramref name="only"/>) and writes
    /// <c>&lt;outDir&gt;/&lt;name&gt;.html</c> and <c>&lt;outDir&gt;/index.html</c>, logging progress to <paramref name="log"/>.
    /// Returns 0 when every notebook ran, 1 when one failed (after running the others), 2 when <c>notebooks/</c> or an
    /// asked-for notebook does not exist.
    /// </summary>
    public static int Run(string repoRoot, string outDir, TextWriter log, IReadOnlyList<string>? only = null, bool sharedAssets = false)
    {
        ArgumentNullException.ThrowIfNull(log);
        var notebooks = Path.Combine(Path.GetFullPath(repoRoot), "notebooks");
        if (!Directory.Exists(notebooks))
        {
            log.WriteLine($"error: no notebooks folder at {notebooks}");
            return ExitUsage;
        }

        foreach (var notebook in only ?? [])
        {
            if (!File.Exists(notebook) || !notebook.EndsWith(".ipynb", StringComparison.OrdinalIgnoreCase))
            {
                log.WriteLine($"error: notebook = {notebook}: no such .ipynb file (the notebooks are {string.Join(", ", Directory.GetFiles(notebooks, "*.ipynb").Select(Path.GetFileName).Order(StringComparer.Ordinal))})");
                return ExitUsage;
            }
        }

        var result = ReportBuilder.BuildAsync(notebooks, Path.GetFullPath(outDir), log, Path.GetFullPath(repoRoot), only: only, sharedAssets: sharedAssets)
            .GetAwaiter().GetResult();
        return result.Succeeded ? ExitOk : ExitNotebookFailed;
    }
}

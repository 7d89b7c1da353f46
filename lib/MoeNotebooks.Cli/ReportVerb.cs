using MoeNotebooks.Reports;

namespace MoeNotebooks.Cli;

/// <summary><c>moe report [--out DIR]</c>: executes every notebook and writes one HTML file per notebook plus an index.</summary>
public static class ReportVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var root = RepoRoot.Find();
        var outDir = options.Option("--out", Path.Combine(root, "reports"));
        options.Finish();
        stdout.WriteLine($"moe report: notebooks in {Path.Combine(root, "notebooks")}, reports to {Path.GetFullPath(outDir)}");
        var started = DateTime.UtcNow;
        var code = ReportCommand.Run(root, outDir, stdout);
        stdout.WriteLine($"moe report: {(code == 0 ? "done" : "FAILED")} in {(DateTime.UtcNow - started).TotalSeconds:F0} s");
        return code;
    }
}

/// <summary>The repository root: the nearest folder above the working directory (or else this program) holding MoeNotebooks.sln.</summary>
public static class RepoRoot
{
    public static string Find()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) return dir.FullName;
        throw new UsageException("cannot find MoeNotebooks.sln above the working directory; run moe report inside the repository");
    }
}

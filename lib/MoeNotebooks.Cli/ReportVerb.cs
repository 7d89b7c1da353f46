using MoeNotebooks.Costs;
using MoeNotebooks.Reports;

namespace MoeNotebooks.Cli;

/// <summary><c>moe report [--out DIR]</c>: executes every notebook and writes one HTML file per notebook plus an index.</summary>
public static class ReportVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var root = CalibrationData.RepositoryRoot(Environment.CurrentDirectory) ?? CalibrationData.RepositoryRoot(AppContext.BaseDirectory)
                   ?? throw new UsageException("cannot find MoeNotebooks.sln above the working directory; run moe report inside the repository");
        var outDir = options.Option("--out", Path.Combine(root, "reports"));
        options.Finish();
        stdout.WriteLine($"moe report: notebooks in {Path.Combine(root, "notebooks")}, reports to {Path.GetFullPath(outDir)}");
        var started = DateTime.UtcNow;
        var code = ReportCommand.Run(root, outDir, stdout);
        stdout.WriteLine($"moe report: {(code == 0 ? "done" : "FAILED")} in {(DateTime.UtcNow - started).TotalSeconds:F0} s");
        return code;
    }
}

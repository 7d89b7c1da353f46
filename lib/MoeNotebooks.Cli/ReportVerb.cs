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
        CheckFolder("--out", outDir);
        stdout.WriteLine($"moe report: notebooks in {Path.Combine(root, "notebooks")}, reports to {Path.GetFullPath(outDir)}");
        var started = DateTime.UtcNow;
        var code = ReportCommand.Run(root, outDir, stdout);
        stdout.WriteLine($"moe report: {(code == 0 ? "done" : "FAILED")} in {(DateTime.UtcNow - started).TotalSeconds:F0} s");
        return code;
    }

    /// <summary>A folder to write into: an existing folder, or one that can be created (not below a file).</summary>
    internal static void CheckFolder(string option, string path)
    {
        if (path.Trim().Length == 0 || path.IndexOf('\0') >= 0) throw new OutputException($"{option} = {Cli.Shown(path)}: must be a folder path");
        var full = Path.GetFullPath(path);
        if (File.Exists(full)) throw new OutputException($"{option} = {Cli.Shown(path)}: is a file; give a folder for the reports");
        var up = full;
        while (up is not null && !Directory.Exists(up) && !File.Exists(up)) up = Path.GetDirectoryName(up);
        if (up is not null && File.Exists(up)) throw new OutputException($"{option} = {Cli.Shown(path)}: lies below {Cli.Shown(up)}, which is a file, not a folder");
    }
}

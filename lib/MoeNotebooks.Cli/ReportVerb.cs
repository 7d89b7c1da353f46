using MoeNotebooks.Costs;
using MoeNotebooks.Reports;

namespace MoeNotebooks.Cli;

/// <summary>
/// <c>moe report [NOTEBOOK.ipynb ...] [--out DIR] [--shared-assets]</c>: executes every notebook (or only those named)
/// and writes one HTML file per notebook plus an index of all of them.
/// </summary>
public static class ReportVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var root = CalibrationData.RepositoryRoot(Environment.CurrentDirectory) ?? CalibrationData.RepositoryRoot(AppContext.BaseDirectory)
                   ?? throw new UsageException("cannot find MoeNotebooks.sln above the working directory; run moe report inside the repository");
        var outDir = options.Option("--out", Path.Combine(root, "reports"));
        var sharedAssets = options.Option("--shared-assets", "false") switch
        {
            "true" => true,
            "false" => false,
            var v => throw new UsageException($"--shared-assets = {Cli.Shown(v)}: must be true or false (or no value)"),
        };
        var only = new List<string>();
        for (var i = 0; options.OptionalPositional(i) is { } notebook; i++)
        {
            only.Add(Path.GetFullPath(notebook));
        }
        options.Finish();
        CheckFolder("--out", outDir);
        stdout.WriteLine($"moe report: {(only.Count == 0 ? "every notebook" : string.Join(", ", only.Select(Path.GetFileName)))} in {Path.Combine(root, "notebooks")}, reports to {Path.GetFullPath(outDir)}");
        var started = DateTime.UtcNow;
        var code = ReportCommand.Run(root, outDir, stdout, only.Count == 0 ? null : only, sharedAssets);
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

using System.Globalization;
using MoeNotebooks.Analysis;

namespace MoeNotebooks.Cli;

/// <summary>
/// <c>moe sweep GRID.json [--out FILE.csv|-] [--threads N] [--breakdown true|false]</c>: CSV out (by default to the
/// git-ignored <c>artifacts/sweeps/GRID.csv</c> of the repository, <c>-</c> for stdout), progress bar on stderr; each
/// row carries the memory model's verdict and peak bytes per GPU, as <c>moe search</c> rejects what does not fit.
/// </summary>
public static class SweepVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var path = options.Positional(0, "GRID.json");
        var outPath = options.Option("--out", DefaultOut(path));
        var threads = ParseInt("--threads", options.Option("--threads", "0"), 0);
        var breakdown = options.Option("--breakdown", "true") switch
        {
            "true" => true,
            "false" => false,
            var v => throw new UsageException($"--breakdown = {v}: must be true or false"),
        };
        options.Finish();
        var sweep = Sweep.Load(path);
        var sweepOptions = new SweepOptions(threads, Breakdown: breakdown);
        var bar = new ProgressBar(stderr);
        SweepSummary summary;
        if (outPath == "-") summary = sweep.WriteCsv(stdout, sweepOptions, bar);
        else
        {
            if (Path.GetDirectoryName(Path.GetFullPath(outPath)) is { } folder) Directory.CreateDirectory(folder);
            using var file = new StreamWriter(outPath);
            summary = sweep.WriteCsv(file, sweepOptions, bar);
        }
        bar.Finish();
        var c = CultureInfo.InvariantCulture;
        stderr.WriteLine(string.Create(c, $"{summary.Total:N0} points: {summary.Valid:N0} valid, {summary.Invalid:N0} invalid, {summary.Elapsed.TotalSeconds:F2} s ({summary.Total / Math.Max(1e-9, summary.Elapsed.TotalSeconds):N0} per second){(outPath == "-" ? "" : $" -> {outPath}")}"));
        foreach (var (reason, count) in summary.InvalidByReason)
            stderr.WriteLine(string.Create(c, $"  {count,8:N0} invalid: {reason}"));
        if (summary.MemoryInfeasible > 0)
            stderr.WriteLine(string.Create(c, $"  {summary.MemoryInfeasible,8:N0} valid but do not fit in memory (memory_verdict column; moe search rejects them)"));
        if (summary.Fastest is { } f)
            stderr.WriteLine(string.Create(c, $"fastest: #{f.Index} {string.Join(", ", sweep.Axes.Select((a, i) => $"{a.Field}={f.Values[i]}"))}: {f.TotalSeconds:G6} s{(f.FitsInMemory == false ? " (does not fit in memory)" : "")}"));
        if (summary.FastestFitting is { } g && g != summary.Fastest)
            stderr.WriteLine(string.Create(c, $"fastest that fits in memory: #{g.Index} {string.Join(", ", sweep.Axes.Select((a, i) => $"{a.Field}={g.Values[i]}"))}: {g.TotalSeconds:G6} s"));
        return 0;
    }

    /// <summary><c>&lt;repo&gt;/artifacts/sweeps/&lt;grid name&gt;.csv</c> (git-ignored), or stdout outside a repository.</summary>
    internal static string DefaultOut(string gridPath)
    {
        var root = MoeNotebooks.Costs.CalibrationData.RepositoryRoot(Environment.CurrentDirectory);
        return root is null ? "-" : Path.Combine(root, "artifacts", "sweeps", Path.GetFileNameWithoutExtension(gridPath) + ".csv");
    }

    internal static int ParseInt(string name, string text, int min) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= min
            ? v : throw new UsageException($"{name} = {text}: must be an integer >= {min}");
}

/// <summary>A one-line progress bar redrawn with carriage returns (at most ten times a second).</summary>
public sealed class ProgressBar(TextWriter writer, int width = 30) : IProgress<SweepProgress>
{
    private DateTime _last = DateTime.MinValue;
    private bool _drawn;

    public void Report(SweepProgress p)
    {
        var now = DateTime.UtcNow;
        if (p.Done < p.Total && (now - _last).TotalMilliseconds < 100) return;
        _last = now;
        var filled = (int)Math.Round(p.Fraction * width);
        writer.Write(string.Create(CultureInfo.InvariantCulture,
            $"\r[{new string('#', filled)}{new string('.', width - filled)}] {p.Done:N0}/{p.Total:N0} ({100 * p.Fraction:F0} %), {p.Invalid:N0} invalid, {p.Elapsed.TotalSeconds:F1} s"));
        writer.Flush();
        _drawn = true;
    }

    public void Finish()
    {
        if (_drawn) writer.WriteLine();
    }
}

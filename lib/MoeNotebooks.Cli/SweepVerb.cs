using System.Globalization;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

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
        var defaultOut = DefaultOut(path);
        var outPath = options.Option("--out", defaultOut);
        var threads = ParseInt("--threads", options.Option("--threads", "0"), 0, 1024);
        var breakdown = ParseBool("--breakdown", options.Option("--breakdown", "true"));
        options.Finish();
        var sweep = Sweep.Load(path);
        var sweepOptions = new SweepOptions(threads, Breakdown: breakdown);
        // The default target's folder (git-ignored artifacts/sweeps) is created; a folder the user named must exist.
        if (outPath == defaultOut && outPath != "-" && Path.GetDirectoryName(Path.GetFullPath(outPath)) is { } folder) Directory.CreateDirectory(folder);
        // Checked before any row is computed: a bad --out costs nothing.
        using var file = outPath == "-" ? null : OutputFile.Open("--out", outPath);
        var bar = new ProgressBar(stderr);
        SweepSummary summary;
        // SIGINT / SIGTERM stop the sweep at a row boundary: a file target is dropped (never half-written), stdout
        // ends on a complete row and a last line saying so; either way the exit code is 130.
        using var cancel = new CancellationTokenSource();
        string? signal = null;
        void OnSignal(System.Runtime.InteropServices.PosixSignalContext context)
        {
            context.Cancel = true;
            signal ??= context.Signal.ToString();
            cancel.Cancel();
        }
        using var sigint = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, OnSignal);
        using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, OnSignal);
        var rows = new CountingWriter(file?.Writer ?? stdout);
        try
        {
            summary = sweep.WriteCsv(rows, sweepOptions, bar, cancel.Token);
            if (cancel.IsCancellationRequested) throw new OperationCanceledException();
            file?.Commit();
        }
        catch (OperationCanceledException)
        {
            bar.Finish();
            if (file is not null)
            {
                file.Abandon();
                throw new InterruptedException($"sweep interrupted by {signal ?? "cancellation"}: {Cli.Shown(outPath)} was not written (no partial file is kept)");
            }
            stdout.WriteLine($"# interrupted by {signal ?? "cancellation"} after {rows.Lines - 1} rows; the rows above are complete");
            stdout.Flush();
            throw new InterruptedException($"sweep interrupted by {signal ?? "cancellation"} after {rows.Lines - 1} of {sweep.Count} rows");
        }
        catch (IOException e) when (file is not null) { throw file.WriteFailed(e); }
        catch (IOException e) { throw Cli.StdoutFailed(e); }
        finally { bar.Finish(); }   // an error line starts on its own line, never after the bar's carriage return
        bar.Finish();
        var c = CultureInfo.InvariantCulture;
        stderr.WriteLine(string.Create(c, $"{summary.Total:N0} points: {summary.Valid:N0} valid, {summary.Invalid:N0} invalid, {summary.Elapsed.TotalSeconds:F2} s ({summary.Total / Math.Max(1e-9, summary.Elapsed.TotalSeconds):N0} per second; {summary.CpuTime.TotalSeconds:F2} s of CPU, {summary.Total / Math.Max(1e-9, summary.CpuTime.TotalSeconds):N0} per CPU second){(outPath == "-" ? "" : $" -> {outPath}")}"));
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

    internal static bool ParseBool(string name, string text) => text switch
    {
        "true" => true,
        "false" => false,
        _ => throw new UsageException($"{name} = {Cli.Shown(text)}: must be true or false"),
    };

    internal static int ParseInt(string name, string text, int min, int max = int.MaxValue) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max
            ? v : throw new UsageException(max == int.MaxValue
                ? $"{name} = {Cli.Shown(text)}: must be an integer >= {min}"
                : $"{name} = {Cli.Shown(text)}: must be an integer in [{min}, {max}]");
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
        _drawn = false;
    }
}

/// <summary>Counts the lines written through it (the CSV rows a sweep has completed).</summary>
public sealed class CountingWriter(TextWriter inner) : TextWriter
{
    public long Lines { get; private set; }
    public override System.Text.Encoding Encoding => inner.Encoding;
    public override void Write(char value) { if (value == '\n') Lines++; inner.Write(value); }
    public override void Write(string? value)
    {
        if (value is null) return;
        foreach (var c in value) if (c == '\n') Lines++;
        inner.Write(value);
    }
    public override void Write(char[] buffer, int index, int count) => Write(buffer.AsSpan(index, count));
    public override void Write(ReadOnlySpan<char> value)
    {
        Lines += value.Count('\n');
        inner.Write(value);
    }
    public override void WriteLine(string? value) { Write(value); Write('\n'); }
    public override void WriteLine() => Write('\n');
    public override void Flush() => inner.Flush();
}

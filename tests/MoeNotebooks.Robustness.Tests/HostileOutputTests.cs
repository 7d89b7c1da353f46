using System.Diagnostics;
using System.Text.RegularExpressions;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Class 5 (half-written files) and class 6 (messages that do not name what is wrong), issue 17: <c>moe sweep --out</c>
/// writes a temporary file and renames it, so SIGINT or SIGTERM leaves the old file or none (exit 130); every --out
/// failure (a directory, a missing folder, below a file, read-only, a full device) and a full stdout is one line naming
/// the option and the path; options are all checked before anything is printed.
/// Oracle: the file system after the run (absent, unchanged or whole: every row has the header's field count) and
/// the contract for error lines.
/// </summary>
public class HostileOutputTests
{
    private static string Grid(string dir, int count) =>
        Hostile.Temp(Path.Combine(Path.GetFileName(dir), "grid.json"), $$"""
            { "base": {{Hostile.Base}},
              "grid": { "strategy.microbatches": [1, 2, 4], "model.sequenceLength": [16, 32, 64, 128] },
              "random": { "count": {{count}}, "seed": 7 } }
            """);

    /// <summary>A CSV is whole when it has a header and every line has the header's field count and the last ends with a newline.</summary>
    private static void AssertWholeCsv(string path)
    {
        var text = File.ReadAllText(path);
        Assert.EndsWith("\n", text, StringComparison.Ordinal);
        var lines = text.TrimEnd('\n').Split('\n');
        var fields = lines[0].Split(',').Length;
        foreach (var line in lines) Assert.Equal(fields, line.Split(',').Length);
    }

    /// <summary>
    /// Rows of the sweeps the signal tests interrupt: far more than the slowest signal delay (3 s) can see finished.
    /// The tiny base sweeps at about 0.8 M rows/s on the 2-core VM (3 M rows in 3.8 s, 2026-12-03), so the 3 M rows these
    /// tests used could end before a 3 s signal (exit 0) on a quiet machine; 100 M rows take about two minutes, and a
    /// run the signal does not stop fails on the 120 s timeout.
    /// </summary>
    private const int LongSweepRows = 100_000_000;

    public static TheoryData<string, int, bool> SignalCases() => new()
    {
        { "INT", 1500, false }, { "TERM", 1500, false }, { "INT", 3000, true }, { "TERM", 3000, true }, { "INT", 600, false },
    };

    [Theory]
    [MemberData(nameof(SignalCases))]
    public void Signal_during_sweep_out_leaves_no_half_written_file(string signal, int afterMs, bool existing)
    {
        var dir = Hostile.TempDir($"signal-{signal}-{afterMs}-{existing}");
        var grid = Grid(dir, LongSweepRows);
        var target = Path.Combine(dir, "out.csv");
        const string old = "previous,contents\n1,2\n";
        if (existing) File.WriteAllText(target, old);
        var r = Hostile.Process(["sweep", grid, "--out", target, "--threads", "2"], timeoutSeconds: 120, during: p =>
        {
            Thread.Sleep(afterMs);
            Hostile.Signal(p, signal);
        });
        Assert.False(r.TimedOut, "the sweep did not stop on the signal");
        var errors = r.Err.Split('\n').Where(l => l.StartsWith("error: ", StringComparison.Ordinal)).ToArray();
        if (errors.Length == 0)
        {
            // The signal came before the runtime started (or before the handlers were registered): the default action
            // ended the process (128 + signal) before any file was opened.
            Assert.Equal(signal == "INT" ? 130 : 143, r.Code);
            Assert.False(File.Exists(target) && !existing, "a file appeared although the sweep never started");
        }
        else
        {
            Assert.Equal(130, r.Code);
            Hostile.OneLine(Assert.Single(errors), "interrupted");
        }
        if (existing) Assert.Equal(old, File.ReadAllText(target));
        else if (File.Exists(target)) AssertWholeCsv(target);
        Assert.Empty(Directory.GetFiles(dir, "*.tmp"));
        Assert.Empty(Directory.GetFiles(dir, ".*"));
    }

    [Fact]
    public void Signal_during_sweep_to_stdout_ends_on_a_whole_row_and_says_so()
    {
        var dir = Hostile.TempDir("signal-stdout");
        var grid = Grid(dir, LongSweepRows);
        var r = Hostile.Process(["sweep", grid, "--out", "-", "--threads", "2"], timeoutSeconds: 120, during: p =>
        {
            Thread.Sleep(2000);
            Hostile.Signal(p, "INT");
        });
        Assert.False(r.TimedOut);
        Assert.Equal(130, r.Code);
        var lines = r.Out.TrimEnd('\n').Split('\n');
        Assert.StartsWith("# interrupted by SIGINT", lines[^1], StringComparison.Ordinal);
        var fields = lines[0].Split(',').Length;
        foreach (var line in lines[..^1]) Assert.Equal(fields, line.Split(',').Length);
        // It stopped at the signal, not at the end: the 12 distinct points repeat, so every batch after the first takes
        // rows drawn before (no evaluation), and the sweep must still look at the signal between batches. Writing the
        // all LongSweepRows rows takes far longer than the 2 s before the signal.
        Assert.Equal(lines.Length - 2, long.Parse(System.Text.RegularExpressions.Regex.Match(lines[^1], @"after (\d+) rows").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(lines.Length - 2 < LongSweepRows, $"the sweep ran to the end ({lines.Length - 2} rows) although interrupted after 2 s");
    }

    [Fact]
    public void Completed_sweep_out_is_whole_and_leaves_no_temporary_file()
    {
        var dir = Hostile.TempDir("complete");
        var grid = Grid(dir, 200);
        var target = Path.Combine(dir, "out.csv");
        var r = Hostile.Process(["sweep", grid, "--out", target]);
        Assert.Equal(0, r.Code);
        AssertWholeCsv(target);
        Assert.Equal(201, File.ReadAllLines(target).Length);
        Assert.Empty(Directory.GetFiles(dir, ".*"));
    }

    public static TheoryData<string, string> BadOutPaths()
    {
        var dir = Hostile.TempDir("bad-out");
        var file = Path.Combine(dir, "a-file.csv");
        File.WriteAllText(file, "x\n");
        // As root, permissions do not stop writes: a read-only file system does (/sys); otherwise a 0555 folder.
        var readOnly = Environment.UserName == "root" || RunsAsRoot() ? "/sys/moe-out.csv" : ReadOnlyFolder(dir);
        return new()
        {
            { dir, "is a directory" },
            { Path.Combine(dir, "missing", "out.csv"), "does not exist" },
            { Path.Combine(dir, "missing", "deeper", "out.csv"), "does not exist" },
            { Path.Combine(file, "out.csv"), "which is a file" },
            { Path.Combine(file, "x", "out.csv"), "which is a file" },
            { readOnly, "cannot" },
            { "/dev/full", "cannot write" },
            { "", "must be a file path" },
            { "   ", "must be a file path" },
        };
    }

    private static bool RunsAsRoot() => File.Exists("/proc/self/status") && File.ReadAllLines("/proc/self/status").Any(l => Regex.IsMatch(l, @"^Uid:\s+0\s"));

    private static string ReadOnlyFolder(string dir)
    {
        var ro = Path.Combine(dir, "read-only");
        Directory.CreateDirectory(ro);
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(ro, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        return Path.Combine(ro, "out.csv");
    }

    [Theory]
    [MemberData(nameof(BadOutPaths))]
    public void Sweep_out_failure_names_the_option_and_the_path(string outPath, string why)
    {
        var dir = Hostile.TempDir("out-grid");
        var grid = Grid(dir, 50);
        var r = Hostile.Cli("sweep", grid, "--out", outPath);
        Hostile.Refused((r.Code, r.Out, string.Join('\n', r.Err.Split('\n').Where(l => l.StartsWith("error", StringComparison.Ordinal)))), "--out");
        Assert.Contains(why, r.Err, StringComparison.Ordinal);
        var p = Hostile.Process(["sweep", grid, "--out", outPath]);
        Assert.False(p.TimedOut);
        Assert.Equal(2, p.Code);
        var line = Assert.Single(p.Err.Split('\n'), l => l.StartsWith("error: ", StringComparison.Ordinal));
        Hostile.OneLine(line, "--out");
        Assert.Contains(why, line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("evaluate", "table")]
    [InlineData("evaluate", "json")]
    [InlineData("formula", "")]
    [InlineData("help", "")]
    public void Stdout_on_a_full_device_is_named(string verb, string format)
    {
        string[] args = verb switch
        {
            "help" => ["help"],
            "formula" => ["formula", "data/scenarios/ep16.json".Repo()],
            _ => ["evaluate", "data/scenarios/ep16.json".Repo(), "--format", format],
        };
        var r = Hostile.Process(args, redirect: "> /dev/full");
        Assert.False(r.TimedOut);
        Assert.Equal(2, r.Code);
        var line = Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Hostile.OneLine(line, "stdout");
    }

    [Fact]
    public void Sweep_to_a_full_stdout_is_named()
    {
        var dir = Hostile.TempDir("full-stdout");
        var r = Hostile.Process(["sweep", Grid(dir, 2000), "--out", "-"], redirect: "> /dev/full");
        Assert.Equal(2, r.Code);
        Hostile.OneLine(Assert.Single(r.Err.Split('\n'), l => l.StartsWith("error: ", StringComparison.Ordinal)), "stdout");
    }

    /// <summary>Every bad option is refused before a single line of output (the table used to print 52 lines first).</summary>
    public static TheoryData<string[], string> BadOptions() => new()
    {
        { ["evaluate", "SCEN", "--sensitivity", "2"], "--sensitivity" },
        { ["evaluate", "SCEN", "--format", "yaml"], "--format" },
        { ["evaluate", "SCEN", "--format", "JSON"], "--format" },
        { ["evaluate", "SCEN", "--bogus", "1"], "--bogus" },
        { ["evaluate", "SCEN", "--format"], "--format" },
        { ["search", "SCEN", "--gpus", "0"], "--gpus" },
        { ["search", "SCEN", "--gpus", "-4"], "--gpus" },
        { ["search", "SCEN", "--gpus", "99999999999"], "--gpus" },
        { ["search", "SCEN", "--top", "0"], "--top" },
        { ["search", "SCEN", "--top", "x"], "--top" },
        { ["search", "SCEN", "--microbatches", "1,0"], "--microbatches" },
        { ["search", "SCEN", "--microbatches", "1,,2"], "--microbatches" },
        { ["search", "SCEN", "--microbatches", "2147483647"], "--microbatches" },
        { ["search", "SCEN", "--prune", "maybe"], "--prune" },
        { ["search", "SCEN", "--max-seconds", "0"], "--max-seconds" },
        { ["search", "SCEN", "--max-seconds", "1e9"], "--max-seconds" },
        { ["search", "SCEN", "--max-seconds", "NaN"], "--max-seconds" },
        { ["search", "SCEN", "--prune", "\u001b[31mtrue"], "--prune" },
        { ["search", "SCEN", "--recompute-modules", "moe_act+\u001b[31mmoe"], "--recompute-modules" },
        { ["search", "SCEN", "--recompute-modules", "none,,moe"], "--recompute-modules" },
        { ["predict", "--recompute-modules", "moe_act,\u001b[31mmoe"], "--recompute-modules" },
        { ["sweep", "SCEN", "--threads", "-1"], "--threads" },
        { ["sweep", "SCEN", "--threads", "100000"], "--threads" },
        { ["sweep", "SCEN", "--breakdown", "yes"], "--breakdown" },
        { ["validate", "--format", "xml"], "--format" },
        { ["validate", "--ablation", "gemm"], "--ablation" },
        { ["validate", "--data", "/no/such/folder"], "--data" },
        { ["report", "--out", "/etc/hostname"], "--out" },
        { ["report", "--out", "/etc/hostname/sub"], "--out" },
    };

    [Theory]
    [MemberData(nameof(BadOptions))]
    public void Bad_option_is_named_before_any_output(string[] args, string option)
    {
        var resolved = args.Select(a => a == "SCEN" ? "data/scenarios/ep16.json".Repo() : a).ToArray();
        Hostile.Refused(Hostile.Cli(resolved), option);
    }

    [Fact]
    public void Bad_option_through_the_process_prints_nothing_on_stdout()
    {
        var r = Hostile.Process(["evaluate", "data/scenarios/ep16.json".Repo(), "--sensitivity", "2"]);
        Hostile.Refused(r, "--sensitivity");
        Assert.True(r.Elapsed < TimeSpan.FromSeconds(30));
    }
}

using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Shared machinery of the hostile-input suite (issue 17): a tiny base scenario to break, the judge every in-process
/// case goes through, and a runner for the built CLI as a separate process with a timeout and a GC heap limit.
/// Oracle everywhere: the contract itself — bad input is one line naming the field or option and the value, with no
/// stack trace and no raw control character; good input prices to finite numbers; nothing hangs or exhausts memory.
/// </summary>
public static class Hostile
{
    /// <summary>4 GPUs as EP2 x TP2 on an inline H100-like description, 2 layers, H = 64: every case changes one thing.</summary>
    public const string Base = """
        {
          "name": "base",
          "model": { "layers": 2, "hiddenSize": 64, "attentionHeads": 4, "ffnHiddenSize": 128, "experts": 4, "topK": 1,
                     "batch": 8, "sequenceLength": 16, "vocabulary": 0, "dtype": "bf16" },
          "hardware": { "name": "custom", "gpus": 4, "gpusPerNode": 8,
            "gpu": { "name": "g", "peakFlopsPerSecond": { "bf16": 989e12 }, "achievableFlopsPerSecond": { "bf16": 700e12 },
                     "hbmBytesPerSecond": 3.35e12, "hbmCapacityBytes": 80e9, "smCount": 132 },
            "intraNode": { "bytesPerSecond": 450e9, "latencySeconds": 5e-6 },
            "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 17e-6 } },
          "strategy": { "ep": 2, "tp": 2, "pp": 1, "dp": 1, "microbatches": 1, "derivation": "corrected" },
          "costModel": "roofline-ideal"
        }
        """;

    /// <summary>The base with the JSON text <paramref name="rawValue"/> put at the dotted <paramref name="path"/> (created if absent).</summary>
    public static string Set(string path, string rawValue, string json = Base)
    {
        // Splice raw text (so 1e400, 2.0 and lone surrogates reach the reader exactly as written).
        var marker = "\"__HOSTILE_MARKER__\"";
        var root = JsonNode.Parse(json)!.AsObject();
        var parts = path.Split('.');
        var node = root;
        for (var i = 0; i < parts.Length - 1; i++)
        {
            if (node[parts[i]] is not JsonObject child) node[parts[i]] = child = new JsonObject();
            node = child;
        }
        node[parts[^1]] = "__HOSTILE_MARKER__";
        return root.ToJsonString().Replace(marker, rawValue, StringComparison.Ordinal);
    }

    public static string Edit(Action<JsonObject> edit, string json = Base)
    {
        var root = JsonNode.Parse(json)!.AsObject();
        edit(root);
        return root.ToJsonString();
    }

    /// <summary>Characters that must never reach a terminal raw (besides newline between lines).</summary>
    public static bool HasRawControl(string text)
    {
        foreach (var c in text)
            if ((c < 0x20 && c != '\n') || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c is '\u2028' or '\u2029' or '\u202e' or '\u202a' or '\u202b' or '\u202c' or '\u202d' or '\u2066' or '\u2067' or '\u2068' or '\u2069')
                return true;
        return false;
    }

    /// <summary>Asserts an error is one visible line of readable length naming <paramref name="names"/> (any of them).</summary>
    public static void OneLine(string message, params string[] names)
    {
        Assert.DoesNotContain('\n', message);
        Assert.DoesNotContain('\r', message);
        Assert.False(HasRawControl(message), $"raw control character in: {message}");
        Assert.True(message.Length < 2500, $"error line of {message.Length} characters");
        Assert.DoesNotContain("   at ", message, StringComparison.Ordinal);
        if (names.Length > 0)
            Assert.True(names.Any(n => message.Contains(n, StringComparison.OrdinalIgnoreCase)), $"'{message}' names none of {string.Join(", ", names)}");
    }

    /// <summary>
    /// The judge of a scenario text: either it is refused with one <see cref="ConfigException"/> line naming one of
    /// <paramref name="names"/>, or it is accepted and everything it prices is finite (small ones are evaluated end to
    /// end, big ones pass the size guard or are refused by it). Returns true when accepted.
    /// </summary>
    public static bool Judge(string json, params string[] names) => Judge(json, null, names);

    /// <inheritdoc cref="Judge(string, string[])"/>
    public static bool Judge(string json, Action<string>? refused, params string[] names)
    {
        Scenario s;
        try { s = Scenario.Parse(json, "case.json"); }
        catch (ConfigException e)
        {
            refused?.Invoke(e.Field + ": " + e.Requirement);
            OneLine(e.Message, names);
            Assert.StartsWith("case.json: ", e.Message, StringComparison.Ordinal);
            return false;
        }
        var memory = s.Memory();
        Assert.True(double.IsFinite(memory.PeakBytesPerGpu) && memory.PeakBytesPerGpu >= 0, $"memory {memory.PeakBytesPerGpu}");
        foreach (var st in memory.Stages) Assert.True(double.IsFinite(st.TotalBytes) && st.WeightsBytes >= 0, $"stage {st}");
        if (DagFactory.EstimateOperations(s.Model, s.Strategy) > 200_000)
        {
            try { DagFactory.CheckSize(s.Model, s.Strategy); }
            catch (ConfigException e) { OneLine(e.Message, "operations"); }
            return true;
        }
        Evaluation ev;
        try { ev = s.Evaluate(); }
        catch (ConfigException e) { refused?.Invoke(e.Field + ": " + e.Requirement); OneLine(e.Message); return false; }
        Assert.True(double.IsFinite(ev.TotalSeconds) && ev.TotalSeconds >= 0, $"total {ev.TotalSeconds}");
        foreach (var d in ev.Result.Durations) Assert.True(double.IsFinite(d) && d >= 0, $"duration {d}");
        foreach (var (k, v) in ev.Result.BreakdownSeconds) Assert.True(double.IsFinite(v), $"{k} = {v}");
        var sw = new StringWriter();
        MoeNotebooks.Cli.EvaluationJson.Write(ev, sw, 0.1);
        using var doc = JsonDocument.Parse(sw.ToString());
        return true;
    }

    /// <summary>The CLI in-process: exit code, stdout, stderr.</summary>
    public static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        var code = MoeNotebooks.Cli.Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    /// <summary>Asserts a CLI failure: exit 2, nothing on stdout, exactly one "error:" line naming one of <paramref name="names"/>.</summary>
    public static void Refused((int Code, string Out, string Err) r, params string[] names)
    {
        Assert.True(r.Code == 2, $"exit {r.Code}; stderr: {r.Err}");
        Assert.Equal("", r.Out);
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var line = Assert.Single(lines);
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        OneLine(line, names);
    }

    public static string Temp(string name, string content)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"moe-hostile-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    public static string TempDir(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), $"moe-hostile-{Environment.ProcessId}", name);
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Directory.CreateDirectory(dir);
        return dir;
    }

    // ---- the built CLI as a process ----

    private static readonly Lazy<string> MoeDll = new(() =>
    {
        var here = Path.Combine(AppContext.BaseDirectory, "moe.dll");
        if (File.Exists(here) && File.Exists(Path.Combine(AppContext.BaseDirectory, "moe.runtimeconfig.json"))) return here;
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) dir = dir.Parent;
        var built = Path.Combine(dir!.FullName, "lib", "MoeNotebooks.Cli", "bin", "Release", "net10.0", "moe.dll");
        Assert.True(File.Exists(built), $"build the CLI first: {built}");
        return built;
    });

    /// <summary>
    /// The CLI starts with SIGINT and SIGTERM at their default disposition, as from a terminal, whatever this test host
    /// inherited: a process started in the background by a shell without job control (<c>(cmd &amp;)</c>, <c>nohup ... &amp;</c>
    /// in a script) has SIGINT and SIGQUIT ignored (POSIX), the ignore survives exec, and .NET keeps an inherited ignore,
    /// so the signal tests' SIGINT would never arrive (the 100 M-row sweep then ran to the end: exit 0, seen in a solution
    /// run started that way, 2026-12-03). GNU env's <c>--default-signal</c> (coreutils 8.31+) resets them before exec;
    /// where env lacks it, nothing is prefixed.
    /// </summary>
    private static readonly Lazy<string> DefaultSignals = new(() =>
    {
        try
        {
            using var env = System.Diagnostics.Process.Start(new ProcessStartInfo("env", ["--default-signal=INT,TERM", "true"]) { RedirectStandardError = true, UseShellExecute = false })!;
            env.WaitForExit();
            return env.ExitCode == 0 ? "env --default-signal=INT,TERM " : "";
        }
        catch (System.ComponentModel.Win32Exception) { return ""; }
    });

    /// <summary>GC heap limit of every CLI process (the memory bound of the suite): 768 MiB.</summary>
    public const long HeapLimitBytes = 768L << 20;

    public sealed record ProcessResult(int Code, string Out, string Err, TimeSpan Elapsed, bool TimedOut);

    /// <summary>
    /// Runs <c>dotnet moe.dll ARGS</c> (through bash when <paramref name="redirect"/> is given, e.g. "&gt; /dev/full"),
    /// with DOTNET_GCHeapHardLimit as the memory limit and a wall-clock timeout; <paramref name="during"/> runs while it
    /// does (to send a signal). A process past the timeout is killed and reported as timed out.
    /// </summary>
    public static ProcessResult Process(string[] args, int timeoutSeconds = 30, string? redirect = null, Action<Process>? during = null)
    {
        var quoted = string.Join(' ', args.Select(a => "'" + a.Replace("'", "'\\''", StringComparison.Ordinal) + "'"));
        var psi = new ProcessStartInfo("bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"exec {DefaultSignals.Value}dotnet '{MoeDll.Value}' {quoted} {redirect ?? ""}");
        psi.Environment["DOTNET_GCHeapHardLimit"] = "0x" + HeapLimitBytes.ToString("x");
        psi.Environment["DOTNET_TieredPGO"] = "0";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        var clock = Stopwatch.StartNew();
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        during?.Invoke(p);
        var exited = p.WaitForExit(timeoutSeconds * 1000);
        if (!exited) { try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { } p.WaitForExit(); }
        var o = stdout.Result;
        var e = stderr.Result;
        return new ProcessResult(exited ? p.ExitCode : -1, o, e, clock.Elapsed, !exited);
    }

    /// <summary>Asserts a refused process run: finished in time, exit 2, one visible error line naming one of <paramref name="names"/>.</summary>
    public static void Refused(ProcessResult r, params string[] names)
    {
        Assert.False(r.TimedOut, $"still running after {r.Elapsed.TotalSeconds:F0} s; stderr: {Tail(r.Err)}");
        Assert.True(r.Code == 2, $"exit {r.Code}; stderr: {Tail(r.Err)}");
        Assert.Equal("", r.Out);
        var line = Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", line, StringComparison.Ordinal);
        OneLine(line, names);
    }

    public static string Tail(string s) => s.Length > 600 ? s[^600..] : s;

    /// <summary>Sends a POSIX signal to a process (Process.Kill only sends SIGKILL).</summary>
    public static void Signal(Process p, string signal)
    {
        using var kill = System.Diagnostics.Process.Start("kill", ["-" + signal, p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        kill.WaitForExit();
    }
}

using System.Diagnostics;
using System.Text.Json.Nodes;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Runs the smoke fixture in the REAL .NET Interactive kernel (dotnet-repl, pinned in .config/dotnet-tools.json), as
/// Polyglot Notebooks, Jupyter and nbconvert run notebooks, and checks that the saved outputs load nothing from the
/// network: plotly.js comes inline once (ChartDisplay), no require.js or plotly.js from a CDN. Oracle: the output
/// notebook itself (what an editor or nbconvert would render). Skipped, with the reason, where the local tools have
/// not been restored.
/// </summary>
public sealed class RealKernelChartTests(ITestOutputHelper output)
{
    [DotnetReplFact]
    public async Task Charts_in_the_real_kernel_carry_plotly_inline_once_and_load_nothing_from_the_network()
    {
        var outDir = Directory.CreateTempSubdirectory("moe-real-kernel-").FullName;
        var executed = Path.Combine(outDir, "report-smoke.ipynb");
        var start = new ProcessStartInfo("dotnet") { WorkingDirectory = RepoPaths.Fixtures, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "tool", "run", "dotnet-repl", "--", "--run", RepoPaths.Fixture("report-smoke.ipynb"), "--exit-after-run", "--output-format", "ipynb", "--output-path", executed })
        {
            start.ArgumentList.Add(a);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        await process.WaitForExitAsync(timeout.Token);
        output.WriteLine($"dotnet-repl exit {process.ExitCode}\n{await stdout}\n{await stderr}");
        Assert.True(File.Exists(executed), "dotnet-repl wrote no executed notebook");

        var text = File.ReadAllText(executed);
        var outputs = JsonNode.Parse(text)!["cells"]!.AsArray().SelectMany(c => c!["outputs"]?.AsArray() ?? []).ToList();
        var errors = outputs.Where(o => (string?)o!["output_type"] == "error").Select(o => o!.ToJsonString()).ToList();
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        var html = outputs.Select(o => o!["data"]?["text/html"]).Where(h => h is not null)
            .Select(h => h is JsonArray lines ? string.Concat(lines.Select(l => (string?)l)) : (string?)h ?? "").ToList();
        var charts = html.Where(h => h.Contains("Plotly.newPlot", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, charts.Count);
        Assert.Equal(1, html.Count(h => h.Contains(MoeNotebooks.Interactive.ChartDisplay.InlinePlotlyMarker, StringComparison.Ordinal)));
        Assert.Contains(MoeNotebooks.Interactive.ChartDisplay.InlinePlotlyMarker, charts[0], StringComparison.Ordinal);
        foreach (var forbidden in new[] { "cdn.plot.ly", "cdnjs.cloudflare.com", "require.min.js" })
        {
            Assert.DoesNotContain(forbidden, text, StringComparison.Ordinal);
        }
    }
}

/// <summary>A fact that needs the local dotnet tools (dotnet-repl): skipped, with the reason, before <c>dotnet tool restore</c>.</summary>
public sealed class DotnetReplFactAttribute : FactAttribute
{
    // The reason is also put in the display name: `dotnet test` prints skipped tests by name at its default verbosity,
    // but not their reason.
    public DotnetReplFactAttribute([System.Runtime.CompilerServices.CallerMemberName] string test = "")
    {
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(RepoPaths.Root, ".config", "dotnet-tools.json")))!;
        var version = (string?)manifest["tools"]?["dotnet-repl"]?["version"];
        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var folder = Path.Combine(packages, "dotnet-repl", version ?? "?");
        if (version is null || !Directory.Exists(folder))
        {
            Skip = $"dotnet-repl {version} is not restored ({folder} absent): run `dotnet tool restore` (CI does) to execute a notebook in the real kernel";
            DisplayName = $"{test} [SKIPPED: {Skip}]";
        }
    }
}

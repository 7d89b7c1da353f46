using System.Diagnostics;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Opens the smoke report in headless Chromium with the network effectively unused (the file is self-contained) and
/// checks that plotly really drew the charts. Reported SKIPPED, with the reason, where no Chromium is found (install:
/// apt-get install -y chromium; .ci/run does); it never passes without having run.
/// </summary>
[Collection(SmokeNotebookCollection.Name)]
public sealed class ChromiumRenderTests(SmokeNotebookFixture smoke, ITestOutputHelper output)
{
    private static string Chromium => ChromiumFactAttribute.Executable!;

    // Plotly.NET's default template paints the plot area rgb(229, 236, 246): only a drawn chart has it.
    private static readonly (byte R, byte G, byte B) PlotBackground = (229, 236, 246);

    [ChromiumFact]
    public async Task Charts_render_to_svg_in_the_dom()
    {
        var dom = await RunChromiumAsync("--virtual-time-budget=15000", "--dump-dom", new Uri(smoke.ReportPath).AbsoluteUri);
        var svgCount = dom.Split("class=\"main-svg\"").Length - 1;
        output.WriteLine($"DOM: {dom.Length} chars, {svgCount} main-svg elements");
        Assert.Contains("class=\"plot-container plotly\"", dom, StringComparison.Ordinal);
        Assert.True(svgCount >= 4, $"expected plotly's main-svg layers for both charts, found {svgCount}");
        Assert.Contains("Speed-up vs GPUs", dom, StringComparison.Ordinal);
        Assert.Contains("Per-GPU timeline", dom, StringComparison.Ordinal);
    }

    [ChromiumFact]
    public async Task Screenshot_shows_a_drawn_chart()
    {
        var dir = Directory.CreateTempSubdirectory("moe-shot-").FullName;
        try
        {
            var png = Path.Combine(dir, "report.png");
            await RunChromiumAsync("--virtual-time-budget=15000", "--hide-scrollbars", $"--screenshot={png}", "--window-size=1200,2600", new Uri(smoke.ReportPath).AbsoluteUri);
            var keep = Environment.GetEnvironmentVariable("MOE_KEEP_SCREENSHOT");
            if (!string.IsNullOrEmpty(keep))
            {
                File.Copy(png, keep, overwrite: true);
            }

            var image = PngImage.Load(png);
            var plotArea = 0;
            var coloured = 0;
            for (var y = 0; y < image.Height; y++)
            {
                for (var x = 0; x < image.Width; x++)
                {
                    var (r, g, b) = image[x, y];
                    if (Math.Abs(r - PlotBackground.R) <= 3 && Math.Abs(g - PlotBackground.G) <= 3 && Math.Abs(b - PlotBackground.B) <= 3)
                    {
                        plotArea++;
                    }
                    else if (Math.Max(r, Math.Max(g, b)) - Math.Min(r, Math.Min(g, b)) > 80)
                    {
                        coloured++;
                    }
                }
            }

            output.WriteLine($"{image.Width}x{image.Height}: {plotArea} plot-area pixels, {coloured} strongly coloured pixels");
            Assert.True(plotArea > 50_000, $"plot area barely visible ({plotArea} pixels): charts did not render");
            Assert.True(coloured > 2_000, $"hardly any coloured pixels ({coloured}): no traces drawn");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static async Task<string> RunChromiumAsync(params string[] arguments)
    {
        var profile = Directory.CreateTempSubdirectory("moe-chromium-").FullName;
        try
        {
            var start = new ProcessStartInfo(Chromium)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var argument in new[]
            {
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", $"--user-data-dir={profile}",
            }.Concat(arguments))
            {
                start.ArgumentList.Add(argument);
            }

            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
            try
            {
                await process.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"chromium did not finish in 90 s: {await stderr}");
            }

            return process.ExitCode == 0
                ? await stdout
                : throw new InvalidOperationException($"chromium exited {process.ExitCode}: {await stderr}");
        }
        finally
        {
            Directory.Delete(profile, recursive: true);
        }
    }
}

/// <summary>A fact that needs headless Chromium: skipped, with the reason, where none is found.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    /// <summary>$MOE_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH, else null.</summary>
    public static string? Executable { get; } = Find();

    // The reason is also put in the display name: `dotnet test` prints skipped tests by name at its default verbosity,
    // but not their reason.
    public ChromiumFactAttribute([System.Runtime.CompilerServices.CallerMemberName] string test = "")
    {
        if (Executable is null)
        {
            Skip = "Chromium not found ($MOE_CHROMIUM, or chromium / chromium-browser / google-chrome on PATH): the browser rendering check did not run (apt-get install -y chromium; .ci/run installs it)";
            DisplayName = $"{test} [SKIPPED: {Skip}]";
        }
    }

    private static string? Find()
    {
        if (Environment.GetEnvironmentVariable("MOE_CHROMIUM") is { Length: > 0 } configured && File.Exists(configured))
        {
            return configured;
        }

        var path = Environment.GetEnvironmentVariable("PATH") ?? "";
        return (from name in new[] { "chromium", "chromium-browser", "google-chrome" }
                from dir in path.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
                let candidate = Path.Combine(dir, name)
                where File.Exists(candidate)
                select candidate).FirstOrDefault();
    }
}

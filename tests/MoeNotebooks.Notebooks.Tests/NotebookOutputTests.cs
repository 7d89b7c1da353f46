using MoeNotebooks.Reports;

namespace MoeNotebooks.Notebooks.Tests;

/// <summary>
/// Key outputs of the derivation notebooks. Oracles: the founding document (read from ../shared/seed when present)
/// for notebook 01's formula check, and the library's evaluations of the same scenarios for notebook 03's verdict.
/// </summary>
public sealed class NotebookOutputTests(ITestOutputHelper output)
{
    private static string SeedDocumentPath => Path.Combine(RepoPaths.Root, "..", "shared", "seed", "dag-performance-analysis.md");

    private async Task<ExecutedNotebook> Run(string name)
    {
        var result = await ExecutedNotebooks.Get(name);
        output.WriteLine($"{name}: {result.Duration.TotalSeconds:0.0} s");
        Assert.True(result.Succeeded, $"notebooks/{name}: {result.Failure}");
        return result;
    }

    private static IEnumerable<string> Stdout(ExecutedNotebook notebook) =>
        notebook.Cells.SelectMany(c => c.Outputs)
            .Where(o => o.Kind == CellOutputKind.StandardOutput)
            .Select(o => o.Values[CellOutput.PlainText]);

    [Theory]
    [InlineData("01-ep16-derivation.ipynb", MoeNotebooks.Analysis.SeedDocument.Ep16Heading)]
    [InlineData("02-tp8-pp2-derivation.ipynb", MoeNotebooks.Analysis.SeedDocument.Tp8Pp2Heading)]
    public async Task Notebooks_01_and_02_compare_their_formula_with_the_founding_document(string name, string heading)
    {
        // Oracle: the founding document where ../shared/seed is present, else the library's transcription of it
        // (SeedFormulaTests.DocumentIsReadWhenPresent checks that the two agree). The comparison always happens.
        var notebook = await Run(name);
        var text = string.Join("\n", Stdout(notebook));
        var present = File.Exists(SeedDocumentPath);
        output.WriteLine(present ? "founding document present: compared with it" : "founding document absent: compared with the transcription");
        // The check cell prints exactly "equal" (it throws, failing the notebook, when the formulas differ) and what it
        // compared with.
        Assert.Contains(Stdout(notebook), s => s.Trim() == "equal");
        Assert.DoesNotContain("not compared", text, StringComparison.Ordinal);
        Assert.Contains(present ? "compared with the founding document at" : "compared with the library's transcription of the founding document", text, StringComparison.Ordinal);
        // And the library's formula printed by the notebook is the document's, term for term.
        var (document, _) = MoeNotebooks.Analysis.SeedDocument.FormulaOrTranscription(heading, SeedDocumentPath);
        var library = text.Split("Library (derived from the critical path):")[1].Split("Founding document's formula, from")[0];
        Assert.True(MoeNotebooks.Analysis.SeedDocument.SameFormula(document, library), $"printed:\n{library}\ndocument:\n{document}");
    }

    [Fact]
    public async Task Notebook_03_states_the_winner_under_each_derivation()
    {
        var notebook = await Run("03-ep-vs-tp-pp.ipynb");
        var text = string.Join("\n", Stdout(notebook));
        // At the default parameters (oracle: the same scenarios evaluated by the library, see SeedFormulaTests and the
        // CLI): the seed formulas make TP=8 x PP=2 faster, the corrected derivation EP=16.
        Assert.Contains("Seed derivation (the document's formulas): TP=8 x PP=2 (seed-tp8-pp2) is faster", text, StringComparison.Ordinal);
        Assert.Contains("Corrected derivation:                      EP=16 (ep16) is faster", text, StringComparison.Ordinal);
        Assert.Contains("does NOT follow from its own formulas", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Notebook_03_compares_the_strategies_on_each_fabric()
    {
        var notebook = await Run("03-ep-vs-tp-pp.ipynb");
        var lines = Stdout(notebook).SelectMany(t => t.Split('\n')).ToArray();
        // Oracle: the same scenarios evaluated by the CLI with the hardware overridden (README "What it finds"):
        // EP=16 wins the forward pass on every fabric (5.97 vs 20.08 s on DGX H100, 11.8 vs 43.6 s with one rail,
        // 2.1 vs 7.4 s inside a GB200 NVL72 rack).
        foreach (var fabric in new[] { "DGX H100, 8 rails", "DGX H100, 1 rail", "DGX B200 (NVL8)", "GB200 NVL72" })
            Assert.Contains(lines, l => l.StartsWith(fabric, StringComparison.Ordinal) && l.Contains("EP=16 (", StringComparison.Ordinal) && l.Contains("is faster", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Notebook_05_runs_its_topology_section()
    {
        // Oracle: the notebook runs to the end (its topology charts and table come from CollectiveCurves, whose
        // numbers TopologyCommunicationTests derive by hand).
        var notebook = await Run("05-beyond-the-seed.ipynb");
        Assert.True(notebook.Cells.Count > 40);
        // Section 2's selective recomputation: one line per module set and full recomputation; oracle: full
        // recomputation reruns every forward operation, each selective set only some of them, so it costs the most time.
        var lines = Stdout(notebook).SelectMany(t => t.Split('\n')).Where(l => l.Contains("% step time", StringComparison.Ordinal)).ToArray();
        double Percent(string l) => double.Parse(l[(l.IndexOf(": +", StringComparison.Ordinal) + 3)..l.IndexOf(" %", StringComparison.Ordinal)], System.Globalization.CultureInfo.InvariantCulture);
        var full = Assert.Single(lines, l => l.StartsWith("full: +", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("moe: +", StringComparison.Ordinal));
        Assert.All(lines.Where(l => l != full), l => Assert.True(Percent(l) < Percent(full), $"{l} vs {full}"));
    }

    [Fact]
    public async Task Notebook_07_headlines_are_the_presets_parameter_counts_and_a_step_time()
    {
        // Oracle: the library's parameter count of the same presets (ModelSummary, checked against the publishers'
        // figures by its own tests); the step headline must be a positive time in ms. The index reads these headlines.
        var notebook = await Run("07-todays-moe-models.ipynb");
        var headlines = NotebookSummary.Of(notebook, "notebooks/07-todays-moe-models.ipynb", "07-todays-moe-models.html").Headlines;
        Assert.Equal(3, headlines.Count);
        foreach (var (preset, name) in new[] { ("deepseek-v3", "DeepSeek-V3 parameters, total"), ("qwen3-30b-a3b", "Qwen3-30B-A3B parameters, total") })
        {
            var expected = MoeNotebooks.Analysis.ModelSummary.Of(MoeNotebooks.Config.ModelPresets.Get(preset, batch: 16, sequenceLength: 4096), [8]).TotalParameters / 1e9;
            var shown = Assert.Single(headlines, h => h.Name == name);
            Assert.Equal("B", shown.Unit);
            Assert.Equal(expected, shown.Value, 6);
        }

        var step = Assert.Single(headlines, h => h.Name.StartsWith("Qwen3-30B-A3B 4-layer training step", StringComparison.Ordinal));
        Assert.Equal("ms", step.Unit);
        Assert.True(step.Value > 0 && double.IsFinite(step.Value), $"step {step.Value} ms");
    }
}

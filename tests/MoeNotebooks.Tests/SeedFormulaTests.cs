using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

/// <summary>
/// Oracle: the founding document's "Final Runtime Representation" section, read from ../shared/seed when present
/// (else the same formulas as transcribed in issue 2). The formula is derived from the critical path of the
/// seed-derivation DAG, never typed, and must match the document term for term.
/// </summary>
public class SeedFormulaTests
{
    // Transcribed from issue 2 / the document (now kept in the library, SeedDocument.TranscribedFormula), used only
    // where ../shared is absent.
    private static readonly string IssueEp16 = SeedDocument.TranscribedFormula(SeedDocument.Ep16Heading);

    private static readonly string IssueTp8Pp2 = SeedDocument.TranscribedFormula(SeedDocument.Tp8Pp2Heading);

    [Fact]
    public void Ep16FormulaEqualsTheDocument()
    {
        var expected = DocumentFormula(SeedDocument.Ep16Heading) ?? IssueEp16;
        var derived = Scenario.Load(TestPaths.Scenario("seed-ep16")).Evaluate().Formula.ToString();
        Assert.Equal(SeedDocument.Normalize(expected), SeedDocument.Normalize(derived));
    }

    [Fact]
    public void Tp8Pp2FormulaEqualsTheDocument()
    {
        var expected = DocumentFormula(SeedDocument.Tp8Pp2Heading) ?? IssueTp8Pp2;
        var derived = Scenario.Load(TestPaths.Scenario("seed-tp8-pp2")).Evaluate().Formula.ToString();
        Assert.Equal(SeedDocument.Normalize(expected), SeedDocument.Normalize(derived));
    }

    [SeedDocumentFact]
    public void DocumentIsReadWhenPresent()
    {
        Assert.NotNull(DocumentFormula(SeedDocument.Ep16Heading));
        Assert.NotNull(DocumentFormula(SeedDocument.Tp8Pp2Heading));
        // The transcription used without ../shared is the same formula as the document's.
        Assert.True(SeedDocument.SameFormula(IssueEp16, DocumentFormula(SeedDocument.Ep16Heading)!));
        Assert.True(SeedDocument.SameFormula(IssueTp8Pp2, DocumentFormula(SeedDocument.Tp8Pp2Heading)!));
    }

    [Fact]
    public void Ep16TermsAreCountedAsTheDocumentWrites()
    {
        // Hand count from the document: per layer 3 + 1 projections of (T, H, H), 16 score and 16 value products,
        // one gate, one expert up and down; 4 layers.
        var f = Scenario.Load(TestPaths.Scenario("seed-ep16")).Evaluate().Formula;
        var terms = f.MatmulTerms.ToDictionary(t => (t.M, t.K, t.N), t => t.Count);
        Assert.Equal(16, terms[(10240000, 8192, 8192)]);
        Assert.Equal(64, terms[(10240000, 512, 10000)]);
        Assert.Equal(64, terms[(10240000, 10000, 512)]);
        Assert.Equal(4, terms[(10240000, 8192, 16)]);
        Assert.Equal(4, terms[(640000, 8192, 32768)]);
        Assert.Equal(4, terms[(640000, 32768, 8192)]);
        Assert.Equal(6, terms.Count);
        Assert.Empty(f.OtherTerms);
    }

    [Fact]
    public void Tp8Pp2HasOnePipelineTermPricedAsAnInterNodeSend()
    {
        var e = Scenario.Load(TestPaths.Scenario("seed-tp8-pp2")).Evaluate();
        var pipeline = Assert.Single(e.Formula.OtherTerms);
        Assert.Equal("Pipeline_Communication_Latency", pipeline.Name);
        Assert.Equal(1, pipeline.Count);
        // Hand derivation: GPUs 0-7 and 8-15 are different nodes of 8, so the [T, H] bf16 activation crosses the
        // 400 Gb/s NIC: 17 us + 10,240,000 x 8192 x 2 B / 50e9 B/s.
        Assert.Equal(17e-6 + 10240000.0 * 8192 * 2 / 50e9, pipeline.Seconds, 12);
    }

    [Theory]
    [InlineData("seed-ep16")]
    [InlineData("seed-tp8-pp2")]
    [InlineData("ep16")]
    [InlineData("tp8-pp2")]
    public void FormulaEvaluatesToTheScheduledTotal(string scenario)
    {
        // Oracle: the schedule. Summing the formula's terms with the same Get_Time must give the critical-path total.
        var e = Scenario.Load(TestPaths.Scenario(scenario)).Evaluate();
        var fromFormula = e.Formula.Evaluate(e.Cost, e.Dag.Dtype, e.Dag.ElementBytes);
        Assert.Equal(e.TotalSeconds, fromFormula, e.TotalSeconds * 1e-12);
    }

    /// <summary>The document's formula under a heading, expanded by its own definitions (SeedDocument), or null without ../shared.</summary>
    private static string? DocumentFormula(string heading) =>
        TestPaths.SeedDocument is { } path ? SeedDocument.Load(path).Formula(heading) : null;
}

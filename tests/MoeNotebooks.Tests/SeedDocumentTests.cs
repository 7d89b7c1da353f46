using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Tests;

/// <summary>
/// Oracles: a small document written here by hand (its terms counted by hand in the comments), and, where
/// ../shared/seed is present, the founding document itself against the library's derived formulas.
/// </summary>
public class SeedDocumentTests
{
    private const string Sample = """
        # Sample
        ## Final Runtime Representation

        ### Proposed EP=16 Longest Path:
        ```
        Total_Runtime = 2 × [
            3×Get_Time(100, 8, 8) +        // three projections
            4×(Get_Time(100, 2, 50) +      // per head
                 Get_Time(100, 50, 2)) +
            Get_Time(avg_tokens_per_expert, 8, 32)
        ]
        ```

        ### Baseline TP=8, PP=2 Longest Path:
        ```
        Total_Runtime = 1 × [
            Get_Time(100, 1, 1)
        ] +
        Pipeline_Communication_Latency +
        1 × [Same computation as above]
        ```

        Where `avg_tokens_per_expert` = (10 × 10) / 4 = 25 tokens per expert.
        """;

    [Fact]
    public void Sample_formula_is_expanded_as_the_document_defines_it()
    {
        var doc = SeedDocument.Parse(Sample, "sample");
        Assert.Equal(25, doc.AverageTokensPerExpert);
        Assert.Equal("2×[3×Get_Time(100,8,8)+4×(Get_Time(100,2,50)+Get_Time(100,50,2))+Get_Time(25,8,32)]",
            SeedDocument.Normalize(doc.Formula(SeedDocument.Ep16Heading)));
        Assert.Equal("1×[Get_Time(100,1,1)]+Pipeline_Communication_Latency+1×[Get_Time(100,1,1)]",
            SeedDocument.Normalize(doc.Formula(SeedDocument.Tp8Pp2Heading)));
        Assert.Contains("// three projections", doc.RawFormula(SeedDocument.Ep16Heading), StringComparison.Ordinal);
    }

    [Fact]
    public void Terms_multiply_out_repetitions()
    {
        // Hand count: 2 x 3 = 6 projections, 2 x 4 = 8 of each head product, 2 expert products.
        var terms = SeedDocument.Terms(SeedDocument.Parse(Sample).Formula(SeedDocument.Ep16Heading));
        Assert.Equal(
            [("Get_Time(100,8,8)", 6L), ("Get_Time(100,2,50)", 8L), ("Get_Time(100,50,2)", 8L), ("Get_Time(25,8,32)", 2L)],
            terms);
        var tp = SeedDocument.Terms(SeedDocument.Parse(Sample).Formula(SeedDocument.Tp8Pp2Heading));
        Assert.Equal([("Get_Time(100,1,1)", 2L), ("Pipeline_Communication_Latency", 1L)], tp);
        Assert.Equal([("Get_Time[b=64](10,512,10)", 128L)], SeedDocument.Terms("2 × [64×Get_Time[b=64](10, 512, 10)]"));
    }

    [Fact]
    public void CompareTerms_flags_a_count_that_differs()
    {
        var rows = SeedDocument.CompareTerms("2×[Get_Time(1,2,3) + X]", "Get_Time(1,2,3) + Get_Time(1,2,3) + X + Y");
        Assert.Equal(3, rows.Count);
        Assert.True(rows[0].Equal);
        Assert.Equal(2, rows[1].DocumentCount);
        Assert.Equal(1, rows[1].LibraryCount);
        Assert.False(rows[1].Equal);
        Assert.Equal(new FormulaTermComparison("Y", 0, 1), rows[2]);
    }

    [Fact]
    public void Normalize_unifies_whitespace_and_multiplication_only()
    {
        Assert.Equal("4×[Get_Time(1,2,3)]", SeedDocument.Normalize("4 x [ Get_Time(1, 2, 3) ]"));
        Assert.Equal("Max_x_Time", SeedDocument.Normalize("Max_x_Time"));
        Assert.True(SeedDocument.SameFormula("2 × (a + b)", "2×(a+b)"));
        Assert.False(SeedDocument.SameFormula("2 × (a + b)", "3×(a+b)"));
    }

    [Fact]
    public void Bad_input_is_named()
    {
        var doc = SeedDocument.Parse("no formulas here", "empty.md");
        var missing = Assert.Throws<InvalidDataException>(() => doc.RawFormula(SeedDocument.Ep16Heading));
        Assert.Contains("empty.md", missing.Message, StringComparison.Ordinal);
        Assert.Contains(SeedDocument.Ep16Heading, missing.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidDataException>(() => doc.AverageTokensPerExpert);
        var bad = Assert.Throws<FormatException>(() => SeedDocument.Terms("2×[Get_Time(1,2,3)"));
        Assert.Contains("']' expected", bad.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Find_returns_null_where_there_is_no_shared_folder()
    {
        var dir = Directory.CreateTempSubdirectory("moe-seeddoc-");
        try
        {
            // /tmp has no shared/seed above it in any test environment this project uses.
            Assert.Null(SeedDocument.Find(dir.FullName));
            var seed = Directory.CreateDirectory(Path.Combine(dir.FullName, "shared", "seed"));
            File.WriteAllText(Path.Combine(seed.FullName, SeedDocument.FileName), Sample);
            var nested = Directory.CreateDirectory(Path.Combine(dir.FullName, "repo", "notebooks"));
            Assert.Equal(25, SeedDocument.Find(nested.FullName)!.AverageTokensPerExpert);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void HeadingFor_only_names_the_documents_own_cases()
    {
        var seedEp = Scenario.Load(TestPaths.Scenario("seed-ep16"));
        Assert.Equal(SeedDocument.Ep16Heading, SeedDocument.HeadingFor(seedEp));
        Assert.Equal(SeedDocument.Tp8Pp2Heading, SeedDocument.HeadingFor(Scenario.Load(TestPaths.Scenario("seed-tp8-pp2"))));
        Assert.Null(SeedDocument.HeadingFor(Scenario.Load(TestPaths.Scenario("ep16"))));
        Assert.Null(SeedDocument.HeadingFor(seedEp with { Model = seedEp.Model with { SequenceLength = 4096 } }));
        Assert.Null(SeedDocument.HeadingFor(seedEp with { Strategy = seedEp.Strategy with { Microbatches = 2 } }));
        // The GPU type does not change the shapes, so the document's formula still applies.
        Assert.Equal(SeedDocument.Ep16Heading, SeedDocument.HeadingFor(seedEp with { Hardware = HardwareCatalog.Get("H200").WithGpus(16) }));
    }

    [Theory]
    [InlineData("seed-ep16", SeedDocument.Ep16Heading)]
    [InlineData("seed-tp8-pp2", SeedDocument.Tp8Pp2Heading)]
    public void Founding_document_formula_equals_the_library_term_for_term(string scenario, string heading)
    {
        // The document where ../shared is present, else the library's transcription of it: the comparison always runs.
        var (documentFormula, source) = SeedDocument.FormulaOrTranscription(heading, TestPaths.SeedDocumentPath);
        if (SeedDocument.Find(TestPaths.RepoRoot) is { } doc)
        {
            Assert.Equal(640000, doc.AverageTokensPerExpert);
        }

        Assert.False(string.IsNullOrWhiteSpace(source));
        var library = Scenario.Load(TestPaths.Scenario(scenario)).Evaluate().Formula.ToString();
        Assert.True(SeedDocument.SameFormula(documentFormula, library), $"document:\n{documentFormula}\nlibrary:\n{library}");
        Assert.All(SeedDocument.CompareTerms(documentFormula, library), row => Assert.True(row.Equal, row.ToString()));
    }
}

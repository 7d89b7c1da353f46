using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using MoeNotebooks.Config;

namespace MoeNotebooks.Analysis;

/// <summary>One leaf term of a runtime formula (<c>Get_Time(m,k,n)</c> or a named term) with its total count in each formula.</summary>
public sealed record FormulaTermComparison(string Term, long DocumentCount, long LibraryCount)
{
    public bool Equal => DocumentCount == LibraryCount;
}

/// <summary>
/// The founding document (<c>dag-performance-analysis.md</c>) read as data, so notebooks and tests compare the
/// library's derived formulas with the document's own text instead of a transcription. The document is not part of
/// the repository; <see cref="Find"/> looks for it in <c>shared/seed/</c> beside the repository.
/// </summary>
public sealed partial class SeedDocument
{
    public const string FileName = "dag-performance-analysis.md";

    /// <summary>Heading of the EP=16 formula in the document's "Final Runtime Representation" section.</summary>
    public const string Ep16Heading = "### Proposed EP=16 Longest Path:";

    /// <summary>Heading of the TP=8 x PP=2 formula in the same section.</summary>
    public const string Tp8Pp2Heading = "### Baseline TP=8, PP=2 Longest Path:";

    private SeedDocument(string source, string text)
    {
        Source = source;
        Text = text;
    }

    /// <summary>Where the text came from (a path, or a label for parsed text).</summary>
    public string Source { get; }

    public string Text { get; }

    /// <summary>
    /// The document found in <c>DIR/shared/seed/</c> for <paramref name="startDirectory"/> or any folder above it
    /// (from a checkout, the <c>shared/</c> folder beside the repository), or null where there is none.
    /// </summary>
    public static SeedDocument? Find(string startDirectory)
    {
        ArgumentNullException.ThrowIfNull(startDirectory);
        for (var dir = new DirectoryInfo(startDirectory); dir is not null; dir = dir.Parent)
        {
            var path = Path.Combine(dir.FullName, "shared", "seed", FileName);
            if (File.Exists(path)) return Load(path);
        }
        return null;
    }

    public static SeedDocument Load(string path) => new(Path.GetFullPath(path), File.ReadAllText(path));

    /// <summary>
    /// The document's two formulas as transcribed into the library (facts from the founding document
    /// <i>DAG Performance Analysis: Cross-Node Expert Parallelism vs Baseline MoE</i>, section "Final Runtime
    /// Representation", in the library's notation: <c>avg_tokens_per_expert</c> = 640,000 as the document states,
    /// "[Same computation as above]" written out). Used where the document itself is absent, so every comparison
    /// still happens; tests check that it equals <see cref="Formula"/> of the document whenever the document is present.
    /// </summary>
    public static string TranscribedFormula(string heading) => heading switch
    {
        Ep16Heading =>
            "4 × [3×Get_Time(10240000,8192,8192) + 16×(Get_Time(10240000,512,10000) + Get_Time(10240000,10000,512)) + Get_Time(10240000,8192,8192) + Get_Time(10240000,8192,16) + Get_Time(640000,8192,32768) + Get_Time(640000,32768,8192)]",
        Tp8Pp2Heading =>
            "2 × [3×Get_Time(10240000, 1024, 1024) + 2×(Get_Time(10240000, 64, 10000) + Get_Time(10240000, 10000, 64)) + Get_Time(10240000, 1024, 1024) + 8×(Get_Time(640000, 8192, 32768) + Get_Time(640000, 32768, 8192))] + Pipeline_Communication_Latency + 2 × [3×Get_Time(10240000, 1024, 1024) + 2×(Get_Time(10240000, 64, 10000) + Get_Time(10240000, 10000, 64)) + Get_Time(10240000, 1024, 1024) + 8×(Get_Time(640000, 8192, 32768) + Get_Time(640000, 32768, 8192))]",
        _ => throw new ArgumentException($"heading = '{heading}': the transcription has {Ep16Heading} and {Tp8Pp2Heading}", nameof(heading)),
    };

    /// <summary>
    /// The formula under <paramref name="heading"/> from the document at <paramref name="path"/> when it exists, else
    /// from <see cref="TranscribedFormula"/>; <c>Source</c> says which (for the notebook's printout).
    /// </summary>
    public static (string Formula, string Source) FormulaOrTranscription(string heading, string path) =>
        File.Exists(path)
            ? (Load(path).Formula(heading), $"the founding document at {Path.GetFullPath(path)}")
            : (TranscribedFormula(heading), $"the library's transcription of the founding document (the document itself is not at {path})");

    public static SeedDocument Parse(string text, string source = "(text)") => new(source, text ?? throw new ArgumentNullException(nameof(text)));

    /// <summary>The fenced code block under <paramref name="heading"/>, exactly as written (comments included).</summary>
    public string RawFormula(string heading)
    {
        var at = Text.IndexOf(heading, StringComparison.Ordinal);
        if (at < 0) throw new InvalidDataException($"{Source}: heading '{heading}' not found; expected the founding document's 'Final Runtime Representation' section.");
        var open = Text.IndexOf("```", at, StringComparison.Ordinal);
        var close = open < 0 ? -1 : Text.IndexOf("```", open + 3, StringComparison.Ordinal);
        if (close < 0) throw new InvalidDataException($"{Source}: no fenced code block after '{heading}'.");
        var block = Text[(open + 3)..close];
        var newline = block.IndexOf('\n', StringComparison.Ordinal);
        // Drop a language tag on the fence line, if any.
        return (newline >= 0 && !block[..newline].Contains('×', StringComparison.Ordinal) ? block[(newline + 1)..] : block).Trim();
    }

    /// <summary>
    /// <c>avg_tokens_per_expert</c> as the document defines it below the formulas
    /// ("= (1024 × 10000) / 16 = 640,000 tokens per expert").
    /// </summary>
    public long AverageTokensPerExpert
    {
        get
        {
            var m = AverageTokensDefinition().Match(Text);
            if (!m.Success) throw new InvalidDataException($"{Source}: no definition 'avg_tokens_per_expert = ... = N' found.");
            return long.Parse(m.Groups["n"].Value.Replace(",", "", StringComparison.Ordinal), CultureInfo.InvariantCulture);
        }
    }

    /// <summary>
    /// The formula under <paramref name="heading"/> in the library's notation: comments and <c>Total_Runtime =</c>
    /// dropped, <c>avg_tokens_per_expert</c> replaced by the value the document states, and
    /// <c>[Same computation as above]</c> replaced by the first bracket, as the document says.
    /// </summary>
    public string Formula(string heading)
    {
        var block = LineComment().Replace(RawFormula(heading), "");
        block = block.Replace("Total_Runtime =", "", StringComparison.Ordinal)
            .Replace("avg_tokens_per_expert", AverageTokensPerExpert.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
        if (block.Contains("[Same computation as above]", StringComparison.Ordinal))
        {
            var first = FirstBracket().Match(block);
            if (!first.Success) throw new InvalidDataException($"{Source}: '[Same computation as above]' under '{heading}' has no bracket above it.");
            block = block.Replace("[Same computation as above]", first.Value[first.Value.IndexOf('[', StringComparison.Ordinal)..], StringComparison.Ordinal);
        }
        return string.Join("\n", block.Split('\n').Select(l => l.TrimEnd()).Where(l => l.Trim().Length > 0));
    }

    /// <summary>
    /// The heading of the document's formula for <paramref name="scenario"/> when the scenario is exactly the
    /// document's case (its model, the seed derivation, EP=16 or TP=8 x PP=2 inference on 16 GPUs), else null:
    /// with other parameters the library's formula is expected to differ from the document's text.
    /// </summary>
    public static string? HeadingFor(Scenario scenario)
    {
        ArgumentNullException.ThrowIfNull(scenario);
        if (scenario.Model with { Name = ModelSpec.Seed.Name } != ModelSpec.Seed) return null;
        var s = scenario.Strategy;
        var plain = new StrategySpec(s.EP, s.TP, s.PP, s.DP, Derivation.Seed);
        if (s != plain) return null;
        return (s.EP, s.TP, s.PP, s.DP) switch
        {
            (16, 1, 1, 1) => Ep16Heading,
            (1, 8, 2, 1) => Tp8Pp2Heading,
            _ => null,
        };
    }

    /// <summary>Drops all whitespace and writes a multiplication 'x' between numbers/brackets as '×'; nothing else.</summary>
    public static string Normalize(string formula)
    {
        ArgumentNullException.ThrowIfNull(formula);
        return MultiplyX().Replace(Whitespace().Replace(formula, ""), "×");
    }

    /// <summary>True when the two formulas are the same text after <see cref="Normalize"/>.</summary>
    public static bool SameFormula(string a, string b) => Normalize(a) == Normalize(b);

    /// <summary>
    /// Every leaf term of a formula (<c>Get_Time(m,k,n)</c>, <c>Get_Time[b=..](m,k,n)</c> or a name such as
    /// <c>Pipeline_Communication_Latency</c>) with its total count once repetitions (<c>4 × [...]</c>,
    /// <c>16×(...)</c>) are multiplied out, in order of first appearance.
    /// </summary>
    public static IReadOnlyList<(string Term, long Count)> Terms(string formula)
    {
        var parser = new TermParser(Normalize(formula));
        return parser.ParseAll();
    }

    /// <summary>Term-for-term comparison of the document's formula and the library's: one row per distinct leaf term.</summary>
    public static IReadOnlyList<FormulaTermComparison> CompareTerms(string documentFormula, string libraryFormula)
    {
        var a = Terms(documentFormula);
        var b = Terms(libraryFormula);
        var keys = a.Select(t => t.Term).Concat(b.Select(t => t.Term)).Distinct(StringComparer.Ordinal);
        return keys.Select(k => new FormulaTermComparison(k,
            a.Where(t => t.Term == k).Sum(t => t.Count),
            b.Where(t => t.Term == k).Sum(t => t.Count))).ToArray();
    }

    [GeneratedRegex(@"//[^\n]*")]
    private static partial Regex LineComment();

    [GeneratedRegex(@"\d+\s*×\s*\[[^\]]*\]")]
    private static partial Regex FirstBracket();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    [GeneratedRegex(@"(?<=[\d\)\]])[x×](?=[\d\(\[])")]
    private static partial Regex MultiplyX();

    [GeneratedRegex(@"avg_tokens_per_expert`?\s*=[^=\n]*=\s*(?<n>[\d,]+)")]
    private static partial Regex AverageTokensDefinition();

    /// <summary>sum := term ('+' term)*; term := (INT '×')* factor; factor := Get_Time[..](..) | NAME | '[' sum ']' | '(' sum ')'.</summary>
    private sealed class TermParser(string text)
    {
        private readonly List<(string Term, long Count)> _terms = [];
        private int _at;

        public IReadOnlyList<(string Term, long Count)> ParseAll()
        {
            Sum(1);
            if (_at != text.Length) throw Error("unexpected text");
            return _terms;
        }

        private void Sum(long multiplier)
        {
            Term(multiplier);
            while (_at < text.Length && text[_at] == '+')
            {
                _at++;
                Term(multiplier);
            }
        }

        private void Term(long multiplier)
        {
            while (true)
            {
                var start = _at;
                while (_at < text.Length && char.IsAsciiDigit(text[_at])) _at++;
                if (_at > start && _at < text.Length && text[_at] == '×')
                {
                    multiplier *= long.Parse(text.AsSpan(start, _at - start), CultureInfo.InvariantCulture);
                    _at++;
                    continue;
                }
                _at = start;
                break;
            }
            Factor(multiplier);
        }

        private void Factor(long multiplier)
        {
            if (_at >= text.Length) throw Error("a term is missing");
            var c = text[_at];
            if (c is '[' or '(')
            {
                _at++;
                Sum(multiplier);
                var close = c == '[' ? ']' : ')';
                if (_at >= text.Length || text[_at] != close) throw Error($"'{close}' expected");
                _at++;
                return;
            }
            var start = _at;
            while (_at < text.Length && (char.IsAsciiLetterOrDigit(text[_at]) || text[_at] == '_')) _at++;
            if (_at == start) throw Error("a term is expected");
            var name = new StringBuilder(text[start.._at]);
            if (name.ToString() == "Get_Time")
            {
                if (_at < text.Length && text[_at] == '[') name.Append(Until(']'));
                if (_at >= text.Length || text[_at] != '(') throw Error("'(' expected after Get_Time");
                name.Append(Until(')'));
            }
            Add(name.ToString(), multiplier);
        }

        private string Until(char close)
        {
            var end = text.IndexOf(close, _at);
            if (end < 0) throw Error($"'{close}' expected");
            var s = text[_at..(end + 1)];
            _at = end + 1;
            return s;
        }

        private void Add(string term, long count)
        {
            var i = _terms.FindIndex(t => t.Term == term);
            if (i >= 0) _terms[i] = (term, _terms[i].Count + count);
            else _terms.Add((term, count));
        }

        private FormatException Error(string what) =>
            new($"Formula not understood at character {_at}: {what} in '{(text.Length > 80 ? text[..80] + "..." : text)}'.");
    }
}

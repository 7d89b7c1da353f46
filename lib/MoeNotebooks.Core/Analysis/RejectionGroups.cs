using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace MoeNotebooks.Analysis;

/// <summary>One line of a search's rejections: a reason (or the reasons that differ only in their numbers, the values listed) and how many candidates it rejected.</summary>
/// <param name="Text">The reason; for a group, the common text with each differing number replaced by its values in braces, e.g. "strategy.tp = {3, 6, 12} (...)".</param>
/// <param name="Count">Candidates rejected by the reason or the group's reasons together.</param>
/// <param name="Reasons">The reasons the line stands for (one, or the group's), as <see cref="SearchResult.RejectedByReason"/> keys them.</param>
public sealed record RejectionGroup(string Text, long Count, IReadOnlyList<string> Reasons);

/// <summary>
/// A search's rejections as a reader wants them: reasons that differ only in their numbers (e.g. "model.attentionHeads:
/// must be divisible by strategy.tp = 24" for every TP tried) on one line with the values, most frequent first.
/// Reasons that differ in several numbers share a line too, each number's values listed and the combinations counted;
/// a reason that no other shares its text with stays as it is.
/// </summary>
public static class RejectionGroups
{
    /// <summary>Values listed in a group's braces before the rest are counted ("... and 12 more").</summary>
    public const int ListedValues = 8;

    // A number: digits with thousands separators or a decimal point, and an exponent (1.03E+007 is one value).
    private static readonly Regex Number = new(@"\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?", RegexOptions.CultureInvariant);

    public static IReadOnlyList<RejectionGroup> Of(IReadOnlyDictionary<string, long> rejectedByReason)
    {
        var lines = new List<RejectionGroup>();
        // The reason's text with every number replaced by a placeholder is its template; reasons sharing a template form a group.
        foreach (var byTemplate in rejectedByReason.GroupBy(r => Number.Replace(r.Key, "\0"), StringComparer.Ordinal))
        {
            var members = byTemplate.Select(r => (Reason: r.Key, r.Value, Numbers: Number.Matches(r.Key).Select(m => m.Value).ToArray())).ToArray();
            var varying = members.Length < 2 ? [] : Enumerable.Range(0, members[0].Numbers.Length)
                .Where(i => members.Select(m => m.Numbers[i]).Distinct(StringComparer.Ordinal).Count() > 1).ToArray();
            if (varying.Length == 0)
            {
                lines.AddRange(members.Select(m => new RejectionGroup(m.Reason, m.Value, [m.Reason])));
                continue;
            }
            string Listed(int at)
            {
                var values = members.Select(m => m.Numbers[at]).Distinct(StringComparer.Ordinal).OrderBy(Numeric).ThenBy(v => v, StringComparer.Ordinal).ToArray();
                return "{" + string.Join(", ", values.Take(ListedValues)) + (values.Length > ListedValues ? string.Create(CultureInfo.InvariantCulture, $" and {values.Length - ListedValues} more") : "") + "}";
            }
            // The common text, the constant numbers restored and each varying one replaced by its values; with more than
            // one varying, the values are listed per position and the combinations counted.
            var parts = byTemplate.Key.Split('\0');
            var text = new StringBuilder(parts[0]);
            for (var i = 0; i < members[0].Numbers.Length; i++)
                text.Append(varying.Contains(i) ? Listed(i) : members[0].Numbers[i]).Append(parts[i + 1]);
            if (varying.Length > 1) text.Append(string.Create(CultureInfo.InvariantCulture, $" ({members.Length} combinations)"));
            lines.Add(new RejectionGroup(text.ToString(), members.Sum(m => m.Value), members.Select(m => m.Reason).Order(StringComparer.Ordinal).ToArray()));
        }
        return lines.OrderByDescending(l => l.Count).ThenBy(l => l.Text, StringComparer.Ordinal).ToArray();
    }

    private static double Numeric(string value) =>
        double.TryParse(value.Replace(",", "", StringComparison.Ordinal), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : double.MaxValue;
}

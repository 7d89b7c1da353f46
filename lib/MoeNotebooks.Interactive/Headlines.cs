using System.Globalization;
using System.Net;
using System.Text;

namespace MoeNotebooks.Interactive;

/// <summary>
/// A notebook's headline numbers (shown in the notebook and collected by <c>moe report</c> into the index page), and
/// the parts it could not do (<see cref="Skipped"/>: the index marks the notebook "skipped" with the reason).
/// <code>Headlines.Show(("EP=16 forward", ep.TotalSeconds, "s"), ("TP=8 x PP=2 forward", tp.TotalSeconds, "s"))</code>
/// </summary>
public static class Headlines
{
    /// <summary>HTML class of one headline (attributes data-name, data-value, data-unit).</summary>
    public const string HeadlineClass = "moe-headline";

    /// <summary>HTML class of a skip notice (attribute data-reason).</summary>
    public const string SkippedClass = "moe-skipped";

    public static HeadlineSet Show(params (string name, double value, string unit)[] headlines)
    {
        ChartDisplay.Install();
        return new HeadlineSet(headlines.Select(h => new Headline(h.name, h.value, h.unit)).ToList());
    }

    /// <summary>States that part of the notebook's point could not be made, and why (shown, and marked in the index).</summary>
    public static SkipNotice Skipped(string reason)
    {
        ChartDisplay.Install();
        return new SkipNotice(reason);
    }

    internal static string ToHtml(HeadlineSet set)
    {
        var html = new StringBuilder("<div class=\"moe-headlines\"><b>Headline numbers</b><ul>");
        foreach (var h in set.Items)
        {
            html.Append("<li class=\"").Append(HeadlineClass).Append("\" data-name=\"").Append(WebUtility.HtmlEncode(h.Name))
                .Append("\" data-value=\"").Append(h.Value.ToString("R", CultureInfo.InvariantCulture))
                .Append("\" data-unit=\"").Append(WebUtility.HtmlEncode(h.Unit)).Append("\">")
                .Append(WebUtility.HtmlEncode(h.Name)).Append(": <b>").Append(WebUtility.HtmlEncode(TableDisplay.FormatNumber(h.Value)))
                .Append(h.Unit.Length == 0 ? "" : " " + WebUtility.HtmlEncode(h.Unit)).Append("</b></li>");
        }

        return html.Append("</ul></div>").ToString();
    }

    /// <summary>The HTML <see cref="Show"/> displays (for tests of readers of that HTML).</summary>
    public static string ToHtmlForTests(params (string name, double value, string unit)[] headlines) =>
        ToHtml(new HeadlineSet(headlines.Select(h => new Headline(h.name, h.value, h.unit)).ToList()));

    /// <summary>The HTML <see cref="Skipped"/> displays (for tests of readers of that HTML).</summary>
    public static string ToHtmlForTests(string skipReason) => ToHtml(new SkipNotice(skipReason));

    internal static string ToHtml(SkipNotice notice) =>
        $"<div class=\"{SkippedClass}\" data-reason=\"{WebUtility.HtmlEncode(notice.Reason)}\"><b>Skipped:</b> {WebUtility.HtmlEncode(notice.Reason)}</div>";
}

/// <summary>One headline number with its unit.</summary>
public sealed record Headline(string Name, double Value, string Unit);

/// <summary>What <see cref="Headlines.Show"/> returns; shown as a list.</summary>
public sealed record HeadlineSet(IReadOnlyList<Headline> Items)
{
    public override string ToString() => string.Join("; ", Items.Select(h => $"{h.Name}: {TableDisplay.FormatNumber(h.Value)} {h.Unit}".TrimEnd()));
}

/// <summary>What <see cref="Headlines.Skipped"/> returns.</summary>
public sealed record SkipNotice(string Reason)
{
    public override string ToString() => "Skipped: " + Reason;
}

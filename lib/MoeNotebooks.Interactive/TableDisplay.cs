using System.Globalization;
using System.Net;
using System.Text;
using Microsoft.Data.Analysis;

namespace MoeNotebooks.Interactive;

/// <summary>
/// The HTML a <see cref="DataFrame"/> shows as in a notebook (registered by <see cref="ChartDisplay.Install"/>, replacing
/// Microsoft.Data.Analysis' formatter): no row-index column, every row, numbers rounded for reading (integers with
/// thousands separators, others to 4 significant digits; full precision stays in the data and in CSV/JSON exports),
/// numbers right-aligned, cells that never break inside a number or word, and a wrapper that scrolls sideways when the
/// table is wider than the page.
/// </summary>
public static class TableDisplay
{
    /// <summary>Rows shown before the rest is summarised in one line.</summary>
    public const int MaxRows = 500;

    public static string ToHtml(DataFrame frame)
    {
        ArgumentNullException.ThrowIfNull(frame);
        var html = new StringBuilder();
        html.Append("<div class=\"moe-table\" style=\"overflow-x:auto;max-width:100%\"><table style=\"border-collapse:collapse\">\n<thead><tr>");
        foreach (var column in frame.Columns)
        {
            html.Append("<th style=\"white-space:nowrap;text-align:").Append(IsNumeric(column) ? "right" : "left").Append("\">")
                .Append(WebUtility.HtmlEncode(column.Name)).Append("</th>");
        }

        html.Append("</tr></thead>\n<tbody>\n");
        var rows = Math.Min(frame.Rows.Count, MaxRows);
        for (long r = 0; r < rows; r++)
        {
            html.Append("<tr>");
            foreach (var column in frame.Columns)
            {
                var numeric = IsNumeric(column);
                html.Append("<td style=\"white-space:nowrap;text-align:").Append(numeric ? "right" : "left")
                    .Append(numeric ? ";font-variant-numeric:tabular-nums" : "").Append("\">")
                    .Append(WebUtility.HtmlEncode(Format(column[r]))).Append("</td>");
            }

            html.Append("</tr>\n");
        }

        html.Append("</tbody></table>");
        if (frame.Rows.Count > rows)
        {
            html.Append("<p>… ").Append((frame.Rows.Count - rows).ToString("N0", CultureInfo.InvariantCulture)).Append(" more rows</p>");
        }

        return html.Append("</div>").ToString();
    }

    /// <summary>A cell value for reading: see the class summary.</summary>
    public static string Format(object? value) => value switch
    {
        null => "",
        double d => FormatNumber(d),
        float f => FormatNumber(f),
        decimal m => FormatNumber((double)m),
        long or int or short or byte or ulong or uint or ushort or sbyte => Convert.ToInt64(value, CultureInfo.InvariantCulture).ToString("N0", CultureInfo.InvariantCulture),
        bool b => b ? "true" : "false",
        IFormattable formattable => formattable.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };

    /// <summary>Integral values with thousands separators, others to 4 significant digits (scientific outside 1e-3..1e9).</summary>
    public static string FormatNumber(double value)
    {
        if (double.IsNaN(value) || double.IsInfinity(value))
        {
            return value.ToString(CultureInfo.InvariantCulture);
        }

        var magnitude = Math.Abs(value);
        if (value == Math.Round(value) && magnitude < 1e15)
        {
            return value.ToString("N0", CultureInfo.InvariantCulture);
        }

        if (magnitude >= 1e9 || magnitude < 1e-3)
        {
            return value.ToString("0.###E+0", CultureInfo.InvariantCulture);
        }

        var decimals = Math.Max(0, 3 - (int)Math.Floor(Math.Log10(magnitude)));
        return Math.Round(value, decimals).ToString("N" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
    }

    private static bool IsNumeric(DataFrameColumn column) =>
        column.DataType is var t && (t == typeof(double) || t == typeof(float) || t == typeof(decimal) || t == typeof(long) ||
                                     t == typeof(int) || t == typeof(short) || t == typeof(byte));
}

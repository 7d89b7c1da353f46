namespace MoeNotebooks.Config;

/// <summary>
/// A description (model, hardware, strategy, scenario, cost model) that cannot be used.
/// The message always names the field, the offending value and what would be valid.
/// </summary>
public sealed class ConfigException : Exception
{
    public ConfigException(string field, string? value, string requirement, string? source = null)
        : base(Format(field, value, requirement, source))
    {
        Field = field;
        Value = value;
        Requirement = requirement;
        Source = source;
    }

    /// <summary>Dotted path of the field, e.g. <c>model.attentionHeads</c>.</summary>
    public string Field { get; }

    /// <summary>The value as written (null when the field is missing).</summary>
    public string? Value { get; }

    /// <summary>What would be valid.</summary>
    public string Requirement { get; }

    /// <summary>File the value came from, if any.</summary>
    public new string? Source { get; }

    /// <summary>The same error attributed to <paramref name="source"/> when it has no source yet (validators deep in a record do not know the file).</summary>
    public ConfigException WithSource(string? source) =>
        Source is not null || source is null ? this : new ConfigException(Field, Value, Requirement, source);

    private static string Format(string field, string? value, string requirement, string? source)
    {
        var where = source is null ? "" : $"{Visible(source, 160)}: ";
        var shown = value is null ? "is missing" : $"= {Visible(value, 80)}";
        return $"{where}{Visible(field, 120)} {shown}: {Visible(requirement, 1000)}";
    }

    /// <summary>
    /// <paramref name="text"/> safe to print on one terminal line: control characters (C0, DEL, C1), line and paragraph
    /// separators, bidirectional overrides and lone surrogates shown as escapes (<c>\x1b</c>, <c>\u202e</c>), and cut to
    /// <paramref name="max"/> characters with "..." and the original length. Used for every user string in errors and
    /// terminal output.
    /// </summary>
    public static string Visible(string text, int max = 80)
    {
        var cut = text.Length > max;
        var body = cut ? text[..max] : text;
        System.Text.StringBuilder? sb = null;
        for (var i = 0; i < body.Length; i++)
        {
            var c = body[i];
            string? escape = null;
            if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f)) escape = $"\\x{(int)c:x2}";
            else if (c is '\u2028' or '\u2029' or '\u200e' or '\u200f' or '\u061c' or '\ufeff' || (c >= '\u202a' && c <= '\u202e') || (c >= '\u2066' && c <= '\u2069'))
                escape = $"\\u{(int)c:x4}";
            else if (char.IsHighSurrogate(c) && i + 1 < body.Length && char.IsLowSurrogate(body[i + 1]))
            {
                sb?.Append(c).Append(body[i + 1]);
                i++;
                continue;
            }
            else if (char.IsSurrogate(c)) escape = $"\\u{(int)c:x4}";
            if (escape is null) { sb?.Append(c); continue; }
            sb ??= new System.Text.StringBuilder(body.Length + 16).Append(body, 0, i);
            sb.Append(escape);
        }
        var result = sb?.ToString() ?? body;
        return cut ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{result}... ({text.Length} characters)") : result;
    }
}

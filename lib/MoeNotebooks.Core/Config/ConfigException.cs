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
        var where = source is null ? "" : $"{source}: ";
        var shown = value is null ? "is missing" : $"= {value}";
        return $"{where}{field} {shown}: {requirement}";
    }
}

using System.Globalization;

namespace MoeNotebooks.Config;

public enum RoutingDistribution
{
    /// <summary>Every expert receives the same share of tokens.</summary>
    Uniform,

    /// <summary>Expert i (0-based) receives a share proportional to 1 / (i + 1)^s.</summary>
    Zipf,

    /// <summary>Shares proportional to given per-expert token counts.</summary>
    Explicit,
}

/// <summary>
/// How tokens spread over experts, and the capacity limit. Experts are placed contiguously on EP ranks
/// (experts 0..E/EP-1 on rank 0, ...), so under skew the first rank holds the hottest experts, as happens
/// without a load-balancing loss.
/// </summary>
/// <param name="Distribution">Uniform, Zipf or explicit counts.</param>
/// <param name="ZipfExponent">s for <see cref="RoutingDistribution.Zipf"/>.</param>
/// <param name="TokensPerExpert">Relative counts for <see cref="RoutingDistribution.Explicit"/> (one per expert).</param>
/// <param name="CapacityFactor">If set, each expert takes at most ceil(factor x tokens x topK / experts) tokens; the rest are dropped.</param>
public sealed record RoutingSpec(RoutingDistribution Distribution = RoutingDistribution.Uniform, double ZipfExponent = 1.0, IReadOnlyList<double>? TokensPerExpert = null, double? CapacityFactor = null)
{
    public static RoutingSpec Uniform { get; } = new();

    public RoutingSpec Validated(int experts, string path = "model.routing", string? source = null)
    {
        Validate.NonNegative($"{path}.zipfExponent", ZipfExponent);
        Validate.Within($"{path}.zipfExponent", ZipfExponent, Bounds.ZipfExponent, source);
        if (CapacityFactor is { } c && (!double.IsFinite(c) || c <= 0))
            throw new ConfigException($"{path}.capacityFactor", Validate.Show(c), "must be a finite number > 0 (e.g. 1.0 or 1.25), or left out for no capacity limit", source);
        if (CapacityFactor is { } cf) Validate.Within($"{path}.capacityFactor", cf, Bounds.CapacityFactor, source);
        if (Distribution == RoutingDistribution.Explicit)
        {
            if (TokensPerExpert is null || TokensPerExpert.Count != experts)
                throw new ConfigException($"{path}.tokensPerExpert", TokensPerExpert is null ? null : $"[{TokensPerExpert.Count} values]",
                    $"must list one count per expert (model.experts = {experts})", source);
            for (var i = 0; i < TokensPerExpert.Count; i++)
            {
                Validate.NonNegative($"{path}.tokensPerExpert[{i}]", TokensPerExpert[i]);
                Validate.Within($"{path}.tokensPerExpert[{i}]", TokensPerExpert[i], Bounds.TokenCount, source);
            }
            if (TokensPerExpert.Sum() <= 0) throw new ConfigException($"{path}.tokensPerExpert", "all zero", "must contain a positive count", source);
        }
        else if (TokensPerExpert is not null)
            throw new ConfigException($"{path}.tokensPerExpert", $"[{TokensPerExpert.Count} values]", "applies only to \"distribution\": \"explicit\"", source);
        return this;
    }

    /// <summary>Share of routed tokens each expert receives (sums to 1).</summary>
    public double[] Shares(int experts)
    {
        var w = new double[experts];
        for (var i = 0; i < experts; i++)
        {
            w[i] = Distribution switch
            {
                RoutingDistribution.Zipf => 1.0 / Math.Pow(i + 1, ZipfExponent),
                RoutingDistribution.Explicit => TokensPerExpert![i],
                _ => 1.0,
            };
        }
        var sum = w.Sum();
        for (var i = 0; i < experts; i++) w[i] /= sum;
        return w;
    }

    /// <summary>
    /// Tokens each expert processes when <paramref name="routedTokens"/> (tokens x topK) are routed, after the
    /// capacity limit, and how many were dropped. Counts are rounded so they add up to the routed tokens.
    /// </summary>
    public (long[] Processed, long Dropped) Assign(long routedTokens, int experts)
    {
        var shares = Shares(experts);
        var counts = new long[experts];
        var assigned = 0L;
        var remainders = new (double Fraction, int Expert)[experts];
        for (var i = 0; i < experts; i++)
        {
            var exact = routedTokens * shares[i];
            counts[i] = (long)Math.Floor(exact);
            assigned += counts[i];
            remainders[i] = (exact - counts[i], i);
        }
        // Largest remainders first, ties to the lower expert id: deterministic and exact (a total order, so an in-place
        // sort gives the order a stable LINQ sort gave, without its key arrays: a hostile expert count stays in memory).
        var left = (int)(routedTokens - assigned);
        if (left > 0)
        {
            Array.Sort(remainders, static (a, b) => a.Fraction != b.Fraction ? b.Fraction.CompareTo(a.Fraction) : a.Expert.CompareTo(b.Expert));
            for (var i = 0; i < left; i++) counts[remainders[i].Expert]++;
        }
        long dropped = 0;
        if (CapacityFactor is { } c)
        {
            var capacity = (long)Math.Ceiling(c * routedTokens / experts);
            for (var i = 0; i < experts; i++)
                if (counts[i] > capacity) { dropped += counts[i] - capacity; counts[i] = capacity; }
        }
        return (counts, dropped);
    }

    public static RoutingSpec Read(JsonObjectReader r)
    {
        List<double>? counts = null;
        if (r.Element("tokensPerExpert") is { } arr)
        {
            if (arr.ValueKind != System.Text.Json.JsonValueKind.Array)
                throw new ConfigException(r.Child("tokensPerExpert"), JsonObjectReader.Raw(arr), "must be an array of numbers", r.Source);
            counts = new List<double>();
            var i = 0;
            foreach (var v in arr.EnumerateArray())
            {
                if (v.ValueKind != System.Text.Json.JsonValueKind.Number)
                    throw new ConfigException($"{r.Child("tokensPerExpert")}[{i}]", JsonObjectReader.Raw(v), "must be a number", r.Source);
                if (!v.TryGetDouble(out var d) || !double.IsFinite(d))
                    throw new ConfigException($"{r.Child("tokensPerExpert")}[{i}]", JsonObjectReader.Raw(v), "must be a finite number", r.Source);
                counts.Add(d);
                i++;
            }
        }
        var spec = new RoutingSpec(
            r.Enum("distribution", RoutingDistribution.Uniform),
            r.OptionalDouble("zipfExponent") ?? 1.0,
            counts,
            r.OptionalDouble("capacityFactor"));
        r.Finish();
        return spec;
    }

    /// <summary>Writes the routing as the JSON object <see cref="Read"/> reads.</summary>
    public void WriteJson(System.Text.Json.Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("distribution", JsonObjectReader.Kebab(Distribution.ToString()));
        w.WriteNumber("zipfExponent", ZipfExponent);
        if (TokensPerExpert is { } counts)
        {
            w.WriteStartArray("tokensPerExpert");
            foreach (var c in counts) w.WriteNumberValue(c);
            w.WriteEndArray();
        }
        if (CapacityFactor is { } cf) w.WriteNumber("capacityFactor", cf);
        w.WriteEndObject();
    }

    public override string ToString() => Distribution switch
    {
        RoutingDistribution.Zipf => string.Create(CultureInfo.InvariantCulture, $"zipf(s={ZipfExponent})"),
        RoutingDistribution.Explicit => "explicit",
        _ => "uniform",
    } + (CapacityFactor is { } c ? string.Create(CultureInfo.InvariantCulture, $", capacity {c}") : "");
}

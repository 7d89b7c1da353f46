using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MoeNotebooks.Config;

/// <summary>A parameter count a model's publisher states, as written ("671B", "3.3B", "1T"), and what it counts.</summary>
/// <param name="Total">Total parameters as published.</param>
/// <param name="Active">Parameters active per token as published.</param>
/// <param name="ActiveCounts">Which embedding matrices the publisher's active count includes: "both", "output" (the unembedding only) or "none".</param>
/// <param name="Source">Where the figures are stated.</param>
public sealed record PublishedParameters(string Total, string Active, string ActiveCounts, string Source)
{
    /// <summary>A published figure's value and the size of one unit in its last digit ("3.3B" -> 3.3e9, 1e8).</summary>
    public static (double Value, double LastDigitUnit) Parse(string text)
    {
        var scale = text[^1] switch { 'B' => 1e9, 'T' => 1e12, 'M' => 1e6, _ => throw new FormatException($"\"{text}\": end with M, B or T") };
        var number = text[..^1];
        var dot = number.IndexOf('.');
        var decimals = dot < 0 ? 0 : number.Length - dot - 1;
        return (double.Parse(number, CultureInfo.InvariantCulture) * scale, Math.Pow(10, -decimals) * scale);
    }
}

/// <summary>A model preset from data/models/*.json: the architecture (batch 1 unless overridden) and its sources.</summary>
public sealed record ModelPreset(string Name, ModelSpec Model, string Description, IReadOnlyDictionary<string, string> Sources, PublishedParameters? Published);

/// <summary>
/// The model presets shipped in <c>data/models/*.json</c> (embedded), each number with its source. A scenario names one
/// with <c>"model": {"preset": "qwen3-30b-a3b", "batch": 512, "sequenceLength": 4096}</c> and may override any field.
/// </summary>
public static class ModelPresets
{
    private static readonly Lazy<IReadOnlyDictionary<string, (string Json, string Source)>> Raw = new(LoadRaw);
    private static readonly Lazy<IReadOnlyDictionary<string, ModelPreset>> Entries = new(LoadAll);

    /// <summary>Preset names (file stems), sorted.</summary>
    public static IReadOnlyList<string> Names => Raw.Value.Keys.Order(StringComparer.Ordinal).ToArray();

    public static IReadOnlyList<ModelPreset> All => Names.Select(n => Entries.Value[n]).ToArray();

    /// <summary>A preset's model with the given batch (and sequence length, else the preset's), e.g. Get("deepseek-v3", 4096).</summary>
    public static ModelSpec Get(string name, long batch = 1, long? sequenceLength = null)
    {
        var m = Preset(name).Model with { Batch = batch };
        if (sequenceLength is { } s) m = m with { SequenceLength = s };
        return m.Validated();
    }

    /// <summary>The full preset entry (sources, published parameter counts).</summary>
    public static ModelPreset Preset(string name) => Entries.Value.TryGetValue(Find(name, "model.preset", null), out var p) ? p : throw new InvalidOperationException(name);

    private static string Find(string name, string field, string? source)
    {
        var key = Raw.Value.Keys.FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase));
        if (key is not null) return key;
        var near = JsonObjectReader.Closest(name, Raw.Value.Keys, minDistance: 3);
        var hint = near is not null ? $" (did you mean \"{near}\"?)" : "";
        throw new ConfigException(field, $"\"{name}\"", $"is not a known model preset{hint}; known: {string.Join(", ", Names)}", source);
    }

    /// <summary>Reads <c>{"preset": ..., overrides}</c>: the preset's fields, then the scenario's on top.</summary>
    internal static ModelSpec ReadWithOverrides(string name, JsonObjectReader r)
    {
        var key = Find(name, r.Child("preset"), r.Source);
        var merged = JsonNode.Parse(Raw.Value[key].Json)!.AsObject();
        foreach (var meta in new[] { "description", "sources", "published" }) merged.Remove(meta);
        foreach (var p in r.RawElement.EnumerateObject())
        {
            if (p.Name == "preset") continue;
            merged[p.Name] = JsonNode.Parse(p.Value.GetRawText());
        }
        if (!merged.ContainsKey("name")) merged["name"] = key;
        r.MarkAllRead();
        using var doc = JsonDocument.Parse(merged.ToJsonString());
        return ModelSpec.Read(new JsonObjectReader(doc.RootElement, r.Path, r.Source));
    }

    private static IReadOnlyDictionary<string, (string, string)> LoadRaw()
    {
        var asm = typeof(ModelPresets).Assembly;
        var map = new Dictionary<string, (string, string)>(StringComparer.Ordinal);
        foreach (var res in asm.GetManifestResourceNames().Where(n => n.StartsWith("models/", StringComparison.Ordinal)))
        {
            using var reader = new StreamReader(asm.GetManifestResourceStream(res)!);
            map[Path.GetFileNameWithoutExtension(res)] = (reader.ReadToEnd(), "data/" + res);
        }
        return map;
    }

    private static IReadOnlyDictionary<string, ModelPreset> LoadAll()
    {
        var map = new Dictionary<string, ModelPreset>(StringComparer.Ordinal);
        foreach (var (name, (json, source)) in Raw.Value)
        {
            var node = JsonNode.Parse(json)!.AsObject();
            if (!node.ContainsKey("batch")) node["batch"] = 1;
            using var doc = JsonObjectReader.Parse(node.ToJsonString(), source);
            var model = ModelSpec.Read(new JsonObjectReader(doc.RootElement, "model", source));
            var root = doc.RootElement;
            var sources = new Dictionary<string, string>(StringComparer.Ordinal);
            if (root.TryGetProperty("sources", out var s))
                foreach (var p in s.EnumerateObject()) sources[p.Name] = p.Value.GetString() ?? "";
            PublishedParameters? published = null;
            if (root.TryGetProperty("published", out var pub))
                published = new PublishedParameters(pub.GetProperty("totalParameters").GetString()!, pub.GetProperty("activeParameters").GetString()!,
                    pub.GetProperty("activeCounts").GetString()!, pub.GetProperty("source").GetString()!);
            var description = root.TryGetProperty("description", out var d) ? d.GetString() ?? "" : "";
            map[name] = new ModelPreset(name, model, description, sources, published);
        }
        return map;
    }

    internal static string Invariant(double v) => v.ToString("R", CultureInfo.InvariantCulture);
}

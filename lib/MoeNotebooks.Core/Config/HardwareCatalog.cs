namespace MoeNotebooks.Config;

/// <summary>
/// The hardware presets shipped in <c>data/hardware/*.json</c> (embedded in this assembly, so notebooks and
/// the CLI see the same catalog wherever they run). Each file carries its sources.
/// </summary>
public static class HardwareCatalog
{
    private static readonly Lazy<IReadOnlyDictionary<string, HardwareSpec>> Entries = new(Load);

    public static IReadOnlyCollection<string> Names => Entries.Value.Values.Select(h => h.Name).Distinct().Order().ToArray();

    public static IReadOnlyCollection<HardwareSpec> All => Entries.Value.Values.DistinctBy(h => h.Name).OrderBy(h => h.Name).ToArray();

    /// <summary>A preset by name (case-insensitive; the file stem also works), e.g. "H100-SXM".</summary>
    public static HardwareSpec Get(string name) => Find(name, "hardware.preset", null);

    internal static HardwareSpec Find(string name, string field, string? source)
    {
        if (Entries.Value.TryGetValue(name, out var h)) return h;
        throw new ConfigException(field, $"\"{name}\"", $"is not a known hardware preset; known: {string.Join(", ", Names)}", source);
    }

    private static IReadOnlyDictionary<string, HardwareSpec> Load() =>
        EmbeddedCatalog.Load("hardware", HardwareSpec.Read, h => h.Name, byFileStem: true);
}

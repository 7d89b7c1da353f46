using System.Reflection;

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

    private static IReadOnlyDictionary<string, HardwareSpec> Load()
    {
        var asm = typeof(HardwareCatalog).Assembly;
        var map = new Dictionary<string, HardwareSpec>(StringComparer.OrdinalIgnoreCase);
        foreach (var res in asm.GetManifestResourceNames().Where(n => n.StartsWith("hardware/", StringComparison.Ordinal)))
        {
            using var stream = asm.GetManifestResourceStream(res)!;
            using var reader = new StreamReader(stream);
            var source = "data/" + res;
            using var doc = JsonObjectReader.Parse(reader.ReadToEnd(), source);
            var spec = HardwareSpec.Read(new JsonObjectReader(doc.RootElement, "", source));
            map[spec.Name] = spec;
            map[Path.GetFileNameWithoutExtension(res)] = spec;
        }
        return map;
    }
}

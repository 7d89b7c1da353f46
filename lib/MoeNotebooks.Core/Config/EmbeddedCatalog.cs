namespace MoeNotebooks.Config;

/// <summary>
/// Reads the JSON files of a <c>data/&lt;folder&gt;/</c> catalog embedded in this assembly (hardware presets,
/// efficiency tables, GEMM tile tables), so notebooks and the CLI see the same data wherever they run.
/// </summary>
internal static class EmbeddedCatalog
{
    /// <summary>Entries by their name (case-insensitive), and also by file stem when <paramref name="byFileStem"/>.</summary>
    public static IReadOnlyDictionary<string, T> Load<T>(string folder, Func<JsonObjectReader, T> read, Func<T, string> name, bool byFileStem = false)
    {
        var asm = typeof(EmbeddedCatalog).Assembly;
        var map = new Dictionary<string, T>(StringComparer.OrdinalIgnoreCase);
        foreach (var res in asm.GetManifestResourceNames().Where(n => n.StartsWith(folder + "/", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            using var reader = new StreamReader(asm.GetManifestResourceStream(res)!);
            var source = "data/" + res;
            using var doc = JsonObjectReader.Parse(reader.ReadToEnd(), source);
            var entry = read(new JsonObjectReader(doc.RootElement, "", source));
            map[name(entry)] = entry;
            if (byFileStem) map[Path.GetFileNameWithoutExtension(res)] = entry;
        }
        return map;
    }
}

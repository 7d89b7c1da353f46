using System.Globalization;
using System.Text.Json;

namespace MoeNotebooks.Config;

/// <summary>
/// Reads one JSON object field by field. Every read is recorded, so that <see cref="Finish"/> can reject
/// keys nobody asked for (a misspelt key is an error, not a silent default). Errors name the JSON path,
/// the value and what would be valid.
/// </summary>
public sealed class JsonObjectReader
{
    private readonly JsonElement _element;
    // Sized for the largest readers (the model reads about 45 keys) so that reading one never regrows the set.
    private readonly HashSet<string> _known = new(48, StringComparer.Ordinal);

    public JsonObjectReader(JsonElement element, string path, string? source)
    {
        Path = path;
        Source = source;
        if (element.ValueKind != JsonValueKind.Object)
            throw new ConfigException(path.Length == 0 ? "(root)" : path, Raw(element), $"must be a JSON object {{...}}, not {Describe(element.ValueKind)}", source);
        _element = element;
    }

    public string Path { get; }
    public string? Source { get; }

    /// <summary>Largest description file read (bytes): a scenario with a million-expert routing table is about 10 MB.</summary>
    public const long MaxJsonBytes = 16L << 20;

    /// <summary>Longest JSON array accepted anywhere in a description (a per-expert table for the largest expert count).</summary>
    public const int MaxArrayLength = Bounds.MaxExperts;

    /// <summary>
    /// Reads a text file of at most <paramref name="maxBytes"/> bytes, stopping as soon as the limit is passed, so an endless
    /// input (/dev/zero, /dev/urandom, a growing log) is refused at once instead of read until memory runs out. Errors name
    /// <paramref name="field"/> and the path: missing, a directory, unreadable, too large, not UTF-8 text.
    /// </summary>
    public static string ReadFile(string path, string field, long maxBytes = MaxJsonBytes, string? source = null)
    {
        var shown = Quote(path);
        if (Directory.Exists(path)) throw new ConfigException(field, shown, "is a directory; give a file", source);
        if (!File.Exists(path)) throw new ConfigException(field, shown, "file not found", source);
        byte[] bytes;
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16);
            var buffer = new MemoryStream();
            var chunk = new byte[1 << 16];
            int n;
            while ((n = stream.Read(chunk, 0, (int)Math.Min(chunk.Length, maxBytes + 1 - buffer.Length))) > 0)
            {
                buffer.Write(chunk, 0, n);
                if (buffer.Length > maxBytes)
                    throw new ConfigException(field, shown, string.Create(CultureInfo.InvariantCulture,
                        $"is larger than {maxBytes >> 20} MiB (the limit for this input); is it the right file?"), source);
            }
            bytes = buffer.ToArray();
        }
        catch (UnauthorizedAccessException) { throw new ConfigException(field, shown, "cannot be read (permission denied)", source); }
        catch (IOException e) { throw new ConfigException(field, shown, $"cannot be read ({OneLine(e.Message)})", source); }
        try { return new System.Text.UTF8Encoding(false, true).GetString(bytes).TrimStart('\uFEFF'); }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new ConfigException(field, shown, $"is not UTF-8 text (invalid byte at offset {e.Index})", source);
        }
    }

    /// <summary>A value as an error message quotes it: in double quotes, at most 80 characters (see <see cref="ConfigException"/>, which also makes control characters visible).</summary>
    public static string Quote(string text) => $"\"{(text.Length > 80 ? text[..77] + "..." : text)}\"";

    private static string OneLine(string text) => text.Replace('\n', ' ').Replace('\r', ' ');

    public static JsonDocument Parse(string json, string? source)
    {
        if (string.IsNullOrWhiteSpace(json))
            throw new ConfigException("(file)", "empty", "must contain a JSON object", source);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            var line = e.LineNumber is { } l ? $"line {l + 1}" : "(file)";
            throw new ConfigException(line, null, $"is not valid JSON: {e.Message.Split(" Path:")[0]}", source);
        }
        try { CheckTree(doc.RootElement, "", source); }
        catch { doc.Dispose(); throw; }
        return doc;
    }

    /// <summary>
    /// Rules every description obeys, checked once over the whole document: no string or key with a lone UTF-16
    /// surrogate (valid JSON text, but not text: it cannot be printed or written back), no two keys of an object that
    /// differ only in case (one would silently replace the other), no array longer than <see cref="MaxArrayLength"/>.
    /// </summary>
    public static void CheckTree(JsonElement element, string path, string? source)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var seen = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                foreach (var p in element.EnumerateObject())
                {
                    var name = TextOf(() => p.Name, path.Length == 0 ? "(key)" : path + ".(key)", p.Value, source);
                    var child = path.Length == 0 ? name : $"{path}.{name}";
                    if (seen.TryGetValue(name, out var first))
                        throw new ConfigException(child, Raw(p.Value), first == name
                            ? "appears more than once in the object; keep one"
                            : $"repeats key \"{first}\" (keys are compared ignoring case); keep one", source);
                    seen[name] = name;
                    CheckTree(p.Value, child, source);
                }
                break;
            case JsonValueKind.Array:
                var length = element.GetArrayLength();
                if (length > MaxArrayLength)
                    throw new ConfigException(path.Length == 0 ? "(root)" : path, string.Create(CultureInfo.InvariantCulture, $"[{length} values]"),
                        string.Create(CultureInfo.InvariantCulture, $"is too long: at most {MaxArrayLength} values"), source);
                var i = 0;
                foreach (var v in element.EnumerateArray()) CheckTree(v, string.Create(CultureInfo.InvariantCulture, $"{path}[{i++}]"), source);
                break;
            case JsonValueKind.String:
                TextOf(() => element.GetString()!, path.Length == 0 ? "(root)" : path, element, source);
                break;
        }
    }

    private static string TextOf(Func<string> get, string field, JsonElement shown, string? source)
    {
        string text;
        try { text = get(); }
        catch (InvalidOperationException) { throw LoneSurrogate(field, shown, source); }
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            if (char.IsSurrogate(text[i])) throw LoneSurrogate(field, shown, source);
        }
        return text;
    }

    private static ConfigException LoneSurrogate(string field, JsonElement shown, string? source) =>
        new(field, Raw(shown), "contains a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair), which is not text; remove it or write the whole character", source);

    public bool Has(string key)
    {
        _known.Add(key);
        return _element.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;
    }

    public JsonElement? Element(string key)
    {
        _known.Add(key);
        return _element.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
    }

    public JsonObjectReader Object(string key)
    {
        var v = Element(key) ?? throw Missing(key, "a JSON object");
        return new JsonObjectReader(v, Child(key), Source);
    }

    public string String(string key) => OptionalString(key) ?? throw Missing(key, "a string");

    public string? OptionalString(string key)
    {
        if (Element(key) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.String)
            throw new ConfigException(Child(key), Raw(v), $"must be a string, not {Describe(v.ValueKind)}", Source);
        return v.GetString();
    }

    public long Long(string key) => OptionalLong(key) ?? throw Missing(key, "an integer");

    public long? OptionalLong(string key)
    {
        if (Element(key) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number)
            throw new ConfigException(Child(key), Raw(v), $"must be an integer number, not {Describe(v.ValueKind)}", Source);
        if (v.TryGetInt64(out var l)) return l;
        var text = v.GetRawText();
        // 2.0, 2e0, 2.50e1: whole numbers written in another notation are integers.
        // (Both readings must be whole: decimal rounds 5e-324 to 0, double rounds 2.0000000000000000001 to 2.)
        if (v.TryGetDecimal(out var m) && decimal.Truncate(m) == m && m is >= long.MinValue and <= long.MaxValue
            && v.TryGetDouble(out var whole) && whole == Math.Truncate(whole)) return (long)m;
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && Math.Abs(d) >= long.MaxValue)
            throw new ConfigException(Child(key), text, "overflows a 64-bit integer", Source);
        throw new ConfigException(Child(key), Raw(v), "must be a whole number (no fraction)", Source);
    }

    public int Int(string key) => OptionalInt(key) ?? throw Missing(key, "an integer");

    public int? OptionalInt(string key)
    {
        if (OptionalLong(key) is not { } l) return null;
        if (l is > int.MaxValue or < int.MinValue)
            throw new ConfigException(Child(key), l.ToString(CultureInfo.InvariantCulture), $"must fit a 32-bit integer (<= {int.MaxValue})", Source);
        return (int)l;
    }

    public double Double(string key) => OptionalDouble(key) ?? throw Missing(key, "a number");

    public double? OptionalDouble(string key)
    {
        if (Element(key) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number)
            throw new ConfigException(Child(key), Raw(v), $"must be a number, not {Describe(v.ValueKind)}", Source);
        if (!v.TryGetDouble(out var d) || !double.IsFinite(d)) throw new ConfigException(Child(key), v.GetRawText(), "must be a finite number (within +-1.8e308)", Source);
        return d;
    }

    public bool? OptionalBool(string key)
    {
        if (Element(key) is not { } v) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ConfigException(Child(key), Raw(v), $"must be true or false, not {Describe(v.ValueKind)}", Source),
        };
    }

    public T Enum<T>(string key, T fallback) where T : struct, System.Enum
    {
        var s = OptionalString(key);
        if (s is null) return fallback;
        return ParseEnum<T>(Child(key), s, Source);
    }

    public static T ParseEnum<T>(string field, string text, string? source) where T : struct, System.Enum
    {
        foreach (var name in System.Enum.GetNames<T>())
        {
            if (string.Equals(Kebab(name), text, StringComparison.OrdinalIgnoreCase) || string.Equals(name, text, StringComparison.OrdinalIgnoreCase))
                return System.Enum.Parse<T>(name);
        }
        var valid = string.Join(", ", System.Enum.GetNames<T>().Select(n => $"\"{Kebab(n)}\""));
        throw new ConfigException(field, $"\"{text}\"", $"must be one of {valid}", source);
    }

    /// <summary>"RooflineIdeal" -> "roofline-ideal".</summary>
    public static string Kebab(string pascal)
    {
        if (pascal == "OneFOneB") return "1f1b";
        var sb = new System.Text.StringBuilder();
        for (var i = 0; i < pascal.Length; i++)
        {
            var c = pascal[i];
            if (char.IsUpper(c) && i > 0 && !char.IsDigit(pascal[i - 1])) sb.Append('-');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }

    /// <summary>Rejects any key that was never read. Call after reading every field.</summary>
    public void Finish()
    {
        var seen = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var p in _element.EnumerateObject())
        {
            if (seen.TryGetValue(p.Name, out var first))
                throw new ConfigException(Child(p.Name), Raw(p.Value), first == p.Name
                    ? "appears more than once in the object; keep one"
                    : $"repeats key \"{first}\" (keys are compared ignoring case); keep one", Source);
            seen[p.Name] = p.Name;
            if (_known.Contains(p.Name)) continue;
            var suggestion = Closest(p.Name, _known);
            var hint = suggestion is null ? "" : $" (did you mean \"{suggestion}\"?)";
            throw new ConfigException(Child(p.Name), Raw(p.Value),
                $"is not a known key{hint}; known keys here: {string.Join(", ", _known.Order(StringComparer.Ordinal))}", Source);
        }
    }

    /// <summary>The object being read (for readers that merge it into another, e.g. a preset with overrides).</summary>
    internal JsonElement RawElement => _element;

    /// <summary>Marks every key of the object as read.</summary>
    internal void MarkAllRead()
    {
        foreach (var p in _element.EnumerateObject()) _known.Add(p.Name);
    }

    public string Child(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    private ConfigException Missing(string key, string what)
    {
        // A misspelt required key would otherwise only say "missing": point at the unread key it probably is.
        string? near = null;
        var best = int.MaxValue;
        foreach (var p in _element.EnumerateObject())
        {
            if (_known.Contains(p.Name)) continue;
            var d = Levenshtein(p.Name.ToLowerInvariant(), key.ToLowerInvariant());
            if (d < best && d <= Math.Max(2, key.Length / 3)) { best = d; near = p.Name; }
        }
        var hint = near is null ? "" : $"; found \"{near}\": did you mean \"{key}\"?";
        return new(Child(key), null, $"is required ({what}){hint}", Source);
    }

    internal static string Raw(JsonElement v)
    {
        var text = v.GetRawText();
        return text.Length > 60 ? text[..57] + "..." : text;
    }

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    /// <summary>The candidate nearest to <paramref name="name"/> by edit distance (case-insensitive), when it is within
    /// max(<paramref name="minDistance"/>, a third of the name); else null. Used for "did you mean" hints.</summary>
    internal static string? Closest(string name, IEnumerable<string> candidates, int minDistance = 2)
    {
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            var d = Levenshtein(name.ToLowerInvariant(), c.ToLowerInvariant());
            if (d < bestDistance) { bestDistance = d; best = c; }
        }
        return bestDistance <= Math.Max(minDistance, name.Length / 3) ? best : null;
    }

    private static int Levenshtein(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++) prev[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (var j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }
}

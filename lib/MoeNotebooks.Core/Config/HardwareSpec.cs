using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>One GPU model: peak dense throughput per datatype and its HBM.</summary>
public sealed record GpuSpec(
    string Name,
    IReadOnlyDictionary<string, double> PeakFlopsPerSecond,
    double HbmBytesPerSecond,
    double HbmCapacityBytes,
    string Source)
{
    /// <summary>Streaming multiprocessors (NVIDIA) or compute units (AMD), for wave quantization; optional.</summary>
    public int? SmCount { get; init; }

    /// <summary>Architecture family ("ampere", "hopper", "blackwell", "cdna3"), which selects GEMM tile tables; optional.</summary>
    public string? Architecture { get; init; }

    /// <summary>Measured maximum achievable matmul FLOP/s per dtype (e.g. MAMF); optional, at most the peak.</summary>
    public IReadOnlyDictionary<string, double> AchievableFlopsPerSecond { get; init; } = new Dictionary<string, double>();

    /// <summary>The achievable fraction of peak for a dtype: measured where listed, else the fraction of the first measured dtype, else null.</summary>
    public double? AchievableFraction(string dtype)
    {
        if (AchievableFlopsPerSecond.TryGetValue(dtype, out var a) && PeakFlopsPerSecond.TryGetValue(dtype, out var p)) return a / p;
        foreach (var (d, v) in AchievableFlopsPerSecond)
            if (PeakFlopsPerSecond.TryGetValue(d, out var pd)) return v / pd;
        return null;
    }

    public double PeakFor(string dtype, string path = "hardware.gpu.peakFlopsPerSecond")
    {
        if (PeakFlopsPerSecond.TryGetValue(dtype, out var p)) return p;
        throw new ConfigException($"{path}.{dtype}", null,
            $"GPU \"{Name}\" has no peak for dtype \"{dtype}\"; it lists {string.Join(", ", PeakFlopsPerSecond.Keys)}");
    }

    public GpuSpec Validated(string path = "hardware.gpu", string? source = null)
    {
        Validate.NotEmpty($"{path}.name", Name);
        if (PeakFlopsPerSecond.Count == 0)
            throw new ConfigException($"{path}.peakFlopsPerSecond", "{}", "must list at least one dtype, e.g. {\"bf16\": 989e12}", source);
        foreach (var (dtype, v) in PeakFlopsPerSecond)
        {
            Validate.Positive($"{path}.peakFlopsPerSecond.{dtype}", v);
            Validate.Within($"{path}.peakFlopsPerSecond.{dtype}", v, Bounds.PeakFlopsPerSecond, source);
        }
        Validate.Positive($"{path}.hbmBytesPerSecond", HbmBytesPerSecond);
        Validate.Within($"{path}.hbmBytesPerSecond", HbmBytesPerSecond, Bounds.HbmBytesPerSecond, source);
        Validate.Positive($"{path}.hbmCapacityBytes", HbmCapacityBytes);
        Validate.Within($"{path}.hbmCapacityBytes", HbmCapacityBytes, Bounds.HbmCapacityBytes, source);
        if (SmCount is { } sms)
        {
            Validate.Positive($"{path}.smCount", sms);
            Validate.Within($"{path}.smCount", sms, Bounds.SmCount, source);
        }
        if (Architecture is not null) Validate.NotEmpty($"{path}.architecture", Architecture);
        foreach (var (dtype, v) in AchievableFlopsPerSecond)
        {
            Validate.Positive($"{path}.achievableFlopsPerSecond.{dtype}", v);
            Validate.Within($"{path}.achievableFlopsPerSecond.{dtype}", v, Bounds.PeakFlopsPerSecond, source);
            if (PeakFlopsPerSecond.TryGetValue(dtype, out var peak) && v > peak)
                throw new ConfigException($"{path}.achievableFlopsPerSecond.{dtype}", Validate.Show(v), $"must not exceed the peak {Validate.Show(peak)}", source);
        }
        return this;
    }

    public static GpuSpec Read(JsonObjectReader r)
    {
        var peaks = ReadPerDtype(r, "peakFlopsPerSecond");
        var achievable = r.Has("achievableFlopsPerSecond") ? ReadPerDtype(r, "achievableFlopsPerSecond") : new Dictionary<string, double>();
        var g = new GpuSpec(
            r.String("name"),
            peaks,
            r.Double("hbmBytesPerSecond"),
            r.Double("hbmCapacityBytes"),
            r.OptionalString("source") ?? "")
        {
            SmCount = r.OptionalInt("smCount"),
            Architecture = r.OptionalString("architecture"),
            AchievableFlopsPerSecond = achievable,
        };
        r.Finish();
        return g.Validated(r.Path, r.Source);
    }

    private static Dictionary<string, double> ReadPerDtype(JsonObjectReader r, string key)
    {
        var reader = r.Object(key);
        var values = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        foreach (var p in r.Element(key)!.Value.EnumerateObject())
        {
            if (!ModelSpec.DtypeBytes.ContainsKey(p.Name))
                throw new ConfigException(reader.Child(p.Name), JsonObjectReader.Raw(p.Value),
                    $"is not a known dtype; use {string.Join(", ", ModelSpec.DtypeBytes.Keys)}", r.Source);
            values[p.Name] = reader.Double(p.Name);
        }
        reader.Finish();
        return values;
    }
}

/// <summary>A link class: per-GPU unidirectional bandwidth and a per-operation latency.</summary>
public sealed record LinkSpec(double BytesPerSecond, double LatencySeconds)
{
    public LinkSpec Validated(string path, string? source = null)
    {
        Validate.Positive($"{path}.bytesPerSecond", BytesPerSecond);
        Validate.Within($"{path}.bytesPerSecond", BytesPerSecond, Bounds.LinkBytesPerSecond, source);
        Validate.NonNegative($"{path}.latencySeconds", LatencySeconds);
        Validate.Within($"{path}.latencySeconds", LatencySeconds, Bounds.LatencySeconds, source);
        return this;
    }

    public static LinkSpec Read(JsonObjectReader r)
    {
        var l = new LinkSpec(r.Double("bytesPerSecond"), r.Double("latencySeconds"));
        r.Finish();
        return l.Validated(r.Path, r.Source);
    }
}

/// <summary>
/// A cluster: how many GPUs of which kind, grouped into nodes; links inside a node (NVLink) and across nodes (NIC).
/// GPU <c>g</c> sits in node <c>g / GpusPerNode</c>.
/// </summary>
public sealed record HardwareSpec(
    string Name,
    GpuSpec Gpu,
    int GpuCount,
    int GpusPerNode,
    LinkSpec IntraNode,
    LinkSpec InterNode,
    string Source)
{
    public int NodeOf(int gpu) => gpu / GpusPerNode;

    public HardwareSpec Validated(string path = "hardware", string? source = null)
    {
        Validate.NotEmpty($"{path}.name", Name);
        Gpu.Validated($"{path}.gpu", source);
        Validate.Positive($"{path}.gpus", GpuCount);
        Validate.Positive($"{path}.gpusPerNode", GpusPerNode);
        Validate.Within($"{path}.gpus", GpuCount, Bounds.Gpus, source);
        Validate.Within($"{path}.gpusPerNode", GpusPerNode, Bounds.GpusPerNode, source);
        IntraNode.Validated($"{path}.intraNode", source);
        InterNode.Validated($"{path}.interNode", source);
        return this;
    }

    public HardwareSpec WithGpus(int gpus) => (this with { GpuCount = gpus }).Validated();

    /// <summary>
    /// Reads a hardware description: either <c>{"preset": "H100-SXM", "gpus": 16}</c> (a catalog entry,
    /// optionally overriding <c>gpus</c>/<c>gpusPerNode</c>) or a full inline description.
    /// </summary>
    public static HardwareSpec Read(JsonObjectReader r)
    {
        HardwareSpec h;
        if (r.OptionalString("preset") is { } preset)
        {
            var entry = HardwareCatalog.Find(preset, r.Child("preset"), r.Source);
            h = entry with
            {
                GpuCount = r.OptionalInt("gpus") ?? entry.GpuCount,
                GpusPerNode = r.OptionalInt("gpusPerNode") ?? entry.GpusPerNode,
            };
        }
        else
        {
            h = new HardwareSpec(
                r.String("name"),
                GpuSpec.Read(r.Object("gpu")),
                r.OptionalInt("gpus") ?? 8,
                r.Int("gpusPerNode"),
                LinkSpec.Read(r.Object("intraNode")),
                LinkSpec.Read(r.Object("interNode")),
                r.OptionalString("source") ?? "");
        }
        r.Finish();
        return h.Validated(r.Path, r.Source);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Name}: {GpuCount} x {Gpu.Name}, {GpusPerNode}/node");
}

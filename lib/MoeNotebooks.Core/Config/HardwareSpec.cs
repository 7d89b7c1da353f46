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
        foreach (var (dtype, v) in PeakFlopsPerSecond) Validate.Positive($"{path}.peakFlopsPerSecond.{dtype}", v);
        Validate.Positive($"{path}.hbmBytesPerSecond", HbmBytesPerSecond);
        Validate.Positive($"{path}.hbmCapacityBytes", HbmCapacityBytes);
        return this;
    }

    public static GpuSpec Read(JsonObjectReader r)
    {
        var peaksReader = r.Object("peakFlopsPerSecond");
        var peaks = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        var peaksElement = r.Element("peakFlopsPerSecond")!.Value;
        foreach (var p in peaksElement.EnumerateObject())
        {
            if (!ModelSpec.DtypeBytes.ContainsKey(p.Name))
                throw new ConfigException(peaksReader.Child(p.Name), JsonObjectReader.Raw(p.Value),
                    $"is not a known dtype; use {string.Join(", ", ModelSpec.DtypeBytes.Keys)}", r.Source);
            peaks[p.Name] = peaksReader.Double(p.Name);
        }
        peaksReader.Finish();
        var g = new GpuSpec(
            r.String("name"),
            peaks,
            r.Double("hbmBytesPerSecond"),
            r.Double("hbmCapacityBytes"),
            r.OptionalString("source") ?? "");
        r.Finish();
        return g.Validated(r.Path, r.Source);
    }
}

/// <summary>A link class: per-GPU unidirectional bandwidth and a per-operation latency.</summary>
public sealed record LinkSpec(double BytesPerSecond, double LatencySeconds)
{
    public LinkSpec Validated(string path, string? source = null)
    {
        Validate.Positive($"{path}.bytesPerSecond", BytesPerSecond);
        Validate.NonNegative($"{path}.latencySeconds", LatencySeconds);
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

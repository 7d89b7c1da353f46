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

    /// <summary>
    /// The datatypes a GPU may list a peak for: the model's element dtypes plus "fp4" (NVFP4 / MXFP4 GEMM inputs,
    /// half a byte, so not an element dtype). Precision recipes look GEMM peaks up by "fp8" (FP8 and MXFP8) and "fp4".
    /// </summary>
    public static IReadOnlyCollection<string> PeakDtypes { get; } =
        ModelSpec.DtypeBytes.Keys.Append("fp4").ToHashSet(StringComparer.OrdinalIgnoreCase);

    private static Dictionary<string, double> ReadPerDtype(JsonObjectReader r, string key)
    {
        var reader = r.Object(key);
        var values = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        foreach (var p in r.Element(key)!.Value.EnumerateObject())
        {
            if (!PeakDtypes.Contains(p.Name))
                throw new ConfigException(reader.Child(p.Name), JsonObjectReader.Raw(p.Value),
                    $"is not a known dtype; use {string.Join(", ", PeakDtypes)}", r.Source);
            values[p.Name] = reader.Double(p.Name);
        }
        reader.Finish();
        return values;
    }
}

/// <summary>
/// A link class: per-GPU unidirectional bandwidth and a per-operation latency (the time of a small message, the first
/// step of a collective). <see cref="StepLatencySeconds"/> is the extra latency of every further step of a ring or
/// tree (NCCL's per-hop <c>hwLat</c>; default 0, so a collective costs one latency as before). For an NVLink domain
/// without a switch (a full mesh of peer links: MI300X Infinity Fabric) <see cref="PeerBytesPerSecond"/> is one peer
/// link's bandwidth: a GPU reaches one peer at that rate and its aggregate only with many peers at once.
/// </summary>
public sealed record LinkSpec(double BytesPerSecond, double LatencySeconds)
{
    /// <summary>Latency of each ring/tree step after the first (seconds); 0 unless the description gives it.</summary>
    public double StepLatencySeconds { get; init; }

    /// <summary>Bandwidth of one peer link of a switchless mesh (bytes/s per direction); null for a switched fabric.</summary>
    public double? PeerBytesPerSecond { get; init; }

    /// <summary>
    /// Fraction of the link's bandwidth that NCCL's point-to-point transfers reach on it, measured: a send/recv, and the
    /// all-to-all NCCL builds from grouped sends and receives (PXN too). 1 unless the description gives it. NCCL's
    /// collectives are priced by its tuner's algorithm and protocol factors instead (<c>costModel.ncclTuning</c>), and
    /// DeepEP's kernels by their own figures, so neither reads it; the roofline-ideal model prices links at line rate
    /// (<see cref="Costs.LinkCommunication.LineRate"/>).
    /// </summary>
    public double PointToPointEfficiency { get; init; } = 1;

    /// <summary>What a ring over <paramref name="gpus"/> GPUs of this fabric gets per GPU: the full bandwidth on a switch, (gpus - 1) peer links on a mesh.</summary>
    public double RingBytesPerSecond(int gpus) =>
        PeerBytesPerSecond is { } peer ? Math.Min(BytesPerSecond, Math.Max(1, gpus - 1) * peer) : BytesPerSecond;

    /// <summary>Point to point between two GPUs: one peer link on a mesh, the full bandwidth on a switch.</summary>
    public double PairBytesPerSecond => PeerBytesPerSecond is { } peer ? Math.Min(peer, BytesPerSecond) : BytesPerSecond;

    public LinkSpec Validated(string path, string? source = null)
    {
        Validate.Positive($"{path}.bytesPerSecond", BytesPerSecond);
        Validate.Within($"{path}.bytesPerSecond", BytesPerSecond, Bounds.LinkBytesPerSecond, source);
        Validate.NonNegative($"{path}.latencySeconds", LatencySeconds);
        Validate.Within($"{path}.latencySeconds", LatencySeconds, Bounds.LatencySeconds, source);
        Validate.NonNegative($"{path}.stepLatencySeconds", StepLatencySeconds);
        Validate.Within($"{path}.stepLatencySeconds", StepLatencySeconds, Bounds.LatencySeconds, source);
        if (!(PointToPointEfficiency > 0 && PointToPointEfficiency <= 1))
            throw new ConfigException($"{path}.pointToPointEfficiency", Validate.Show(PointToPointEfficiency), "must be a fraction of the link's bandwidth in (0, 1], e.g. 0.75", source);
        if (PeerBytesPerSecond is { } peer)
        {
            Validate.Positive($"{path}.peerBytesPerSecond", peer);
            Validate.Within($"{path}.peerBytesPerSecond", peer, Bounds.LinkBytesPerSecond, source);
            if (peer > BytesPerSecond)
                throw new ConfigException($"{path}.peerBytesPerSecond", Validate.Show(peer), $"must not exceed the GPU's aggregate bytesPerSecond {Validate.Show(BytesPerSecond)}", source);
        }
        return this;
    }

    public static LinkSpec Read(JsonObjectReader r)
    {
        var l = new LinkSpec(r.Double("bytesPerSecond"), r.Double("latencySeconds"))
        {
            StepLatencySeconds = r.OptionalDouble("stepLatencySeconds") ?? 0,
            PeerBytesPerSecond = r.OptionalDouble("peerBytesPerSecond"),
            PointToPointEfficiency = r.OptionalDouble("pointToPointEfficiency") ?? 1,
        };
        r.Finish();
        return l.Validated(r.Path, r.Source);
    }
}

/// <summary>
/// A cluster: how many GPUs of which kind, grouped into hosts (nodes) and NVLink domains; links inside an NVLink
/// domain (<see cref="IntraNode"/>: NVLink / NVSwitch, per GPU) and across domains (<see cref="InterNode"/>: one
/// NIC, per NIC). GPU <c>g</c> sits in host <c>g / GpusPerNode</c> and NVLink domain <c>g / GpusPerNvlinkDomain</c>;
/// a host has <see cref="NicsPerNode"/> NICs (rails), NIC <c>r</c> serving GPUs <c>r·GpusPerNode/NicsPerNode</c> onward.
/// Without the topology fields a description means what it meant before: one NVLink domain per host and one NIC per
/// GPU of <see cref="InterNode"/>'s bandwidth.
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
    /// <summary>GPUs sharing one NVLink domain as given (null: one domain per host). An NVL72 rack: 72 GPUs over 18 hosts of 4.</summary>
    public int? NvlinkDomainGpus { get; init; }

    /// <summary>NICs per host as given (null: one per GPU).</summary>
    public int? NicCount { get; init; }

    /// <summary>GPUs per NVLink domain (default: per host).</summary>
    public int GpusPerNvlinkDomain => NvlinkDomainGpus ?? GpusPerNode;

    /// <summary>NICs (rails) per host (default: one per GPU). Each has <see cref="InterNode"/>'s bandwidth.</summary>
    public int NicsPerNode => NicCount ?? GpusPerNode;

    /// <summary>Whether the NVLink domain's switches reduce in the fabric (NVLink SHARP, NCCL's NVLS algorithm).</summary>
    public bool Nvls { get; init; }

    /// <summary>
    /// Fraction of the ideal NVLS all-reduce rate reached (ideal: each GPU sends and receives the buffer once, algbw =
    /// NVLink bandwidth); default 1. DGX H100: measured busbw ~480 GB/s against the ideal 2·7/8·450 = 787.5 GB/s.
    /// </summary>
    public double NvlsEfficiency { get; init; } = 1.0;

    /// <summary>
    /// A GPU's link to its host CPU's memory, per GPU and direction (null: not described): what CPU offloading of
    /// activations or weights moves its bytes over (PCIe on DGX systems, NVLink-C2C on Grace superchips).
    /// </summary>
    public LinkSpec? HostLink { get; init; }

    /// <summary>The host (node) of a GPU.</summary>
    public int NodeOf(int gpu) => gpu / GpusPerNode;

    /// <summary>The NVLink domain of a GPU: two GPUs of one domain talk over NVLink, others over NICs.</summary>
    public int DomainOf(int gpu) => gpu / GpusPerNvlinkDomain;

    /// <summary>The cluster-wide index of the NIC (rail) a GPU sends through.</summary>
    public int NicOf(int gpu) => NodeOf(gpu) * NicsPerNode + gpu % GpusPerNode * NicsPerNode / GpusPerNode;

    public HardwareSpec Validated(string path = "hardware", string? source = null)
    {
        if (ValidatedOnce.Has(this)) return this;
        Validate.NotEmpty($"{path}.name", Name);
        Gpu.Validated($"{path}.gpu", source);
        Validate.Positive($"{path}.gpus", GpuCount);
        Validate.Positive($"{path}.gpusPerNode", GpusPerNode);
        Validate.Within($"{path}.gpus", GpuCount, Bounds.Gpus, source);
        Validate.Within($"{path}.gpusPerNode", GpusPerNode, Bounds.GpusPerNode, source);
        IntraNode.Validated($"{path}.intraNode", source);
        InterNode.Validated($"{path}.interNode", source);
        if (NvlinkDomainGpus is { } d)
        {
            Validate.Positive($"{path}.gpusPerNvlinkDomain", d);
            Validate.Within($"{path}.gpusPerNvlinkDomain", d, Bounds.GpusPerNode, source);
            if (d % GpusPerNode != 0 && GpusPerNode % d != 0)
                throw new ConfigException($"{path}.gpusPerNvlinkDomain", d.ToString(CultureInfo.InvariantCulture),
                    $"must be a multiple or a divisor of gpusPerNode = {GpusPerNode} (a domain spans whole hosts, or a host holds whole domains)", source);
        }
        Validate.Within($"{path}.nvlsEfficiency", NvlsEfficiency, Bounds.NvlsEfficiency, source);
        HostLink?.Validated($"{path}.hostLink", source);
        if (NicCount is { } n)
        {
            Validate.Positive($"{path}.nicsPerNode", n);
            Validate.Within($"{path}.nicsPerNode", n, Bounds.GpusPerNode, source);
            if (GpusPerNode % n != 0)
                throw new ConfigException($"{path}.nicsPerNode", n.ToString(CultureInfo.InvariantCulture),
                    $"must divide gpusPerNode = {GpusPerNode} (each NIC serves the same number of GPUs)", source);
        }
        ValidatedOnce.Remember(this);
        return this;
    }

    public HardwareSpec WithGpus(int gpus) => (this with { GpuCount = gpus }).Validated();

    /// <summary>
    /// Reads a hardware description: either <c>{"preset": "H100-SXM", "gpus": 16}</c> (a catalog entry,
    /// optionally overriding <c>gpus</c>, <c>gpusPerNode</c>, <c>gpusPerNvlinkDomain</c>, <c>nicsPerNode</c>,
    /// <c>nvls</c>, <c>nvlsEfficiency</c>, and whole links: <c>intraNode</c>, <c>interNode</c>, <c>hostLink</c>) or a
    /// full inline description.
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
                NvlinkDomainGpus = r.OptionalInt("gpusPerNvlinkDomain") ?? entry.NvlinkDomainGpus,
                NicCount = r.OptionalInt("nicsPerNode") ?? entry.NicCount,
                Nvls = r.OptionalBool("nvls") ?? entry.Nvls,
                NvlsEfficiency = r.OptionalDouble("nvlsEfficiency") ?? entry.NvlsEfficiency,
                HostLink = r.Has("hostLink") ? LinkSpec.Read(r.Object("hostLink")) : entry.HostLink,
                IntraNode = r.Has("intraNode") ? LinkSpec.Read(r.Object("intraNode")) : entry.IntraNode,
                InterNode = r.Has("interNode") ? LinkSpec.Read(r.Object("interNode")) : entry.InterNode,
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
                r.OptionalString("source") ?? "")
            {
                NvlinkDomainGpus = r.OptionalInt("gpusPerNvlinkDomain"),
                NicCount = r.OptionalInt("nicsPerNode"),
                Nvls = r.OptionalBool("nvls") ?? false,
                NvlsEfficiency = r.OptionalDouble("nvlsEfficiency") ?? 1.0,
                HostLink = r.Has("hostLink") ? LinkSpec.Read(r.Object("hostLink")) : null,
            };
        }
        r.Finish();
        return h.Validated(r.Path, r.Source);
    }

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Name}: {GpuCount} x {Gpu.Name}, {GpusPerNode}/node, {GpusPerNvlinkDomain}/NVLink domain, {NicsPerNode} NIC(s)/node{(Nvls ? ", NVLS" : "")}");
}

using MoeNotebooks.Config;

namespace MoeNotebooks.Costs;

/// <summary>NCCL's protocols: LL (8-byte flag+data stores, lowest latency), LL128 (128-byte lines), Simple (bulk copies with fences).</summary>
public enum CollectiveProtocol
{
    Ll,
    Ll128,
    Simple,
}

/// <summary>One figure per protocol (LL, LL128, Simple).</summary>
public sealed record PerProtocol(double Ll, double Ll128, double Simple)
{
    public double this[CollectiveProtocol p] => p switch { CollectiveProtocol.Ll => Ll, CollectiveProtocol.Ll128 => Ll128, _ => Simple };

    internal static PerProtocol Read(JsonObjectReader parent, string key)
    {
        var r = parent.Object(key);
        var v = new PerProtocol(r.Double("ll"), r.Double("ll128"), r.Double("simple"));
        r.Finish();
        return v;
    }

    internal void Check(string path, double max, string? source)
    {
        foreach (var (name, value) in new[] { ("ll", Ll), ("ll128", Ll128), ("simple", Simple) })
        {
            Validate.NonNegative($"{path}.{name}", value);
            if (value > max) throw new ConfigException($"{path}.{name}", Validate.Show(value), $"must be at most {Validate.Show(max)}", source);
        }
    }
}

/// <summary>NCCL's latency and bandwidth model of one algorithm (ring or tree) per protocol.</summary>
public sealed record NcclAlgorithmTuning(
    PerProtocol BaseLatencySeconds,
    PerProtocol NvlinkStepLatencySeconds,
    PerProtocol NetworkStepLatencySeconds,
    double AlgorithmBandwidthFactor,
    PerProtocol ProtocolBandwidthFactor)
{
    /// <summary>Tree only: NCCL's per-size correction of the bandwidth, powers of two from 64 B (index log2(bytes / 64)).</summary>
    public IReadOnlyDictionary<CollectiveProtocol, double[]>? CorrectionFactor { get; init; }

    /// <summary>The correction at <paramref name="bytes"/> (1 beyond the table, as NCCL).</summary>
    public double Correction(CollectiveProtocol p, double bytes)
    {
        if (CorrectionFactor is null || !CorrectionFactor.TryGetValue(p, out var table)) return 1;
        var chunks = Math.Floor(bytes / 64);
        if (chunks < 1) return table[0];
        var log = (int)Math.Floor(Math.Log2(chunks));
        return log < table.Length ? table[log] : 1;
    }
}

/// <summary>
/// NCCL's tuner model as data (<c>data/collectives/*.json</c>, NVIDIA/nccl src/graph/tuning.cc): per algorithm and
/// protocol a base latency, a latency per step on NVLink and on the network, and bandwidth factors; LL's bus-bandwidth
/// ceilings; the network post overhead; the ring plateau factor. <see cref="LinkCommunication"/> uses it when a cost
/// model opts in (<c>costModel.ncclProtocols</c>): every (algorithm, protocol) pair is priced as NCCL's tuner prices it,
/// with the bus bandwidth of the description's links, and the fastest is chosen and reported.
/// </summary>
public sealed record NcclTuning(
    string Name,
    NcclAlgorithmTuning Ring,
    NcclAlgorithmTuning Tree,
    double NvlsNvlinkStepLatencySeconds,
    double NvlsNetworkStepLatencySeconds,
    IReadOnlyDictionary<string, double> LlMaxSingleNodeBytesPerSecond,
    double LlMaxTwoNodesBytesPerSecond,
    double LlMaxMoreNodesBytesPerSecond,
    double NetOverheadSeconds,
    double SimpleNetOverheadFactor,
    double RingPlateauLatencyFactor,
    string Source)
{
    public const double MaxLatencySeconds = 1e-3;

    /// <summary>LL's bus-bandwidth ceiling: by GPU generation inside one domain (the lowest listed for an unlisted one), by domain count across.</summary>
    public double LlMaxBusBytesPerSecond(string? architecture, int domains) =>
        domains > 2 ? LlMaxMoreNodesBytesPerSecond
        : domains == 2 ? LlMaxTwoNodesBytesPerSecond
        : architecture is not null && LlMaxSingleNodeBytesPerSecond.TryGetValue(architecture, out var v) ? v
        : LlMaxSingleNodeBytesPerSecond.Values.Min();

    public NcclTuning Validated(string path = "", string? source = null)
    {
        Validate.NotEmpty(Child(path, "name"), Name);
        foreach (var (key, a) in new[] { ("ring", Ring), ("tree", Tree) })
        {
            var p = Child(path, key);
            a.BaseLatencySeconds.Check($"{p}.baseLatencySeconds", MaxLatencySeconds, source);
            a.NvlinkStepLatencySeconds.Check($"{p}.nvlinkStepLatencySeconds", MaxLatencySeconds, source);
            a.NetworkStepLatencySeconds.Check($"{p}.networkStepLatencySeconds", MaxLatencySeconds, source);
            Validate.InRange($"{p}.algorithmBandwidthFactor", a.AlgorithmBandwidthFactor, 1e-3, 1.0);
            a.ProtocolBandwidthFactor.Check($"{p}.protocolBandwidthFactor", 1.0, source);
            foreach (var proto in Enum.GetValues<CollectiveProtocol>())
                if (a.ProtocolBandwidthFactor[proto] <= 0)
                    throw new ConfigException($"{p}.protocolBandwidthFactor.{JsonObjectReader.Kebab(proto.ToString())}", Validate.Show(a.ProtocolBandwidthFactor[proto]), "must be greater than 0 and at most 1", source);
            if (a.CorrectionFactor is { } cf)
                foreach (var (proto, table) in cf)
                    for (var i = 0; i < table.Length; i++) Validate.InRange($"{p}.correctionFactor.{JsonObjectReader.Kebab(proto.ToString())}[{i}]", table[i], 1e-3, 1.0);
        }
        Validate.InRange(Child(path, "nvls.nvlinkStepLatencySeconds"), NvlsNvlinkStepLatencySeconds, 0, MaxLatencySeconds);
        Validate.InRange(Child(path, "nvls.networkStepLatencySeconds"), NvlsNetworkStepLatencySeconds, 0, MaxLatencySeconds);
        if (LlMaxSingleNodeBytesPerSecond.Count == 0)
            throw new ConfigException(Child(path, "llMaxBusBytesPerSecond.singleNode"), "{}", "must list at least one GPU generation, e.g. {\"hopper\": 141e9}", source);
        foreach (var (arch, v) in LlMaxSingleNodeBytesPerSecond)
            Validate.Within(Child(path, $"llMaxBusBytesPerSecond.singleNode.{arch}"), v, Bounds.LinkBytesPerSecond, source);
        Validate.Within(Child(path, "llMaxBusBytesPerSecond.twoNodes"), LlMaxTwoNodesBytesPerSecond, Bounds.LinkBytesPerSecond, source);
        Validate.Within(Child(path, "llMaxBusBytesPerSecond.moreNodes"), LlMaxMoreNodesBytesPerSecond, Bounds.LinkBytesPerSecond, source);
        Validate.InRange(Child(path, "netOverheadSeconds"), NetOverheadSeconds, 0, MaxLatencySeconds);
        Validate.InRange(Child(path, "simpleNetOverheadFactor"), SimpleNetOverheadFactor, 1, 100);
        Validate.InRange(Child(path, "ringPlateauLatencyFactor"), RingPlateauLatencyFactor, 1, 100);
        return this;
    }

    private static string Child(string path, string key) => path.Length == 0 ? key : $"{path}.{key}";

    private static NcclAlgorithmTuning ReadAlgorithm(JsonObjectReader parent, string key, bool correction)
    {
        var r = parent.Object(key);
        var a = new NcclAlgorithmTuning(
            PerProtocol.Read(r, "baseLatencySeconds"),
            PerProtocol.Read(r, "nvlinkStepLatencySeconds"),
            PerProtocol.Read(r, "networkStepLatencySeconds"),
            r.Double("algorithmBandwidthFactor"),
            PerProtocol.Read(r, "protocolBandwidthFactor"));
        if (correction && r.Has("correctionFactor"))
        {
            var c = r.Object("correctionFactor");
            var tables = new Dictionary<CollectiveProtocol, double[]>();
            foreach (var (name, proto) in new[] { ("ll", CollectiveProtocol.Ll), ("ll128", CollectiveProtocol.Ll128), ("simple", CollectiveProtocol.Simple) })
            {
                if (c.Element(name) is not { ValueKind: System.Text.Json.JsonValueKind.Array } array)
                    throw new ConfigException(c.Child(name), null, "is required: an array of factors per power-of-two size from 64 B", c.Source);
                tables[proto] = array.EnumerateArray().Select((e, i) => e.ValueKind == System.Text.Json.JsonValueKind.Number ? e.GetDouble()
                    : throw new ConfigException($"{c.Child(name)}[{i}]", JsonObjectReader.Raw(e), "must be a number", c.Source)).ToArray();
            }
            c.Finish();
            a = a with { CorrectionFactor = tables };
        }
        r.Finish();
        return a;
    }

    public static NcclTuning Read(JsonObjectReader r)
    {
        var ring = ReadAlgorithm(r, "ring", correction: false);
        var tree = ReadAlgorithm(r, "tree", correction: true);
        var nvls = r.Object("nvls");
        double nvlsNvl = nvls.Double("nvlinkStepLatencySeconds"), nvlsNet = nvls.Double("networkStepLatencySeconds");
        nvls.Finish();
        var ll = r.Object("llMaxBusBytesPerSecond");
        var single = ll.Object("singleNode");
        var perArch = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        foreach (var p in ll.Element("singleNode")!.Value.EnumerateObject()) perArch[p.Name] = single.Double(p.Name);
        single.Finish();
        double two = ll.Double("twoNodes"), more = ll.Double("moreNodes");
        ll.Finish();
        var t = new NcclTuning(r.String("name"), ring, tree, nvlsNvl, nvlsNet, perArch, two, more,
            r.Double("netOverheadSeconds"), r.Double("simpleNetOverheadFactor"), r.Double("ringPlateauLatencyFactor"), r.OptionalString("source") ?? "");
        r.Finish();
        return t.Validated(r.Path, r.Source);
    }

    private static readonly Lazy<IReadOnlyDictionary<string, NcclTuning>> Catalog = new(() => EmbeddedCatalog.Load("collectives", Read, t => t.Name));

    /// <summary>The NCCL version whose tuner is modelled by default (<c>data/collectives/nccl-2.28.json</c>).</summary>
    public static NcclTuning Default => Get("nccl-2.28");

    public static NcclTuning Get(string name, string field = "costModel.ncclProtocols", string? source = null) =>
        Catalog.Value.TryGetValue(name, out var t) ? t
            : throw new ConfigException(field, $"\"{name}\"", $"is not a known NCCL tuning table; known: {string.Join(", ", Catalog.Value.Keys.Order())}", source);
}

using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>One point of a collective's time-versus-size curve on one topology.</summary>
public sealed record CollectiveCurvePoint(string Topology, CollectivePattern Pattern, double Bytes, double Seconds, CollectiveAlgorithm Algorithm, double BusBytesPerSecond)
{
    /// <summary>The NCCL protocol chosen when the sweep priced protocols; null otherwise.</summary>
    public CollectiveProtocol? Protocol { get; init; }

    /// <summary>"ring", or "ring/LL128" with protocols.</summary>
    public string Label => CollectivePrice.JsonName(Algorithm) + (Protocol is { } p ? "/" + CollectivePrice.ProtocolName(p) : "");
}

/// <summary>A named placement of a group on a hardware description, for comparing topologies.</summary>
public sealed record CollectiveTopology(string Name, HardwareSpec Hardware, int[] Group);

/// <summary>One EP dispatch (or combine) priced by one all-to-all implementation (<see cref="CollectiveCurves.TokenExchange"/>).</summary>
public sealed record TokenExchangePoint(int ExpertParallel, int Domains, AllToAllImplementation Implementation, double Bytes, double Seconds, double IntraDomainSeconds, double InterDomainSeconds)
{
    /// <summary>"nccl", "pxn", "deep-ep-normal", "deep-ep-low-latency".</summary>
    public string Name => Config.JsonObjectReader.Kebab(Implementation.ToString());
}

/// <summary>Collective time versus message size per topology, priced by <see cref="LinkCommunication"/>.</summary>
public static class CollectiveCurves
{
    /// <summary>
    /// The founding question's 16 GPUs on four fabrics: DGX H100 nodes with 8 rails and with 1 rail per node (1 vs 8
    /// rails), and Blackwell GPUs with the same NVLink and NIC speeds as two DGX B200 nodes (NVL8 domains) or inside one
    /// GB200 NVL72 rack (NVL72 domain).
    /// </summary>
    public static IReadOnlyList<CollectiveTopology> Founding(int gpus = 16)
    {
        var group = Enumerable.Range(0, gpus).ToArray();
        var h100 = HardwareCatalog.Get("DGX-H100").WithGpus(gpus);
        return
        [
            new("DGX H100, 8 rails", h100, group),
            new("DGX H100, 1 rail", (h100 with { NicCount = 1 }).Validated(), group),
            new("DGX B200 (NVL8)", HardwareCatalog.Get("DGX-B200").WithGpus(gpus), group),
            new("GB200 NVL72", HardwareCatalog.Get("GB200-NVL72").WithGpus(gpus), group),   // the 72-GPU domain holds all of them
        ];
    }

    /// <summary>Powers of two from <paramref name="minBytes"/> to <paramref name="maxBytes"/>.</summary>
    public static IReadOnlyList<double> Sizes(double minBytes = 1 << 10, double maxBytes = 1L << 33)
    {
        var sizes = new List<double>();
        for (var b = minBytes; b <= maxBytes; b *= 2) sizes.Add(b);
        return sizes;
    }

    /// <summary>
    /// One EP dispatch of <paramref name="tokensPerRank"/> tokens routed top-<paramref name="topK"/> over
    /// <paramref name="experts"/> experts, on EP ranks 0..EP-1 of <paramref name="preset"/> (its GPUs per node filled in
    /// order), priced by each all-to-all implementation with the routing (<see cref="LinkCommunication.PriceRouted"/>;
    /// DeepEP with <see cref="DeepEpKernels.Default"/>): the bytes are every token-expert pair's, as the DAG carries them.
    /// </summary>
    public static IReadOnlyList<TokenExchangePoint> TokenExchange(HardwareSpec preset, IEnumerable<int> expertParallel, int experts, int topK, double tokensPerRank, double bytesPerToken)
    {
        var points = new List<TokenExchangePoint>();
        foreach (var ep in expertParallel)
        {
            if (ep < 2 || experts % ep != 0) throw new ArgumentException($"EP {ep} must be at least 2 and divide the {experts} experts", nameof(expertParallel));
            var hw = preset.WithGpus(Math.Max(ep, preset.GpusPerNode));
            var group = Enumerable.Range(0, ep).ToArray();
            var bytes = tokensPerRank * topK * bytesPerToken;
            foreach (var impl in Enum.GetValues<AllToAllImplementation>())
            {
                var price = new LinkCommunication(hw, impl) { DeepEp = DeepEpKernels.Default }.PriceRouted(bytes, group, topK, experts / ep);
                points.Add(new TokenExchangePoint(ep, price.Domains, impl, bytes, price.Seconds, price.IntraDomainSeconds, price.InterDomainSeconds));
            }
        }
        return points;
    }

    /// <summary>Every topology x pattern x size; with <paramref name="protocols"/> priced per NCCL protocol as <c>costModel.ncclProtocols</c> does.</summary>
    public static IReadOnlyList<CollectiveCurvePoint> Sweep(IEnumerable<CollectiveTopology> topologies, IEnumerable<CollectivePattern> patterns, IEnumerable<double> sizes, NcclTuning? protocols = null)
    {
        var points = new List<CollectiveCurvePoint>();
        var sizeList = sizes.ToArray();
        foreach (var t in topologies)
        {
            var link = new LinkCommunication(t.Hardware, protocols: protocols);
            foreach (var pattern in patterns)
                foreach (var bytes in sizeList)
                {
                    var price = link.Price(pattern, bytes, t.Group);
                    points.Add(new CollectiveCurvePoint(t.Name, pattern, bytes, price.Seconds, price.Algorithm, price.BusBytesPerSecond) { Protocol = price.Protocol });
                }
        }
        return points;
    }
}

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

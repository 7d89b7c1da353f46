using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// Communication as latency + volume / bandwidth, with the classic algorithm factors:
/// ring all-reduce moves 2(p-1)/p of the buffer per GPU, all-to-all (p-1)/p, a send the whole buffer.
/// The link is NVLink when every GPU of the group sits in one node, otherwise the per-GPU network link.
/// </summary>
public sealed class LinkCommunication(HardwareSpec hardware) : ICommunicationCostModel
{
    public HardwareSpec Hardware { get; } = hardware;
    public string Name => "latency-bandwidth";

    public double Seconds(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus)
    {
        if (bytesPerGpu <= 0 || gpus.Length < 2) return 0;
        var link = SpansNodes(gpus) ? Hardware.InterNode : Hardware.IntraNode;
        return link.LatencySeconds + AlgorithmFactor(pattern, gpus.Length) * bytesPerGpu / link.BytesPerSecond;
    }

    /// <summary>Bytes each GPU moves per byte of message: 2(p-1)/p for ring all-reduce, (p-1)/p for all-to-all, 1 for a send.</summary>
    public static double AlgorithmFactor(CollectivePattern pattern, int gpus)
    {
        double p = gpus;
        return pattern switch
        {
            CollectivePattern.AllReduce => 2 * (p - 1) / p,
            CollectivePattern.AllToAll => (p - 1) / p,
            _ => 1.0,
        };
    }

    public bool SpansNodes(ReadOnlySpan<int> gpus)
    {
        var node = Hardware.NodeOf(gpus[0]);
        foreach (var g in gpus) if (Hardware.NodeOf(g) != node) return true;
        return false;
    }
}

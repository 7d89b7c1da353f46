using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// Communication as latency + volume / bandwidth, with the classic algorithm factors:
/// ring all-reduce moves 2(p-1)/p of the buffer per GPU, all-to-all (p-1)/p, a send the whole buffer.
/// The link is NVLink when every GPU of the group sits in one node, otherwise the per-GPU network link.
/// All-to-all is priced hierarchically: of a rank's (p-1)/p outgoing share, the part bound for GPUs of its own
/// node travels over NVLink while the rest crosses the network, both at once; the slower part sets the time.
/// Reduce-scatter and all-gather move (p-1)/p, half a ring all-reduce.
/// </summary>
public sealed class LinkCommunication(HardwareSpec hardware) : ICommunicationCostModel
{
    public HardwareSpec Hardware { get; } = hardware;
    public string Name => "latency-bandwidth";

    public double Seconds(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus)
    {
        if (bytesPerGpu <= 0 || gpus.Length < 2) return 0;
        var spans = SpansNodes(gpus);
        var link = spans ? Hardware.InterNode : Hardware.IntraNode;
        double p = gpus.Length;
        if (pattern == CollectivePattern.AllToAll && spans)
        {
            // The busiest rank: the one with the fewest peers inside its node sends the most over the network.
            var worst = 0.0;
            foreach (var g in gpus)
            {
                var sameNode = 0;
                foreach (var o in gpus) if (o != g && Hardware.NodeOf(o) == Hardware.NodeOf(g)) sameNode++;
                var intra = sameNode / p * bytesPerGpu / Hardware.IntraNode.BytesPerSecond;
                var inter = (p - 1 - sameNode) / p * bytesPerGpu / Hardware.InterNode.BytesPerSecond;
                worst = Math.Max(worst, Math.Max(intra, inter));
            }
            return Hardware.InterNode.LatencySeconds + worst;
        }
        return link.LatencySeconds + AlgorithmFactor(pattern, gpus.Length) * bytesPerGpu / link.BytesPerSecond;
    }

    /// <summary>Bytes each GPU moves per byte of message: 2(p-1)/p for ring all-reduce, (p-1)/p for all-to-all, reduce-scatter and all-gather, 1 for a send.</summary>
    public static double AlgorithmFactor(CollectivePattern pattern, int gpus)
    {
        double p = gpus;
        return pattern switch
        {
            CollectivePattern.AllReduce => 2 * (p - 1) / p,
            CollectivePattern.AllToAll or CollectivePattern.ReduceScatter or CollectivePattern.AllGather => (p - 1) / p,
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

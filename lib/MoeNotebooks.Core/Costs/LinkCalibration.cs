using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// Calibration per level (issue 13): the links of a hardware description replaced by what one system measured, one
/// level at a time, so the topology model (<see cref="LinkCommunication"/>: ring / tree / hierarchical multi-rail per
/// size) prices group shapes that were never measured from measured links instead of the datasheet.
/// </summary>
public static class LinkCalibration
{
    /// <summary>Messages below this size are latency-bound and say little about a link's bandwidth.</summary>
    public const double MinBytes = 1 << 20;

    /// <summary>
    /// The preset with its links replaced by what the system measured, one level at a time (calibration per level):
    /// inside a node, the ring bus bandwidth and latency of the largest single-node all-reduce group (a ring's busbw
    /// is its link bandwidth; no NVLS, as the ring measured); across nodes, the bandwidth and latency of a send/recv
    /// between two nodes (one NIC). Rails and domains stay as the preset describes them. Null when no level has
    /// such rows (or their sizes do not pin a bandwidth); the rows used are named in <paramref name="notes"/>.
    /// </summary>
    public static HardwareSpec? CalibrateLevels(HardwareSpec preset, IReadOnlyList<CollectiveMeasurement> systemRows, List<string> notes)
    {
        var big = systemRows.Where(r => r.Bytes >= MinBytes).ToArray();
        var intra = big.Where(r => r.Pattern == CollectivePattern.AllReduce && r.Nodes == 1).GroupBy(r => r.Gpus).MaxBy(g => g.Key);
        var send = big.Where(r => r.Pattern == CollectivePattern.SendRecv && r.Nodes == 2).ToArray();
        var hw = preset;
        var calibrated = false;
        if (intra is not null && intra.Select(r => r.Bytes).Distinct().Count() >= 2
            && CollectiveFit.Fit(CollectivePattern.AllReduce, intra.Key, 1, intra.Select(r => (r.Bytes, r.Seconds)).ToArray()) is { BytesPerSecond: < double.PositiveInfinity } fit)
        {
            hw = hw with { Nvls = false, IntraNode = new LinkSpec(fit.BusBytesPerSecond, fit.LatencySeconds) };
            calibrated = true;
            notes.Add(string.Create(CultureInfo.InvariantCulture, $"intra-node link from all_reduce on {intra.Key} GPUs / 1 node: busbw {fit.BusBytesPerSecond / 1e9:F1} GB/s, latency {fit.LatencySeconds * 1e6:F1} us"));
        }
        if (send.Select(r => r.Bytes).Distinct().Count() >= 2
            && CollectiveFit.Fit(CollectivePattern.SendRecv, 2, 2, send.Select(r => (r.Bytes, r.Seconds)).ToArray()) is { BytesPerSecond: < double.PositiveInfinity } nic)
        {
            hw = hw with { InterNode = new LinkSpec(nic.BytesPerSecond, nic.LatencySeconds) };
            calibrated = true;
            notes.Add(string.Create(CultureInfo.InvariantCulture, $"NIC from send_recv between 2 nodes: {nic.BytesPerSecond / 1e9:F2} GB/s, latency {nic.LatencySeconds * 1e6:F1} us"));
        }
        return calibrated ? hw.Validated() : null;
    }

}

using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Calibration.Tests;

public class CommunicationTests
{
    private static readonly double[] Sizes = [1 << 20, 1 << 21, 1 << 22, 1 << 23, 1 << 24, 1 << 25, 1 << 26];

    [Fact]
    public void Fit_recovers_known_latency_and_bandwidth_exactly_from_a_line()
    {
        // Oracle: times generated as 25 us + bytes / 180 GB/s; weighted least squares on an exact line returns it.
        var points = Sizes.Select(b => (b, 25e-6 + b / 180e9)).ToArray();
        var fit = CollectiveFit.Fit(CollectivePattern.AllReduce, 8, 1, points);
        Assert.Equal(25e-6, fit.LatencySeconds, 1e-12);
        Assert.Equal(180e9, fit.BytesPerSecond, 180e9 * 1e-9);
        Assert.Equal(180e9 * 2 * 7 / 8, fit.BusBytesPerSecond, 1e3);
        Assert.True(fit.RmsRelativeError < 1e-9);
    }

    [Fact]
    public void Fit_recovers_latency_and_bandwidth_within_noise()
    {
        // Oracle: the same line with deterministic +-3% alternating noise: parameters within a few percent.
        var points = Sizes.Select((b, i) => (b, (40e-6 + b / 90e9) * (i % 2 == 0 ? 1.03 : 0.97))).ToArray();
        var fit = CollectiveFit.Fit(CollectivePattern.AllReduce, 4, 1, points);
        Assert.InRange(fit.LatencySeconds, 40e-6 * 0.85, 40e-6 * 1.15);
        Assert.InRange(fit.BytesPerSecond, 90e9 * 0.95, 90e9 * 1.05);
    }

    [Fact]
    public void Flat_times_become_a_constant_and_segments_split_at_one_MiB()
    {
        // Oracle: below 1 MiB the synthetic time is a flat 30 us (latency-bound), above it 30 us + bytes / 100 GB/s.
        var rows = new List<CollectiveMeasurement>();
        foreach (var b in new double[] { 2048, 8192, 65536, 262144 }) rows.Add(new("all_reduce", "s", 2, 1, b, 30e-6));
        foreach (var b in Sizes) rows.Add(new("all_reduce", "s", 2, 1, b, 30e-6 + b / 100e9));
        var fits = CollectiveFit.FitAll(rows);
        Assert.Equal(2, fits.Count);
        Assert.Equal(30e-6, fits[0].Seconds(100_000), 1e-12);
        Assert.True(double.IsPositiveInfinity(fits[0].BytesPerSecond));
        Assert.Equal(100e9, fits[1].BytesPerSecond, 1e9 * 1e-6);
    }

    [Fact]
    public void Calibrated_communication_uses_the_fit_where_present_and_the_topology_model_otherwise()
    {
        // Oracle: the fitted line for all-reduce on 8 GPUs of one node; LinkCommunication for everything else (the
        // send across nodes crosses a NIC, which these rows do not calibrate, so it is the datasheet's send).
        var hw = HardwareCatalog.Get("DGX-H100").WithGpus(16);
        var rows = Sizes.Select(b => new CollectiveMeasurement("all_reduce", "DGX H100", 8, 1, b, 20e-6 + b / 200e9)).ToArray();
        var comm = CalibratedCommunication.FromMeasurements(hw, rows, "synthetic");
        int[] node0 = [0, 1, 2, 3, 4, 5, 6, 7];
        Assert.Equal(20e-6 + 4e6 / 200e9, comm.Seconds(CollectivePattern.AllReduce, 4e6, node0), 1e-12);
        Assert.Empty(comm.Warnings);
        int[] acrossNodes = [0, 8];
        Assert.Equal(new LinkCommunication(hw).Seconds(CollectivePattern.SendRecv, 4e6, acrossNodes), comm.Seconds(CollectivePattern.SendRecv, 4e6, acrossNodes));
        Assert.Single(comm.Warnings);
        Assert.Contains("calibrated per level", comm.Warnings[0]);
        comm.Seconds(CollectivePattern.AllReduce, 1e9, node0);
        Assert.Contains(comm.Warnings, w => w.Contains("outside the measured sizes"));
    }

    [Fact]
    public void Shapes_not_measured_are_priced_on_links_calibrated_per_level()
    {
        // Oracle (issue 13, calibration per level): the rows are an exact ring all-reduce on 8 GPUs of one node
        // (20 us + bytes / 200 GB/s algbw, i.e. busbw 200 x 2 x 7/8 = 350 GB/s) and an exact send/recv between two
        // nodes (8 us + bytes / 40 GB/s). A 4-GPU all-reduce and a 16-GPU all-reduce over both nodes were not
        // measured: they must be priced exactly as the topology model prices them on a hand-written description with
        // those links (NVLS off, as the measured ring had none), not on the datasheet links.
        var hw = HardwareCatalog.Get("DGX-H100").WithGpus(16);
        var rows = Sizes.Select(b => new CollectiveMeasurement("all_reduce", "DGX H100", 8, 1, b, 20e-6 + b / 200e9))
            .Concat(Sizes.Select(b => new CollectiveMeasurement("send_recv", "DGX H100", 2, 2, b, 8e-6 + b / 40e9))).ToArray();
        var comm = CalibratedCommunication.FromMeasurements(hw, rows, "synthetic");
        var byHand = new LinkCommunication(hw with { Nvls = false, IntraNode = new LinkSpec(350e9, 20e-6), InterNode = new LinkSpec(40e9, 8e-6) });
        int[] four = [0, 1, 2, 3];
        int[] both = Enumerable.Range(0, 16).ToArray();
        foreach (var bytes in new[] { 4e6, 256e6 })
        {
            Assert.Equal(byHand.Seconds(CollectivePattern.AllReduce, bytes, four), comm.Seconds(CollectivePattern.AllReduce, bytes, four), 1e-15);
            Assert.Equal(byHand.Seconds(CollectivePattern.AllReduce, bytes, both), comm.Seconds(CollectivePattern.AllReduce, bytes, both), 1e-15);
            Assert.NotEqual(new LinkCommunication(hw).Seconds(CollectivePattern.AllReduce, bytes, both), comm.Seconds(CollectivePattern.AllReduce, bytes, both));
        }
        Assert.Equal(2, comm.LevelNotes.Count);

        // Rows of two systems would mix their links: no per-level calibration, the datasheet prices what is not fitted.
        var mixed = rows.Select((r, i) => i % 2 == 0 ? r : r with { System = "other" }).ToArray();
        var plain = CalibratedCommunication.FromMeasurements(hw, mixed, "synthetic");
        Assert.Empty(plain.LevelNotes);
        Assert.Equal(new LinkCommunication(hw).Seconds(CollectivePattern.AllReduce, 4e6, four), plain.Seconds(CollectivePattern.AllReduce, 4e6, four));
    }
    [CalibrationDataFact]
    public void The_presets_point_to_point_efficiency_is_the_measured_send_recv_between_two_DGX_H100_nodes()
    {
        // Oracle: the carried measurement itself. A latency-bandwidth line over the DGX H100 send/recv rows between two
        // nodes (sizes >= 1 MiB, one ConnectX-7 NDR NIC each way) over the NIC's datasheet 50 GB/s is the fraction the
        // presets carry (to the three digits they write). Every preset whose NIC is a ConnectX-7 or ConnectX-8 carries
        // it on its inter-node link (the ConnectX-8 presets ASSUME the ConnectX-7's fraction, and say so); none on NVLink.
        var rows = RealData.Data.Collectives()
            .Where(r => r.System == "DGX H100 (vidur h100_dgx)" && r.Pattern == CollectivePattern.SendRecv && r.Nodes == 2 && r.Bytes >= LinkCalibration.MinBytes)
            .Select(r => (r.Bytes, r.Seconds)).ToArray();
        Assert.True(rows.Length >= 5, $"{rows.Length} send/recv rows");
        var nic = CollectiveFit.Fit(CollectivePattern.SendRecv, 2, 2, rows);
        var h100 = HardwareCatalog.Get("DGX-H100");
        var measured = nic.BytesPerSecond / h100.InterNode.BytesPerSecond;
        Assert.InRange(measured, 0.70, 0.80);
        static bool NamesConnectX(HardwareSpec h) => h.Source.Contains("ConnectX-7", StringComparison.Ordinal) || h.Source.Contains("ConnectX-8", StringComparison.Ordinal);
        var connectX = HardwareCatalog.All.Where(NamesConnectX).ToArray();
        Assert.Contains(connectX, h => h.Name == "DGX-B200");
        Assert.Contains(connectX, h => h.Name == "GB200-NVL72");
        Assert.Contains(connectX, h => h.Name == "DGX-H100");
        Assert.All(connectX, h => Assert.Equal(measured, h.InterNode.PointToPointEfficiency, 0.0005));
        // Every other preset (its NIC not measured here: DGX-A100's is not named in the measurement) at line rate, and NVLink everywhere.
        Assert.All(HardwareCatalog.All.Where(h => !NamesConnectX(h)), h => Assert.Equal(1, h.InterNode.PointToPointEfficiency));
        Assert.Contains(HardwareCatalog.All, h => h.Name == "DGX-A100" && !NamesConnectX(h));
        Assert.All(HardwareCatalog.All, h => Assert.Equal(1, h.IntraNode.PointToPointEfficiency));
    }
}

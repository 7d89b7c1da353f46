using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Tests;

/// <summary>Oracle: roofline values derived by hand from the H100-SXM datasheet figures in data/hardware/h100-sxm.json.</summary>
public class CostModelTests
{
    private const double Peak = 989e12, Hbm = 3.35e12;
    private static readonly CostModel Ideal = CostModel.RooflineIdeal(HardwareCatalog.Get("H100-SXM"));

    [Fact]
    public void ComputeBoundGemmIsFlopsOverPeak()
    {
        // 2 x 10,240,000 x 8192 x 8192 = 1.3743895e15 FLOP / 989e12 = 1.389676 s; its bytes take only 0.10 s.
        Assert.Equal(2.0 * 10240000 * 8192 * 8192 / Peak, Ideal.GetTime(10240000, 8192, 8192), 12);
        Assert.Equal(1.389676, Ideal.GetTime(10240000, 8192, 8192), 5);
    }

    [Fact]
    public void MemoryBoundGemmIsBytesOverBandwidth()
    {
        // The gate [T, 8192] x [8192, 16]: FLOPs 2.68e12 -> 2.71 ms, bytes (T*8192 + 8192*16 + T*16) x 2 = 168.1 GB -> 50.2 ms.
        const double m = 10240000, k = 8192, n = 16;
        var expected = (m * k + k * n + m * n) * 2 / Hbm;
        Assert.Equal(expected, Ideal.GetTime(10240000, 8192, 16), 12);
        Assert.True(expected > 2 * m * k * n / Peak);
    }

    [Fact]
    public void BatchedShapeCostsBatchTimesOneProduct()
    {
        var one = Ideal.Compute.MatmulSeconds(new MatmulShape(10000, 512, 10000), "bf16", 2);
        var batched = Ideal.Compute.MatmulSeconds(new MatmulShape(10000, 512, 10000, 64), "bf16", 2);
        Assert.Equal(64 * one, batched, 12);
    }

    [Fact]
    public void EfficiencyTableScalesComputeTime()
    {
        // typical-hopper: GEMMs >= 1e12 FLOP run at 0.80 of peak.
        var table = EfficiencyTable.Get("typical-hopper");
        var cost = CostModel.RooflineEfficiency(HardwareCatalog.Get("H100-SXM"), table);
        Assert.Equal(2.0 * 10240000 * 8192 * 8192 / (Peak * 0.8), cost.GetTime(10240000, 8192, 8192), 12);
        // A 1e9-FLOP GEMM (1000 x 1000 x 500) runs at 0.5 of peak unless memory-bound.
        var small = cost.GetTime(1000, 1000, 500);
        Assert.Equal(Math.Max(1e9 / (Peak * 0.5), (1000.0 * 1000 + 1000.0 * 500 + 1000.0 * 500) * 2 / (Hbm * 0.85)), small, 15);
    }

    [Fact]
    public void RingAllReduceUsesNvlinkInsideANode()
    {
        // 8 GPUs in one node: 5 us + 2 x 7/8 x 1 GB / 450 GB/s.
        var comm = new LinkCommunication(HardwareCatalog.Get("H100-SXM").WithGpus(16));
        var t = comm.Seconds(CollectivePattern.AllReduce, 1e9, [0, 1, 2, 3, 4, 5, 6, 7]);
        Assert.Equal(5e-6 + 2.0 * 7 / 8 * 1e9 / 450e9, t, 15);
    }

    [Fact]
    public void AllToAllAcrossNodesUsesTheNetwork()
    {
        // 16 GPUs over two nodes, priced hierarchically: each rank sends 7/16 of its 1 GB to node peers over NVLink
        // and 8/16 over its 50 GB/s NIC, at the same time; NCCL's sends reach 0.746 of the NIC (the preset's measured
        // point-to-point fraction): 17 us + max(7/16 / 450e9, 8/16 / (0.746 x 50e9)) x 1 GB.
        var comm = new LinkCommunication(HardwareCatalog.Get("H100-SXM").WithGpus(16));
        var t = comm.Seconds(CollectivePattern.AllToAll, 1e9, Enumerable.Range(0, 16).ToArray());
        Assert.Equal(17e-6 + Math.Max(7.0 / 16 * 1e9 / 450e9, 8.0 / 16 * 1e9 / (0.746 * 50e9)), t, 15);
        // At line rate (the roofline-ideal model's links) the NIC's datasheet 50 GB/s.
        var ideal = new LinkCommunication(HardwareCatalog.Get("H100-SXM").WithGpus(16)) { LineRate = true };
        Assert.Equal(17e-6 + 8.0 / 16 * 1e9 / 50e9, ideal.Seconds(CollectivePattern.AllToAll, 1e9, Enumerable.Range(0, 16).ToArray()), 15);
        // Inside one node it is the plain (p-1)/p over NVLink.
        Assert.Equal(5e-6 + 7.0 / 8 * 1e9 / 450e9, comm.Seconds(CollectivePattern.AllToAll, 1e9, [0, 1, 2, 3, 4, 5, 6, 7]), 15);
    }

    [Fact]
    public void SendBetweenNodesIsLatencyPlusBytesOverNic()
    {
        // Across nodes NCCL's send reaches the preset's measured 0.746 of the NIC's 50 GB/s; inside a node NVLink's datasheet.
        var comm = new LinkCommunication(HardwareCatalog.Get("H100-SXM").WithGpus(16));
        Assert.Equal(17e-6 + 1e9 / (0.746 * 50e9), comm.Seconds(CollectivePattern.SendRecv, 1e9, [3, 11]), 15);
        Assert.Equal(5e-6 + 1e9 / 450e9, comm.Seconds(CollectivePattern.SendRecv, 1e9, [3, 4]), 15);
    }

    [Fact]
    public void CatalogShipsTheThreeRequiredGpusWithSources()
    {
        foreach (var name in new[] { "H100-SXM", "H200", "A100-80GB" })
        {
            var h = HardwareCatalog.Get(name);
            Assert.False(string.IsNullOrWhiteSpace(h.Source));
            Assert.True(h.Gpu.PeakFor("bf16") > 1e14);
        }
    }
}

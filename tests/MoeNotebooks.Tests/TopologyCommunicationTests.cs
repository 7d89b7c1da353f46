using System.Text.Json;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Tests;

/// <summary>
/// Topology-aware collectives. Oracles: hand derivations from the DGX-H100 preset's figures (NVLink 450 GB/s per GPU,
/// one 50 GB/s NIC per GPU, latencies 5 us / 17 us, per-step 0.47 us / 2.7 us) with NCCL's formulas: nccl-tests
/// PERFORMANCE.md (busbw = algbw x 2(p-1)/p for all-reduce, (p-1)/p for reduce-scatter / all-gather / all-to-all;
/// a ring's busbw equals its slowest link's bandwidth) and NVIDIA/nccl src/graph/tuning.cc (ring algbw = busBw x
/// p / (2(p-1)), tree algbw = busBw x .9 x .5, ring latency (2(p-1) - 2(N-1)) intra + 2(N-1) inter steps, tree
/// 2((G-1) intra + log2 N inter) steps).
/// </summary>
public class TopologyCommunicationTests
{
    private const double GiB = 1 << 30;
    private const double Nvl = 450e9, Nic = 50e9, Li = 5e-6, Le = 17e-6, Si = 0.47e-6, Se = 2.7e-6;

    private static HardwareSpec Dgx(int nodes, int rails = 8) =>
        HardwareCatalog.Get("DGX-H100").WithGpus(8 * nodes) with { NicCount = rails };

    private static int[] All(int gpus) => Enumerable.Range(0, gpus).ToArray();

    // ---- hand derivations (independent of the implementation) ----
    private static double RingAllReduce(int nodes, int g, double a, double bytes)
    {
        var p = nodes * g;
        var lat = Le + 2.0 * (p - nodes) * Si + (2.0 * (nodes - 1) - 1) * Se;
        return lat + 2.0 * (p - 1) / p * bytes / Math.Min(Nvl, a);
    }

    private static double TreeAllReduce(int nodes, int g, double a, double bytes)
    {
        var lat = Le + 2.0 * (g - 1) * Si + (2 * Math.Log2(nodes) - 1) * Se;
        return lat + bytes / (0.5 * 0.9 * Math.Min(Nvl, a));
    }

    private static double HierarchicalAllReduce(int nodes, int g, double a, double bytes)
    {
        var rs = Li + (g - 2) * Si + (g - 1.0) / g * bytes / Nvl;
        var across = Le + (2.0 * (nodes - 1) - 1) * Se + 2.0 * (nodes - 1) / nodes * (bytes / g) / (a / g);
        return 2 * rs + across;
    }

    [Theory]
    [InlineData(2, 8)]
    [InlineData(2, 1)]
    [InlineData(4, 8)]
    [InlineData(4, 1)]
    public void AllReduceCandidatesMatchTheHandDerivationsOn8GpuNodes(int nodes, int rails)
    {
        // 2x8 and 4x8 GPUs, 1 GiB, with 8 rails (A = 8 x 50 = 400 GB/s per node) and 1 rail (A = 50 GB/s).
        var comm = new LinkCommunication(Dgx(nodes, rails));
        var price = comm.Price(CollectivePattern.AllReduce, GiB, All(8 * nodes));
        var a = rails * Nic;
        var expected = new Dictionary<CollectiveAlgorithm, double>
        {
            [CollectiveAlgorithm.Ring] = RingAllReduce(nodes, 8, a, GiB),
            [CollectiveAlgorithm.Tree] = TreeAllReduce(nodes, 8, a, GiB),
            [CollectiveAlgorithm.Hierarchical] = HierarchicalAllReduce(nodes, 8, a, GiB),
        };
        Assert.Equal(expected.Count, price.Candidates.Count);
        foreach (var (alg, seconds) in price.Candidates) Assert.Equal(expected[alg], seconds, expected[alg] * 1e-12);
        var best = expected.MinBy(kv => kv.Value);
        Assert.Equal(best.Key, price.Algorithm);
        Assert.Equal(best.Value, price.Seconds, best.Value * 1e-12);
        // nccl-tests' bus bandwidth of the result: algbw x 2(p-1)/p.
        var p = 8.0 * nodes;
        Assert.Equal(GiB / best.Value * 2 * (p - 1) / p, price.BusBytesPerSecond, 1e-3);
    }

    [Fact]
    public void TwoDgxH100NodesReachThe400GBpsRingBusBandwidthWith8RailsAndGoHierarchicalWith1()
    {
        // 2x8, 8 rails, 1 GiB: ring latency 17 + 28 x 0.47 + 1 x 2.7 = 32.86 us; 1.875 x 2^30 B / 400 GB/s = 5.0332 ms;
        // t = 5.0660 ms; busbw = 1.875 x 2^30 / 5.0660 ms = 397.4 GB/s (measured by NCCL on such nodes: ~340 GB/s).
        var eight = new LinkCommunication(Dgx(2)).Price(CollectivePattern.AllReduce, GiB, All(16));
        Assert.Equal(CollectiveAlgorithm.Ring, eight.Algorithm);
        Assert.Equal(5.06602e-3, eight.Seconds, 1e-8);
        Assert.Equal(397.4e9, eight.BusBytesPerSecond, 0.1e9);
        // 1 rail: ring busbw = min(450, 50) = 50 GB/s -> 40.27 ms; hierarchical: 2 x (7.82 us + 7/8 x 2^30 / 450e9)
        // + 19.7 us + 2^30/8 / (50e9/8) = 2 x 2.0957 + 21.494 = 25.685 ms (busbw 78.4 GB/s): hierarchical wins.
        var one = new LinkCommunication(Dgx(2, 1)).Price(CollectivePattern.AllReduce, GiB, All(16));
        Assert.Equal(CollectiveAlgorithm.Hierarchical, one.Algorithm);
        Assert.Equal(25.685e-3, one.Seconds, 1e-5);
        Assert.Equal(78.4e9, one.BusBytesPerSecond, 0.1e9);
    }

    [Fact]
    public void LargeMessagesApproachTheBottleneckLinkBandwidthAsNcclTestsBusBandwidthDoes()
    {
        // PERFORMANCE.md: for a ring, busbw tends to the slowest link's bandwidth: min(450 NVLink, 8 x 50 NIC) = 400 GB/s.
        foreach (var nodes in new[] { 2, 4 })
        {
            var price = new LinkCommunication(Dgx(nodes)).Price(CollectivePattern.AllReduce, 64 * GiB, All(8 * nodes));
            Assert.InRange(price.BusBytesPerSecond, 0.999 * 400e9, 400e9);
        }
        // Reduce-scatter and all-gather: busbw = algbw x (p-1)/p tends to the same 400 GB/s.
        foreach (var pattern in new[] { CollectivePattern.ReduceScatter, CollectivePattern.AllGather })
        {
            var price = new LinkCommunication(Dgx(2)).Price(pattern, 64 * GiB, All(16));
            Assert.Equal(CollectiveAlgorithm.Ring, price.Algorithm);
            Assert.InRange(price.BusBytesPerSecond, 0.999 * 400e9, 400e9);
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    public void RingTreeCrossoverIsWhereTheirLatencyAndBandwidthTermsBalance(int nodes)
    {
        // Tree has fewer latency steps (2(G-1) intra + 2 log2 N inter vs the ring's 2(p-N) + 2(N-1)) but a lower
        // algorithm bandwidth (0.45 x 400 = 180 GB/s vs 400 x p / (2(p-1))): S* = (lat_ring - lat_tree) / (1/bw_tree - 1/bw_ring).
        // 2x8: (32.86 - 26.28) us / (1/180e9 - 1/213.3e9) = 7.58 MB; 4x8: (56.82 - 31.68) us / (1/180e9 - 1/206.5e9) = 35.3 MB.
        var p = 8.0 * nodes;
        var latRing = Le + 2 * (p - nodes) * Si + (2.0 * (nodes - 1) - 1) * Se;
        var latTree = Le + 2 * 7 * Si + (2 * Math.Log2(nodes) - 1) * Se;
        var bwRing = 400e9 * p / (2 * (p - 1));
        var bwTree = 0.45 * 400e9;
        var crossover = (latRing - latTree) / (1 / bwTree - 1 / bwRing);
        Assert.Equal(nodes == 2 ? 7.58e6 : 35.3e6, crossover, nodes == 2 ? 0.01e6 : 0.1e6);
        var comm = new LinkCommunication(Dgx(nodes));
        var at = comm.Price(CollectivePattern.AllReduce, crossover, All(8 * nodes));
        var ring = at.Candidates.Single(c => c.Algorithm == CollectiveAlgorithm.Ring).Seconds;
        var tree = at.Candidates.Single(c => c.Algorithm == CollectiveAlgorithm.Tree).Seconds;
        Assert.Equal(ring, tree, ring * 1e-9);
        Assert.Equal(CollectiveAlgorithm.Tree, comm.Price(CollectivePattern.AllReduce, crossover * 0.8, All(8 * nodes)).Algorithm);
        Assert.Equal(CollectiveAlgorithm.Ring, comm.Price(CollectivePattern.AllReduce, crossover * 1.25, All(8 * nodes)).Algorithm);
    }

    [Fact]
    public void MoreRailsAreNeverSlower()
    {
        // Bound: every candidate's time is non-increasing in the NIC bandwidth a group has, so the chosen one is too.
        var sizes = new[] { 1e3, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10 };
        var patterns = new[] { CollectivePattern.AllReduce, CollectivePattern.ReduceScatter, CollectivePattern.AllGather, CollectivePattern.AllToAll, CollectivePattern.SendRecv };
        foreach (var nodes in new[] { 2, 3, 4 })
            foreach (var group in new[] { All(8 * nodes), Enumerable.Range(0, nodes).Select(n => 8 * n + 3).ToArray(), Enumerable.Range(0, 4 * nodes).Select(i => i / 4 * 8 + i % 4).ToArray() })
                foreach (var pattern in patterns)
                    foreach (var bytes in sizes)
                    {
                        var previous = double.PositiveInfinity;
                        foreach (var rails in new[] { 1, 2, 4, 8 })
                        {
                            var t = new LinkCommunication(Dgx(nodes, rails)).Seconds(pattern, bytes, pattern == CollectivePattern.SendRecv ? group[..2] : group);
                            Assert.True(t <= previous * (1 + 1e-12), $"{pattern} {bytes} B on {group.Length} GPUs: {rails} rails {t} s > fewer rails {previous} s");
                            previous = t;
                        }
                    }
    }

    [Fact]
    public void AGroupInsideOneNvlinkDomainIsNeverPricedOnNics()
    {
        // EP = 64 inside one GB200 NVL72 rack (18 hosts of 4 GPUs, one NVLink domain of 72): no byte crosses a NIC, so
        // making the NICs absurdly slow changes nothing.
        var rack = HardwareCatalog.Get("GB200-NVL72");
        var slowNics = rack with { InterNode = new LinkSpec(1, 1) };
        var ep64 = All(64);
        foreach (var pattern in new[] { CollectivePattern.AllReduce, CollectivePattern.ReduceScatter, CollectivePattern.AllGather, CollectivePattern.AllToAll })
        {
            var price = new LinkCommunication(rack).Price(pattern, 1e9, ep64);
            Assert.False(price.UsesNetwork);
            Assert.Equal(0, price.InterDomainSeconds);
            Assert.Equal(price.Seconds, new LinkCommunication(slowNics).Seconds(pattern, 1e9, ep64));
        }
        // The same 64 GPUs as DGX H100 nodes (8 per domain) do cross NICs.
        Assert.True(new LinkCommunication(HardwareCatalog.Get("DGX-H100").WithGpus(64)).Price(CollectivePattern.AllToAll, 1e9, ep64).UsesNetwork);
    }

    [Fact]
    public void AllToAllIsNeverFasterThanItsInterDomainBytesOverTheRailShare()
    {
        // Bound: each GPU sends (p - G)/p of its buffer to other domains through its share A/G of its domain's rails.
        foreach (var nodes in new[] { 2, 4 })
            foreach (var rails in new[] { 1, 8 })
                foreach (var alltoall in Enum.GetValues<AllToAllImplementation>())
                    foreach (var bytes in new[] { 1e6, 1e9 })
                    {
                        var p = 8.0 * nodes;
                        var t = new LinkCommunication(Dgx(nodes, rails), alltoall).Seconds(CollectivePattern.AllToAll, bytes, All(8 * nodes));
                        Assert.True(t >= (p - 8) / p * bytes / (rails * Nic / 8), $"{alltoall} {nodes}x8 {rails} rails");
                    }
        // 2x8, 8 rails, 1 GB: 17 us + max(7/16 GB / 450 GB/s, 8/16 GB / (0.746 x 50 GB/s)) = 13.42 ms (NCCL's sends at the
        // preset's measured point-to-point fraction of the NIC); PXN also sends the 7/8 of the cross-domain half that
        // leaves on another rail over NVLink: (7/16 + 8/16 x 7/8) GB / 450 GB/s = 1.94 ms, still under the NIC's 13.4 ms.
        var nccl = new LinkCommunication(Dgx(2)).Price(CollectivePattern.AllToAll, 1e9, All(16));
        Assert.Equal(17e-6 + 0.5e9 / (0.746 * 50e9), nccl.Seconds, 1e-12);
        Assert.Equal(nccl.Seconds, new LinkCommunication(Dgx(2), AllToAllImplementation.Pxn).Seconds(CollectivePattern.AllToAll, 1e9, All(16)), 1e-12);
    }

    [Fact]
    public void NvlsInsideTheDomainUsesTheSwitchReductionAtItsMeasuredEfficiency()
    {
        // DGX H100, 8 GPUs, 1 GiB: ring 5 us + 13 x 0.47 us + 1.75 x 2^30 / 450e9 = 4.1868 ms; NVLS 5 us + 2^30 / (0.61 x 450e9)
        // = 3.9166 ms, busbw 1.75 x 2^30 / 3.9166 ms = 479.8 GB/s (the measured ~480 GB/s the efficiency was derived from).
        var price = new LinkCommunication(HardwareCatalog.Get("DGX-H100")).Price(CollectivePattern.AllReduce, GiB, All(8));
        Assert.Equal(CollectiveAlgorithm.Nvls, price.Algorithm);
        Assert.Equal(5e-6 + GiB / (0.61 * Nvl), price.Seconds, 1e-12);
        Assert.Equal(479.8e9, price.BusBytesPerSecond, 0.1e9);
        Assert.Equal(5e-6 + 13 * Si + 1.75 * GiB / Nvl, price.Candidates.Single(c => c.Algorithm == CollectiveAlgorithm.Ring).Seconds, 1e-12);
        // Without NVLS (DGX A100's NVSwitch gen2) only the ring is a candidate.
        Assert.Equal(CollectiveAlgorithm.Ring, new LinkCommunication(HardwareCatalog.Get("DGX-A100")).Price(CollectivePattern.AllReduce, GiB, All(8)).Algorithm);
    }

    [Fact]
    public void AMeshPricesTwoGpusOnOnePeerLink()
    {
        // MI300X: 7 peer links of 64 GB/s. Two GPUs: ring all-reduce over the one link, 5 us + 2 x 1/2 x B / 64 GB/s
        // (before, 448 GB/s: 7x too fast); eight GPUs: min(448, 7 x 64) = 448 GB/s.
        var mi = HardwareCatalog.Get("MI300X");
        var comm = new LinkCommunication(mi);
        Assert.Equal(5e-6 + GiB / 64e9, comm.Seconds(CollectivePattern.AllReduce, GiB, [0, 1]), 1e-12);
        Assert.Equal(5e-6 + 1.75 * GiB / 448e9, comm.Seconds(CollectivePattern.AllReduce, GiB, All(8)), 1e-12);
        Assert.Equal(5e-6 + GiB / 64e9, comm.Seconds(CollectivePattern.SendRecv, GiB, [2, 5]), 1e-12);
    }

    [Fact]
    public void TwoGroupsSharingOneNicTakeTurnsOnIt()
    {
        // Oracle: hand schedule. Two 1 GB all-reduces, GPUs {0, 8} and {1, 9}, issued together. With one NIC per node
        // both cross the same NIC: the second finishes after the first's work, 2d; with 8 rails each has its own: d.
        foreach (var rails in new[] { 1, 8 })
        {
            var hw = Dgx(2, rails);
            var b = new DagBuilder(16);
            b.AddCommunication(OpKind.GradientAllReduce, b.Group([0, 8]), 1_000_000_000, 0, []);
            b.AddCommunication(OpKind.GradientAllReduce, b.Group([1, 9]), 1_000_000_000, 0, []);
            var dag = b.Build();
            var cost = new CostModel("t", new RooflineCompute(hw.Gpu, EfficiencyTable.Ideal), new LinkCommunication(hw));
            var d = cost.Seconds(dag, 0);
            Assert.Equal(d, cost.Seconds(dag, 1));
            var result = dag.CriticalPath(cost);
            Assert.Equal(rails == 1 ? 2 * d : d, result.TotalSeconds, 1e-12);
            Assert.Equal(result.TotalSeconds, dag.TotalSeconds(cost), 1e-12);
            // Without the cost model's links (durations alone) nothing contends.
            Assert.Equal(d, Scheduler.Schedule(dag, cost.Price(dag)).TotalSeconds, 1e-12);
        }
    }

    [Fact]
    public void ASendSharesTheRailWithACollectiveOnIt()
    {
        // Oracle: hand schedule. A 1 GB send 3 -> 11 (same rail) while a 1 GB all-reduce over {3, 11} runs: both use
        // NIC 3's send side; the send, issued second, finishes after the all-reduce's work plus its own.
        var hw = Dgx(2);
        var b = new DagBuilder(16);
        b.AddCommunication(OpKind.GradientAllReduce, b.Group([3, 11]), 1_000_000_000, 0, []);
        b.AddSend(3, 11, 1_000_000_000, []);
        var dag = b.Build();
        var cost = new CostModel("t", new RooflineCompute(hw.Gpu, EfficiencyTable.Ideal), new LinkCommunication(hw));
        var (ar, send) = (cost.Seconds(dag, 0), cost.Seconds(dag, 1));
        Assert.Equal(17e-6 + 1e9 / (0.746 * 50e9), send, 1e-12);
        Assert.Equal(ar + send, dag.CriticalPath(cost).TotalSeconds, 1e-12);
    }

    [Fact]
    public void TopologyFieldsReadValidateAndDefaultToTodaysMeaning()
    {
        // Round trip of every new field.
        var h = Read("""
            { "name": "x", "gpus": 16, "gpusPerNode": 4, "gpusPerNvlinkDomain": 8, "nicsPerNode": 2, "nvls": true, "nvlsEfficiency": 0.5,
              "gpu": { "name": "g", "peakFlopsPerSecond": { "bf16": 1e15, "fp4": 4e15 }, "hbmBytesPerSecond": 1e12, "hbmCapacityBytes": 1e11 },
              "intraNode": { "bytesPerSecond": 400e9, "latencySeconds": 5e-6, "stepLatencySeconds": 1e-6, "peerBytesPerSecond": 100e9 },
              "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 1e-5, "stepLatencySeconds": 2e-6 } }
            """);
        Assert.Equal((8, 2, true, 0.5), (h.GpusPerNvlinkDomain, h.NicsPerNode, h.Nvls, h.NvlsEfficiency));
        Assert.Equal((1e-6, 100e9, 2e-6), (h.IntraNode.StepLatencySeconds, h.IntraNode.PeerBytesPerSecond, h.InterNode.StepLatencySeconds));
        Assert.Equal(4e15, h.Gpu.PeakFor("fp4"));
        Assert.Equal((1, 3), (h.DomainOf(9), h.NicOf(7)));   // GPU 7: host 1, local 3 -> NIC 1 x 2 + 3 x 2/4 = 3
        // Today's files: one domain per host, one NIC per GPU, no NVLS, no step latency, switched fabric.
        var old = HardwareCatalog.Get("H100-SXM");
        Assert.Equal((8, 8, false, 0.0, (double?)null), (old.GpusPerNvlinkDomain, old.NicsPerNode, old.Nvls, old.IntraNode.StepLatencySeconds, old.IntraNode.PeerBytesPerSecond));
        // Overriding gpusPerNode on a preset without an explicit domain moves the domain with it.
        Assert.Equal(4, (old with { GpusPerNode = 4 }).GpusPerNvlinkDomain);
        // Every shipped preset loads, and the NVL72 racks separate the 72-GPU domain from the 4-GPU host.
        Assert.All(HardwareCatalog.All, p => Assert.False(string.IsNullOrWhiteSpace(p.Source)));
        foreach (var rack in new[] { "GB200-NVL72", "GB300-NVL72" })
            Assert.Equal((72, 4), (HardwareCatalog.Get(rack).GpusPerNvlinkDomain, HardwareCatalog.Get(rack).GpusPerNode));
        Assert.Equal(160e9, HardwareCatalog.Get("H800").IntraNode.BytesPerSecond);
    }

    [Theory]
    [InlineData("\"nicsPerNode\": 3", "hardware.nicsPerNode", "3")]
    [InlineData("\"gpusPerNvlinkDomain\": 3", "hardware.gpusPerNvlinkDomain", "3")]
    [InlineData("\"nvlsEfficiency\": 1.5", "hardware.nvlsEfficiency", "1.5")]
    [InlineData("\"nicsPerNode\": 0", "hardware.nicsPerNode", "0")]
    public void BadTopologyValuesAreRejectedNamingFieldAndValue(string field, string path, string value)
    {
        var ex = Assert.Throws<ConfigException>(() => Read($$"""
            { "name": "x", "gpus": 16, "gpusPerNode": 8, {{field}},
              "gpu": { "name": "g", "peakFlopsPerSecond": { "bf16": 1e15 }, "hbmBytesPerSecond": 1e12, "hbmCapacityBytes": 1e11 },
              "intraNode": { "bytesPerSecond": 400e9, "latencySeconds": 5e-6 }, "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 1e-5 } }
            """));
        Assert.Contains(path, ex.Message);
        Assert.Contains(value, ex.Message);
    }

    [Fact]
    public void APeerLinkFasterThanTheAggregateIsRejected()
    {
        var ex = Assert.Throws<ConfigException>(() => new LinkSpec(100e9, 0) { PeerBytesPerSecond = 200e9 }.Validated("hardware.intraNode"));
        Assert.Contains("hardware.intraNode.peerBytesPerSecond", ex.Message);
        Assert.Contains("200000000000", ex.Message);
    }

    [Fact]
    public void AllToAllImplementationIsReadFromTheCostModel()
    {
        using var doc = JsonDocument.Parse("""{ "kind": "roofline-ideal", "alltoall": "deep-ep-normal" }""");
        var spec = CostModelSpec.Read(doc.RootElement, "costModel", null);
        Assert.Equal(AllToAllImplementation.DeepEpNormal, spec.AllToAll);
        Assert.Equal(AllToAllImplementation.DeepEpNormal, ((LinkCommunication)spec.Create(Dgx(2)).Communication).AllToAll);
        using var bad = JsonDocument.Parse("""{ "kind": "roofline-ideal", "alltoall": "nvshmem" }""");
        var ex = Assert.Throws<ConfigException>(() => CostModelSpec.Read(bad.RootElement, "costModel", null));
        Assert.Contains("costModel.alltoall", ex.Message);
        Assert.Contains("nvshmem", ex.Message);
    }

    [Fact]
    public void NcclPointToPointTransfersRunAtTheLinksMeasuredFractionAndNothingElseDoes()
    {
        // Oracle: hand derivation on two DGX H100 nodes (8 rails) whose NIC reaches e = 0.5 of 50 GB/s point to point
        // (NVLink left at 1): a 1 GB send across nodes takes 17 us + 1 GB / (0.5 x 50 GB/s); NCCL's all-to-all over the
        // 16 GPUs 17 us + max(7/16 GB / 450 GB/s, 8/16 GB / (0.5 x 50 GB/s)); PXN's the same (its sends are NCCL's).
        // DeepEP's normal kernels, the ring all-reduce and any transfer inside one node are priced as at e = 1, and
        // so is everything at line rate (the roofline-ideal model's links).
        var full = Dgx(2);
        var half = full with { InterNode = full.InterNode with { PointToPointEfficiency = 0.5 } };
        var (g, b) = (All(16), 1e9);
        var link = new LinkCommunication(half);
        Assert.Equal(17e-6 + b / (0.5 * 50e9), link.Seconds(CollectivePattern.SendRecv, b, [3, 11]), 1e-12);
        Assert.Equal(17e-6 + Math.Max(7.0 / 16 * b / 450e9, 8.0 / 16 * b / (0.5 * 50e9)), link.Seconds(CollectivePattern.AllToAll, b, g), 1e-12);
        Assert.Equal(link.Seconds(CollectivePattern.AllToAll, b, g), new LinkCommunication(half, AllToAllImplementation.Pxn).Seconds(CollectivePattern.AllToAll, b, g), 1e-12);
        Assert.Equal(8.0 / 16 * b / (0.5 * 50e9), link.Price(CollectivePattern.AllToAll, b, g).InterDomainSeconds, 1e-12);
        Assert.Equal(new LinkCommunication(full, AllToAllImplementation.DeepEpNormal).Seconds(CollectivePattern.AllToAll, b, g),
            new LinkCommunication(half, AllToAllImplementation.DeepEpNormal).Seconds(CollectivePattern.AllToAll, b, g));
        Assert.Equal(new LinkCommunication(full).Seconds(CollectivePattern.AllReduce, b, g), link.Seconds(CollectivePattern.AllReduce, b, g));
        Assert.Equal(new LinkCommunication(full).Seconds(CollectivePattern.AllToAll, b, All(8)), link.Seconds(CollectivePattern.AllToAll, b, All(8)));
        var lineRate = new LinkCommunication(half) { LineRate = true };
        Assert.Equal(17e-6 + b / 50e9, lineRate.Seconds(CollectivePattern.SendRecv, b, [3, 11]), 1e-12);
        Assert.Equal(17e-6 + 8.0 / 16 * b / 50e9, lineRate.Seconds(CollectivePattern.AllToAll, b, g), 1e-12);
        // Inside one domain NCCL's exchange is at NVLink's own fraction: 5 us + 7/8 GB / (0.5 x 450 GB/s).
        var nvl = full with { IntraNode = full.IntraNode with { PointToPointEfficiency = 0.5 } };
        Assert.Equal(5e-6 + 7.0 / 8 * b / (0.5 * 450e9), new LinkCommunication(nvl).Seconds(CollectivePattern.AllToAll, b, All(8)), 1e-12);
        Assert.Equal(5e-6 + b / (0.5 * 450e9), new LinkCommunication(nvl).Seconds(CollectivePattern.SendRecv, b, [0, 1]), 1e-12);
    }

    [Fact]
    public void APresetReferenceMayReplaceItsLinks()
    {
        // Oracle: the definition of a preset reference: the given link replaces the preset's whole link (its measured
        // point-to-point fraction with it, back to the default 1), everything else stays the preset's.
        var preset = HardwareCatalog.Get("DGX-B200").WithGpus(16);
        var h = Read("""{ "preset": "DGX-B200", "gpus": 16, "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 17e-6 } }""");
        Assert.Equal(preset with { InterNode = new LinkSpec(50e9, 17e-6) }, h);
        Assert.Equal(1, h.InterNode.PointToPointEfficiency);
        var n = Read("""{ "preset": "DGX-B200", "gpus": 16, "intraNode": { "bytesPerSecond": 800e9, "latencySeconds": 5e-6, "pointToPointEfficiency": 0.8 } }""");
        Assert.Equal(preset with { IntraNode = new LinkSpec(800e9, 5e-6) { PointToPointEfficiency = 0.8 } }, n);
        Assert.Equal(Read("""{ "preset": "DGX-B200", "gpus": 16 }"""), preset);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1.5")]
    [InlineData("-0.2")]
    public void APointToPointEfficiencyOutsideZeroToOneIsRejectedNamingFieldAndValue(string value)
    {
        var ex = Assert.Throws<ConfigException>(() => Read($$"""
            { "name": "x", "gpus": 16, "gpusPerNode": 8,
              "gpu": { "name": "g", "peakFlopsPerSecond": { "bf16": 1e15 }, "hbmBytesPerSecond": 1e12, "hbmCapacityBytes": 1e11 },
              "intraNode": { "bytesPerSecond": 400e9, "latencySeconds": 5e-6 },
              "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 1e-5, "pointToPointEfficiency": {{value}} } }
            """));
        Assert.Contains("hardware.interNode.pointToPointEfficiency", ex.Message);
        Assert.Contains(value, ex.Message);
        Assert.Contains("(0, 1]", ex.Message);
    }

    private static HardwareSpec Read(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return HardwareSpec.Read(new JsonObjectReader(doc.RootElement, "hardware", null));
    }
}

/// <summary>The numbers the issue asks for: predicted all-reduce bus bandwidth at 1 GiB. Oracle: hand derivations.</summary>
public class ReportedBusBandwidthTests
{
    private const double GiB = 1 << 30;

    [Fact]
    public void AllReduceBusBandwidthAt1GiB()
    {
        // DGX-H100 x 2 (16 GPUs, 8 x 50 GB/s rails): ring, 17 + 28 x 0.47 + 2.7 = 32.86 us + 1.875 GiB / 400 GB/s -> 397.4 GB/s.
        // DGX-A100 x 2 (8 x 25 GB/s rails, NVLink 300): ring, 24 + 13.16 + 2.7 = 39.86 us + 1.875 GiB / 200 GB/s -> 199.2 GB/s.
        // GB200 NVL72 (72 GPUs, one NVLink domain): NVLS, 5 us + GiB / (0.61 x 900 GB/s) = 1.9608 ms -> 1.9722 x 547.6 = 1080.0 GB/s
        // (the ring would take 71.27 us + 1.9722 GiB / 900 GB/s = 2.4243 ms, 873.5 GB/s).
        var cases = new (string Preset, int Gpus, CollectiveAlgorithm Algorithm, double BusGBps)[]
        {
            ("DGX-H100", 16, CollectiveAlgorithm.Ring, 397.4),
            ("DGX-A100", 16, CollectiveAlgorithm.Ring, 199.2),
            ("GB200-NVL72", 72, CollectiveAlgorithm.Nvls, 1080.0),
        };
        foreach (var (preset, gpus, algorithm, bus) in cases)
        {
            var price = new LinkCommunication(HardwareCatalog.Get(preset).WithGpus(gpus)).Price(CollectivePattern.AllReduce, GiB, Enumerable.Range(0, gpus).ToArray());
            Assert.Equal(algorithm, price.Algorithm);
            Assert.Equal(bus, price.BusBytesPerSecond / 1e9, 0.1);
        }
    }

    [Fact]
    public void AllReduceBusBandwidthAt1GiBWithNcclProtocols()
    {
        // With costModel.ncclProtocols (NCCL 2.28's tuner latencies, data/collectives/nccl-2.28.json):
        // DGX-H100 x 2: ring/Simple, (8.4 + 28 x 3.4 + 2 x 14) x 1.4 = 184.24 us + 2^30 / (400 x 16/30 GB/s) = 5.2174 ms -> 385.9 GB/s.
        // DGX-A100 x 2: ring/Simple, 184.24 us + 2^30 / (200 x 16/30 GB/s) = 10.2506 ms -> 196.4 GB/s.
        // GB200 NVL72: NVLS/Simple, 25 us + 2^30 / (0.61 x 900 GB/s) = 1.98081 ms -> 1.9722 x 542.07 = 1069.1 GB/s
        // (the ring/Simple would take 491.2 us + 2^30 / (900 x 72/142 GB/s) = 2.8442 ms, 744.6 GB/s).
        var cases = new (string Preset, int Gpus, CollectiveAlgorithm Algorithm, double BusGBps)[]
        {
            ("DGX-H100", 16, CollectiveAlgorithm.Ring, 385.9),
            ("DGX-A100", 16, CollectiveAlgorithm.Ring, 196.4),
            ("GB200-NVL72", 72, CollectiveAlgorithm.Nvls, 1069.1),
        };
        foreach (var (preset, gpus, algorithm, bus) in cases)
        {
            var price = new LinkCommunication(HardwareCatalog.Get(preset).WithGpus(gpus), protocols: NcclTuning.Default)
                .Price(CollectivePattern.AllReduce, GiB, Enumerable.Range(0, gpus).ToArray());
            Assert.Equal(algorithm, price.Algorithm);
            Assert.Equal(CollectiveProtocol.Simple, price.Protocol);
            Assert.Equal(bus, price.BusBytesPerSecond / 1e9, 0.1);
        }
    }
}

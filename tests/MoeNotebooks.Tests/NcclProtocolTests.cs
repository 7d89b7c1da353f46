using System.Text.Json;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Tests;

/// <summary>
/// NCCL's protocols (LL / LL128 / Simple) and its tuner's algorithm choice (<c>costModel.ncclProtocols</c>). Oracle: hand
/// derivations with NCCL 2.28's tuner (NVIDIA/nccl src/graph/tuning.cc, transcribed in data/collectives/nccl-2.28.json):
/// ring latency base + (nsteps - nInter) intra + nInter inter, intra step >= the 1 us network post overhead (x3 Simple)
/// across nodes, Simple across nodes x 1.4; tree base + 2((G-1) intra + log2 N inter); bus bandwidth x protocol factor
/// (ring LL .5 capped at llMaxBw, LL128 .92; tree x .92, LL / 3.8, LL128 x 120/128), ring algbw = bus x p / nsteps,
/// tree algbw = bus x .5 x correction(size); NVLS latency 25 us.
/// </summary>
public class NcclProtocolTests
{
    private const double GiB = 1 << 30;

    private static LinkCommunication Tuned(string preset, int gpus, int? rails = null)
    {
        var hw = HardwareCatalog.Get(preset).WithGpus(gpus);
        if (rails is { } r) hw = hw with { NicCount = r };
        return new LinkCommunication(hw, protocols: NcclTuning.Default);
    }

    private static int[] All(int gpus) => Enumerable.Range(0, gpus).ToArray();

    [Fact]
    public void OneDgxA100NodePicksLlThenLl128ThenSimpleAtTheHandDerivedCrossovers()
    {
        // 8 GPUs, NVLink 300 GB/s, Ampere llMaxBw 87.7 GB/s, nsteps 14, algbw = bus x 8/14:
        // LL     15.0 us (6.6 + 14 x 0.6),  bus min(87.7, 150) = 87.7 -> algbw 50.114 GB/s
        // LL128  40.6 us (14 + 14 x 1.9),   bus 0.92 x 300 = 276     -> algbw 157.714 GB/s
        // Simple 56.0 us (8.4 + 14 x 3.4),  bus 300                  -> algbw 171.429 GB/s
        // LL = LL128 at 25.6 us / (1/50.114 - 1/157.714) = 1.8804 MB; LL128 = Simple at 15.4 us / (1/157.714 - 1/171.429) = 30.36 MB.
        var comm = Tuned("DGX-A100", 8);
        double algLl = 87.7e9 * 8 / 14, algLl128 = 276e9 * 8 / 14, algSimple = 300e9 * 8 / 14;
        var llTo128 = (40.6e-6 - 15.0e-6) / (1 / algLl - 1 / algLl128);
        var to128Simple = (56.0e-6 - 40.6e-6) / (1 / algLl128 - 1 / algSimple);
        Assert.Equal(1.8804e6, llTo128, 0.001e6);
        Assert.Equal(30.36e6, to128Simple, 0.01e6);
        foreach (var (bytes, protocol) in new[] { (llTo128 * 0.9, CollectiveProtocol.Ll), (llTo128 * 1.1, CollectiveProtocol.Ll128), (to128Simple * 0.9, CollectiveProtocol.Ll128), (to128Simple * 1.1, CollectiveProtocol.Simple) })
        {
            var price = comm.Price(CollectivePattern.AllReduce, bytes, All(8));
            Assert.Equal(CollectiveAlgorithm.Ring, price.Algorithm);
            Assert.Equal(protocol, price.Protocol);
            var (lat, alg) = protocol switch { CollectiveProtocol.Ll => (15.0e-6, algLl), CollectiveProtocol.Ll128 => (40.6e-6, algLl128), _ => (56.0e-6, algSimple) };
            Assert.Equal(lat + bytes / alg, price.Seconds, 1e-12);
            Assert.Equal(lat, price.LatencySeconds, 1e-12);
            Assert.Equal(0, price.InterDomainSeconds);
        }
        // At the crossover both protocols take the same time.
        var at = comm.Price(CollectivePattern.AllReduce, llTo128, All(8)).ProtocolCandidates;
        Assert.Equal(at.Single(c => c.Protocol == CollectiveProtocol.Ll).Seconds, at.Single(c => c.Protocol == CollectiveProtocol.Ll128).Seconds, 1e-12);
    }

    [Fact]
    public void OneDgxH100NodeGoesFromRingLlToNvlsAtTheHandDerivedSize()
    {
        // Ring LL 15.0 us at min(141, 225) x 8/14 = 80.571 GB/s; NVLS 25 us at 0.61 x 450 = 274.5 GB/s (Simple only):
        // equal at 10 us / (1/80.571 - 1/274.5) = 1.1405 MB. LL128 / Simple rings never win (NVLS is faster and quicker to start).
        var comm = Tuned("DGX-H100", 8);
        var s = 10e-6 / (1 / (141e9 * 8 / 14) - 1 / (0.61 * 450e9));
        Assert.Equal(1.1405e6, s, 0.0005e6);
        var below = comm.Price(CollectivePattern.AllReduce, s * 0.9, All(8));
        Assert.Equal((CollectiveAlgorithm.Ring, CollectiveProtocol.Ll), (below.Algorithm, below.Protocol!.Value));
        var above = comm.Price(CollectivePattern.AllReduce, s * 1.1, All(8));
        Assert.Equal((CollectiveAlgorithm.Nvls, CollectiveProtocol.Simple), (above.Algorithm, above.Protocol!.Value));
        Assert.Equal(25e-6 + s * 1.1 / (0.61 * 450e9), above.Seconds, 1e-12);
        Assert.Equal("nvls/Simple", above.Label);
    }

    [Fact]
    public void TwoDgxH100NodesFollowTheTunersTreeToRingAndProtocolCrossovers()
    {
        // 2 x 8, 8 rails: bus = min(450, 8 x 50) = 400 GB/s, p = 16, nsteps 30, nInter 2, G = 8, N = 2.
        // Ring LL128: 14 + 28 x 1.9 + 2 x 4.0 = 75.2 us at 0.92 x 400 x 16/30 = 196.267 GB/s.
        // Ring Simple: (8.4 + 28 x 3.4 + 2 x 14) x 1.4 = 184.24 us at 400 x 16/30 = 213.333 GB/s.
        // Tree LL128: 14 + 2 (7 x 1.25 + 8.5) = 48.5 us at .5 x .92 x 120/128 x 400 x corr = 172.5 x corr GB/s; corr = 0.9
        // from 16 MiB to 32 MiB (log2(bytes / 64) = 18).
        // Tree LL128 = ring LL128 at 26.7 us / (1/155.25 - 1/196.267) = 19.835 MB (inside [16, 32) MiB: tree below, ring above);
        // ring LL128 = ring Simple at 109.04 us / (1/196.267 - 1/213.333) = 267.5 MB.
        var comm = Tuned("DGX-H100", 16);
        double ringLl128 = 0.92 * 400e9 * 16 / 30, ringSimple = 400e9 * 16 / 30, treeLl128 = 0.5 * 0.92 * 0.9375 * 400e9 * 0.9;
        var treeToRing = (75.2e-6 - 48.5e-6) / (1 / treeLl128 - 1 / ringLl128);
        var ll128ToSimple = (184.24e-6 - 75.2e-6) / (1 / ringLl128 - 1 / ringSimple);
        Assert.Equal(19.835e6, treeToRing, 0.001e6);
        Assert.Equal(267.5e6, ll128ToSimple, 0.1e6);
        Assert.Equal((CollectiveAlgorithm.Tree, CollectiveProtocol.Ll128), Choice(comm.Price(CollectivePattern.AllReduce, treeToRing * 0.95, All(16))));
        Assert.Equal((CollectiveAlgorithm.Ring, CollectiveProtocol.Ll128), Choice(comm.Price(CollectivePattern.AllReduce, treeToRing * 1.05, All(16))));
        Assert.Equal((CollectiveAlgorithm.Ring, CollectiveProtocol.Ll128), Choice(comm.Price(CollectivePattern.AllReduce, ll128ToSimple * 0.95, All(16))));
        // 1 GiB: ring Simple, 184.24 us + 2^30 / 213.333 GB/s = 5.21740 ms, busbw 1.875 x 2^30 / t = 385.9 GB/s.
        var big = comm.Price(CollectivePattern.AllReduce, GiB, All(16));
        Assert.Equal((CollectiveAlgorithm.Ring, CollectiveProtocol.Simple), Choice(big));
        Assert.Equal(184.24e-6 + GiB / ringSimple, big.Seconds, 1e-11);
        Assert.Equal(385.9e9, big.BusBytesPerSecond, 0.1e9);
        // Small messages: tree LL, 6.8 + 2 (7 x 0.6 + 5.0) = 25.2 us plus 4 KiB / (.5 x min(.92 x 400 / 3.8, 39) GB/s x corr(4 KiB) = 0.7).
        var small = comm.Price(CollectivePattern.AllReduce, 4096, All(16));
        Assert.Equal((CollectiveAlgorithm.Tree, CollectiveProtocol.Ll), Choice(small));
        Assert.Equal(25.2e-6 + 4096 / (0.5 * 39e9 * 0.7), small.Seconds, 1e-12);
    }

    private static (CollectiveAlgorithm, CollectiveProtocol) Choice(CollectivePrice p) => (p.Algorithm, p.Protocol!.Value);

    [Fact]
    public void BoundsHoldWithProtocols()
    {
        // More rails never slower; a group inside one NVLink domain never on a NIC; every candidate listed and the least chosen.
        foreach (var bytes in new[] { 4096.0, 1 << 20, 64.0 * (1 << 20), GiB })
        {
            var previous = double.PositiveInfinity;
            foreach (var rails in new[] { 1, 2, 4, 8 })
            {
                var t = Tuned("DGX-H100", 32, rails).Price(CollectivePattern.AllReduce, bytes, All(32));
                Assert.True(t.Seconds <= previous * (1 + 1e-12), $"{rails} rails slower at {bytes} B");
                previous = t.Seconds;
                Assert.Equal(t.ProtocolCandidates.Min(c => c.Seconds), t.Seconds);
            }
            foreach (var pattern in new[] { CollectivePattern.AllReduce, CollectivePattern.ReduceScatter, CollectivePattern.AllGather })
            {
                var inside = Tuned("DGX-H100", 16).Price(pattern, bytes, All(8));
                Assert.Equal(0, inside.InterDomainSeconds);
                Assert.False(inside.UsesNetwork);
            }
        }
    }

    [Fact]
    public void ReduceScatterUsesNcclsRingStepsWithProtocols()
    {
        // 8 GPUs of one DGX-A100, nsteps = 7: LL 6.6 + 7 x 0.6 = 10.8 us at min(87.7, 150) x 8/7; Simple 8.4 + 7 x 3.4 = 32.2 us at 300 x 8/7.
        var comm = Tuned("DGX-A100", 8);
        var small = comm.Price(CollectivePattern.ReduceScatter, 65536, All(8));
        Assert.Equal(CollectiveProtocol.Ll, small.Protocol);
        Assert.Equal(10.8e-6 + 65536 / (87.7e9 * 8 / 7), small.Seconds, 1e-12);
        var big = comm.Price(CollectivePattern.ReduceScatter, GiB, All(8));
        Assert.Equal(CollectiveProtocol.Simple, big.Protocol);
        Assert.Equal(32.2e-6 + GiB / (300e9 * 8 / 7), big.Seconds, 1e-11);
    }

    [Fact]
    public void WithoutTheOptionNothingChanges()
    {
        // The default model prices no protocol (the founding scenarios keep their totals): no protocol reported, same time as before.
        var plain = new LinkCommunication(HardwareCatalog.Get("DGX-H100").WithGpus(16));
        var price = plain.Price(CollectivePattern.AllReduce, GiB, All(16));
        Assert.Null(price.Protocol);
        Assert.Empty(price.ProtocolCandidates);
        Assert.Equal(5.06602e-3, price.Seconds, 1e-8);
        Assert.Equal("ring", price.Label);
    }

    [Fact]
    public void CostModelReadsNcclProtocolsAndRejectsBadValues()
    {
        static CostModelSpec Read(string json)
        {
            using var doc = JsonDocument.Parse(json);
            return CostModelSpec.Read(doc.RootElement, "costModel", null);
        }
        Assert.Equal("nccl-2.28", Read("""{"kind": "tile-wave", "ncclProtocols": true}""").NcclProtocols!.Name);
        Assert.Equal("nccl-2.28", Read("""{"kind": "roofline-ideal", "ncclProtocols": "nccl-2.28"}""").NcclProtocols!.Name);
        Assert.Null(Read("""{"kind": "tile-wave", "ncclProtocols": false}""").NcclProtocols);
        Assert.Null(Read("""{"kind": "tile-wave"}""").NcclProtocols);
        var e = Assert.Throws<ConfigException>(() => Read("""{"kind": "tile-wave", "ncclProtocols": "nccl-1.0"}"""));
        Assert.Contains("costModel.ncclProtocols", e.Message);
        Assert.Contains("nccl-1.0", e.Message);
        e = Assert.Throws<ConfigException>(() => Read("""{"kind": "tile-wave", "ncclProtocols": 3}"""));
        Assert.Contains("costModel.ncclProtocols", e.Message);
        var model = Read("""{"kind": "tile-wave", "ncclProtocols": true}""").Create(HardwareCatalog.Get("DGX-H100").WithGpus(16));
        Assert.Contains("protocols(nccl-2.28)", model.Communication.Name);
    }

    [Fact]
    public void EvaluateReportsTheAlgorithmAndProtocolOfEachCollective()
    {
        // The founding TP8 x PP2 forward pass on two DGX H100 nodes with costModel.ncclProtocols: each TP all-reduce
        // (8 GPUs, one node, 1.678e11 B per GPU) is priced by the tuner; the table shows the pair, and its time equals the
        // tuner's price of that collective (oracle: LinkCommunication.Price, derived by hand in the tests above).
        var s = Scenario.Load(TestPaths.Scenario("tp8-pp2"));
        s = s with { Hardware = HardwareCatalog.Get("DGX-H100").WithGpus(16), CostModel = s.CostModel with { NcclProtocols = NcclTuning.Default } };
        var e = s.Evaluate();
        var allReduces = e.Collectives.Where(c => c.Pattern == CollectivePattern.AllReduce).ToArray();
        Assert.NotEmpty(allReduces);
        var tuner = new LinkCommunication(s.Hardware, protocols: NcclTuning.Default);
        foreach (var c in allReduces)
        {
            var price = tuner.Price(CollectivePattern.AllReduce, c.BytesPerGpu, Enumerable.Range(0, c.Gpus).ToArray());
            Assert.Equal(price.Label, c.Algorithm);
            Assert.Matches(@"^(ring|tree|nvls)/(LL|LL128|Simple)$", c.Algorithm);
            Assert.Equal(price.Seconds, c.Seconds, price.Seconds * 1e-12);
        }
    }

    [Theory]
    [InlineData("ring.protocolBandwidthFactor.ll", "0")]
    [InlineData("ring.protocolBandwidthFactor.simple", "1.5")]
    [InlineData("tree.algorithmBandwidthFactor", "-1")]
    [InlineData("ring.baseLatencySeconds.ll", "-1e-6")]
    [InlineData("ringPlateauLatencyFactor", "0.5")]
    [InlineData("llMaxBusBytesPerSecond.twoNodes", "0")]
    public void BadTuningValuesAreRejectedNamingFieldAndValue(string field, string value)
    {
        // The shipped table with one value replaced: the error names the field and the value.
        var asm = typeof(NcclTuning).Assembly;
        using var stream = asm.GetManifestResourceStream("collectives/nccl-2.28.json")!;
        var node = System.Text.Json.Nodes.JsonNode.Parse(stream)!;
        var parts = field.Split('.');
        var target = node;
        foreach (var part in parts[..^1]) target = target[part]!;
        target[parts[^1]] = System.Text.Json.Nodes.JsonNode.Parse(value);
        using var doc = JsonDocument.Parse(node.ToJsonString());
        var e = Assert.Throws<ConfigException>(() => NcclTuning.Read(new JsonObjectReader(doc.RootElement, "", "test")));
        Assert.Contains(field, e.Message);
    }
}

using System.Numerics;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// DeepEP's normal and low-latency kernels (<see cref="LinkCommunication.PriceTokenExchange"/>). Oracles: exact
/// binomial counts (BigInteger, an independent algorithm) for the chance a token needs a set of experts; hand
/// derivations on the H800 preset (NVLink 160 GB/s per GPU, one 50 GB/s NIC per GPU, latencies 5 us / 17 us); DeepEP's
/// published measurements (deepseek-ai/DeepEP docs/legacy.md, V1 on H800 + CX7 400 Gb/s): normal kernels, 4096 tokens,
/// hidden 7168, top-8 of 256 experts, FP8 dispatch: intranode EP8 153 GB/s (NVLink), internode EP16 / 32 / 64 43 / 58 /
/// 51 GB/s (RDMA); low-latency kernels, 128 tokens, top-8, FP8 dispatch (7408 B per token-expert pair) and BF16 combine
/// (14336 B): dispatch EP 8-256 77/118/155/173/192/194 us, combine 114/195/273/314/369/360 us.
/// </summary>
public class DeepEpKernelTests
{
    private const int Hidden = 7168, TopK = 8, Experts = 256;
    private const double Nvl = 160e9, Nic = 50e9, Li = 5e-6, Le = 17e-6;
    private const double Fp8TokenBytes = Hidden + Hidden / 128 * 4;   // the DAG's FP8 dispatch: 1-byte elements + an FP32 scale per 128

    private static HardwareSpec H800(int gpus) => HardwareCatalog.Get("H800").WithGpus(gpus);
    private static int[] All(int gpus) => Enumerable.Range(0, gpus).ToArray();
    private static LinkCommunication Normal(HardwareSpec hw) => new(hw, AllToAllImplementation.DeepEpNormal) { DeepEp = DeepEpKernels.Default };
    private static LinkCommunication LowLatency(HardwareSpec hw) => new(hw, AllToAllImplementation.DeepEpLowLatency) { DeepEp = DeepEpKernels.Default };

    private static double ExactHit(int experts, int held, int k) =>
        1 - (double)(Binomial(experts - held, k) * 1_000_000_000_000 / Binomial(experts, k)) / 1e12;

    private static BigInteger Binomial(int n, int k)
    {
        if (k < 0 || k > n) return 0;
        BigInteger r = 1;
        for (var i = 1; i <= k; i++) r = r * (n - k + i) / i;
        return r;
    }

    [Theory]
    // Hand: 4 experts, 1 held, top-2: 1 - C(3,2)/C(4,2) = 1 - 3/6.
    [InlineData(4, 1, 2, 0.5)]
    // Hand: 8 experts, 4 held, top-1: 4/8.
    [InlineData(8, 4, 1, 0.5)]
    // Fewer unheld experts than k: the token must hit one.
    [InlineData(10, 8, 3, 1.0)]
    public void Hit_probability_by_hand(int experts, int held, int k, double expected) =>
        Assert.Equal(expected, TokenRouting.HitProbability(experts, held, k), 12);

    [Theory]
    [InlineData(256, 32, 8)]
    [InlineData(256, 128, 8)]
    [InlineData(256, 4, 8)]
    [InlineData(128, 16, 6)]
    public void Hit_probability_matches_exact_binomials(int experts, int held, int k) =>
        Assert.Equal(ExactHit(experts, held, k), TokenRouting.HitProbability(experts, held, k), 10);

    [Fact]
    public void Normal_intranode_sends_each_token_once_per_rank()
    {
        // Hand: EP8 on one H800 node, 32 experts per rank, top-8: a token reaches each other rank with probability
        // h = 1 - C(224,8)/C(256,8); time = 5 us + 7 h x (4096 x 7392 B) / 160 GB/s. NCCL sends all 8 copies: 7/8 of B.
        var hw = H800(8);
        double tokens = 4096, b = tokens * TopK * Fp8TokenBytes;
        var h = ExactHit(Experts, 32, TopK);
        var price = Normal(hw).PriceTokenExchange(b, All(8), new TokenRouting(TopK, 32));
        Assert.Equal(CollectiveAlgorithm.DeepEpNormal, price.Algorithm);
        Assert.Equal(Li + 7 * h * tokens * Fp8TokenBytes / Nvl, price.Seconds, 12);
        var nccl = new LinkCommunication(hw).Price(CollectivePattern.AllToAll, b, All(8));
        Assert.Equal(Li + 7.0 / 8 * b / Nvl, nccl.Seconds, 12);
        Assert.True(price.Seconds < nccl.Seconds);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    public void Normal_internode_is_the_slower_of_rdma_per_node_and_nvlink_forwarding(int ep)
    {
        // Hand: N = ep/8 nodes; RDMA (N-1) x h(8 m) token copies over the GPU's own 50 GB/s rail; NVLink N x 7 x h(m)
        // copies forwarded at 160 GB/s; 17 us latency.
        var hw = H800(ep);
        int n = ep / 8, m = Experts / ep;
        double tokens = 4096, perToken = Fp8TokenBytes, b = tokens * TopK * perToken;
        var rdma = (n - 1) * ExactHit(Experts, 8 * m, TopK) * tokens * perToken / Nic;
        var nvlink = n * 7 * ExactHit(Experts, m, TopK) * tokens * perToken / Nvl;
        var price = Normal(hw).PriceTokenExchange(b, All(ep), new TokenRouting(TopK, m));
        Assert.Equal(Le + Math.Max(rdma, nvlink), price.Seconds, 12);
        Assert.Equal(rdma, price.InterDomainSeconds, 12);
        // Bound: per-node de-duplication never sends more across nodes than NCCL's exchange of every pair.
        var nccl = new LinkCommunication(hw).Price(CollectivePattern.AllToAll, b, All(ep));
        Assert.True(price.InterDomainSeconds <= nccl.InterDomainSeconds * (1 + 1e-12), $"EP{ep}: RDMA {price.InterDomainSeconds} > NCCL {nccl.InterDomainSeconds}");
    }

    [Theory]
    // Published (DeepEP docs/legacy.md, H800): normal kernels' bottleneck bandwidth, logical bytes (a token counted once
    // per destination node, its own node included, as DeepEP's tests count RDMA bytes; once per rank intranode).
    [InlineData(8, 153)]
    [InlineData(16, 43)]
    [InlineData(32, 58)]
    [InlineData(64, 51)]
    public void Normal_kernels_within_30_percent_of_published_bandwidth(int ep, double publishedGBps)
    {
        // The model is the links' datasheet bandwidth with no kernel efficiency: it is optimistic by 11-28 % here
        // (EP8 +19 %, EP16 +28 %, EP32 +14 %, EP64 +11 %), so the tolerance is 30 %, one-sided checks below.
        var hw = H800(ep);
        var m = Experts / ep;
        double tokens = 4096, b = tokens * TopK * Fp8TokenBytes;
        var t = Normal(hw).PriceTokenExchange(b, All(ep), new TokenRouting(TopK, m)).Seconds;
        var logical = ep == 8
            ? tokens * 8 * ExactHit(Experts, m, TopK) * Fp8TokenBytes
            : tokens * (ep / 8) * ExactHit(Experts, 8 * m, TopK) * Fp8TokenBytes;
        var predicted = logical / t / 1e9;
        Assert.InRange(predicted / publishedGBps, 1.0, 1.30);
    }

    [Theory]
    // Published (DeepEP docs/legacy.md, H800): low-latency dispatch (FP8, 7408 B per pair) and combine (BF16, 14336 B).
    // The kernels' fixed cost (data/alltoall/deepep-v1.json, 40.2 us) was derived from the EP64 dispatch row alone.
    [InlineData(8, 7408, 77)]
    [InlineData(16, 7408, 118)]
    [InlineData(32, 7408, 155)]
    [InlineData(64, 7408, 173)]
    [InlineData(128, 7408, 192)]
    [InlineData(256, 7408, 194)]
    [InlineData(8, 14336, 114)]
    [InlineData(16, 14336, 195)]
    [InlineData(32, 14336, 273)]
    [InlineData(64, 14336, 314)]
    [InlineData(128, 14336, 369)]
    [InlineData(256, 14336, 360)]
    public void Low_latency_kernels_within_15_percent_of_published_latency(int ep, int pairBytes, double publishedMicroseconds)
    {
        // Hand: every pair straight to its destination; 128 tokens x 8 pairs; (G-1)/p of them on NVLink, (p-G)/p on the
        // GPU's NIC; 40.2 us + the slower. E.g. EP16 dispatch 40.2 + 1/2 x 7.59 MB / 50 GB/s = 116.1 us (published 118).
        var hw = H800(ep);
        var b = 128.0 * TopK * pairBytes;
        var g = Math.Min(8, ep);
        var hand = 40.2e-6 + Math.Max((g - 1.0) / ep * b / Nvl, (ep - g) / (double)ep * b / Nic);
        var price = LowLatency(hw).PriceTokenExchange(b, All(ep), new TokenRouting(TopK, Experts / ep));
        Assert.Equal(CollectiveAlgorithm.DeepEpLowLatency, price.Algorithm);
        Assert.Equal(hand, price.Seconds, 12);
        Assert.InRange(price.Seconds * 1e6 / publishedMicroseconds, 0.85, 1.15);
    }

    [Fact]
    public void Nccl_and_deepep_without_kernels_price_exactly_as_before()
    {
        // Identity: the routing-aware path changes nothing for NCCL / PXN, nor for DeepEP built without the kernel table
        // (how existing callers construct it), bit for bit.
        var hw = H800(32);
        var r = new TokenRouting(TopK, 8);
        foreach (var impl in Enum.GetValues<AllToAllImplementation>())
        {
            var plain = new LinkCommunication(hw, impl);
            Assert.Equal(plain.Price(CollectivePattern.AllToAll, 3e7, All(32)).Seconds, plain.PriceTokenExchange(3e7, All(32), r).Seconds);
        }
        var nccl = new LinkCommunication(hw) { DeepEp = DeepEpKernels.Default };
        Assert.False(nccl.PricesDeepEpKernels);
        Assert.Equal(new LinkCommunication(hw).Seconds(CollectivePattern.AllToAll, 3e7, All(32)), nccl.TokenExchangeSeconds(3e7, All(32), r));
    }

    [Fact]
    public void Scenario_with_deepep_normal_prices_its_dispatch_through_the_routing()
    {
        // End to end: costModel.alltoall "deep-ep-normal" builds the kernel model; every dispatch/combine of an EP16 DAG
        // on two H800 nodes costs what PriceTokenExchange gives for its bytes with the model's topK and experts per rank.
        var s = Scenario.Parse("""
            {"name": "deepep", "model": {"preset": "qwen3-30b-a3b", "layers": 2, "batch": 16, "sequenceLength": 512},
             "hardware": {"preset": "H800", "gpus": 16},
             "strategy": {"ep": 16, "tp": 1, "pp": 1, "dp": 1, "derivation": "corrected"},
             "costModel": {"kind": "roofline-ideal", "alltoall": "deep-ep-normal"}}
            """, "test");
        var (model, hw) = (s.Model, s.Hardware);
        var cost = s.CostModel.Create(hw);
        var link = Assert.IsType<LinkCommunication>(cost.Communication);
        Assert.True(link.PricesDeepEpKernels);
        var dag = s.Strategy.BuildDag(model);
        Assert.Equal(model.TopK, dag.RoutedTopK);
        Assert.Equal(model.Experts / 16, dag.ExpertsPerRank);
        var durations = cost.Price(dag);
        var plain = new LinkCommunication(hw, AllToAllImplementation.DeepEpNormal);
        var seen = 0;
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Kind(op) is not (OpKind.AllToAllDispatch or OpKind.AllToAllCombine)) continue;
            seen++;
            var expected = link.PriceTokenExchange(dag.Bytes(op), dag.Participants(op), new TokenRouting(model.TopK, model.Experts / 16)).Seconds;
            Assert.Equal(expected, durations[op]);
            Assert.True(durations[op] < plain.Seconds(CollectivePattern.AllToAll, dag.Bytes(op), dag.Participants(op)), "de-duplication must make the inter-node exchange cheaper here");
        }
        Assert.True(seen > 0);
        var row = CollectiveReport.Of(dag, cost).First(r => r.Kind == OpKind.AllToAllDispatch);
        Assert.Equal("deep-ep-normal", row.Algorithm);
    }

    [Fact]
    public void Nccl_all_to_all_reports_its_two_levels()
    {
        // Hand: EP16 over two H800 nodes, B = 30 MB: 7/16 of B over NVLink (160 GB/s) and 8/16 over the GPU's 50 GB/s
        // rail at once; the time is 17 us + the slower; the levels report each share.
        var b = 30e6;
        var price = new LinkCommunication(H800(16)).Price(CollectivePattern.AllToAll, b, All(16));
        Assert.Equal(7.0 / 16 * b / Nvl, price.IntraDomainSeconds, 12);
        Assert.Equal(8.0 / 16 * b / Nic, price.InterDomainSeconds, 12);
        Assert.Equal(Le + 8.0 / 16 * b / Nic, price.Seconds, 12);
        // A send across nodes: one NIC, all its bytes.
        Assert.Equal(b / Nic, new LinkCommunication(H800(16)).Price(CollectivePattern.SendRecv, b, [0, 8]).InterDomainSeconds, 12);
    }

    [Theory]
    [InlineData("{\"name\": \"x\", \"lowLatencyKernelSeconds\": -1e-6}", "lowLatencyKernelSeconds")]
    [InlineData("{\"name\": \"x\", \"lowLatencyKernelSeconds\": 1}", "lowLatencyKernelSeconds")]
    [InlineData("{\"name\": \"x\"}", "lowLatencyKernelSeconds")]
    [InlineData("{\"name\": \"x\", \"lowLatencyKernelSeconds\": 4e-5, \"extra\": 1}", "extra")]
    public void Bad_kernel_tables_are_rejected_with_the_field(string json, string field)
    {
        using var doc = JsonObjectReader.Parse(json, "test");
        var e = Assert.Throws<ConfigException>(() => DeepEpKernels.Read(new JsonObjectReader(doc.RootElement, "", "test")));
        Assert.Contains(field, e.Message);
    }

    [Fact]
    public void The_shipped_table_reads_back()
    {
        // The derivation in the file: 173 us - 7/8 x 128 x 8 x 7408 B / 50 GB/s = 40.2 us.
        Assert.Equal(173e-6 - 7.0 / 8 * 128 * 8 * 7408 / Nic, DeepEpKernels.Default.LowLatencyKernelSeconds, 7);
        Assert.Contains("legacy.md", DeepEpKernels.Default.Source);
    }
}

using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// DeepEP's normal kernels send each token once per destination node over RDMA (and once per destination rank over
/// NVLink), not once per routed copy (deepseek-ai/DeepEP README, normal kernels with NVLink and RDMA forwarding;
/// Buffer.get_dispatch_layout's num_tokens_per_rdma_rank / is_token_in_rank). Oracles: hand derivations of the
/// bytes under uniform routing from the DGX-H100 preset's figures (NVLink 450 GB/s per GPU, one 50 GB/s NIC per GPU,
/// latency 17 us across nodes) and an exhaustive enumeration of every top-k set on a small case.
/// </summary>
public class DeepEpDeduplicationTests
{
    private const double Nvl = 450e9, Nic = 50e9, Le = 17e-6, Li = 5e-6;

    private static HardwareSpec Dgx(int nodes) => HardwareCatalog.Get("DGX-H100").WithGpus(8 * nodes);
    private static int[] All(int gpus) => Enumerable.Range(0, gpus).ToArray();

    [Fact]
    public void The_miss_probability_is_the_hypergeometric_law_by_hand_and_by_enumeration()
    {
        // Hand: DeepSeek-V3's 256 experts over 4 nodes of 64, top-8: a node is missed with probability
        // C(192, 8) / C(256, 8) = (192 x 191 x ... x 185) / (256 x 255 x ... x 249) = 0.09645 (to 5 places).
        var q = 1.0;
        for (var i = 0; i < 8; i++) q *= (192.0 - i) / (256 - i);
        Assert.Equal(q, LinkCommunication.MissProbability(256, 64, 8), 14);
        Assert.Equal(0.09645, q, 5);
        Assert.Equal(4 * (1 - q), LinkCommunication.ExpectedDistinctSets(256, 4, 8), 12);
        // Enumeration: 12 experts in 4 sets of 3, top-3: average over all C(12, 3) = 220 expert sets of the sets hit.
        double total = 0;
        var count = 0;
        for (var a = 0; a < 12; a++)
        for (var b = a + 1; b < 12; b++)
        for (var c = b + 1; c < 12; c++)
        {
            total += new[] { a / 3, b / 3, c / 3 }.Distinct().Count();
            count++;
        }
        Assert.Equal(220, count);
        Assert.Equal(total / count, LinkCommunication.ExpectedDistinctSets(12, 4, 3), 12);
        // Edges: a set of all experts is never missed; top-1 hits one set.
        Assert.Equal(0, LinkCommunication.MissProbability(12, 12, 3));
        Assert.Equal(1, LinkCommunication.ExpectedDistinctSets(12, 4, 1), 12);
    }

    [Fact]
    public void Across_nodes_deep_ep_sends_each_token_once_per_distinct_remote_node()
    {
        // 4 DGX-H100 nodes, EP 32, 8 experts per rank (256 experts), top-8; each GPU holds B = 8 copies x 4096 tokens x
        // 7168 x 2 bytes. T = B / 8 is each token once. Remote nodes per token: 3 x (1 - C(192, 8) / C(256, 8)); the
        // GPU's share of its node's 8 NICs is one 50 GB/s NIC: network seconds T x 3 x (1 - q) / 50e9. NVLink: each
        // token once to each distinct other rank, 31 x (1 - C(248, 8) / C(256, 8)) x T / 450e9. The slower, plus the
        // 17 us latency across nodes.
        const double tokens = 4096, hidden = 7168;
        var tokenBytes = tokens * hidden * 2;
        var b = 8 * tokenBytes;
        double Miss(int set) { var m = 1.0; for (var i = 0; i < 8; i++) m *= (256.0 - set - i) / (256 - i); return m; }
        var nic = tokenBytes * 3 * (1 - Miss(64)) / Nic;
        var nvl = tokenBytes * 31 * (1 - Miss(8)) / Nvl;
        var deepEp = new LinkCommunication(Dgx(4), AllToAllImplementation.DeepEpNormal);
        var price = deepEp.PriceRouted(b, All(32), 8, 8);
        Assert.Equal(CollectiveAlgorithm.DeepEpNormal, price.Algorithm);
        Assert.Equal(nic, price.InterDomainSeconds, 12);
        Assert.Equal(nvl, price.IntraDomainSeconds, 12);
        Assert.Equal(Le + Math.Max(nic, nvl), price.Seconds, 12);
        // Against every routed copy (the price without the fan-out, NIC-bound here): 24 of the 32 destinations are remote,
        // 6 copies per token on the NIC against 3 x (1 - 0.09645) = 2.71 messages: 2.21 x the network time.
        var copies = deepEp.Price(CollectivePattern.AllToAll, b, All(32));
        Assert.Equal(6 * tokenBytes / Nic, copies.Seconds - Le, 9);
        Assert.Equal(6 / (3 * (1 - Miss(64))), (copies.Seconds - Le) / (price.Seconds - Le), 9);
    }

    [Fact]
    public void Inside_one_node_deep_ep_sends_each_token_once_per_distinct_rank()
    {
        // 1 DGX-H100, EP 8, 16 experts per rank (128 experts, Qwen3-30B-A3B), top-8: NVLink bytes per GPU
        // T x 7 x (1 - C(112, 8) / C(128, 8)) at 450 GB/s plus the 5 us NVLink latency.
        var tokenBytes = 4096.0 * 2048 * 2;
        double miss = 1;
        for (var i = 0; i < 8; i++) miss *= (112.0 - i) / (128 - i);
        var price = new LinkCommunication(Dgx(1), AllToAllImplementation.DeepEpNormal).PriceRouted(8 * tokenBytes, All(8), 8, 16);
        Assert.Equal(Li + tokenBytes * 7 * (1 - miss) / Nvl, price.Seconds, 12);
    }

    [Theory]
    [InlineData(AllToAllImplementation.Nccl)]
    [InlineData(AllToAllImplementation.Pxn)]
    [InlineData(AllToAllImplementation.DeepEpLowLatency)]
    public void Implementations_that_send_every_copy_price_the_routed_all_to_all_as_before(AllToAllImplementation impl)
    {
        // Oracle: the fan-out-free price (Megatron's alltoall dispatcher sends each routed copy; DeepEP's low-latency
        // kernels send per expert).
        var comm = new LinkCommunication(Dgx(2), impl);
        Assert.Equal(comm.Seconds(CollectivePattern.AllToAll, 1e9, All(16)), comm.RoutedAllToAllSeconds(1e9, All(16), 8, 16));
    }

    [Fact]
    public void De_duplication_never_sends_more_than_the_copies()
    {
        // Oracle: the union bound (a token's k experts hit at most k sets), over node counts, experts per rank and top-k.
        foreach (var nodes in new[] { 1, 2, 4, 8 })
        foreach (var perRank in new[] { 1, 2, 4, 16 })
        foreach (var k in new[] { 2, 4, 8 })
        {
            var p = 8 * nodes;
            if (k > perRank * p) continue;
            var comm = new LinkCommunication(Dgx(nodes), AllToAllImplementation.DeepEpNormal);
            var routed = comm.RoutedAllToAllSeconds(1e8, All(p), k, perRank);
            var copies = comm.Seconds(CollectivePattern.AllToAll, 1e8, All(p));
            Assert.True(routed <= copies * (1 + 1e-12), $"{nodes} nodes, {perRank} experts per rank, top-{k}: {routed} > {copies}");
        }
    }

    [Fact]
    public void The_dag_carries_the_routers_top_k_and_the_cost_model_prices_the_dispatch_de_duplicated()
    {
        // Oracle: the model's top-k (8 for the DeepSeek-V3 preset); the scheduled dispatch costs what PriceRouted says for
        // its group and bytes, and a dense model's DAG carries 0.
        var model = ModelPresets.Get("deepseek-v3", batch: 64, sequenceLength: 1024) with { Layers = 1, DenseLayers = 0, MtpLayers = 0 };
        var st = new StrategySpec(32, 1, 1, 1);
        var dag = st.BuildDag(model);
        Assert.Equal(8, dag.RouterTopK);
        Assert.Equal(8, dag.ExpertsPerRank);
        var hw = Dgx(4);
        var link = new LinkCommunication(hw, AllToAllImplementation.DeepEpNormal);
        var cost = new CostModel("deep-ep", new RooflineCompute(hw.Gpu, EfficiencyTable.Ideal), link);
        var dispatch = Enumerable.Range(0, dag.Count).First(op => dag.Kind(op) == OpKind.AllToAllDispatch);
        Assert.Equal(link.PriceRouted(dag.Bytes(dispatch), dag.Participants(dispatch), 8, 8).Seconds, cost.Seconds(dag, dispatch));
        Assert.True(cost.Seconds(dag, dispatch) < link.Seconds(CollectivePattern.AllToAll, dag.Bytes(dispatch), dag.Participants(dispatch)));
        Assert.Equal(0, new StrategySpec(1, 1, 1, 1).BuildDag(ModelPresets.Get("llama3-8b", batch: 1, sequenceLength: 1024) with { Layers = 1 }).RouterTopK);
    }
}

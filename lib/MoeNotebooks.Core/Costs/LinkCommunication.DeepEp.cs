using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// A communication model that can price an MoE all-to-all knowing how the tokens fan out: each token goes to
/// <c>topK</c> distinct experts out of <c>expertsPerRank</c> x group size, spread evenly over the group's ranks. An
/// implementation that sends every routed copy (NCCL's exchange of Megatron-Core's alltoall dispatcher) prices it as
/// <see cref="ICommunicationCostModel.Seconds"/>; one that de-duplicates (DeepEP) sends less.
/// </summary>
public interface IRoutedAllToAllCostModel
{
    /// <summary>Seconds of a dispatch or combine in which each GPU of <paramref name="gpus"/> holds <paramref name="bytesPerGpu"/> of routed copies (tokens x top-k x hidden x element bytes).</summary>
    double RoutedAllToAllSeconds(double bytesPerGpu, ReadOnlySpan<int> gpus, int topK, int expertsPerRank);
}

/// <summary>
/// DeepEP's normal (training) kernels de-duplicate what they send (deepseek-ai/DeepEP README, "Normal kernels with
/// NVLink and RDMA forwarding": kernels "optimized for asymmetric-domain bandwidth forwarding, such as forwarding data
/// from NVLink domain to RDMA domain", aligned with DeepSeek-V3's group-limited gating; <c>Buffer.get_dispatch_layout</c>
/// gives <c>num_tokens_per_rank</c>, <c>num_tokens_per_rdma_rank</c> and <c>is_token_in_rank</c>, and the internode
/// dispatch (csrc/kernels/internode.cu) sends each token once over RDMA to every destination node that holds one of its
/// experts, to the GPU with the sender's local index, which forwards it over NVLink to the GPUs of that node that
/// need it; the combine reduces inside the node and returns one message per node, the reverse). Per GPU and token
/// the network carries (number of distinct remote domains its experts are in) messages, not its remote top-k copies;
/// inside one domain (the intranode kernels) each token goes once to each distinct rank.
/// <para>Under uniform routing a token's k experts are k distinct of the E = experts per rank x p experts, equally
/// likely; a set of E_s experts (a domain's g x experts per rank, or one rank's) is missed with probability
/// C(E - E_s, k) / C(E, k), so the expected number of distinct domains is N (1 - C(E - E/N, k) / C(E, k)) and of
/// distinct ranks p (1 - C(E - E/p, k) / C(E, k)). With T = B / k (the bytes of each token once): network bytes per GPU
/// T (N - 1)(1 - C(E - E/N, k) / C(E, k)) on its share of the domain's rails; NVLink bytes per GPU (its own domain's
/// peers and the forwarding of what arrives) T (p - 1)(1 - C(E - E/p, k) / C(E, k)), both at once as for the other
/// implementations. Group-limited routing (DeepSeek-V3's <c>moe_router_num_groups</c> / <c>moe_router_group_topk</c>)
/// would hit fewer domains; it is not priced (uniform routing over all experts).</para>
/// </summary>
public sealed partial class LinkCommunication : IRoutedAllToAllCostModel
{
    /// <summary>
    /// Probability that k distinct experts drawn uniformly from <paramref name="experts"/> miss a given set of
    /// <paramref name="setSize"/> of them: C(E - s, k) / C(E, k) = prod_{i &lt; k} (E - s - i) / (E - i).
    /// </summary>
    public static double MissProbability(int experts, int setSize, int topK)
    {
        if (experts <= 0 || setSize < 0 || setSize > experts || topK < 0 || topK > experts)
            throw new ArgumentOutOfRangeException(nameof(experts), $"experts {experts}, set {setSize}, top-k {topK}: need 0 <= set <= experts and 0 <= top-k <= experts");
        var q = 1.0;
        for (var i = 0; i < topK; i++) q *= Math.Max(0, experts - setSize - i) / (double)(experts - i);
        return q;
    }

    /// <summary>Expected number of the <paramref name="sets"/> equal sets of <paramref name="experts"/> that a token's k distinct experts fall in: sets x (1 - C(E - E/sets, k) / C(E, k)).</summary>
    public static double ExpectedDistinctSets(int experts, int sets, int topK) =>
        sets * (1 - MissProbability(experts, experts / sets, topK));

    /// <summary>The all-to-all as DeepEP's normal kernels send it (see the class summary); every other case as <see cref="Price"/>.</summary>
    public CollectivePrice PriceRouted(double bytesPerGpu, ReadOnlySpan<int> gpus, int topK, int expertsPerRank)
    {
        var plain = Price(CollectivePattern.AllToAll, bytesPerGpu, gpus);
        if (AllToAll != AllToAllImplementation.DeepEpNormal || topK <= 1 || expertsPerRank <= 0 || plain.Algorithm == CollectiveAlgorithm.None) return plain;
        var shape = Shape(gpus);
        var p = shape.Gpus;
        var experts = expertsPerRank * p;
        if (topK > experts) return plain;
        var intra = Hardware.IntraNode;
        var tokenBytes = bytesPerGpu / topK;
        // NVLink: each token once to each distinct other rank.
        var rankHit = 1 - MissProbability(experts, expertsPerRank, topK);
        var nvlBytes = tokenBytes * (p - 1) * rankHit;
        var nvlTime = nvlBytes / intra.BytesPerSecond;
        if (intra.PeerBytesPerSecond is { } peer) nvlTime = Math.Max(nvlTime, tokenBytes * rankHit / peer);
        if (shape.Domains == 1)
        {
            var t1 = intra.LatencySeconds + nvlTime;
            return plain with { Algorithm = CollectiveAlgorithm.DeepEpNormal, Seconds = t1, LatencySeconds = intra.LatencySeconds, IntraDomainSeconds = nvlTime, InterDomainSeconds = 0, Candidates = [(CollectiveAlgorithm.DeepEpNormal, t1)] };
        }
        // Across domains: one message per token and distinct remote domain, on this GPU's share of its domain's rails.
        // Domains of unequal size: the least-populated domain's GPUs share the most experts' worth of remote traffic.
        var n = shape.Domains;
        var domainExperts = expertsPerRank * shape.MaxPerDomain;
        var domainHit = 1 - MissProbability(experts, Math.Min(experts, domainExperts), topK);
        var rdmaBytes = tokenBytes * (n - 1) * domainHit;
        var railShare = shape.RailBytesPerSecond / shape.MaxPerDomain;
        var nicTime = rdmaBytes / railShare;
        var inter = Hardware.InterNode;
        var t = inter.LatencySeconds + Math.Max(nvlTime, nicTime);
        return plain with
        {
            Algorithm = CollectiveAlgorithm.DeepEpNormal, Seconds = t, LatencySeconds = inter.LatencySeconds,
            IntraDomainSeconds = nvlTime, InterDomainSeconds = nicTime, Candidates = [(CollectiveAlgorithm.DeepEpNormal, t)],
        };
    }

    public double RoutedAllToAllSeconds(double bytesPerGpu, ReadOnlySpan<int> gpus, int topK, int expertsPerRank) =>
        PriceRouted(bytesPerGpu, gpus, topK, expertsPerRank).Seconds;
}

using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>How a collective was (or could be) carried out.</summary>
public enum CollectiveAlgorithm
{
    /// <summary>Nothing to move (one GPU or no bytes).</summary>
    None,
    /// <summary>NCCL's ring: one ring per channel through every GPU, the channels spread over the NICs (rails) of each domain.</summary>
    Ring,
    /// <summary>NCCL's double binary tree across NVLink domains, a chain inside each (all-reduce only).</summary>
    Tree,
    /// <summary>Reduce-scatter inside each domain, the 1/G shard reduced across domains on every rail at once, all-gather inside.</summary>
    Hierarchical,
    /// <summary>NVLink SHARP: the NVSwitch reduces (all-reduce inside one NVLink domain).</summary>
    Nvls,
    /// <summary>Every pair exchanges directly: NVLink inside a domain, the sender's rail across (all-to-all; a send).</summary>
    Direct,
    /// <summary>All-to-all with PXN: traffic for another rail hops over NVLink to the peer on the destination's rail first.</summary>
    Pxn,
    /// <summary>DeepEP's normal kernels: RDMA to the same-rail GPU of the destination domain, then NVLink forwarding (as PXN).</summary>
    DeepEpNormal,
    /// <summary>DeepEP's low-latency kernels: every token straight to its destination (RDMA across domains, NVLink inside).</summary>
    DeepEpLowLatency,
}

/// <summary>The all-to-all implementation a cost model assumes (<c>costModel.alltoall</c>).</summary>
public enum AllToAllImplementation
{
    /// <summary>NCCL send/recv pairs (the default): NVLink inside the domain, each GPU's own rail across.</summary>
    Nccl,
    /// <summary>NCCL with PXN (<c>NCCL_PXN_DISABLE=0</c>): cross-rail traffic forwarded over NVLink to a same-rail peer.</summary>
    Pxn,
    /// <summary>DeepEP normal (high-throughput) kernels.</summary>
    DeepEpNormal,
    /// <summary>DeepEP low-latency kernels (direct RDMA across domains).</summary>
    DeepEpLowLatency,
}

/// <summary>
/// The price of one collective with how it was derived: the algorithm chosen (the fastest candidate, as NCCL's tuner
/// picks by its latency + size / bandwidth model), the time inside and across NVLink domains, and every candidate.
/// <see cref="BusBytesPerSecond"/> is nccl-tests' bus bandwidth: algorithm bandwidth (bytes / time) times
/// 2(p-1)/p for all-reduce, (p-1)/p for reduce-scatter, all-gather and all-to-all, 1 for a send.
/// </summary>
public sealed record CollectivePrice(
    CollectivePattern Pattern,
    CollectiveAlgorithm Algorithm,
    double Bytes,
    int Gpus,
    int Domains,
    int GpusPerDomain,
    double Seconds,
    double LatencySeconds,
    double IntraDomainSeconds,
    double InterDomainSeconds,
    double RailBytesPerSecondPerDomain,
    IReadOnlyList<(CollectiveAlgorithm Algorithm, double Seconds)> Candidates)
{
    public static CollectivePrice Nothing(CollectivePattern pattern, double bytes, int gpus) =>
        new(pattern, CollectiveAlgorithm.None, bytes, gpus, gpus > 0 ? 1 : 0, gpus, 0, 0, 0, 0, 0, []);

    /// <summary>NCCL's protocol of the chosen candidate when the model prices protocols (<c>costModel.ncclProtocols</c>); null otherwise.</summary>
    public CollectiveProtocol? Protocol { get; init; }

    /// <summary>Every (algorithm, protocol) pair priced when the model prices protocols; empty otherwise.</summary>
    public IReadOnlyList<(CollectiveAlgorithm Algorithm, CollectiveProtocol Protocol, double Seconds)> ProtocolCandidates { get; init; } = [];

    /// <summary>Message bytes per second (nccl-tests' algbw).</summary>
    public double AlgorithmBytesPerSecond => Seconds > 0 ? Bytes / Seconds : double.PositiveInfinity;

    /// <summary>nccl-tests' busbw: algbw times the pattern's factor (<see cref="LinkCommunication.AlgorithmFactor"/>).</summary>
    public double BusBytesPerSecond => AlgorithmBytesPerSecond * LinkCommunication.AlgorithmFactor(Pattern, Gpus);

    /// <summary>Whether any byte crosses a NIC.</summary>
    public bool UsesNetwork => Domains > 1;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{MeasurementCsv.NameOf(Pattern)} {Bytes:G4} B on {Gpus} GPUs ({Domains} NVLink domain(s) x {GpusPerDomain}): {JsonName(Algorithm)}{(Protocol is { } p ? "/" + ProtocolName(p) : "")}, {Seconds * 1e6:F1} us, busbw {BusBytesPerSecond / 1e9:F1} GB/s");

    /// <summary>The algorithm's name with the protocol when one was chosen ("ring/LL128"), as tables and JSON show it.</summary>
    public string Label => JsonName(Algorithm) + (Protocol is { } p ? "/" + ProtocolName(p) : "");

    /// <summary>NCCL's name of a protocol: "LL", "LL128", "Simple".</summary>
    public static string ProtocolName(CollectiveProtocol p) => p switch { CollectiveProtocol.Ll => "LL", CollectiveProtocol.Ll128 => "LL128", _ => "Simple" };

    /// <summary>The algorithm's name in JSON and tables ("ring", "tree", "hierarchical", "nvls", "direct", "pxn", "deep-ep-normal", ...).</summary>
    public static string JsonName(CollectiveAlgorithm a) => JsonObjectReader.Kebab(a.ToString());
}

/// <summary>
/// Topology-aware communication, NCCL's cost model on the hardware description (NVIDIA/nccl src/graph/tuning.cc:
/// time = latency + bytes / algorithm bandwidth, the algorithm with the least time chosen). Symbols: a group of
/// <c>p</c> GPUs over <c>N</c> NVLink domains with at most <c>G</c> in one; <c>B</c> the bytes each GPU holds;
/// <c>nvl</c> the NVLink bandwidth per GPU (on a mesh, <c>min(nvl, (G-1)·peer)</c> for a ring); <c>A</c> the NIC
/// bandwidth the group has in each domain (distinct NICs of its GPUs there x NIC bandwidth, least over domains);
/// <c>L</c>, <c>s</c> a link's first-step and further-step latency.
/// <list type="bullet">
/// <item>Inside one domain (never on a NIC): ring all-reduce <c>L + 2(p-1)/p·B/nvl</c>; with NVLS the switch
/// reduces and each GPU sends and receives B once: <c>L + B/nvl</c>; reduce-scatter / all-gather <c>(p-1)/p·B/nvl</c>;
/// all-to-all <c>(p-1)/p·B/nvl</c> (on a mesh at least <c>B/p</c> over one peer link).</item>
/// <item>Across domains, all-reduce: <b>ring</b> with one ring per channel, channels spread over the rails: every
/// GPU sends 2(p-1)/p·B over NVLink and every domain sends 2(p-1)/p·B over its NICs, so the bus bandwidth is
/// <c>min(nvl, A)</c> (nccl-tests PERFORMANCE.md: busbw = algbw·2(p-1)/p equals the slowest link's bandwidth);
/// <b>tree</b> <c>algbw = 0.5·0.9·min(nvl, A)</c> (tuning.cc: tree busBw x .9, ratio .5) with latency
/// <c>2((G-1)·s_intra + log2 N·s_inter)</c> instead of the ring's <c>(2(p-1) - 2(N-1))·s_intra + 2(N-1)·s_inter</c>;
/// <b>hierarchical</b>: reduce-scatter inside the domain, all-reduce of B/G across domains on each GPU's rail share
/// <c>A/G</c> (all rails at once), all-gather inside; the three stages add up.</item>
/// <item>Reduce-scatter / all-gather across domains: ring (busbw <c>min(nvl, A)</c>) or hierarchical.</item>
/// <item>All-to-all: the intra-domain share <c>k/p·B</c> on NVLink and the rest on the GPU's rail share, both at
/// once (the slower sets the time); PXN and DeepEP normal also carry the cross-rail part over NVLink first; DeepEP
/// low-latency sends directly (same links as NCCL's exchange).</item>
/// <item>A send: NVLink (one peer link on a mesh) inside a domain, one NIC across.</item>
/// </list>
/// Without <see cref="Protocols"/> one latency per step comes from the description (no protocol choice). With it
/// (<c>costModel.ncclProtocols</c>), all-reduce, reduce-scatter and all-gather are priced as NCCL's tuner prices them
/// (<see cref="NcclTuning"/>, src/graph/tuning.cc): for each of NCCL's algorithms (ring; tree across NVLink domains;
/// NVLS inside one) and each protocol (LL, LL128, Simple), time = latency + bytes / algorithm bandwidth with
/// <list type="bullet">
/// <item>latency: ring <c>base + (nsteps - nInter)·intra + nInter·inter</c> (nsteps 2(p-1) for all-reduce, p-1 for
/// reduce-scatter / all-gather; nInter 2(N-1) / N-1; across domains a step inside one costs at least the network post
/// overhead, x3 for Simple; with one GPU per domain the tree's network step is used; Simple across domains x the
/// plateau factor); tree <c>base + 2((G-1)·intra + floor(log2 N)·inter)</c>; NVLS its NVLink step (+ network step
/// across domains);</item>
/// <item>bus bandwidth: the link model's (ring and tree <c>min(nvl, A)</c>, one GPU per domain <c>A</c>) times the
/// algorithm factor (tree .92) and the protocol factor (ring LL .5, LL128 .92; tree LL 1/3.8, LL128 120/128), LL
/// capped at NCCL's llMaxBw; algorithm bandwidth = bus x p / nsteps for the ring, x .5 x the size correction for the
/// tree; NVLS as without protocols.</item>
/// </list>
/// The project's hierarchical candidate is not one of NCCL's algorithms and is not offered with protocols.
/// </summary>
public sealed partial class LinkCommunication(HardwareSpec hardware, AllToAllImplementation allToAll = AllToAllImplementation.Nccl, NcclTuning? protocols = null) : ICommunicationCostModel, ILinkTopology, ILinkOwners, INvlinkPortTopology
{
    /// <summary>NCCL tuning.cc: tree busBw = min(busBw x .9, maxTreeBw); the cap is not modelled.</summary>
    public const double TreeBandwidthFactor = 0.9;

    /// <summary>NCCL tuning.cc: a tree moves each byte up and down; algorithm bandwidth = bus bandwidth x .5.</summary>
    public const double TreeRatio = 0.5;

    public HardwareSpec Hardware { get; } = hardware;
    public AllToAllImplementation AllToAll { get; } = allToAll;

    /// <summary>NCCL's tuner tables when protocols are priced (<c>costModel.ncclProtocols</c>); null: one latency per step from the description.</summary>
    public NcclTuning? Protocols { get; } = protocols;

    /// <summary>
    /// DeepEP's kernel table (<see cref="DeepEpKernels"/>): with <see cref="AllToAll"/> =
    /// <see cref="AllToAllImplementation.DeepEpLowLatency"/> the all-to-all pays the low-latency kernels' fixed cost
    /// (derived from DeepEP's published latencies) instead of the link latency; null (this constructor's default): the
    /// link latency, as before. <c>costModel.alltoall: "deep-ep-low-latency"</c> in a scenario sets
    /// <see cref="DeepEpKernels.Default"/>. (The normal kernels' de-duplication needs no table: <see cref="PriceRouted"/>.)
    /// </summary>
    public DeepEpKernels? DeepEp { get; init; }

    public string Name => (AllToAll == AllToAllImplementation.Nccl ? "topology-links" : $"topology-links({JsonObjectReader.Kebab(AllToAll.ToString())}{(PricesLowLatencyKernels ? ", " + DeepEp!.Name : "")})")
        + (Protocols is { } t ? $"+protocols({t.Name})" : "");

    /// <summary>
    /// Whether each GPU's NVLink port (its send side and its receive side) is a contended link for the scheduler
    /// (<c>costModel.nvlinkContention</c>; <see cref="NvlinkPorts"/>). Default false.
    /// </summary>
    public bool NvlinkContention { get; init; }

    /// <summary>
    /// Datasheet links: point-to-point transfers at the links' full bandwidth, their measured
    /// <see cref="LinkSpec.PointToPointEfficiency"/> ignored (the roofline-ideal model, the founding document's). Default false.
    /// </summary>
    public bool LineRate { get; init; }

    /// <summary>Whether the low-latency kernels' fixed cost is priced (<see cref="DeepEp"/> set and <see cref="AllToAll"/> low-latency).</summary>
    public bool PricesLowLatencyKernels => DeepEp is not null && AllToAll == AllToAllImplementation.DeepEpLowLatency;

    public double Seconds(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus) => Price(pattern, bytesPerGpu, gpus).Seconds;

    /// <summary>The group's shape: domains, GPUs per domain (most), NIC bandwidth per domain (least).</summary>
    public readonly record struct GroupShape(int Gpus, int Domains, int MaxPerDomain, int MinPerDomain, double RailBytesPerSecond);

    public GroupShape Shape(ReadOnlySpan<int> gpus)
    {
        // Small groups: count with sorted copies instead of hash sets.
        var domains = new int[gpus.Length];
        var nics = new long[gpus.Length];
        for (var i = 0; i < gpus.Length; i++)
        {
            domains[i] = Hardware.DomainOf(gpus[i]);
            nics[i] = (long)domains[i] * int.MaxValue + Hardware.NicOf(gpus[i]);
        }
        Array.Sort(domains);
        Array.Sort(nics);
        int nDomains = 0, maxPer = 0, minPer = int.MaxValue;
        for (int i = 0; i < domains.Length;)
        {
            var j = i;
            while (j < domains.Length && domains[j] == domains[i]) j++;
            nDomains++;
            maxPer = Math.Max(maxPer, j - i);
            minPer = Math.Min(minPer, j - i);
            i = j;
        }
        // Distinct NICs per domain; the least-connected domain bounds the group.
        var minNics = int.MaxValue;
        for (int i = 0; i < nics.Length;)
        {
            var d = nics[i] / int.MaxValue;
            var count = 0;
            var j = i;
            while (j < nics.Length && nics[j] / int.MaxValue == d)
            {
                if (j == i || nics[j] != nics[j - 1]) count++;
                j++;
            }
            minNics = Math.Min(minNics, count);
            i = j;
        }
        return new GroupShape(gpus.Length, nDomains, maxPer, minPer == int.MaxValue ? 0 : minPer, minNics * Hardware.InterNode.BytesPerSecond);
    }

    /// <summary>Prices one collective and says how: the chosen algorithm, its levels and every candidate.</summary>
    public CollectivePrice Price(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus)
    {
        if (bytesPerGpu <= 0 || gpus.Length < 2 || pattern == CollectivePattern.None) return CollectivePrice.Nothing(pattern, bytesPerGpu, gpus.Length);
        var shape = Shape(gpus);
        if (Protocols is { } tuning && pattern is CollectivePattern.AllReduce or CollectivePattern.ReduceScatter or CollectivePattern.AllGather)
            return PriceProtocols(tuning, pattern, bytesPerGpu, shape);
        var intra = Hardware.IntraNode;
        var inter = Hardware.InterNode;
        double p = shape.Gpus, n = shape.Domains, g = shape.MaxPerDomain, B = bytesPerGpu, A = shape.RailBytesPerSecond;
        var nvlRing = intra.RingBytesPerSecond(shape.MaxPerDomain);
        var candidates = new List<(CollectiveAlgorithm, double)>(3);
        double latency = 0, intraSeconds = 0, interSeconds = 0;
        CollectiveAlgorithm chosen;

        if (shape.Domains == 1)
        {
            switch (pattern)
            {
                case CollectivePattern.AllReduce:
                {
                    var lat = intra.LatencySeconds + (2 * (p - 1) - 1) * intra.StepLatencySeconds;
                    candidates.Add((CollectiveAlgorithm.Ring, lat + 2 * (p - 1) / p * B / nvlRing));
                    if (Hardware.Nvls && intra.PeerBytesPerSecond is null)
                        candidates.Add((CollectiveAlgorithm.Nvls, intra.LatencySeconds + B / (Hardware.NvlsEfficiency * intra.BytesPerSecond)));
                    break;
                }
                case CollectivePattern.ReduceScatter or CollectivePattern.AllGather:
                    candidates.Add((CollectiveAlgorithm.Ring, intra.LatencySeconds + (p - 2) * intra.StepLatencySeconds + (p - 1) / p * B / nvlRing));
                    break;
                case CollectivePattern.AllToAll:
                {
                    // Every implementation stays on NVLink inside one domain (DeepEP's low-latency kernels too, with NVLink
                    // allowed); NCCL's exchange is its point-to-point sends, at the link's point-to-point efficiency.
                    var e = AllToAllEfficiency(intra);
                    var t = (p - 1) / p * B / (e * intra.BytesPerSecond);
                    if (intra.PeerBytesPerSecond is { } peer) t = Math.Max(t, B / p / (e * peer));
                    if (PricesLowLatencyKernels)
                    {
                        var ll = DeepEp!.LowLatencyKernelSeconds;
                        return new CollectivePrice(pattern, CollectiveAlgorithm.DeepEpLowLatency, B, shape.Gpus, 1, shape.MaxPerDomain, ll + t, ll, t, 0, A, [(CollectiveAlgorithm.DeepEpLowLatency, ll + t)]);
                    }
                    candidates.Add((CollectiveAlgorithm.Direct, intra.LatencySeconds + t));
                    break;
                }
                default:
                    candidates.Add((CollectiveAlgorithm.Direct, intra.LatencySeconds + B / (PointToPoint(intra) * intra.PairBytesPerSecond)));
                    break;
            }
            (chosen, var best) = Fastest(candidates);
            latency = intra.LatencySeconds;
            intraSeconds = best - latency;
            return new CollectivePrice(pattern, chosen, B, shape.Gpus, 1, shape.MaxPerDomain, best, latency, intraSeconds, interSeconds, A, candidates);
        }

        // Across NVLink domains.
        var log2N = Math.Ceiling(Math.Log2(n));
        var railShare = A / g;   // each GPU's share of its domain's rails when all of the group's GPUs there send at once
        // The bottleneck of a ring through every GPU: NVLink per GPU (only when a domain holds two or more) and the domain's rails.
        var ringBus = shape.MaxPerDomain > 1 ? Math.Min(nvlRing, A) : A;
        switch (pattern)
        {
            case CollectivePattern.AllReduce:
            {
                var ringLat = inter.LatencySeconds + 2 * (p - n) * intra.StepLatencySeconds + (2 * (n - 1) - 1) * inter.StepLatencySeconds;
                candidates.Add((CollectiveAlgorithm.Ring, ringLat + 2 * (p - 1) / p * B / ringBus));
                var treeLat = inter.LatencySeconds + 2 * (g - 1) * intra.StepLatencySeconds + (2 * log2N - 1) * inter.StepLatencySeconds;
                candidates.Add((CollectiveAlgorithm.Tree, treeLat + B / (TreeRatio * TreeBandwidthFactor * ringBus)));
                if (shape.MaxPerDomain > 1)
                {
                    var (rs, _) = IntraReduceScatter(B, g, nvlRing);
                    var across = inter.LatencySeconds + (2 * (n - 1) - 1) * inter.StepLatencySeconds + 2 * (n - 1) / n * (B / g) / railShare;
                    candidates.Add((CollectiveAlgorithm.Hierarchical, 2 * rs + across));
                }
                break;
            }
            case CollectivePattern.ReduceScatter or CollectivePattern.AllGather:
            {
                var ringLat = inter.LatencySeconds + (p - n) * intra.StepLatencySeconds + (n - 2) * inter.StepLatencySeconds;
                candidates.Add((CollectiveAlgorithm.Ring, ringLat + (p - 1) / p * B / ringBus));
                if (shape.MaxPerDomain > 1)
                {
                    var (rs, _) = IntraReduceScatter(B, g, nvlRing);
                    var across = inter.LatencySeconds + (n - 2) * inter.StepLatencySeconds + (n - 1) / n * (B / g) / railShare;
                    candidates.Add((CollectiveAlgorithm.Hierarchical, rs + across));
                }
                break;
            }
            case CollectivePattern.AllToAll:
            {
                // The GPU with the fewest peers in its own domain sends the most over its rail.
                var k = shape.MinPerDomain - 1.0;
                var intraBytes = k / p * B;
                var interBytes = (p - 1 - k) / p * B;
                // NCCL's exchange (PXN too) is made of point-to-point sends: both links at their point-to-point efficiency;
                // DeepEP's kernels at the links' bandwidth.
                double eIntra = AllToAllEfficiency(intra), eInter = AllToAllEfficiency(inter);
                var nvlTime = intraBytes / (eIntra * intra.BytesPerSecond);
                if (intra.PeerBytesPerSecond is { } peer && k > 0) nvlTime = Math.Max(nvlTime, B / p / (eIntra * peer));
                var nicTime = interBytes / (eInter * railShare);
                switch (AllToAll)
                {
                    case AllToAllImplementation.Nccl:
                        candidates.Add((CollectiveAlgorithm.Direct, inter.LatencySeconds + Math.Max(nvlTime, nicTime)));
                        break;
                    case AllToAllImplementation.Pxn or AllToAllImplementation.DeepEpNormal:
                    {
                        // Cross-rail traffic ((G-1)/G of what leaves the domain) hops over NVLink first.
                        var forwarded = (intraBytes + interBytes * (g - 1) / g) / (eIntra * intra.BytesPerSecond);
                        candidates.Add((AllToAll == AllToAllImplementation.Pxn ? CollectiveAlgorithm.Pxn : CollectiveAlgorithm.DeepEpNormal,
                            inter.LatencySeconds + Math.Max(Math.Max(nvlTime, forwarded), nicTime)));
                        break;
                    }
                    default:
                        // Low-latency kernels: each GPU sends straight to every destination (RDMA across, NVLink inside),
                        // the same bytes on the same links as NCCL's direct exchange; their lower launch latency and
                        // SM-free overlap are not modelled. With DeepEP's kernel table the fixed cost is the kernels' measured one.
                        candidates.Add((CollectiveAlgorithm.DeepEpLowLatency, (PricesLowLatencyKernels ? DeepEp!.LowLatencyKernelSeconds : inter.LatencySeconds) + Math.Max(nvlTime, nicTime)));
                        break;
                }
                break;
            }
            default:
                // A send between domains: the sender's NIC (one rail), at its point-to-point efficiency.
                candidates.Add((CollectiveAlgorithm.Direct, inter.LatencySeconds + B / (PointToPoint(inter) * inter.BytesPerSecond)));
                break;
        }
        (chosen, var seconds) = Fastest(candidates);
        (latency, intraSeconds, interSeconds) = Levels(pattern, chosen, shape, B, nvlRing, ringBus, railShare);
        return new CollectivePrice(pattern, chosen, B, shape.Gpus, shape.Domains, shape.MaxPerDomain, seconds, latency, intraSeconds, interSeconds, A, candidates);
    }

    /// <summary>
    /// All-reduce, reduce-scatter or all-gather priced per (algorithm, protocol) as NCCL's tuner does (see the class
    /// summary); the fastest pair is chosen, every pair listed.
    /// </summary>
    private CollectivePrice PriceProtocols(NcclTuning t, CollectivePattern pattern, double bytes, GroupShape shape)
    {
        var intra = Hardware.IntraNode;
        double p = shape.Gpus, n = shape.Domains, g = shape.MaxPerDomain, B = bytes;
        var nvlRing = intra.RingBytesPerSecond(shape.MaxPerDomain);
        var allReduce = pattern == CollectivePattern.AllReduce;
        // The bus bandwidth of the description's links: NVLink inside one domain; across domains the slower of NVLink
        // and the domain's rails (only the rails when every domain holds one GPU of the group).
        var bus = shape.Domains == 1 ? nvlRing : shape.MaxPerDomain > 1 ? Math.Min(nvlRing, shape.RailBytesPerSecond) : shape.RailBytesPerSecond;
        var nicBound = shape.Domains > 1 && (shape.MaxPerDomain == 1 || shape.RailBytesPerSecond < nvlRing);
        double nsteps = allReduce ? 2 * (p - 1) : p - 1;
        double nInter = n == 1 ? 0 : allReduce ? 2 * (n - 1) : n - 1;
        var llMax = t.LlMaxBusBytesPerSecond(Hardware.Gpu.Architecture, shape.Domains);
        var all = new List<(CollectiveAlgorithm Algorithm, CollectiveProtocol Protocol, double Seconds, double Latency)>(7);
        foreach (var proto in Enum.GetValues<CollectiveProtocol>())
        {
            var ring = t.Ring;
            var intraLat = ring.NvlinkStepLatencySeconds[proto];
            if (n > 1) intraLat = Math.Max(intraLat, t.NetOverheadSeconds * (proto == CollectiveProtocol.Simple ? t.SimpleNetOverheadFactor : 1));
            // One GPU per domain: NCCL takes the tree's network latency for the ring too ("latencies fully exposed").
            var interLat = shape.MaxPerDomain == 1 ? t.Tree.NetworkStepLatencySeconds[proto] : ring.NetworkStepLatencySeconds[proto];
            var lat = ring.BaseLatencySeconds[proto] + (nsteps - nInter) * intraLat + nInter * interLat;
            if (allReduce && n > 1 && proto == CollectiveProtocol.Simple) lat *= t.RingPlateauLatencyFactor;
            var ringBus = bus * ring.AlgorithmBandwidthFactor * ring.ProtocolBandwidthFactor[proto];
            if (proto == CollectiveProtocol.Ll) ringBus = Math.Min(ringBus, llMax);
            all.Add((CollectiveAlgorithm.Ring, proto, lat + B / (ringBus * p / nsteps), lat));
            if (allReduce && n > 1)
            {
                var tree = t.Tree;
                var treeLat = tree.BaseLatencySeconds[proto]
                    + 2 * ((g - 1) * tree.NvlinkStepLatencySeconds[proto] + Math.Floor(Math.Log2(n)) * tree.NetworkStepLatencySeconds[proto]);
                var treeBus = bus * tree.AlgorithmBandwidthFactor * tree.ProtocolBandwidthFactor[proto];
                if (proto == CollectiveProtocol.Ll) treeBus = Math.Min(treeBus, llMax);
                all.Add((CollectiveAlgorithm.Tree, proto, treeLat + B / (TreeRatio * treeBus * tree.Correction(proto, B)), treeLat));
            }
        }
        // NVLS inside one NVSwitch domain: Simple only, as in NCCL; the switch reduces, each GPU sends and receives B once.
        if (allReduce && shape.Domains == 1 && Hardware.Nvls && intra.PeerBytesPerSecond is null)
            all.Add((CollectiveAlgorithm.Nvls, CollectiveProtocol.Simple, t.NvlsNvlinkStepLatencySeconds + B / (Hardware.NvlsEfficiency * intra.BytesPerSecond), t.NvlsNvlinkStepLatencySeconds));
        var best = all.MinBy(c => c.Seconds);
        var perAlgorithm = all.GroupBy(c => c.Algorithm).Select(grp => (grp.Key, grp.Min(c => c.Seconds))).ToArray();
        var bandwidthTerm = best.Seconds - best.Latency;
        var onNic = best.Algorithm != CollectiveAlgorithm.Nvls && nicBound;
        return new CollectivePrice(pattern, best.Algorithm, B, shape.Gpus, shape.Domains, shape.MaxPerDomain, best.Seconds, best.Latency,
            onNic ? 0 : bandwidthTerm, onNic ? bandwidthTerm : 0, shape.RailBytesPerSecond, perAlgorithm)
        {
            Protocol = best.Protocol,
            ProtocolCandidates = all.Select(c => (c.Algorithm, c.Protocol, c.Seconds)).ToArray(),
        };
    }

    /// <summary>A reduce-scatter (or all-gather) over G GPUs of one domain: its time with latency, and the latency.</summary>
    private (double Seconds, double Latency) IntraReduceScatter(double bytes, double g, double nvlRing)
    {
        var intra = Hardware.IntraNode;
        var lat = intra.LatencySeconds + (g - 2) * intra.StepLatencySeconds;
        return (lat + (g - 1) / g * bytes / nvlRing, lat);
    }

    /// <summary>The bandwidth terms of the chosen algorithm by level (for the breakdown; latency reported apart).</summary>
    private (double Latency, double Intra, double Inter) Levels(CollectivePattern pattern, CollectiveAlgorithm a, GroupShape shape, double B, double nvlRing, double ringBus, double railShare)
    {
        double p = shape.Gpus, n = shape.Domains, g = shape.MaxPerDomain;
        var lat = Hardware.InterNode.LatencySeconds;
        var factor = AlgorithmFactor(pattern, shape.Gpus);
        return a switch
        {
            // Ring and tree run both levels at once: the bandwidth term belongs to whichever link is the bottleneck.
            CollectiveAlgorithm.Ring => ringBus < nvlRing || shape.MaxPerDomain == 1 ? (lat, 0, factor * B / ringBus) : (lat, factor * B / ringBus, 0),
            CollectiveAlgorithm.Tree => ringBus < nvlRing || shape.MaxPerDomain == 1 ? (lat, 0, B / (TreeRatio * TreeBandwidthFactor * ringBus)) : (lat, B / (TreeRatio * TreeBandwidthFactor * ringBus), 0),
            CollectiveAlgorithm.Hierarchical => (lat,
                (pattern == CollectivePattern.AllReduce ? 2 : 1) * (g - 1) / g * B / nvlRing,
                (pattern == CollectivePattern.AllReduce ? 2 : 1) * (n - 1) / n * (B / g) / railShare),
            // All-to-all: the intra-domain share on NVLink and the rest on the rail share, at once (as priced above; PXN's
            // and DeepEP's forwarded bytes not counted here). A send: one NIC.
            _ when pattern == CollectivePattern.AllToAll => (lat,
                (shape.MinPerDomain - 1.0) / p * B / (AllToAllEfficiency(Hardware.IntraNode) * Hardware.IntraNode.BytesPerSecond),
                (p - shape.MinPerDomain) / p * B / (AllToAllEfficiency(Hardware.InterNode) * railShare)),
            _ when pattern == CollectivePattern.SendRecv => (lat, 0, B / (PointToPoint(Hardware.InterNode) * Hardware.InterNode.BytesPerSecond)),
            _ => (lat, 0, (shape.Gpus - 1.0) / p * B / railShare),
        };
    }

    /// <summary>The fraction of a link's bandwidth NCCL's point-to-point sends get: its <see cref="LinkSpec.PointToPointEfficiency"/>, or 1 at <see cref="LineRate"/>.</summary>
    private double PointToPoint(LinkSpec link) => LineRate ? 1 : link.PointToPointEfficiency;

    /// <summary>The link's point-to-point fraction where the all-to-all is NCCL's (or PXN's) sends, else 1 (DeepEP's kernels).</summary>
    private double AllToAllEfficiency(LinkSpec link) => AllToAll is AllToAllImplementation.Nccl or AllToAllImplementation.Pxn ? PointToPoint(link) : 1;

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

    /// <summary>Whether the group spans NVLink domains (so some bytes cross NICs).</summary>
    public bool SpansNodes(ReadOnlySpan<int> gpus)
    {
        var domain = Hardware.DomainOf(gpus[0]);
        foreach (var g in gpus) if (Hardware.DomainOf(g) != domain) return true;
        return false;
    }

    /// <summary>
    /// The links a collective occupies, as resource ids for the scheduler's contention: each NIC's send and receive
    /// side (<c>2·nic</c>, <c>2·nic + 1</c>) of its members when the group spans NVLink domains; a send between domains
    /// occupies the sender's NIC send side and the receiver's NIC receive side. NVLink ports are not contended (a
    /// GPU's collectives already queue on its communication stream, and a send inside a domain is small beside the
    /// port's bandwidth): a stated simplification.
    /// </summary>
    public int LinkCount => 2 * NicTotal;

    /// <summary>The first candidate with the fewest seconds (as <c>MinBy</c> picks it), without a delegate or a framework generic over the tuple.</summary>
    private static (CollectiveAlgorithm, double) Fastest(List<(CollectiveAlgorithm, double)> candidates)
    {
        var best = candidates[0];
        for (var i = 1; i < candidates.Count; i++)
            if (candidates[i].Item2 < best.Item2) best = candidates[i];
        return best;
    }

    private int NicTotal => (Hardware.GpuCount + Hardware.GpusPerNode - 1) / Hardware.GpusPerNode * Hardware.NicsPerNode;

    public bool ContendsNvlinkPorts => NvlinkContention && Hardware.IntraNode.PeerBytesPerSecond is null;

    /// <summary>
    /// The NVLink ports an operation occupies when <see cref="NvlinkContention"/> is on: a send inside one NVLink domain
    /// the sender's send side and the receiver's receive side (a send across domains goes over NICs, <see cref="Links"/>);
    /// a collective both sides of every member that shares its domain with another member (ring, tree, NVLS, the
    /// hierarchical stages and the all-to-all's NVLink share all run through them; a member alone in its domain only
    /// uses its NIC). Each operation is taken to use the whole port while it runs (NCCL's collectives and a send at the
    /// pair bandwidth are priced at the port's bandwidth), so two of them at once share it, the link's work conserved.
    /// Meshes of peer links (MI300X, H100 NVL) have a link per pair, not one port: not contended there (a stated
    /// simplification).
    /// </summary>
    public void NvlinkPorts(CollectivePattern pattern, ReadOnlySpan<int> gpus, List<int> egress, List<int> ingress)
    {
        egress.Clear();
        ingress.Clear();
        if (!ContendsNvlinkPorts || gpus.Length < 2 || pattern == CollectivePattern.None) return;
        if (pattern == CollectivePattern.SendRecv)
        {
            int a = gpus[0], b = gpus[^1];
            if (a != b && Hardware.DomainOf(a) == Hardware.DomainOf(b)) { egress.Add(a); ingress.Add(b); }
            return;
        }
        foreach (var g in gpus)
        {
            var d = Hardware.DomainOf(g);
            foreach (var o in gpus)
                if (o != g && Hardware.DomainOf(o) == d) { egress.Add(g); ingress.Add(g); break; }
        }
    }

    public void Links(CollectivePattern pattern, ReadOnlySpan<int> gpus, List<int> into)
    {
        into.Clear();
        if (gpus.Length < 2 || pattern == CollectivePattern.None) return;
        if (pattern == CollectivePattern.SendRecv)
        {
            int a = gpus[0], b = gpus[^1];
            if (Hardware.DomainOf(a) != Hardware.DomainOf(b)) { into.Add(2 * Hardware.NicOf(a)); into.Add(2 * Hardware.NicOf(b) + 1); }
            return;
        }
        if (!SpansNodes(gpus)) return;
        // Each NIC once, in first-member order: a scan of what is listed for small groups, a set past 64 members.
        var seen = gpus.Length > 64 ? new HashSet<int>() : null;
        foreach (var g in gpus)
        {
            var send = 2 * Hardware.NicOf(g);
            if (seen is not null ? !seen.Add(send) : into.Contains(send)) continue;
            into.Add(send);
            into.Add(send + 1);
        }
    }

    /// <summary>
    /// With one NIC per GPU (<see cref="HardwareSpec.NicsPerNode"/> = <see cref="HardwareSpec.GpusPerNode"/>) NIC n
    /// serves GPU n alone (<see cref="HardwareSpec.NicOf"/>(g) = g), so both its links carry only that GPU's traffic;
    /// with fewer NICs than GPUs a NIC is shared (-1).
    /// </summary>
    public int OwnerOf(int link) => Hardware.NicsPerNode == Hardware.GpusPerNode && link >= 0 && link / 2 < Hardware.GpuCount ? link / 2 : -1;

    /// <summary>The same side (egress 2n, ingress 2n + 1) of <paramref name="gpu"/>'s NIC.</summary>
    public int SameLinkOf(int link, int gpu) => 2 * Hardware.NicOf(gpu) + (link & 1);
}

/// <summary>
/// A link topology that can say which links carry a single GPU's traffic only (every operation occupying such a link
/// has that GPU among its members), and name the same link of another GPU: what exact rank folding needs to fold the
/// links with the ranks (<see cref="RankFoldPricing"/>).
/// </summary>
public interface ILinkOwners
{
    /// <summary>The one GPU whose traffic occupies <paramref name="link"/>; -1 when several GPUs share it.</summary>
    int OwnerOf(int link);

    /// <summary>The link of <paramref name="gpu"/> that plays the role <paramref name="link"/> plays for its owner.</summary>
    int SameLinkOf(int link, int gpu);
}

/// <summary>
/// A communication model whose GPUs' NVLink ports contend (<see cref="LinkCommunication.NvlinkContention"/>): which
/// GPUs' port send sides and receive sides an operation occupies. <see cref="CostModel.Footprints"/> adds them as links
/// after <see cref="ILinkTopology.LinkCount"/>, one pair per GPU, each GPU of a folded DAG mapped to its representative
/// (every member of a symmetry class uses its port exactly as the representative does, so the folded schedule sees the
/// representative's port timeline, which is every member's).
/// </summary>
public interface INvlinkPortTopology
{
    /// <summary>Whether ports contend at all.</summary>
    bool ContendsNvlinkPorts { get; }

    /// <summary>Writes the GPUs whose port send side (<paramref name="egress"/>) and receive side (<paramref name="ingress"/>) the operation occupies.</summary>
    void NvlinkPorts(CollectivePattern pattern, ReadOnlySpan<int> gpus, List<int> egress, List<int> ingress);
}

/// <summary>A communication model that can say which links a collective occupies (for contention in the scheduler).</summary>
public interface ILinkTopology
{
    /// <summary>How many link resources exist (ids are 0 to LinkCount - 1).</summary>
    int LinkCount { get; }

    /// <summary>Writes the resource ids the collective occupies into <paramref name="into"/>.</summary>
    void Links(CollectivePattern pattern, ReadOnlySpan<int> gpus, List<int> into);
}

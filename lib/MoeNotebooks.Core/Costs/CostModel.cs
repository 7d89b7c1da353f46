using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>Prices compute: the founding document's <c>Get_Time(m, k, n)</c> and memory-bound elementwise work.</summary>
public interface IComputeCostModel
{
    string Name { get; }

    /// <summary>Seconds for C[m x n] = A[m x k] . B[k x n] (times the shape's batch).</summary>
    double MatmulSeconds(MatmulShape shape, string dtype, int elementBytes);

    /// <summary>Seconds to stream <paramref name="bytes"/> through HBM.</summary>
    double ElementwiseSeconds(double bytes);
}

/// <summary>
/// A compute model that can price one expert's GEMM as a member of a grouped GEMM (all of a rank's experts in one
/// kernel, as Megatron-Core's <c>--moe-grouped-gemm</c> runs them): each member keeps its own tiles (small m per
/// expert pads its tiles), the waves are filled across the group, and the group pays one launch.
/// </summary>
public interface IGroupedGemmCostModel
{
    /// <summary>Seconds of one member of a grouped GEMM of <paramref name="groupSize"/> members.</summary>
    double GroupedMatmulSeconds(MatmulShape member, string dtype, int elementBytes, int groupSize);
}

/// <summary>
/// A compute model that can price one head's attention product as its share of a fused attention kernel over all of a
/// rank's heads (<see cref="TileWaveCompute.FusedAttentionSeconds"/>).
/// </summary>
public interface IFusedAttentionCostModel
{
    /// <summary>Seconds of one head's product inside a fused kernel of <paramref name="heads"/> heads.</summary>
    double FusedAttentionSeconds(MatmulShape head, string dtype, int elementBytes, int heads);
}

/// <summary>Prices communication over a group of GPUs.</summary>
public interface ICommunicationCostModel
{
    string Name { get; }

    /// <summary>Seconds for one collective (or send) in which each of <paramref name="gpus"/> holds <paramref name="bytesPerGpu"/>.</summary>
    double Seconds(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus);
}

/// <summary>
/// A swappable pair of compute and communication models: prices every operation of a DAG.
/// The DAG carries shapes and bytes; only this type turns them into seconds.
/// </summary>
public sealed class CostModel(string name, IComputeCostModel compute, ICommunicationCostModel communication)
{
    public string Name { get; } = name;
    public IComputeCostModel Compute { get; } = compute;
    public ICommunicationCostModel Communication { get; } = communication;

    /// <summary>Roofline-ideal compute with datasheet links at line rate (the founding document's implicit model).</summary>
    public static CostModel RooflineIdeal(HardwareSpec hardware) =>
        new("roofline-ideal", new RooflineCompute(hardware.Gpu, EfficiencyTable.Ideal), new LinkCommunication(hardware) { LineRate = true });

    /// <summary>Roofline with size-dependent efficiencies read from data (an <see cref="EfficiencyTable"/>).</summary>
    public static CostModel RooflineEfficiency(HardwareSpec hardware, EfficiencyTable table) =>
        new($"roofline-efficiency({table.Name})", new RooflineCompute(hardware.Gpu, table), new LinkCommunication(hardware));

    /// <summary>The founding document's Get_Time(m, k, n) for a dtype (bf16 by default).</summary>
    public double GetTime(long m, long k, long n, string dtype = "bf16") =>
        Compute.MatmulSeconds(new MatmulShape(m, k, n), dtype, ModelSpec.DtypeBytes[dtype]);

    /// <summary>Seconds for one operation of a DAG (a repeated product, <see cref="OperatorDag.Repeat"/>: that many products back to back).</summary>
    public double Seconds(OperatorDag dag, int op) => SecondsOfOne(dag, op) * dag.Repeat(op);   // x 1 is exact

    private double SecondsOfOne(OperatorDag dag, int op)
    {
        var kind = dag.Kind(op);
        if (GroupedExpertGemms && dag.ExpertsPerRank > 0 && kind is OpKind.ExpertUp or OpKind.ExpertDown && Compute is IGroupedGemmCostModel grouped)
            return grouped.GroupedMatmulSeconds(dag.Shape(op), dag.MatmulDtype(op), (int)Math.Ceiling(dag.MatmulOperandBytes(op)), dag.ExpertsPerRank);
        if (FusedAttentionHeads && dag.AttentionHeadsPerRank > 0 && kind is OpKind.AttentionScore or OpKind.AttentionValue && Compute is IFusedAttentionCostModel fused)
            return fused.FusedAttentionSeconds(dag.Shape(op), dag.MatmulDtype(op), (int)Math.Ceiling(dag.MatmulOperandBytes(op)), dag.AttentionHeadsPerRank);
        return kind.Category() switch
        {
            // Each matmul at its own datatype's peak: a precision recipe's GEMMs at fp8/fp4, the rest at the DAG's dtype.
            // Cost models take whole bytes per element, so FP4 operands (0.5 byte) are priced as 1.
            // A fused kernel (DagBuilder.AddFusedKernel): the slower of its products and the bytes it streams.
            OpCategory.Matmul or OpCategory.Attention => dag.KernelBytes(op) is > 0 and var kernelBytes
                ? Math.Max(Compute.MatmulSeconds(dag.Shape(op), dag.MatmulDtype(op), (int)Math.Ceiling(dag.MatmulOperandBytes(op))), Compute.ElementwiseSeconds(kernelBytes))
                : Compute.MatmulSeconds(dag.Shape(op), dag.MatmulDtype(op), (int)Math.Ceiling(dag.MatmulOperandBytes(op))),
            OpCategory.Elementwise => Compute.ElementwiseSeconds(dag.BytesEach(op)),   // one pass; Seconds counts the repeats
            _ => CommunicationSeconds(dag, kind.Pattern(), dag.Bytes(op), dag.Participants(op)),
        };
    }

    /// <summary>
    /// Seconds of a collective of <paramref name="pattern"/> over <paramref name="gpus"/> in <paramref name="dag"/>: an
    /// all-to-all (only EP dispatch and combine have that pattern) goes to <see cref="IRoutedAllToAllCostModel"/> with the
    /// DAG's fan-out as <see cref="Seconds(OperatorDag, int)"/> prices it (DeepEP de-duplicates); everything else to
    /// <see cref="ICommunicationCostModel.Seconds"/>. The fold checks price images through here, so they check the price used.
    /// </summary>
    internal double CommunicationSeconds(OperatorDag dag, CollectivePattern pattern, double bytes, ReadOnlySpan<int> gpus) =>
        pattern == CollectivePattern.AllToAll && dag.HasRoutedAllToAll && Communication is IRoutedAllToAllCostModel routed
            ? routed.RoutedAllToAllSeconds(bytes, gpus, dag.RouterTopK, dag.ExpertsPerRank)
            : Communication.Seconds(pattern, bytes, gpus);

    /// <summary>
    /// Durations of every operation, indexed by operation id. Each price class of the DAG (identical shape, bytes or
    /// collective over the same group, see <see cref="OperatorDag.PriceClassOf"/>) is priced once, with the same call
    /// <see cref="Seconds(OperatorDag, int)"/> would make, so the durations are those of pricing every operation:
    /// cost models are pure functions of their arguments.
    /// </summary>
    public double[] Price(OperatorDag dag)
    {
        var durations = new double[dag.Count];
        Price(dag, durations);
        return durations;
    }

    /// <summary>
    /// Whether this cost model keeps a folded DAG's symmetry (always true for a DAG built whole): every collective or
    /// send within one representative's class images (e.g. replica 0's TP all-reduce) must cost exactly what its image
    /// on every other member of the classes costs (replica k's), and every collective spanning several members of a
    /// class must contain the whole class. Compute is priced by shape alone, so only communication is checked: a
    /// topology-aware model prices replica k's groups differently when they straddle node boundaries that replica 0's
    /// do not (e.g. pipeline stages placed innermost with a node size that does not divide the replica), and then the
    /// replicas are not identical and the DAG must be built whole.
    /// </summary>
    public bool PricesFoldSymmetrically(OperatorDag dag)
    {
        if (dag._classMembers is not { } classes) return true;
        if (dag.Symmetries is not null) return RankFoldPricing.Keeps(this, dag);
        var table = dag._classTable;
        var image = Array.Empty<int>();
        for (var c = 0; c < table.Length; c++)
        {
            var pc = table[c];
            if (pc.Kind != PriceKind.Communication) continue;
            var members = dag._groupMembers[pc.Group];
            var streams = dag._groupStreams[pc.Group];
            if (streams.Length != members.Length)
            {
                // Spans several members of a class: the symmetries map it onto itself only if it holds whole classes.
                if (members.Length != streams.Length * dag.FoldFactor) return false;
                continue;
            }
            var baseline = CommunicationSeconds(dag, pc.Pattern, pc.Bytes, members);
            if (image.Length != members.Length) image = new int[members.Length];
            for (var k = 1; k < dag.FoldFactor; k++)
            {
                for (var j = 0; j < members.Length; j++) image[j] = classes[members[j]]![k];
                Array.Sort(image);
                // Bitwise: the scheduler's equality across replicas is exact, so the prices must be too.
                if (CommunicationSeconds(dag, pc.Pattern, pc.Bytes, image) != baseline) return false;
            }
        }
        return true;
    }

    /// <summary>Writes the durations into <paramref name="durations"/> (length <see cref="OperatorDag.Count"/>), for callers that reuse a buffer.</summary>
    public void Price(OperatorDag dag, Span<double> durations)
    {
        if (durations.Length != dag.Count)
            throw new ArgumentException($"durations has {durations.Length} entries but the DAG has {dag.Count} operations", nameof(durations));
        if (dag.IsFolded && !PricesFoldSymmetrically(dag))
            throw new InvalidOperationException($"cost model {Name} prices the replicas of the folded DAG '{dag.Description}' differently (their groups sit differently on the nodes): build it whole (DagFolding.None)");
        PriceFoldChecked(dag, durations);
    }

    /// <summary>
    /// <see cref="Price(OperatorDag, Span{double})"/> for a DAG the caller has already checked with
    /// <see cref="PricesFoldSymmetrically"/> for this cost model (<see cref="Scenario.BuildDagFor(CostModel, Derivations.DagFolding)"/>
    /// chose it so): the check prices every communication class under every symmetry, as much again as pricing the DAG.
    /// </summary>
    internal void PriceFoldChecked(OperatorDag dag, Span<double> durations)
    {
        System.Diagnostics.Debug.Assert(durations.Length == dag.Count);
        var classes = dag._classes;
        var classCount = dag.PriceClassCount;
        // Grouped expert GEMMs are priced apart from other GEMMs of the same shape (classes are by shape): offset by the class count.
        var grouped = GroupedExpertGemms && dag.ExpertsPerRank > 0 && Compute is IGroupedGemmCostModel;
        // Fused attention heads likewise (offset by twice the class count).
        var fusedAttention = FusedAttentionHeads && dag.AttentionHeadsPerRank > 0 && Compute is IFusedAttentionCostModel;
        var priced = new double[fusedAttention ? 3 * classCount : grouped ? 2 * classCount : classCount];
        var done = new bool[priced.Length];
        for (var op = 0; op < durations.Length; op++)
        {
            var c = classes[op];
            if (grouped && dag._kinds[op] is OpKind.ExpertUp or OpKind.ExpertDown) c += classCount;
            else if (fusedAttention && dag._kinds[op] is OpKind.AttentionScore or OpKind.AttentionValue) c += 2 * classCount;
            if (!done[c])
            {
                var t = Seconds(dag, op);
                if (!double.IsFinite(t) || t < 0)
                    throw new InvalidOperationException($"cost model {Name} priced {dag.Name(op)} at {t} s; a duration must be finite and >= 0");
                priced[c] = t;
                done[c] = true;
            }
            durations[op] = priced[c];
        }
    }

    /// <summary>
    /// The links every communication operation occupies, for contention in the scheduler; null when the
    /// communication model does not describe its links (then operations never contend).
    /// </summary>
    public Analysis.LinkFootprints? Footprints(OperatorDag dag)
    {
        if (Communication is not ILinkTopology topology) return null;
        // Per group three slots: its collectives, a send from its first member, a send from its last member. A send's
        // group lists its two GPUs in ascending order whatever the direction, so the direction comes from the sending
        // GPU (the operation's): a send occupies the sender's NIC egress and the receiver's ingress (full duplex), so an
        // activation going s -> s + 1 and a gradient coming back s + 1 -> s do not contend.
        var byGroup = new int[3 * dag.GroupCount][];
        var scratch = new List<int>();
        // NVLink ports (opt-in) after the topology's links, a send side and a receive side per GPU; in a folded DAG each
        // GPU's port is its representative's (see INvlinkPortTopology).
        var ports = Communication is INvlinkPortTopology { ContendsNvlinkPorts: true } np ? np : null;
        var portBase = topology.LinkCount;
        List<int> egress = [], ingress = [];
        var seen = new HashSet<int>();
        var empty = Array.Empty<int>();
        for (var i = 0; i < byGroup.Length; i++) byGroup[i] = empty;
        var done = new bool[byGroup.Length];
        var groups = dag._groups;
        // A rank-folded DAG whose ranks share links with their images: each link folded onto its owner's representative's.
        var owners = dag.Symmetries is not null && RankFoldPricing.LinkFoldOf(this, dag, topology) == RankFoldPricing.LinkFold.Projected
            ? (ILinkOwners)Communication : null;
        for (var op = 0; op < dag.Count; op++)
        {
            var g = groups[op];
            if (g < 0) continue;
            var slot = Analysis.LinkFootprints.Slot(dag, op, g);
            if (done[slot]) continue;
            done[slot] = true;
            var members = dag.GroupMembers(g);
            var pattern = slot == 3 * g ? dag.Kind(op).Pattern() : CollectivePattern.SendRecv;
            var ordered = members;
            if (slot == 3 * g + 2)
            {
                var reversed = members.ToArray();
                Array.Reverse(reversed);
                ordered = reversed;
            }
            topology.Links(pattern, ordered, scratch);
            if (owners is not null)
            {
                var projected = scratch.Select(l => owners.SameLinkOf(l, dag.Representative(owners.OwnerOf(l)))).Distinct().ToArray();
                scratch.Clear();
                scratch.AddRange(projected);
            }
            if (ports is not null)
            {
                // Ports after the topology's links (never projected as NIC links are: they map to representatives here).
                ports.NvlinkPorts(pattern, ordered, egress, ingress);
                seen.Clear();
                foreach (var e in egress) if (seen.Add(portBase + 2 * dag.Representative(e))) scratch.Add(portBase + 2 * dag.Representative(e));
                foreach (var i in ingress) if (seen.Add(portBase + 2 * dag.Representative(i) + 1)) scratch.Add(portBase + 2 * dag.Representative(i) + 1);
            }
            byGroup[slot] = scratch.ToArray();
        }
        return new Analysis.LinkFootprints(dag, portBase + (ports is null ? 0 : 2 * dag.GpuCount), byGroup);
    }

    /// <summary>
    /// The fraction of each GPU's SMs an all-to-all takes from compute while it runs (0: none, as NCCL's copy-engine
    /// and proxy-driven transfers are modelled). DeepEP's normal kernels run on <c>deepEpSms</c> SMs
    /// (<see cref="Config.CostModelSpec.DeepEpSms"/>) out of the GPU's <see cref="Config.GpuSpec.SmCount"/>.
    /// </summary>
    public double AllToAllSmShare { get; init; }

    /// <summary>
    /// Price routed-expert GEMMs as members of one grouped GEMM per rank (<see cref="IGroupedGemmCostModel"/>; the
    /// tile-wave model) instead of one kernel each; <see cref="Config.CostModelSpec.GroupedGemm"/>.
    /// </summary>
    public bool GroupedExpertGemms { get; init; }

    /// <summary>
    /// Price each head's attention products as its share of one fused attention kernel per rank
    /// (<see cref="IFusedAttentionCostModel"/>; the tile-wave model): waves shared across the heads, one launch, no HBM
    /// traffic for the scores; <see cref="Config.CostModelSpec.FusedAttention"/>. Only DAGs built with the fused
    /// attention kernel have heads to share (<see cref="OperatorDag.AttentionHeadsPerRank"/>).
    /// </summary>
    public bool FusedAttentionHeads { get; init; }

    /// <summary>What the scheduler needs to slow compute under SM-taking communication; null when nothing takes SMs.</summary>
    public Analysis.ComputeShares? ComputeShares(OperatorDag dag) => AllToAllSmShare > 0 ? new Analysis.ComputeShares(dag, AllToAllSmShare) : null;

    public override string ToString() => Name;
}

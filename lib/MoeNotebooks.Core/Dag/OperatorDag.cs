using System.Globalization;

namespace MoeNotebooks.Dag;

/// <summary>
/// An operator DAG: operations with shapes and bytes, each placed on a GPU (collectives on a GPU group),
/// and data dependencies. It never computes time: cost models price it, the scheduler orders it.
/// Stored as parallel arrays (no object per operation) with predecessors in compressed-row form, so
/// millions of operations stay cheap. Operation ids are a topological order: every dependency of an
/// operation has a smaller id, and operations issued to the same GPU stream run in id order.
/// </summary>
public sealed class OperatorDag
{
    internal OperatorDag(
        string description, int gpuCount, int elementBytes, string dtype, bool communicationOverlapsCompute,
        OpKind[] kinds, OpPhase[] phases, int[] gpus, int[] groups, int[] layers, int[] microbatches, int[] indices,
        int[] classes, PriceClass[] classTable,
        int[] predStart, int[] preds, int[][] groupMembers, int[]? representative, int count, int edgeCount)
    {
        // The builder hands over its arrays without copying them to their exact size: only the first count operations
        // (and edgeCount edges, count + 1 edge offsets) are the DAG's; what lies beyond is never read.
        _count = count;
        _edgeCount = edgeCount;
        Description = description;
        GpuCount = gpuCount;
        ElementBytes = elementBytes;
        Dtype = dtype;
        CommunicationOverlapsCompute = communicationOverlapsCompute;
        _kinds = kinds; _phases = phases; _gpus = gpus; _groups = groups; _layers = layers; _microbatches = microbatches; _indices = indices;
        _classes = classes; _classTable = classTable;
        _predStart = predStart; _preds = preds; _groupMembers = groupMembers;
        _representative = representative;
        _groupStreams = groupMembers;
        FoldFactor = 1;
        if (representative is null) return;
        var classSize = new int[gpuCount];
        foreach (var r in representative) classSize[r]++;
        FoldFactor = classSize[representative[0]];
        _classMembers = new int[gpuCount][];
        for (var g = 0; g < gpuCount; g++)
        {
            var r = representative[g];
            var members = _classMembers[r] ??= new int[FoldFactor];
            members[--classSize[r]] = g;
        }
        foreach (var members in _classMembers) if (members is not null) Array.Sort(members);
        _groupStreams = new int[groupMembers.Length][];
        for (var i = 0; i < groupMembers.Length; i++)
        {
            // The distinct representatives of a group's members, in the order of their first member (members ascend):
            // the streams the scheduler waits on and advances for a collective over the group.
            var streams = new List<int>(groupMembers[i].Length);
            foreach (var g in groupMembers[i]) if (!streams.Contains(representative[g])) streams.Add(representative[g]);
            _groupStreams[i] = streams.Count == groupMembers[i].Length ? groupMembers[i] : streams.ToArray();
        }
    }

    // Symmetry folding (see Representative): null for a DAG built whole.
    internal readonly int[]? _representative;

    /// <summary>
    /// Folded: per representative, the members of its class in ascending order (null for other GPUs). The k-th symmetry
    /// of the fold maps every class's smallest member to its k-th smallest (the derivations fold so that this holds:
    /// replica 0's rank to replica k's).
    /// </summary>
    internal readonly int[]?[]? _classMembers;

    /// <summary>Per group, the distinct representatives of its members (the members themselves in a DAG built whole).</summary>
    internal readonly int[][] _groupStreams;

    /// <summary>
    /// True when the DAG was built folded: only one representative GPU per symmetry class (e.g. data-parallel replica 0)
    /// carries operations, and every other GPU of the class runs, by construction, the same operations at the same
    /// times. Collectives keep their full member lists (so cost models see every GPU and node a group spans); the
    /// scheduler runs a member's streams as its representative's. Totals, critical paths and breakdowns equal the
    /// whole DAG's; operation counts are the built ones (<see cref="RepresentedCount"/> gives the whole DAG's).
    /// </summary>
    public bool IsFolded => _representative is not null;

    /// <summary>
    /// Rank folding (<see cref="DagBuilder.FoldRanksOnto"/>): every symmetry of the fold as a GPU permutation (the
    /// identity first); null for a DAG folded over data-parallel replicas only or built whole.
    /// </summary>
    internal int[][]? Symmetries { get; init; }

    /// <summary>Per symmetry: whether it moves ranks within a unit (rather than only whole data-parallel replicas).</summary>
    internal bool[]? SymmetryMovesRanks { get; init; }

    /// <summary>How the last communication model asked schedules this rank-folded DAG's links (<see cref="Costs.RankFoldPricing.LinkFoldOf"/>).</summary>
    internal LinkFoldCache? _linkFold;

    internal sealed record LinkFoldCache(object Communication, Costs.RankFoldPricing.LinkFold Fold);

    /// <summary>What was folded, in words (e.g. "8 TP ranks x 2 DP replicas -> 1 representative per stage"); empty when nothing was.</summary>
    public string FoldDescription { get; init; } = "";

    /// <summary>GPUs each representative stands for (1 for a DAG built whole).</summary>
    public int FoldFactor { get; }

    /// <summary>The GPU whose operations and streams stand for <paramref name="gpu"/> (itself in a DAG built whole).</summary>
    public int Representative(int gpu) => _representative is null ? gpu : _representative[gpu];

    /// <summary>
    /// How many operations of the whole DAG this operation stands for: <see cref="FoldFactor"/> for one that runs within
    /// a representative's class (its image on every other member of the class is not built), fewer for a collective
    /// spanning several members of a class (one collective over all replicas stands for itself only).
    /// </summary>
    public long Multiplicity(int op)
    {
        if (_representative is null) return 1;
        var group = _groups[op];
        return group < 0 ? FoldFactor : (long)FoldFactor * _groupStreams[group].Length / _groupMembers[group].Length;
    }

    /// <summary>Operations of the whole DAG (<see cref="Count"/> when built whole).</summary>
    public long RepresentedCount
    {
        get
        {
            if (_representative is null) return Count;
            long n = 0;
            for (var op = 0; op < Count; op++) n += Multiplicity(op);
            return n;
        }
    }

    // Per operation: 2 + 7 x 4 bytes plus 4 per edge. Shapes and byte counts live in a small table of price
    // classes (identical shape / bytes / group), shared by every operation that has them.
    internal readonly OpKind[] _kinds;
    internal readonly OpPhase[] _phases;
    internal readonly int[] _gpus, _groups, _layers, _microbatches, _indices, _classes;
    internal readonly PriceClass[] _classTable;
    internal readonly int[] _predStart, _preds;
    internal readonly int[][] _groupMembers;

    /// <summary>
    /// Operations that a cost model must price identically (same kind of pricing, same shape or bytes, same GPU group)
    /// share a class; <see cref="PriceClassOf"/> gives an operation's class, an index below <see cref="PriceClassCount"/>.
    /// </summary>
    public int PriceClassCount => _classTable.Length;

    /// <summary>The price class of an operation (see <see cref="PriceClassCount"/>).</summary>
    public int PriceClassOf(int op) => _classes[op];

    /// <summary>Which derivation and strategy built this DAG.</summary>
    public string Description { get; }
    public int GpuCount { get; }
    public int ElementBytes { get; }
    public string Dtype { get; }

    /// <summary>True: communication has its own stream per GPU; false: it occupies the compute stream too.</summary>
    public bool CommunicationOverlapsCompute { get; }

    public int Count => _count;
    public int EdgeCount => _edgeCount;
    private readonly int _count, _edgeCount;
    public int GroupCount => _groupMembers.Length;

    public OpKind Kind(int op) => _kinds[op];
    public OpCategory Category(int op) => _kinds[op].Category();
    public OpPhase Phase(int op) => _phases[op];

    /// <summary>The GPU an operation runs on; for a collective, the first GPU of its group.</summary>
    public int Gpu(int op) => _gpus[op];

    /// <summary>GPUs taking part: one for compute, the group for a collective or send.</summary>
    public ReadOnlySpan<int> Participants(int op) =>
        _groups[op] < 0 ? new ReadOnlySpan<int>(_gpus, op, 1) : _groupMembers[_groups[op]];

    public int Group(int op) => _groups[op];

    /// <summary>
    /// The GPUs whose streams an operation occupies and whose per-GPU figures it adds to: its participants, or in a
    /// folded DAG their distinct representatives (each stands for its whole class).
    /// </summary>
    public ReadOnlySpan<int> Streams(int op) =>
        _groups[op] < 0 ? new ReadOnlySpan<int>(_gpus, op, 1) : _groupStreams[_groups[op]];
    public ReadOnlySpan<int> GroupMembers(int group) => _groupMembers[group];

    /// <summary>Transformer layer the operation belongs to, or -1.</summary>
    public int Layer(int op) => _layers[op];
    public int Microbatch(int op) => _microbatches[op];

    /// <summary>Head or expert index within the layer, or -1.</summary>
    public int Index(int op) => _indices[op];

    /// <summary>The matmul shape (of each product, for a repeated operation); <c>default</c> for an operation that is not matmul-shaped.</summary>
    public MatmulShape Shape(int op) => _classTable[_classes[op]].Shape;

    /// <summary>
    /// How many identical products (or memory-bound passes) the operation stands for, run back to back on its GPU's
    /// stream (<see cref="DagBuilder.AddRepeatedMatmul"/>: the heads of one fused attention kernel, a rank's experts with
    /// equal tokens); 1 for every other operation. Its FLOPs, bytes and seconds are that many products'.
    /// </summary>
    public int Repeat(int op) => _classTable[_classes[op]].Repeats + 1;

    /// <summary>Datatypes of matmuls: entry 0 is the DAG's <see cref="Dtype"/>, others a precision recipe's GEMM dtypes.</summary>
    internal (string Dtype, double OperandBytes)[] MatmulDtypes { get; init; } = [];

    /// <summary>
    /// Routed experts per EP rank whose GEMMs (<see cref="OpKind.ExpertUp"/>, <see cref="OpKind.ExpertDown"/> and their
    /// gradients) one grouped-GEMM kernel runs together (Megatron-Core's <c>--moe-grouped-gemm</c>); 0 when the DAG has
    /// none. Structure, not time: a cost model may price each member as its share of the grouped kernel.
    /// </summary>
    public int ExpertsPerRank { get; init; }

    /// <summary>
    /// Experts each routed token goes to (the router's top-k) when the DAG's all-to-alls carry routed copies; 0 when it
    /// has none. Structure, not time: with <see cref="ExpertsPerRank"/> it says how a dispatch fans out, so a cost model
    /// whose all-to-all de-duplicates copies (DeepEP, <see cref="Costs.IRoutedAllToAllCostModel"/>) can price what it sends.
    /// </summary>
    public int RouterTopK { get; init; }

    /// <summary>Whether the DAG's all-to-alls (EP dispatch and combine) carry routed copies whose fan-out <see cref="RouterTopK"/> and <see cref="ExpertsPerRank"/> describe.</summary>
    internal bool HasRoutedAllToAll => RouterTopK > 1 && ExpertsPerRank > 0;

    /// <summary>
    /// Attention heads per rank whose score and value products (<see cref="OpKind.AttentionScore"/>,
    /// <see cref="OpKind.AttentionValue"/> and their gradients) one fused attention kernel runs together: FlashAttention
    /// launches one grid over sequences x heads x query blocks (Dao, FlashAttention-2, arXiv:2307.08691 §3.2
    /// "Parallelism"), each context-parallel ring step one such kernel. 0 when the DAG has no fused attention (the
    /// materialized-scores kernels of 2021). Structure, not time: a cost model may price each head as its share of the kernel.
    /// </summary>
    public int AttentionHeadsPerRank { get; init; }

    /// <summary>The datatype a matmul runs in (the precision recipe's for linear layers, else <see cref="Dtype"/>); <see cref="Dtype"/> for other operations.</summary>
    public string MatmulDtype(int op) => MatmulDtypes.Length == 0 ? Dtype : MatmulDtypes[_classTable[_classes[op]].Dtype].Dtype;

    /// <summary>Bytes per operand element of a matmul (0.5 for FP4); <see cref="ElementBytes"/> for other operations.</summary>
    public double MatmulOperandBytes(int op) => MatmulDtypes.Length == 0 ? ElementBytes : MatmulDtypes[_classTable[_classes[op]].Dtype].OperandBytes;

    /// <summary>Bytes moved: payload per GPU for communication, read+write for elementwise, operands for matmuls (a fused kernel's streamed bytes, <see cref="KernelBytes"/>, when it has them).</summary>
    public double Bytes(int op) => _kinds[op].IsMatmulShaped()
        ? (_classTable[_classes[op]].Bytes is > 0 and var k ? k : Shape(op).Elements * MatmulOperandBytes(op)) * Repeat(op)
        : _classTable[_classes[op]].Bytes * (double)Repeat(op);

    /// <summary>Bytes of one pass of a memory-bound or communication operation (<see cref="Bytes"/> over <see cref="Repeat"/>): what its price reads.</summary>
    internal double BytesEach(int op) => _classTable[_classes[op]].Bytes;

    /// <summary>HBM bytes a fused kernel streams beside its products (<see cref="DagBuilder.AddFusedKernel"/>); 0 for a plain product and for every other operation.</summary>
    public double KernelBytes(int op) => _kinds[op].IsMatmulShaped() ? _classTable[_classes[op]].Bytes : 0;

    public double Flops(int op) => _kinds[op].IsMatmulShaped() ? Shape(op).Flops * Repeat(op) : 0;

    public ReadOnlySpan<int> Predecessors(int op) => new(_preds, _predStart[op], _predStart[op + 1] - _predStart[op]);

    public string Name(int op)
    {
        var kind = _kinds[op];
        var layer = _layers[op] >= 0 ? $"L{_layers[op]}." : "";
        var mb = _microbatches[op] > 0 ? $"mb{_microbatches[op]}." : "";
        var phase = _phases[op] switch
        {
            OpPhase.Recompute => "re.",
            OpPhase.BackwardData => "dX.",
            OpPhase.BackwardWeight => "dW.",
            OpPhase.Update => "upd.",
            _ => "",
        };
        var what = kind == OpKind.Elementwise ? OpKindExtensions.ElementwiseRole(_indices[op]) : kind.ToString();
        var index = _indices[op] < 0 || kind.Category() == OpCategory.Elementwise ? ""
            : Range(kind is OpKind.ExpertUp or OpKind.ExpertDown ? "e" : "h", _indices[op], Repeat(op));
        var where = _groups[op] < 0 ? $"@gpu{_gpus[op]}" : $"@gpus{{{Members(_groupMembers[_groups[op]])}}}";
        return $"{mb}{layer}{phase}{what}{index}{where}";
    }

    /// <summary>"[h3]", or for a repeated operation the range it stands for, "[h0..h15]".</summary>
    private static string Range(string what, int first, int repeat) => repeat > 1 ? $"[{what}{first}..{what}{first + repeat - 1}]" : $"[{what}{first}]";

    private static string Members(int[] gpus) =>
        gpus.Length <= 4 ? string.Join(",", gpus) : string.Create(CultureInfo.InvariantCulture, $"{gpus[0]},{gpus[1]},..,{gpus[^1]}");

    /// <summary>Summary counts by kind, for tables.</summary>
    public IReadOnlyDictionary<OpKind, int> CountByKind()
    {
        var counts = new Dictionary<OpKind, int>();
        for (var op = 0; op < _count; op++) counts[_kinds[op]] = counts.GetValueOrDefault(_kinds[op]) + 1;
        return counts;
    }

    public override string ToString() => $"{Description}: {Count} operations, {EdgeCount} edges on {GpuCount} GPUs";
}

/// <summary>What a cost model needs to price an operation; operations with equal classes get equal durations.</summary>
/// <param name="Repeats">Identical products or passes the operation stands for, issued back to back on its GPU (<see cref="DagBuilder.AddRepeatedMatmul"/>) less one: 0 for every other operation.</param>
internal readonly record struct PriceClass(PriceKind Kind, CollectivePattern Pattern, MatmulShape Shape, long Bytes, int Group, byte Dtype = 0, int Repeats = 0)
{
    // Every field compared and hashed directly (the builder looks up a class per operation appended, PriceClassIndex);
    // the same equality as the generated one. The hash mixes each field (multiply and rotate per 64-bit word, then a
    // final avalanche) in code of this assembly, compiled ahead of time, rather than through HashCode.Combine's generic
    // instantiation, which a short process runs as unoptimised first-tier code.
    public bool Equals(PriceClass other) =>
        Kind == other.Kind && Pattern == other.Pattern && Bytes == other.Bytes && Group == other.Group && Dtype == other.Dtype && Repeats == other.Repeats
        && Shape.M == other.Shape.M && Shape.K == other.Shape.K && Shape.N == other.Shape.N && Shape.Batch == other.Shape.Batch;

    public override int GetHashCode()
    {
        unchecked
        {
            var h = (ulong)((int)Kind | (int)Pattern << 8 | Dtype << 16) * 0x9E3779B97F4A7C15UL;
            h = Mix(h, (ulong)Bytes);
            h = Mix(h, (ulong)(uint)Group | (ulong)(uint)Repeats << 32);
            h = Mix(h, (ulong)Shape.M);
            h = Mix(h, (ulong)Shape.K);
            h = Mix(h, (ulong)Shape.N);
            h = Mix(h, (ulong)Shape.Batch);
            h ^= h >> 33;
            h *= 0xFF51AFD7ED558CCDUL;
            h ^= h >> 33;
            return (int)h;
        }
    }

    private static ulong Mix(ulong h, ulong v) => unchecked(System.Numerics.BitOperations.RotateLeft(h ^ v * 0xC2B2AE3D27D4EB4FUL, 31) * 0x9E3779B97F4A7C15UL);
}

/// <summary>How an operation is priced: a matmul-shaped kernel, memory-bound bytes, or a collective.</summary>
internal enum PriceKind : byte { Matmul, Elementwise, Communication }

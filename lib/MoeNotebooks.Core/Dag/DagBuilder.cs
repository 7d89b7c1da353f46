using System.Globalization;

namespace MoeNotebooks.Dag;

/// <summary>
/// Appends operations to a DAG. An operation's dependencies must already exist, so ids are a topological
/// order and a cycle cannot be built: a reference to an operation that does not exist yet is rejected.
/// </summary>
public sealed partial class DagBuilder
{
    // Struct-of-arrays grown by doubling (no object per operation); Build() trims them into the OperatorDag.
    private OpKind[] _kinds = new OpKind[64];
    private OpPhase[] _phases = new OpPhase[64];
    private int[] _gpus = new int[64], _groups = new int[64], _layers = new int[64], _microbatches = new int[64], _indices = new int[64], _classes = new int[64];
    private int[] _predStart = new int[65];
    private int[] _preds = new int[128];
    private int _count, _edgeCount;
    private readonly PriceClassIndex _classTable = new();
    private readonly List<int[]> _groupMembers = new();
    private readonly Dictionary<int[], int> _groupIndex = new(MembersComparer.Instance);
    private int[] _scratch = new int[8];

    public DagBuilder(int gpuCount, int elementBytes = 2, string dtype = "bf16", string description = "dag")
    {
        if (gpuCount <= 0) throw new ArgumentOutOfRangeException(nameof(gpuCount), gpuCount, "gpuCount must be >= 1");
        if (elementBytes <= 0) throw new ArgumentOutOfRangeException(nameof(elementBytes), elementBytes, "elementBytes must be >= 1");
        GpuCount = gpuCount;
        ElementBytes = elementBytes;
        Dtype = dtype;
        Description = description;
    }

    public int GpuCount { get; }
    public int ElementBytes { get; }
    public string Dtype { get; }
    public string Description { get; set; }

    /// <summary>Routed experts per EP rank (one grouped GEMM), carried to <see cref="OperatorDag.ExpertsPerRank"/>.</summary>
    public int ExpertsPerRank { get; set; }

    /// <summary>The router's top-k (experts per routed token), carried to <see cref="OperatorDag.RouterTopK"/>.</summary>
    public int RouterTopK { get; set; }

    /// <summary>Attention heads per rank one fused attention kernel runs together, carried to <see cref="OperatorDag.AttentionHeadsPerRank"/>.</summary>
    public int AttentionHeadsPerRank { get; set; }
    public int Count => _count;

    /// <summary>Phase given to the operations appended from now on.</summary>
    public OpPhase Phase { get; set; } = OpPhase.Forward;

    /// <summary>Whether communication runs on its own stream (overlapping compute) or on the compute stream.</summary>
    public bool CommunicationOverlapsCompute { get; set; } = true;

    private int[]? _representative;

    /// <summary>
    /// Declares the DAG folded (see <see cref="OperatorDag.IsFolded"/>): <paramref name="representative"/>[g] is the GPU
    /// whose operations stand for GPU g. Every class must have the same size and contain its representative; only
    /// representatives may carry compute operations and sends. The caller guarantees that the whole DAG is symmetric
    /// under exchanging the members of a class (the derivations fold only what is identical by construction).
    /// </summary>
    public void FoldOnto(int[] representative)
    {
        if (representative.Length != GpuCount) throw new DagException($"a fold maps {representative.Length} GPUs but the DAG has {GpuCount}");
        var size = new int[GpuCount];
        foreach (var r in representative)
        {
            CheckGpu(r);
            if (representative[r] != r) throw new DagException($"GPU {r} represents others but is itself represented by GPU {representative[r]}");
            size[r]++;
        }
        var classSize = size[representative[0]];
        for (var g = 0; g < GpuCount; g++)
            if (size[g] != 0 && size[g] != classSize) throw new DagException($"fold classes differ in size: GPU {g} represents {size[g]}, GPU {representative[0]} {classSize}");
        _representative = (int[])representative.Clone();
    }

    /// <summary>Whether <paramref name="gpu"/> carries operations (always, unless the DAG is folded onto others).</summary>
    public bool IsBuilt(int gpu) => _representative is null || _representative[gpu] == gpu;

    /// <summary>Reserves room for this many operations and dependency edges in total (optional; avoids regrowth).</summary>
    public void EnsureCapacity(int operations, int edges = 0)
    {
        if (operations > _kinds.Length) Grow(operations);
        if (edges > _preds.Length) Array.Resize(ref _preds, edges);
    }

    /// <summary>
    /// Reserves room for an estimated operation count (and twice as many edges), capped at 2^22 operations so a loose
    /// estimate cannot claim gigabytes up front (at 2^26 an estimate within the size guard for 2^20 experts reserved
    /// more than a 768 MB heap while the DAG built was small); past the cap the arrays grow by doubling as operations
    /// come. Nothing happens for an estimate of 0 or less.
    /// </summary>
    public void Reserve(double expectedOperations)
    {
        if (expectedOperations <= 0) return;
        EnsureCapacity((int)Math.Min(expectedOperations, 1 << 22), (int)Math.Min(2 * expectedOperations, 1 << 23));
        ReserveRankSequences(Math.Min(expectedOperations, 1 << 22));
    }

    /// <summary>A GPU group (deduplicated); members must be distinct valid GPUs.</summary>
    public int Group(ReadOnlySpan<int> gpus)
    {
        if (gpus.Length < 2) throw new DagException($"a group needs at least 2 GPUs, got {gpus.Length}");
        if (_scratch.Length != gpus.Length) _scratch = new int[gpus.Length];
        var sorted = _scratch;
        gpus.CopyTo(sorted);
        Array.Sort(sorted);
        for (var i = 0; i < sorted.Length; i++)
        {
            CheckGpu(sorted[i]);
            if (i > 0 && sorted[i] == sorted[i - 1]) throw new DagException($"group lists GPU {sorted[i]} twice");
        }
        if (_groupIndex.TryGetValue(sorted, out var id)) return id;
        var members = (int[])sorted.Clone();
        _groupMembers.Add(members);
        _groupIndex[members] = _groupMembers.Count - 1;
        return _groupMembers.Count - 1;
    }

    private readonly List<(string Dtype, double OperandBytes)> _dtypes = new();
    private readonly Dictionary<OpKind, byte> _kindDtype = new();

    /// <summary>
    /// Matmuls of <paramref name="kind"/> appended from now on run in <paramref name="dtype"/> with operands of
    /// <paramref name="operandBytes"/> bytes (a precision recipe's GEMMs); others in the DAG's <see cref="Dtype"/>.
    /// </summary>
    public void SetMatmulDtype(OpKind kind, string dtype, double operandBytes)
    {
        if (!kind.IsMatmulShaped()) throw new DagException($"{kind} is not a matmul-shaped operation");
        if (operandBytes <= 0) throw new DagException($"operand bytes must be > 0, got {operandBytes}");
        var i = _dtypes.IndexOf((dtype, operandBytes));
        if (i < 0) { _dtypes.Add((dtype, operandBytes)); i = _dtypes.Count - 1; }
        if (i >= byte.MaxValue) throw new DagException("too many matmul dtypes");
        _kindDtype[kind] = (byte)(i + 1);
    }

    /// <summary>A memory-bound operation of a named kind (quantize, router top-k, permute, ...) moving <paramref name="bytes"/> through HBM.</summary>
    public int AddMemoryBound(OpKind kind, int gpu, long bytes, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0, int repeat = 1)
    {
        if (kind.Category() != OpCategory.Elementwise) throw new DagException($"{kind} is not a memory-bound operation");
        if (bytes < 0) throw new DagException($"{kind}: bytes must be >= 0, got {bytes}");
        CheckRepeat(kind, gpu, repeat);
        CheckGpu(gpu);
        CheckBuilt(gpu);
        return Append(kind, gpu, -1, layer, microbatch, index, new PriceClass(PriceKind.Elementwise, CollectivePattern.None, default, bytes, -1, 0, repeat - 1), deps);
    }

    private static void CheckRepeat(OpKind kind, int gpu, int repeat)
    {
        if (repeat < 1) throw new DagException($"{kind} on GPU {gpu}: a repeated product needs repeat >= 1, got {repeat}");
    }

    /// <summary>A matmul-shaped compute operation (projection, attention product, gate, expert GEMM).</summary>
    public int AddMatmul(OpKind kind, int gpu, MatmulShape shape, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0) =>
        Matmul(kind, gpu, shape, 1, layer, deps, index, microbatch);

    private int Matmul(OpKind kind, int gpu, MatmulShape shape, int repeat, int layer, ReadOnlySpan<int> deps, int index, int microbatch)
    {
        if (!kind.IsMatmulShaped()) throw new DagException($"{kind} is not a matmul-shaped operation");
        if (shape.M <= 0 || shape.K <= 0 || shape.N <= 0 || shape.Batch <= 0)
            throw new DagException(string.Create(CultureInfo.InvariantCulture, $"{kind} on GPU {gpu}: shape must be positive, got b={shape.Batch}, m={shape.M}, k={shape.K}, n={shape.N}"));
        CheckGpu(gpu);
        CheckBuilt(gpu);
        var dtype = _kindDtype.GetValueOrDefault(kind);
        return Append(kind, gpu, -1, layer, microbatch, index, new PriceClass(PriceKind.Matmul, CollectivePattern.None, shape, 0, -1, dtype, repeat - 1), deps);
    }

    /// <summary>
    /// <paramref name="repeat"/> identical products of <paramref name="shape"/> issued back to back on one GPU, as one
    /// operation: the heads of one fused attention kernel (FlashAttention runs a rank's heads in one grid), or one GEMM of
    /// a run of a rank's experts that receive equal tokens (the memory-bound passes between them take a repeat too,
    /// <see cref="AddElementwise"/>, <see cref="AddMemoryBound"/>). Exact for the schedule when every product's data
    /// dependencies are ready once the first of the sequence may start, or are earlier operations of the same sequence
    /// (the heads share theirs; an expert's down projection reads its own activation): on one FIFO stream such a
    /// sequence runs back to back from when the stream frees and ends the sum of its durations later, in any order that
    /// keeps each product after its own dependencies (all heads' dX then all dW; every expert's up projection, then every
    /// activation, then every down projection), and nothing else runs between on that stream. So the operation takes n
    /// times one product's seconds (<see cref="Costs.CostModel.Seconds"/>), its FLOPs and bytes are n products', and
    /// <see cref="OperatorDag.Repeat"/> keeps n for the formula and tables. What reads the sequence's end on another stream
    /// must wait for the whole sequence in both forms: the derivations keep the join that does so (several experts' or
    /// heads' outputs summed on the stream). Its index is the first product's. <paramref name="repeat"/> = 1 is
    /// <see cref="AddMatmul"/>.
    /// </summary>
    public int AddRepeatedMatmul(OpKind kind, int gpu, MatmulShape shape, int repeat, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0)
    {
        CheckRepeat(kind, gpu, repeat);
        return Matmul(kind, gpu, shape, repeat, layer, deps, index, microbatch);
    }

    /// <summary>
    /// A fused kernel whose products (<paramref name="products"/>: its FLOPs, priced by shape like every product) run
    /// while it streams <paramref name="hbmBytes"/> of tensors through HBM (every tensor it reads and writes, once);
    /// the cost model prices it as the slower of the two. The Mamba-2 SSD kernels are such kernels: small batched
    /// products inside Triton kernels that read and write fp32 states and chunk matrices.
    /// </summary>
    public int AddFusedKernel(OpKind kind, int gpu, MatmulShape products, long hbmBytes, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0)
    {
        if (!kind.IsMatmulShaped()) throw new DagException($"{kind} is not a matmul-shaped operation");
        if (products.M <= 0 || products.K <= 0 || products.N <= 0 || products.Batch <= 0)
            throw new DagException(string.Create(CultureInfo.InvariantCulture, $"{kind} on GPU {gpu}: shape must be positive, got b={products.Batch}, m={products.M}, k={products.K}, n={products.N}"));
        if (hbmBytes <= 0) throw new DagException($"{kind}: a fused kernel's HBM bytes must be > 0, got {hbmBytes}");
        CheckGpu(gpu);
        CheckBuilt(gpu);
        var dtype = _kindDtype.GetValueOrDefault(kind);
        return Append(kind, gpu, -1, layer, microbatch, index, new PriceClass(PriceKind.Matmul, CollectivePattern.None, products, hbmBytes, -1, dtype), deps);
    }

    /// <summary>A memory-bound elementwise operation moving <paramref name="bytes"/> through HBM.</summary>
    public int AddElementwise(int gpu, long bytes, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0, int repeat = 1)
    {
        if (bytes < 0) throw new DagException($"elementwise bytes must be >= 0, got {bytes}");
        CheckRepeat(OpKind.Elementwise, gpu, repeat);
        CheckGpu(gpu);
        CheckBuilt(gpu);
        return Append(OpKind.Elementwise, gpu, -1, layer, microbatch, index, new PriceClass(PriceKind.Elementwise, CollectivePattern.None, default, bytes, -1, 0, repeat - 1), deps);
    }

    /// <summary>
    /// A collective or send over a GPU group. <paramref name="bytesPerGpu"/> is each rank's buffer:
    /// the tensor all-reduced, the tokens a rank sends in an all-to-all, or the activation sent.
    /// </summary>
    public int AddCommunication(OpKind kind, int group, long bytesPerGpu, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0)
    {
        if (kind.Category() != OpCategory.Communication) throw new DagException($"{kind} is not a communication operation");
        if (kind.IsPointToPoint()) throw new DagException($"{kind} has a direction: add it with AddSend(from, to, ...)");
        if (group < 0 || group >= _groupMembers.Count) throw new DagException($"group {group} does not exist; create it with Group(...)");
        if (bytesPerGpu < 0) throw new DagException($"{kind}: bytes must be >= 0, got {bytesPerGpu}");
        return Append(kind, _groupMembers[group][0], group, layer, microbatch, index, new PriceClass(PriceKind.Communication, kind.Pattern(), default, bytesPerGpu, group), deps);
    }

    /// <summary>
    /// A point-to-point send of <paramref name="bytes"/> from one GPU to another (pipeline activations); the operation
    /// belongs to the sender, which a DAG without communication overlap keeps busy until the transfer is done.
    /// </summary>
    public int AddSend(int from, int to, long bytes, ReadOnlySpan<int> deps, int microbatch = 0) =>
        AddSend(OpKind.PipelineSend, from, to, bytes, -1, deps, -1, microbatch);

    /// <summary>A point-to-point send of a given kind (<see cref="OpKindExtensions.IsPointToPoint"/>), e.g. a context-parallel K/V block of a layer.</summary>
    public int AddSend(OpKind kind, int from, int to, long bytes, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0)
    {
        if (!kind.IsPointToPoint()) throw new DagException($"{kind} is not a point-to-point send");
        if (from == to) throw new DagException($"a send needs two GPUs, got {from} to itself");
        if (bytes < 0) throw new DagException($"{kind}: bytes must be >= 0, got {bytes}");
        var group = Group([from, to]);
        CheckBuilt(from);
        CheckBuilt(to);
        return Append(kind, from, group, layer, microbatch, index, new PriceClass(PriceKind.Communication, kind.Pattern(), default, bytes, group), deps);
    }

    private List<int>?[]? _computeWaits;
    private int _pendingWaits;

    /// <summary>
    /// The next compute operation appended on <paramref name="gpu"/> waits for <paramref name="op"/>, as a CUDA compute
    /// stream waits on an event recorded after a collective (FSDP's compute stream waiting for a unit's parameter
    /// all-gather before the unit's first kernel). Compute streams run in issue order, so every later kernel waits too.
    /// </summary>
    public void WaitBeforeNextCompute(int gpu, int op)
    {
        CheckGpu(gpu);
        CheckBuilt(gpu);
        if (op < 0 || op >= _count) throw new DagException($"a compute stream cannot wait for operation {op}: it does not exist yet");
        _computeWaits ??= new List<int>?[GpuCount];
        var waits = _computeWaits[gpu] ??= new List<int>();
        if (waits.Contains(op)) return;
        waits.Add(op);
        _pendingWaits++;
    }

    private int Append(OpKind kind, int gpu, int group, int layer, int microbatch, int index, PriceClass priceClass, ReadOnlySpan<int> deps)
    {
        if (_pendingWaits > 0 && group < 0 && _computeWaits![gpu] is { Count: > 0 } waits)
        {
            var merged = new List<int>(deps.Length + waits.Count);
            foreach (var d in deps) merged.Add(d);
            foreach (var w in waits) if (!merged.Contains(w)) merged.Add(w);
            _pendingWaits -= waits.Count;
            waits.Clear();
            return Append(kind, gpu, group, layer, microbatch, index, priceClass, merged.ToArray());
        }
        if (_rankRep is not null)
        {
            // Rank folding (DagBuilder.RankFold.cs): a non-representative's operation is its representative's, checked.
            var counterpart = RankFoldCounterpart(kind, gpu, group, layer, microbatch, index, priceClass, ref deps);
            if (counterpart >= 0) return counterpart;
        }
        var id = _count;
        foreach (var d in deps)
        {
            if (d < 0 || d >= id)
                throw new DagException(d >= id
                    ? $"operation {id} ({kind}) depends on operation {d}, which does not exist yet: add operations after those they depend on (this also makes cycles impossible)"
                    : $"operation {id} ({kind}) depends on operation {d}: ids are >= 0");
        }
        if (id == _kinds.Length) Grow(id * 2);
        if (_edgeCount + deps.Length > _preds.Length) Array.Resize(ref _preds, Math.Max(_preds.Length * 2, _edgeCount + deps.Length));
        deps.CopyTo(_preds.AsSpan(_edgeCount));
        _edgeCount += deps.Length;
        _predStart[id + 1] = _edgeCount;
        var cls = _classTable.IdOf(priceClass);
        _kinds[id] = kind; _phases[id] = Phase; _gpus[id] = gpu; _groups[id] = group; _layers[id] = layer; _microbatches[id] = microbatch; _indices[id] = index; _classes[id] = cls;
        _count++;
        if (_rankRep is not null) RankFoldRecord(id, gpu, group);
        return id;
    }

    private void Grow(int capacity)
    {
        Array.Resize(ref _kinds, capacity);
        Array.Resize(ref _phases, capacity);
        Array.Resize(ref _gpus, capacity);
        Array.Resize(ref _groups, capacity);
        Array.Resize(ref _layers, capacity);
        Array.Resize(ref _microbatches, capacity);
        Array.Resize(ref _indices, capacity);
        Array.Resize(ref _classes, capacity);
        Array.Resize(ref _predStart, capacity + 1);
    }

    private void CheckBuilt(int gpu)
    {
        if (!IsBuilt(gpu)) throw new DagException($"GPU {gpu} is folded onto GPU {_representative![gpu]}: only representatives carry operations");
    }

    private void CheckGpu(int gpu)
    {
        if (gpu < 0 || gpu >= GpuCount) throw new DagException($"GPU {gpu} is outside 0..{GpuCount - 1}");
    }

    /// <summary>The DAG of the operations added so far; it takes the builder's arrays as they are (no copy to their exact size).</summary>
    public OperatorDag Build() => new(
        Description, GpuCount, ElementBytes, Dtype, CommunicationOverlapsCompute,
        _kinds, _phases, _gpus, _groups, _layers, _microbatches, _indices, _classes, _classTable.ToArray(),
        _predStart, _preds, _groupMembers.ToArray(), FoldedRepresentative(), _count, _edgeCount)
    {
        Symmetries = _symmetries,
        SymmetryMovesRanks = _movesRanks,
        FoldDescription = FoldDescription,
        MatmulDtypes = [(Dtype, ElementBytes), .. _dtypes],
        ExpertsPerRank = ExpertsPerRank,
        RouterTopK = RouterTopK,
        AttentionHeadsPerRank = AttentionHeadsPerRank,
    };

    /// <summary>Compares GPU groups by members (sorted), so a group is found without building a string key.</summary>
    private sealed class MembersComparer : IEqualityComparer<int[]>
    {
        public static readonly MembersComparer Instance = new();
        public bool Equals(int[]? x, int[]? y) => x.AsSpan().SequenceEqual(y);
        public int GetHashCode(int[] members)
        {
            var h = new HashCode();
            h.AddBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(members.AsSpan()));
            return h.ToHashCode();
        }
    }
}

/// <summary>An operation that cannot be added to a DAG (bad dependency, GPU or size).</summary>
public sealed class DagException(string message) : Exception(message);

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
        int[] predStart, int[] preds, int[][] groupMembers)
    {
        Description = description;
        GpuCount = gpuCount;
        ElementBytes = elementBytes;
        Dtype = dtype;
        CommunicationOverlapsCompute = communicationOverlapsCompute;
        _kinds = kinds; _phases = phases; _gpus = gpus; _groups = groups; _layers = layers; _microbatches = microbatches; _indices = indices;
        _classes = classes; _classTable = classTable;
        _predStart = predStart; _preds = preds; _groupMembers = groupMembers;
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

    public int Count => _kinds.Length;
    public int EdgeCount => _preds.Length;
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
    public ReadOnlySpan<int> GroupMembers(int group) => _groupMembers[group];

    /// <summary>Transformer layer the operation belongs to, or -1.</summary>
    public int Layer(int op) => _layers[op];
    public int Microbatch(int op) => _microbatches[op];

    /// <summary>Head or expert index within the layer, or -1.</summary>
    public int Index(int op) => _indices[op];

    /// <summary>The matmul shape; <c>default</c> for an operation that is not matmul-shaped.</summary>
    public MatmulShape Shape(int op) => _classTable[_classes[op]].Shape;

    /// <summary>Datatypes of matmuls: entry 0 is the DAG's <see cref="Dtype"/>, others a precision recipe's GEMM dtypes.</summary>
    internal (string Dtype, double OperandBytes)[] MatmulDtypes { get; init; } = [];

    /// <summary>The datatype a matmul runs in (the precision recipe's for linear layers, else <see cref="Dtype"/>); <see cref="Dtype"/> for other operations.</summary>
    public string MatmulDtype(int op) => MatmulDtypes.Length == 0 ? Dtype : MatmulDtypes[_classTable[_classes[op]].Dtype].Dtype;

    /// <summary>Bytes per operand element of a matmul (0.5 for FP4); <see cref="ElementBytes"/> for other operations.</summary>
    public double MatmulOperandBytes(int op) => MatmulDtypes.Length == 0 ? ElementBytes : MatmulDtypes[_classTable[_classes[op]].Dtype].OperandBytes;

    /// <summary>Bytes moved: payload per GPU for communication, read+write for elementwise, operands for matmuls.</summary>
    public double Bytes(int op) => _kinds[op].IsMatmulShaped() ? Shape(op).Elements * MatmulOperandBytes(op) : _classTable[_classes[op]].Bytes;

    public double Flops(int op) => _kinds[op].IsMatmulShaped() ? Shape(op).Flops : 0;

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
            : kind is OpKind.ExpertUp or OpKind.ExpertDown ? $"[e{_indices[op]}]" : $"[h{_indices[op]}]";
        var where = _groups[op] < 0 ? $"@gpu{_gpus[op]}" : $"@gpus{{{Members(_groupMembers[_groups[op]])}}}";
        return $"{mb}{layer}{phase}{what}{index}{where}";
    }

    private static string Members(int[] gpus) =>
        gpus.Length <= 4 ? string.Join(",", gpus) : string.Create(CultureInfo.InvariantCulture, $"{gpus[0]},{gpus[1]},..,{gpus[^1]}");

    /// <summary>Summary counts by kind, for tables.</summary>
    public IReadOnlyDictionary<OpKind, int> CountByKind()
    {
        var counts = new Dictionary<OpKind, int>();
        foreach (var k in _kinds) counts[k] = counts.GetValueOrDefault(k) + 1;
        return counts;
    }

    public override string ToString() => $"{Description}: {Count} operations, {EdgeCount} edges on {GpuCount} GPUs";
}

/// <summary>What a cost model needs to price an operation; operations with equal classes get equal durations.</summary>
internal readonly record struct PriceClass(PriceKind Kind, CollectivePattern Pattern, MatmulShape Shape, long Bytes, int Group, byte Dtype = 0);

/// <summary>How an operation is priced: a matmul-shaped kernel, memory-bound bytes, or a collective.</summary>
internal enum PriceKind : byte { Matmul, Elementwise, Communication }

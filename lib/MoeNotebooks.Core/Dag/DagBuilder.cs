using System.Globalization;

namespace MoeNotebooks.Dag;

/// <summary>
/// Appends operations to a DAG. An operation's dependencies must already exist, so ids are a topological
/// order and a cycle cannot be built: a reference to an operation that does not exist yet is rejected.
/// </summary>
public sealed class DagBuilder
{
    private readonly List<OpKind> _kinds = new();
    private readonly List<OpPhase> _phases = new();
    private readonly List<int> _gpus = new(), _groups = new(), _layers = new(), _microbatches = new(), _indices = new();
    private readonly List<long> _m = new(), _k = new(), _n = new(), _batch = new(), _bytes = new();
    private readonly List<int> _predStart = new() { 0 };
    private readonly List<int> _preds = new();
    private readonly List<int[]> _groupMembers = new();
    private readonly Dictionary<string, int> _groupIndex = new(StringComparer.Ordinal);

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
    public int Count => _kinds.Count;

    /// <summary>Phase given to the operations appended from now on.</summary>
    public OpPhase Phase { get; set; } = OpPhase.Forward;

    /// <summary>Whether communication runs on its own stream (overlapping compute) or on the compute stream.</summary>
    public bool CommunicationOverlapsCompute { get; set; } = true;

    /// <summary>A GPU group (deduplicated); members must be distinct valid GPUs.</summary>
    public int Group(ReadOnlySpan<int> gpus)
    {
        if (gpus.Length < 2) throw new DagException($"a group needs at least 2 GPUs, got {gpus.Length}");
        var sorted = gpus.ToArray();
        Array.Sort(sorted);
        for (var i = 0; i < sorted.Length; i++)
        {
            CheckGpu(sorted[i]);
            if (i > 0 && sorted[i] == sorted[i - 1]) throw new DagException($"group lists GPU {sorted[i]} twice");
        }
        var key = string.Join(',', sorted);
        if (_groupIndex.TryGetValue(key, out var id)) return id;
        _groupMembers.Add(sorted);
        _groupIndex[key] = _groupMembers.Count - 1;
        return _groupMembers.Count - 1;
    }

    /// <summary>A matmul-shaped compute operation (projection, attention product, gate, expert GEMM).</summary>
    public int AddMatmul(OpKind kind, int gpu, MatmulShape shape, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0)
    {
        if (!kind.IsMatmulShaped()) throw new DagException($"{kind} is not a matmul-shaped operation");
        if (shape.M <= 0 || shape.K <= 0 || shape.N <= 0 || shape.Batch <= 0)
            throw new DagException(string.Create(CultureInfo.InvariantCulture, $"{kind} on GPU {gpu}: shape must be positive, got b={shape.Batch}, m={shape.M}, k={shape.K}, n={shape.N}"));
        CheckGpu(gpu);
        return Append(kind, gpu, -1, layer, microbatch, index, shape, 0, deps);
    }

    /// <summary>A memory-bound elementwise operation moving <paramref name="bytes"/> through HBM.</summary>
    public int AddElementwise(int gpu, long bytes, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0)
    {
        if (bytes < 0) throw new DagException($"elementwise bytes must be >= 0, got {bytes}");
        CheckGpu(gpu);
        return Append(OpKind.Elementwise, gpu, -1, layer, microbatch, index, default, bytes, deps);
    }

    /// <summary>
    /// A collective or send over a GPU group. <paramref name="bytesPerGpu"/> is each rank's buffer:
    /// the tensor all-reduced, the tokens a rank sends in an all-to-all, or the activation sent.
    /// </summary>
    public int AddCommunication(OpKind kind, int group, long bytesPerGpu, int layer, ReadOnlySpan<int> deps, int index = -1, int microbatch = 0)
    {
        if (kind.Category() != OpCategory.Communication) throw new DagException($"{kind} is not a communication operation");
        if (group < 0 || group >= _groupMembers.Count) throw new DagException($"group {group} does not exist; create it with Group(...)");
        if (bytesPerGpu < 0) throw new DagException($"{kind}: bytes must be >= 0, got {bytesPerGpu}");
        return Append(kind, _groupMembers[group][0], group, layer, microbatch, index, default, bytesPerGpu, deps);
    }

    private int Append(OpKind kind, int gpu, int group, int layer, int microbatch, int index, MatmulShape shape, long bytes, ReadOnlySpan<int> deps)
    {
        var id = _kinds.Count;
        foreach (var d in deps)
        {
            if (d < 0 || d >= id)
                throw new DagException(d >= id
                    ? $"operation {id} ({kind}) depends on operation {d}, which does not exist yet: add operations after those they depend on (this also makes cycles impossible)"
                    : $"operation {id} ({kind}) depends on operation {d}: ids are >= 0");
            _preds.Add(d);
        }
        _predStart.Add(_preds.Count);
        _kinds.Add(kind); _phases.Add(Phase); _gpus.Add(gpu); _groups.Add(group); _layers.Add(layer); _microbatches.Add(microbatch); _indices.Add(index);
        _m.Add(shape.M); _k.Add(shape.K); _n.Add(shape.N); _batch.Add(shape.Batch); _bytes.Add(bytes);
        return id;
    }

    private void CheckGpu(int gpu)
    {
        if (gpu < 0 || gpu >= GpuCount) throw new DagException($"GPU {gpu} is outside 0..{GpuCount - 1}");
    }

    public OperatorDag Build() => new(
        Description, GpuCount, ElementBytes, Dtype, CommunicationOverlapsCompute,
        _kinds.ToArray(), _phases.ToArray(), _gpus.ToArray(), _groups.ToArray(), _layers.ToArray(), _microbatches.ToArray(), _indices.ToArray(),
        _m.ToArray(), _k.ToArray(), _n.ToArray(), _batch.ToArray(), _bytes.ToArray(),
        _predStart.ToArray(), _preds.ToArray(), _groupMembers.ToArray());
}

/// <summary>An operation that cannot be added to a DAG (bad dependency, GPU or size).</summary>
public sealed class DagException(string message) : Exception(message);

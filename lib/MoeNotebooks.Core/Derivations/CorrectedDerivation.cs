using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The corrected derivation, for any EP x TP x PP x DP, microbatch count, pipeline schedule and workload:
/// <list type="bullet">
/// <item>Megatron-LM tensor parallelism: column-parallel Q, K, V [T, H] x [H, H/TP]; heads / TP heads per rank with the
/// full head dimension; row-parallel output [T, H/TP] x [H/TP, H] followed by an all-reduce; FFNs (dense or expert)
/// sharded the same way (column-parallel up, row-parallel down) and all-reduced.</item>
/// <item>Pipeline: layers split evenly over pp x virtualStages chunks, chunk c on stage c mod pp, activations sent
/// chunk to chunk; each stage issues its work in the order of its schedule (GPipe, 1F1B, interleaved 1F1B), so the
/// bubble emerges from the DAG rather than from a formula.</item>
/// <item>Expert parallelism: attention is data-parallel over the EP ranks (each processes tokens / EP) and tokens reach
/// their experts through all-to-all dispatch and combine, sized by the routing (not an average); or attention is
/// tensor-parallel over the EP group and expert outputs are combined by an all-reduce. Optional chunking of the
/// tokens lets chunk i's all-to-all overlap chunk i-1's expert compute.</item>
/// <item>Training: every matmul gets an activation-gradient (dX = dY W^T) and a weight-gradient (dW = X^T dY)
/// product, communication is mirrored, optional full recomputation reruns a layer's forward just before its
/// backward; gradients are all-reduced (ZeRO 0-1) or reduce-scattered (ZeRO 2-3) over the ranks that share the
/// weights (data-parallel replicas, and the EP ranks for non-expert weights), then an Adam step runs.</item>
/// <item>Attention products are batched per sequence ([seq, d] x [d, seq] for each sequence), with softmax fused
/// (flash-attention style) or, by <see cref="StrategySpec.AttentionKernel"/>, a softmax (and dropout) pass over the
/// scores in HBM; layer norms and residual adds are memory-bound elementwise operations.</item>
/// </list>
/// </summary>
internal sealed class CorrectedDerivation
{
    private readonly ModelSpec _m;
    private readonly StrategySpec _st;
    private readonly DagBuilder _b;
    private readonly bool _training, _attentionDp;
    private readonly int _attnTp, _headsPerRank, _expertsPerRank, _chunkCount;
    private readonly long _h, _s, _d, _e, _f, _sequencesPerRank, _tokensPerRank, _activationBytes;
    private readonly (int First, int Count)[] _chunkLayers;
    private readonly long[][] _expertTokensByChunk;   // [a2a chunk][expert]
    private readonly long _routedTokensPerRank;
    private readonly (long Forward, long Backward) _scoreBytes;
    private readonly Dictionary<(int Gpu, int Layer), int> _layerBackwardDone = new();

    private CorrectedDerivation(ModelSpec model, StrategySpec st)
    {
        _m = model;
        _st = st;
        _b = new DagBuilder(st.GpuCount, model.ElementBytes, model.Dtype, $"corrected derivation, {st}")
        {
            CommunicationOverlapsCompute = st.OverlapCommunication,
        };
        _training = st.Mode == WorkloadMode.Training;
        _attentionDp = st.Attention == AttentionPlacement.DataParallel;
        _h = model.HiddenSize; _s = model.SequenceLength; _d = model.HeadDim; _e = model.ElementBytes; _f = model.FfnHiddenSize;
        _sequencesPerRank = model.Batch / ((long)st.DP * (_attentionDp ? st.EP : 1) * st.Microbatches);
        _tokensPerRank = RoutingOutcome.AttentionTokensPerRank(model, st);
        _activationBytes = _tokensPerRank * _h * _e;
        // Seed §2 splits the head dimension (d_k / 8 = 64) as well as the heads; Megatron splits heads only.
        _attnTp = _attentionDp ? st.TP : st.TP * st.EP;
        _headsPerRank = model.AttentionHeads / _attnTp;
        _chunkCount = st.PP * st.VirtualStages;
        _scoreBytes = ScoreBytes(model, st, _sequencesPerRank, _headsPerRank);
        _chunkLayers = SplitLayers(model.Layers, _chunkCount);
        if (!model.IsDense)
        {
            _expertsPerRank = model.Experts / st.EP;
            // Routing: the EP group's tokens x topK spread over the experts by the routing distribution, capped by
            // the capacity factor (seed §1 assumes avg_tokens_per_expert, i.e. uniform, and no capacity limit).
            var processed = RoutingOutcome.Of(model, st)!.TokensPerExpert;
            _routedTokensPerRank = _tokensPerRank * model.TopK;
            _expertTokensByChunk = new long[st.AllToAllChunks][];
            for (var c = 0; c < st.AllToAllChunks; c++)
                _expertTokensByChunk[c] = processed.Select(t => t / st.AllToAllChunks + (c < t % st.AllToAllChunks ? 1 : 0)).ToArray();
        }
        else _expertTokensByChunk = [];
    }

    /// <param name="expectedOperations">Room to reserve up front (an estimate; the builder still grows past it).</param>
    public static OperatorDag Build(ModelSpec model, StrategySpec st, double expectedOperations = 0)
    {
        var derivation = new CorrectedDerivation(model, st);
        derivation._b.Reserve(expectedOperations);
        return derivation.BuildDag();
    }

    /// <summary>
    /// HBM bytes of the softmax (and dropout) passes over one rank's materialized scores, E = sequences x heads x s x s
    /// elements of e bytes. Forward: the fused scale-mask-softmax reads the scores and writes the probabilities (2Ee);
    /// dropout reads them, writes the result and a one-byte mask (2Ee + E). Backward: the softmax gradient reads the
    /// incoming gradient and the probabilities and writes the score gradient (3Ee); dropout's reads the gradient and
    /// the mask and writes (2Ee + E). A fused (flash) kernel has none of this traffic.
    /// </summary>
    internal static (long Forward, long Backward) ScoreBytes(ModelSpec model, StrategySpec st, long sequencesPerRank, long headsPerRank)
    {
        if (st.AttentionKernel == AttentionKernel.Fused) return (0, 0);
        var elements = sequencesPerRank * headsPerRank * model.SequenceLength * model.SequenceLength;
        var e = (long)model.ElementBytes;
        return st.AttentionKernel == AttentionKernel.MaterializedDropout
            ? (elements * (4 * e + 1), elements * (5 * e + 1))
            : (elements * 2 * e, elements * 3 * e);
    }

    private int StageOf(int chunk) => chunk % _st.PP;

    private int[] StageGpus(int dp, int stage)
    {
        var gpus = new int[_st.EP * _st.TP];
        for (var er = 0; er < _st.EP; er++)
            for (var tr = 0; tr < _st.TP; tr++) gpus[er * _st.TP + tr] = _st.Rank(dp, stage, er, tr);
        return gpus;
    }

    private OperatorDag BuildDag()
    {
        var plan = PipelinePlan.Build(_st.PP, _st.VirtualStages, _st.Microbatches, _st.Schedule, _training);
        // Outputs of each emitted item, per replica and per local rank: the next item's inputs.
        var outputs = new Dictionary<PipelineItem, int[][]>();
        var next = new int[_st.PP];
        var remaining = plan.Sum(p => p.Count);
        var gradientOps = new List<int>[_st.GpuCount];
        for (var g = 0; g < gradientOps.Length; g++) gradientOps[g] = new List<int>();
        while (remaining > 0)
        {
            var progress = false;
            for (var stage = 0; stage < _st.PP; stage++)
            {
                while (next[stage] < plan[stage].Count)
                {
                    var item = plan[stage][next[stage]];
                    var input = InputOf(item);
                    if (input is not null && !outputs.ContainsKey(input.Value)) break;
                    var perReplica = new int[_st.DP][];
                    for (var dp = 0; dp < _st.DP; dp++)
                        perReplica[dp] = SendOnward(dp, item, EmitItem(dp, item, input is null ? null : outputs[input.Value][dp]));
                    outputs[item] = perReplica;
                    if (item.Backward && item.Microbatch == _st.Microbatches - 1 && LastMicrobatchOfChunk(plan[stage], next[stage]))
                        EmitGradientSync(item.Chunk, gradientOps);
                    next[stage]++;
                    remaining--;
                    progress = true;
                }
            }
            if (!progress) throw new InvalidOperationException($"pipeline schedule {_st.Schedule} deadlocks for {_st}");
        }
        if (_training) EmitOptimizer(gradientOps);
        return _b.Build();
    }

    private static bool LastMicrobatchOfChunk(IReadOnlyList<PipelineItem> items, int index)
    {
        var item = items[index];
        for (var i = index + 1; i < items.Count; i++)
            if (items[i].Backward && items[i].Chunk == item.Chunk) return false;
        return true;
    }

    /// <summary>The item whose outputs feed this one: the previous chunk's forward, the next chunk's backward, or (for the last chunk) its own forward.</summary>
    private PipelineItem? InputOf(PipelineItem item)
    {
        if (!item.Backward) return item.Chunk == 0 ? null : new PipelineItem(item.Chunk - 1, item.Microbatch, false);
        return item.Chunk == _chunkCount - 1 ? item with { Backward = false } : item with { Chunk = item.Chunk + 1 };
    }

    /// <summary>Emits one item on one replica's stage; returns the op each local rank's next consumer waits for.</summary>
    private int[] EmitItem(int dp, PipelineItem item, int[]? input)
    {
        var stage = StageOf(item.Chunk);
        var gpus = StageGpus(dp, stage);
        var mb = item.Microbatch;
        var (first, count) = _chunkLayers[item.Chunk];
        var last = new int[gpus.Length];
        if (input is null) Array.Fill(last, -1);
        else
        {
            input.CopyTo(last, 0);
            // Scatter/gather: the slices that arrived from another stage are all-gathered over each TP group.
            if (ScatterGathered && InputOf(item) is { } from && StageOf(from.Chunk) != stage)
            {
                _b.Phase = item.Backward ? OpPhase.BackwardData : OpPhase.Forward;
                TensorGroupCollective(gpus, OpKind.PipelineAllGather, _activationBytes, -1, mb, last);
            }
        }
        if (!item.Backward)
        {
            _b.Phase = OpPhase.Forward;
            if (item.Chunk == 0 && _m.Vocabulary > 0)
                for (var li = 0; li < gpus.Length; li++)
                    last[li] = _b.AddElementwise(gpus[li], _activationBytes, first, Deps(last[li]), index: 4, microbatch: mb);
            for (var layer = first; layer < first + count; layer++) ForwardLayer(gpus, layer, mb, last);
            if (item.Chunk == _chunkCount - 1 && _m.Vocabulary > 0) Logits(gpus, first + count - 1, mb, last);
            return last;
        }
        if (item.Chunk == _chunkCount - 1 && _m.Vocabulary > 0) LogitsBackward(gpus, first + count - 1, mb, last);
        for (var layer = first + count - 1; layer >= first; layer--)
        {
            if (_st.Recompute)
            {
                // Full recomputation: rerun this layer's forward from its saved input just before its backward.
                _b.Phase = OpPhase.Recompute;
                var recomputed = (int[])last.Clone();
                ForwardLayer(gpus, layer, mb, recomputed);
                for (var li = 0; li < gpus.Length; li++) last[li] = recomputed[li];
            }
            BackwardLayer(gpus, layer, mb, last);
        }
        return last;
    }

    private bool ScatterGathered => _st.ScatterGather && _st.TP > 1;

    /// <summary>The item that consumes this one's outputs (the inverse of <see cref="InputOf"/>), or null for the first chunk's backward.</summary>
    private PipelineItem? ConsumerOf(PipelineItem item)
    {
        if (!item.Backward) return item.Chunk == _chunkCount - 1 ? item with { Backward = true } : item with { Chunk = item.Chunk + 1 };
        return item.Chunk == 0 ? null : item with { Chunk = item.Chunk - 1 };
    }

    /// <summary>
    /// When the consumer of an item lives on another stage, sends the activation (or its gradient) across right after
    /// the item, so each send sits in its sender's issue order where the sender's program posts it; returns the ops
    /// the consumer waits for.
    /// </summary>
    private int[] SendOnward(int dp, PipelineItem item, int[] outputs)
    {
        if (ConsumerOf(item) is not { } consumer || StageOf(consumer.Chunk) == StageOf(item.Chunk)) return outputs;
        var fromGpus = StageGpus(dp, StageOf(item.Chunk));
        var toGpus = StageGpus(dp, StageOf(consumer.Chunk));
        _b.Phase = item.Backward ? OpPhase.BackwardData : OpPhase.Forward;
        var sends = new int[outputs.Length];
        for (var li = 0; li < outputs.Length; li++)
            sends[li] = _b.AddSend(fromGpus[li], toGpus[li], ScatterGathered ? _activationBytes / _st.TP : _activationBytes, Deps(outputs[li]), consumer.Microbatch);
        return sends;
    }

    private static ReadOnlySpan<int> Deps(int op) => op < 0 ? [] : new[] { op };

    // ----- forward -----------------------------------------------------------------------------------------------

    private void ForwardLayer(int[] gpus, int layer, int mb, int[] last)
    {
        var t = _tokensPerRank;
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            var norm = _b.AddElementwise(g, 2 * _activationBytes, layer, Deps(last[li]), index: 0, microbatch: mb);
            // Column-parallel Q, K, V: [T, H] x [H, H/TP] (seed §2 writes [T, H/8] x [H/8, H/8]; seed §1 uses all T
            // tokens on every GPU, here each EP rank takes T / EP).
            var q = _b.AddMatmul(OpKind.QProjection, g, new(t, _h, _h / _attnTp), layer, [norm], microbatch: mb);
            var k = _b.AddMatmul(OpKind.KProjection, g, new(t, _h, _h / _attnTp), layer, [norm], microbatch: mb);
            var v = _b.AddMatmul(OpKind.VProjection, g, new(t, _h, _h / _attnTp), layer, [norm], microbatch: mb);
            var heads = new int[_headsPerRank];
            var rankInAttention = _attentionDp ? li % _st.TP : li;
            var scores = new int[_headsPerRank];
            for (var hr = 0; hr < _headsPerRank; hr++)
                scores[hr] = _b.AddMatmul(OpKind.AttentionScore, g, new(_s, _d, _s, _sequencesPerRank), layer, [q, k], rankInAttention * _headsPerRank + hr, mb);
            // Materialized scores: the softmax (and dropout) pass over [sequences, heads, s, s] in HBM sits between
            // the two products; a fused kernel keeps it on chip.
            var softmax = _scoreBytes.Forward > 0 ? _b.AddElementwise(g, _scoreBytes.Forward, layer, scores, index: OpKindExtensions.AttentionSoftmaxRole, microbatch: mb) : -1;
            for (var hr = 0; hr < _headsPerRank; hr++)
                heads[hr] = _b.AddMatmul(OpKind.AttentionValue, g, new(_s, _s, _d, _sequencesPerRank), layer, softmax >= 0 ? [softmax, v] : [scores[hr], v], rankInAttention * _headsPerRank + hr, mb);
            // Row-parallel output [T, H/TP] x [H/TP, H] (seed §2: [T, H/8] x [H/8, H/8]).
            last[li] = _b.AddMatmul(OpKind.OutputProjection, g, new(t, _h / _attnTp, _h), layer, heads, microbatch: mb);
        }
        AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, _activationBytes, layer, mb, last);
        for (var li = 0; li < gpus.Length; li++)
            last[li] = _b.AddElementwise(gpus[li], 3 * _activationBytes, layer, [last[li]], index: 1, microbatch: mb);
        if (_m.IsDense) DenseFfn(gpus, layer, mb, last, backward: false);
        else MoeBlock(gpus, layer, mb, last, backward: false);
        for (var li = 0; li < gpus.Length; li++)
            last[li] = _b.AddElementwise(gpus[li], 3 * _activationBytes, layer, [last[li]], index: 2, microbatch: mb);
    }

    private void Logits(int[] gpus, int layer, int mb, int[] last)
    {
        for (var li = 0; li < gpus.Length; li++)
        {
            var logits = _b.AddMatmul(OpKind.Logits, gpus[li], new(_tokensPerRank, _h, _m.Vocabulary / _st.TP), layer, Deps(last[li]), microbatch: mb);
            // Softmax cross-entropy over the fp32 logits shard.
            last[li] = _b.AddElementwise(gpus[li], 2 * _tokensPerRank * (_m.Vocabulary / _st.TP) * 4, layer, [logits], index: 5, microbatch: mb);
        }
    }

    // ----- backward ----------------------------------------------------------------------------------------------

    /// <summary>Adds dX = dY W^T (shape m x n . n x k) and dW = X^T dY (k x m . m x n); returns dX.</summary>
    private int Backward(OpKind kind, int g, MatmulShape fwd, int layer, ReadOnlySpan<int> deps, int index, int mb)
    {
        _b.Phase = OpPhase.BackwardData;
        var dx = _b.AddMatmul(kind, g, new(fwd.M, fwd.N, fwd.K, fwd.Batch), layer, deps, index, mb);
        _b.Phase = OpPhase.BackwardWeight;
        _b.AddMatmul(kind, g, new(fwd.K, fwd.M, fwd.N, fwd.Batch), layer, deps, index, mb);
        _b.Phase = OpPhase.BackwardData;
        return dx;
    }

    private void BackwardLayer(int[] gpus, int layer, int mb, int[] last)
    {
        var t = _tokensPerRank;
        _b.Phase = OpPhase.BackwardData;
        for (var li = 0; li < gpus.Length; li++)
            last[li] = _b.AddElementwise(gpus[li], 3 * _activationBytes, layer, Deps(last[li]), index: 2, microbatch: mb);
        if (_m.IsDense) DenseFfn(gpus, layer, mb, last, backward: true);
        else MoeBlock(gpus, layer, mb, last, backward: true);
        _b.Phase = OpPhase.BackwardData;
        for (var li = 0; li < gpus.Length; li++)
            last[li] = _b.AddElementwise(gpus[li], 3 * _activationBytes, layer, [last[li]], index: 1, microbatch: mb);
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            var o = Backward(OpKind.OutputProjection, g, new(t, _h / _attnTp, _h), layer, [last[li]], -1, mb);
            var heads = new int[_headsPerRank];
            var rankInAttention = _attentionDp ? li % _st.TP : li;
            var dProbs = new int[_headsPerRank];
            for (var hr = 0; hr < _headsPerRank; hr++)
                dProbs[hr] = Backward(OpKind.AttentionValue, g, new(_s, _s, _d, _sequencesPerRank), layer, [o], rankInAttention * _headsPerRank + hr, mb);
            var softmax = _scoreBytes.Backward > 0 ? _b.AddElementwise(g, _scoreBytes.Backward, layer, dProbs, index: OpKindExtensions.AttentionSoftmaxRole, microbatch: mb) : -1;
            for (var hr = 0; hr < _headsPerRank; hr++)
                heads[hr] = Backward(OpKind.AttentionScore, g, new(_s, _d, _s, _sequencesPerRank), layer, softmax >= 0 ? [softmax] : [dProbs[hr]], rankInAttention * _headsPerRank + hr, mb);
            var dq = Backward(OpKind.QProjection, g, new(t, _h, _h / _attnTp), layer, heads, -1, mb);
            var dk = Backward(OpKind.KProjection, g, new(t, _h, _h / _attnTp), layer, heads, -1, mb);
            last[li] = Backward(OpKind.VProjection, g, new(t, _h, _h / _attnTp), layer, [dq, dk], -1, mb);
        }
        // The conjugate of the forward all-reduce: column-parallel input gradients are summed over the TP group.
        AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, _activationBytes, layer, mb, last);
        for (var li = 0; li < gpus.Length; li++)
        {
            last[li] = _b.AddElementwise(gpus[li], 2 * _activationBytes, layer, [last[li]], index: 0, microbatch: mb);
            _layerBackwardDone[(gpus[li], layer)] = last[li];
        }
    }

    private void LogitsBackward(int[] gpus, int layer, int mb, int[] last)
    {
        _b.Phase = OpPhase.BackwardData;
        for (var li = 0; li < gpus.Length; li++)
        {
            var loss = _b.AddElementwise(gpus[li], 2 * _tokensPerRank * (_m.Vocabulary / _st.TP) * 4, layer, Deps(last[li]), index: 5, microbatch: mb);
            last[li] = Backward(OpKind.Logits, gpus[li], new(_tokensPerRank, _h, _m.Vocabulary / _st.TP), layer, [loss], -1, mb);
        }
        if (_st.TP > 1) TensorGroupCollective(gpus, OpKind.AttentionAllReduce, _activationBytes, layer, mb, last);
    }

    // ----- FFN blocks (forward or backward) ----------------------------------------------------------------------

    private void DenseFfn(int[] gpus, int layer, int mb, int[] last, bool backward)
    {
        var t = _tokensPerRank;
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            if (!backward)
            {
                _b.Phase = _b.Phase == OpPhase.Recompute ? OpPhase.Recompute : OpPhase.Forward;
                var up = _b.AddMatmul(OpKind.DenseUp, g, new(t, _h, _f / _st.TP), layer, [last[li]], microbatch: mb);
                var act = _b.AddElementwise(g, 2 * t * (_f / _st.TP) * _e, layer, [up], index: 7, microbatch: mb);
                last[li] = _b.AddMatmul(OpKind.DenseDown, g, new(t, _f / _st.TP, _h), layer, [act], microbatch: mb);
            }
            else
            {
                var down = Backward(OpKind.DenseDown, g, new(t, _f / _st.TP, _h), layer, [last[li]], -1, mb);
                var act = _b.AddElementwise(g, 3 * t * (_f / _st.TP) * _e, layer, [down], index: 7, microbatch: mb);
                last[li] = Backward(OpKind.DenseUp, g, new(t, _h, _f / _st.TP), layer, [act], -1, mb);
            }
        }
        if (_st.TP > 1) TensorGroupCollective(gpus, OpKind.ExpertAllReduce, _activationBytes, layer, mb, last);
    }

    /// <summary>
    /// Router, dispatch, experts, combine. Forward: gate, all-to-all dispatch, experts, TP all-reduce, all-to-all
    /// combine. Backward mirrors it. Tokens are split into <see cref="StrategySpec.AllToAllChunks"/> chunks.
    /// </summary>
    private void MoeBlock(int[] gpus, int layer, int mb, int[] last, bool backward)
    {
        var forwardPhase = _b.Phase == OpPhase.Recompute ? OpPhase.Recompute : OpPhase.Forward;
        var t = _tokensPerRank;
        var gate = new MatmulShape(t, _h, _m.Experts);
        if (!backward)
        {
            _b.Phase = forwardPhase;
            for (var li = 0; li < gpus.Length; li++)
                last[li] = _b.AddMatmul(OpKind.Gate, gpus[li], gate, layer, [last[li]], microbatch: mb);
        }
        var blockInput = (int[])last.Clone();
        var chunkOutputs = new List<int>[gpus.Length];
        for (var li = 0; li < gpus.Length; li++) chunkOutputs[li] = new List<int>();
        var chunks = _st.AllToAllChunks;
        var cur = new int[chunks][];
        var a2aBytes = new long[chunks];
        // Every chunk's dispatch is issued first, so the communication stream sends chunk c + 1 while the experts
        // compute chunk c; each chunk's combine then follows its experts and overlaps the next chunk's experts.
        for (var c = 0; c < chunks; c++)
        {
            cur[c] = (int[])blockInput.Clone();
            var routedShare = _routedTokensPerRank / chunks + (c < _routedTokensPerRank % chunks ? 1 : 0);
            a2aBytes[c] = AllToAllBytes(_expertTokensByChunk[c], routedShare);
            if (_attentionDp && _st.EP > 1)
            {
                if (!backward) _b.Phase = forwardPhase;
                AllToAll(gpus, backward ? OpKind.AllToAllCombine : OpKind.AllToAllDispatch, a2aBytes[c], layer, mb, cur[c], c);
            }
        }
        for (var c = 0; c < chunks; c++)
        {
            var tokens = _expertTokensByChunk[c];
            for (var li = 0; li < gpus.Length; li++)
            {
                var g = gpus[li];
                var er = li / _st.TP;
                var outs = new List<int>();
                for (var j = 0; j < _expertsPerRank; j++)
                {
                    var expert = er * _expertsPerRank + j;
                    var m = tokens[expert];
                    if (m == 0) continue;
                    if (!backward)
                    {
                        _b.Phase = forwardPhase;
                        var up = _b.AddMatmul(OpKind.ExpertUp, g, new(m, _h, _f / _st.TP), layer, Deps(cur[c][li]), expert, mb);
                        outs.Add(_b.AddMatmul(OpKind.ExpertDown, g, new(m, _f / _st.TP, _h), layer, [up], expert, mb));
                    }
                    else
                    {
                        var down = Backward(OpKind.ExpertDown, g, new(m, _f / _st.TP, _h), layer, Deps(cur[c][li]), expert, mb);
                        outs.Add(Backward(OpKind.ExpertUp, g, new(m, _h, _f / _st.TP), layer, [down], expert, mb));
                    }
                }
                cur[c][li] = outs.Count switch
                {
                    0 => cur[c][li],
                    1 => outs[0],
                    _ => _b.AddElementwise(g, 0, layer, outs.ToArray(), index: 3, microbatch: mb),
                };
            }
            if (!backward) _b.Phase = forwardPhase;
            if (_attentionDp)
            {
                if (_st.TP > 1) TensorGroupCollective(gpus, OpKind.ExpertAllReduce, MaxLocalTokens(tokens) * _h * _e, layer, mb, cur[c], c);
                if (_st.EP > 1) AllToAll(gpus, backward ? OpKind.AllToAllDispatch : OpKind.AllToAllCombine, a2aBytes[c], layer, mb, cur[c], c);
            }
            else
            {
                // Tensor-parallel attention: every rank holds all the group's tokens; partial expert outputs (and
                // TP partial sums) are combined by one all-reduce over the EP x TP group.
                AllReduceAttentionGroups(gpus, OpKind.ExpertAllReduce, (long)Math.Ceiling((double)_activationBytes / chunks), layer, mb, cur[c], c);
            }
            for (var li = 0; li < gpus.Length; li++) chunkOutputs[li].Add(cur[c][li]);
        }
        for (var li = 0; li < gpus.Length; li++)
            last[li] = chunkOutputs[li].Count == 1 ? chunkOutputs[li][0] : _b.AddElementwise(gpus[li], 0, layer, chunkOutputs[li].Distinct().ToArray(), index: 3, microbatch: mb);
        if (backward)
        {
            for (var li = 0; li < gpus.Length; li++)
                last[li] = Backward(OpKind.Gate, gpus[li], gate, layer, [last[li]], -1, mb);
        }
    }

    private long MaxLocalTokens(long[] tokens)
    {
        long max = 0;
        for (var er = 0; er < _st.EP; er++)
        {
            long sum = 0;
            for (var j = 0; j < _expertsPerRank; j++) sum += tokens[er * _expertsPerRank + j];
            max = Math.Max(max, sum);
        }
        return max;
    }

    /// <summary>
    /// Per-rank all-to-all buffer: the busiest rank's traffic, either what it sends (its routed tokens) or what
    /// it receives (the tokens of its experts), whichever is larger. Under skew the hot experts' rank dominates.
    /// </summary>
    private long AllToAllBytes(long[] tokens, long routedPerRank) => Math.Max(routedPerRank, MaxLocalTokens(tokens)) * _h * _e;

    // ----- collectives -------------------------------------------------------------------------------------------

    /// <summary>All-reduce over the ranks sharing attention heads: the TP group (data-parallel attention) or the whole EP x TP stage group.</summary>
    private void AllReduceAttentionGroups(int[] gpus, OpKind kind, long bytes, int layer, int mb, int[] last, int index = -1)
    {
        if (_attentionDp) TensorGroupCollective(gpus, kind, bytes, layer, mb, last, index);
        else if (gpus.Length > 1)
        {
            var op = _b.AddCommunication(kind, _b.Group(gpus), bytes, layer, last.Where(x => x >= 0).Distinct().ToArray(), index, mb);
            Array.Fill(last, op);
        }
    }

    /// <summary>A collective of <paramref name="kind"/> over each tensor-parallel group of the stage (nothing with TP = 1).</summary>
    private void TensorGroupCollective(int[] gpus, OpKind kind, long bytes, int layer, int mb, int[] last, int index = -1)
    {
        if (_st.TP == 1) return;
        for (var er = 0; er < _st.EP; er++)
        {
            var members = gpus.AsSpan(er * _st.TP, _st.TP);
            var deps = last.AsSpan(er * _st.TP, _st.TP).ToArray().Where(x => x >= 0).Distinct().ToArray();
            var op = _b.AddCommunication(kind, _b.Group(members), bytes, layer, deps, index, mb);
            for (var tr = 0; tr < _st.TP; tr++) last[er * _st.TP + tr] = op;
        }
    }

    private void AllToAll(int[] gpus, OpKind kind, long bytesPerGpu, int layer, int mb, int[] last, int index)
    {
        for (var tr = 0; tr < _st.TP; tr++)
        {
            var members = new int[_st.EP];
            var deps = new List<int>();
            for (var er = 0; er < _st.EP; er++)
            {
                members[er] = gpus[er * _st.TP + tr];
                if (last[er * _st.TP + tr] >= 0) deps.Add(last[er * _st.TP + tr]);
            }
            var op = _b.AddCommunication(kind, _b.Group(members), bytesPerGpu, layer, deps.Distinct().ToArray(), index, mb);
            for (var er = 0; er < _st.EP; er++) last[er * _st.TP + tr] = op;
        }
    }

    // ----- gradient synchronisation and optimizer ----------------------------------------------------------------

    /// <summary>Gradient all-reduce / reduce-scatter for every layer of a chunk, once its last backward is issued.</summary>
    private void EmitGradientSync(int chunk, List<int>[] gradientOps)
    {
        var stage = StageOf(chunk);
        var (first, count) = _chunkLayers[chunk];
        var kind = _st.ZeroStage >= 2 ? OpKind.GradientReduceScatter : OpKind.GradientAllReduce;
        _b.Phase = OpPhase.Update;
        for (var layer = first; layer < first + count; layer++)
        {
            var p = ParameterCounts.PerLayer(_m, _st);
            for (var er = 0; er < _st.EP; er++)
            {
                for (var tr = 0; tr < _st.TP; tr++)
                {
                    // Non-expert weights are shared by the data-parallel replicas and, with data-parallel attention,
                    // by the EP ranks too; expert weights only by the replicas.
                    if (er == 0 || !_attentionDp)
                        Sync(kind, SharedRanks(stage, er, tr, includeEp: _attentionDp), p.NonExpert * _e, layer, gradientOps);
                    Sync(kind, SharedRanks(stage, er, tr, includeEp: false), p.ExpertPerRank * _e, layer, gradientOps);
                }
            }
        }
    }

    private int[] SharedRanks(int stage, int er, int tr, bool includeEp)
    {
        var ranks = new List<int>();
        for (var dp = 0; dp < _st.DP; dp++)
        {
            if (includeEp) for (var e = 0; e < _st.EP; e++) ranks.Add(_st.Rank(dp, stage, e, tr));
            else ranks.Add(_st.Rank(dp, stage, er, tr));
        }
        return ranks.ToArray();
    }

    private void Sync(OpKind kind, int[] ranks, long bytes, int layer, List<int>[] gradientOps)
    {
        if (ranks.Length < 2 || bytes <= 0) return;
        // Waits for the layer's last backward operation on every member: on a compute stream that is issued after
        // the layer's weight-gradient products, so they are done. Later layers' backward overlaps it.
        var deps = ranks.Select(g => _layerBackwardDone[(g, layer)]).Distinct().ToArray();
        var op = _b.AddCommunication(kind, _b.Group(ranks), bytes, layer, deps);
        foreach (var g in ranks) gradientOps[g].Add(op);
    }

    private void EmitOptimizer(List<int>[] gradientOps)
    {
        _b.Phase = OpPhase.Update;
        var steps = new int[_st.GpuCount];
        for (var dp = 0; dp < _st.DP; dp++)
        for (var pp = 0; pp < _st.PP; pp++)
        for (var er = 0; er < _st.EP; er++)
        for (var tr = 0; tr < _st.TP; tr++)
        {
            var g = _st.Rank(dp, pp, er, tr);
            var p = ParameterCounts.OnStage(_m, _st, pp);
            var shard = _st.ZeroStage >= 1 ? _st.DP : 1;
            // Mixed-precision Adam: read fp32 master, m, v and the bf16 gradient, write them back (2 x 14 bytes/param).
            var deps = gradientOps[g].Count > 0 ? gradientOps[g].Distinct().ToArray() : LastBackwardOn(g);
            steps[g] = _b.AddElementwise(g, p.Total * 28 / shard, -1, deps, index: 6);
        }
        if (_st.ZeroStage < 2 || _st.DP < 2) return;
        // ZeRO 2-3: each replica updated its shard; gather the updated weights back.
        for (var pp = 0; pp < _st.PP; pp++)
        for (var er = 0; er < _st.EP; er++)
        for (var tr = 0; tr < _st.TP; tr++)
        {
            var ranks = Enumerable.Range(0, _st.DP).Select(dp => _st.Rank(dp, pp, er, tr)).ToArray();
            _b.AddCommunication(OpKind.ParameterAllGather, _b.Group(ranks), ParameterCounts.OnStage(_m, _st, pp).Total * _e, -1, ranks.Select(g => steps[g]).ToArray());
        }
    }

    private int[] LastBackwardOn(int gpu) =>
        _layerBackwardDone.Where(kv => kv.Key.Gpu == gpu).Select(kv => kv.Value).DefaultIfEmpty(-1).Max() is var op and >= 0 ? [op] : [];

    /// <summary>Layers per chunk: as even as possible, earlier chunks take the remainder.</summary>
    internal static (int First, int Count)[] SplitLayers(int layers, int stages)
    {
        var result = new (int, int)[stages];
        var first = 0;
        for (var i = 0; i < stages; i++)
        {
            var count = layers / stages + (i < layers % stages ? 1 : 0);
            result[i] = (first, count);
            first += count;
        }
        return result;
    }
}

using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The corrected derivation's pipeline driver: it walks each stage's schedule, emits every item's layers as the
/// blocks of the model's <see cref="LayerPattern"/> (Blocks/: attention, dense FFN, MoE = router + token exchange +
/// routed experts, embedding, output layer; each emits forward, recompute and backward for the layout held by a
/// <see cref="LayerContext"/>), sends activations between stages, then gradient synchronisation and the optimizer.
/// What it builds, for any EP x TP x PP x DP, microbatch count, pipeline schedule and workload:
/// <list type="bullet">
/// <item>Megatron-LM tensor parallelism: column-parallel Q, K, V [T, H] x [H, H/TP]; heads / TP heads per rank with the
/// full head dimension; row-parallel output [T, H/TP] x [H/TP, H] followed by an all-reduce; FFNs (dense or expert)
/// sharded the same way (column-parallel up, row-parallel down) and all-reduced.</item>
/// <item>Pipeline: layers split evenly over pp x virtualStages chunks (or with Megatron's first/last stage layer
/// counts, <see cref="StrategySpec.ChunkLayers"/>), chunk c on stage c mod pp, activations sent
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
internal sealed partial class CorrectedDerivation
{
    private readonly ModelSpec _m;
    private readonly StrategySpec _st;
    private readonly DagBuilder _b;
    private readonly LayerContext _c;
    private readonly LayerPattern _pattern;
    private readonly bool _training;
    private readonly int _chunkCount;
    private readonly long _e, _activationBytes;
    private readonly (int First, int Count)[] _chunkLayers;
    private readonly Dictionary<(int Gpu, int Layer), int> _layerBackwardDone = new();
    private Dictionary<int, int>? _lastBackward;
    private int[] _stepOf = [];

    /// <summary>
    /// Data-parallel replicas built: all of them, or only replica 0 when folding (<see cref="DagFolding.Symmetric"/>).
    /// Replicas are identical by construction: every block and the pipeline driver depend on the replica only through
    /// the GPU ids (<see cref="StrategySpec.Rank"/>), the routing is the same in every replica, and the only operations
    /// linking replicas are the gradient synchronisation and ZeRO gathers, collectives whose groups contain every
    /// replica's image of a rank. Exchanging two replicas' GPUs therefore maps the whole DAG onto itself, and so does the
    /// schedule: every replica's GPUs run the same operations at the same times, which is what the folded scheduler assumes.
    /// </summary>
    private readonly int _builtReplicas;
    private readonly int[]? _representative;

    private CorrectedDerivation(ModelSpec model, StrategySpec st, DagFolding folding)
    {
        _m = model;
        _st = st;
        _b = new DagBuilder(st.GpuCount, model.ElementBytes, model.Dtype, $"corrected derivation, {st}")
        {
            CommunicationOverlapsCompute = st.OverlapCommunication,
        };
        _c = new LayerContext(model, st, _b);
        _pattern = LayerPattern.Of(model);
        _training = _c.Training;
        _e = model.ElementBytes;
        _activationBytes = _c.ActivationBytes;
        _chunkCount = st.PP * st.VirtualStages;
        _chunkLayers = st.ChunkLayers(model.Layers);
        _builtReplicas = st.DP;
        if (folding == DagFolding.Symmetric && st.DP > 1)
        {
            _builtReplicas = 1;
            var representative = new int[st.GpuCount];
            for (var dp = 0; dp < st.DP; dp++)
            for (var pp = 0; pp < st.PP; pp++)
            for (var er = 0; er < st.EP; er++)
            for (var tr = 0; tr < st.TP; tr++)
                representative[st.Rank(dp, pp, er, tr)] = st.Rank(0, pp, er, tr);
            _b.FoldOnto(representative);
            _representative = representative;
        }
    }

    /// <summary>The GPU whose operations stand for <paramref name="gpu"/> (replica 0's image when folded).</summary>
    private int Rep(int gpu) => _representative is null ? gpu : _representative[gpu];

    /// <param name="expectedOperations">Room to reserve up front (an estimate; the builder still grows past it).</param>
    /// <param name="folding">Build every GPU, or one data-parallel replica standing for all (exact, see <see cref="_builtReplicas"/>).</param>
    public static OperatorDag Build(ModelSpec model, StrategySpec st, double expectedOperations = 0, DagFolding folding = DagFolding.None)
    {
        var derivation = new CorrectedDerivation(model, st, folding);
        derivation._b.Reserve(expectedOperations);
        return derivation.BuildDag();
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
        var deferredSyncs = new List<int>();
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
                    var perReplica = new int[_builtReplicas][];
                    if (GathersParameters(item))
                    {
                        // Parameters gathered per unit (ZeRO-3 / FSDP, or --overlap-param-gather): every replica's
                        // stage emits the item unit by unit in lock step, so each gather joins all its members.
                        var lasts = EmitItemGathered(item, input is null ? null : outputs[input.Value]);
                        for (var dp = 0; dp < _builtReplicas; dp++) perReplica[dp] = SendOnward(dp, item, lasts[dp]);
                    }
                    else
                        for (var dp = 0; dp < _builtReplicas; dp++)
                            perReplica[dp] = SendOnward(dp, item, EmitItem(dp, item, input is null ? null : outputs[input.Value][dp]));
                    outputs[item] = perReplica;
                    if (item.Backward && item.Microbatch == _st.Microbatches - 1 && LastMicrobatchOfChunk(plan[stage], next[stage]))
                    {
                        // --overlap-grad-reduce: each chunk's buckets go as soon as its last backward is issued;
                        // without it Megatron reduces every bucket after the whole backward (finalize_model_grads).
                        if (_st.OverlapGradReduce) EmitGradientSync(item.Chunk, gradientOps);
                        else deferredSyncs.Add(item.Chunk);
                    }
                    next[stage]++;
                    remaining--;
                    progress = true;
                }
            }
            if (!progress) throw new InvalidOperationException($"pipeline schedule {_st.Schedule} deadlocks for {_st}");
        }
        if (deferredSyncs.Count > 0)
        {
            // Every backward is issued: each GPU's last backward operation, once.
            _lastBackward = new Dictionary<int, int>();
            foreach (var ((gpu, _), op) in _layerBackwardDone)
                _lastBackward[gpu] = Math.Max(_lastBackward.GetValueOrDefault(gpu, -1), op);
            foreach (var chunk in deferredSyncs) EmitGradientSync(chunk, gradientOps);
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
        var gpus = StageGpus(dp, StageOf(item.Chunk));
        var last = ItemInput(gpus, item, input);
        if (!item.Backward) _b.Phase = OpPhase.Forward;
        foreach (var unit in UnitsOf(item)) EmitUnit(unit, gpus, item.Microbatch, last);
        return last;
    }

    /// <summary>Each local rank's first dependency of an item: its input, all-gathered over TP when it arrived in slices.</summary>
    private int[] ItemInput(int[] gpus, PipelineItem item, int[]? input)
    {
        var last = new int[gpus.Length];
        if (input is null) Array.Fill(last, -1);
        else
        {
            input.CopyTo(last, 0);
            // Scatter/gather: the slices that arrived from another stage are all-gathered over each TP group.
            if (ScatterGathered && InputOf(item) is { } from && StageOf(from.Chunk) != StageOf(item.Chunk))
            {
                _b.Phase = item.Backward ? OpPhase.BackwardData : OpPhase.Forward;
                _c.TensorGroupCollective(gpus, OpKind.PipelineAllGather, _activationBytes, -1, item.Microbatch, last);
            }
        }
        return last;
    }

    /// <summary>What an item's units hold: the embedding, a transformer layer (or MTP depth), the output layer.</summary>
    private enum UnitKind { Embedding, Layer, Output }

    /// <summary>
    /// A piece of an item with its own parameters, in issue order: an FSDP unit (PyTorch FSDP wraps each transformer
    /// layer; Megatron-FSDP's fsdp_unit_modules are the layers too). A layer's backward unit includes its recompute.
    /// </summary>
    private readonly record struct ItemUnit(UnitKind Kind, int Layer, bool Backward);

    /// <summary>The units of an item in the order it emits them (forward: embedding, layers, output, MTP depths; backward reversed).</summary>
    private List<ItemUnit> UnitsOf(PipelineItem item)
    {
        var (first, count) = _chunkLayers[item.Chunk];
        var lastLayer = first + count - 1;
        var hasEmbedding = item.Chunk == 0 && _m.Vocabulary > 0;
        var hasOutput = item.Chunk == _chunkCount - 1 && _m.Vocabulary > 0;
        var units = new List<ItemUnit>(count + 2 + 2 * _m.MtpLayers);
        if (!item.Backward)
        {
            if (hasEmbedding) units.Add(new(UnitKind.Embedding, first, false));
            for (var layer = first; layer < first + count; layer++) units.Add(new(UnitKind.Layer, layer, false));
            if (hasOutput)
            {
                units.Add(new(UnitKind.Output, lastLayer, false));
                // Multi-token-prediction depths after the main model: input + one layer, then the shared head and loss.
                for (var layer = _m.Layers; layer < _m.Layers + _m.MtpLayers; layer++)
                {
                    units.Add(new(UnitKind.Layer, layer, false));
                    units.Add(new(UnitKind.Output, layer, false));
                }
            }
            return units;
        }
        if (hasOutput)
        {
            for (var layer = _m.Layers + _m.MtpLayers - 1; layer >= _m.Layers; layer--)
            {
                units.Add(new(UnitKind.Output, layer, true));
                units.Add(new(UnitKind.Layer, layer, true));
            }
            units.Add(new(UnitKind.Output, lastLayer, true));
        }
        for (var layer = lastLayer; layer >= first; layer--) units.Add(new(UnitKind.Layer, layer, true));
        return units;
    }

    private void EmitUnit(ItemUnit unit, int[] gpus, int mb, int[] last)
    {
        var pass = unit.Backward ? BlockPass.Backward : BlockPass.Forward;
        var site = new LayerSite(gpus, unit.Layer, mb);
        switch (unit.Kind)
        {
            case UnitKind.Embedding: EmbeddingBlock.Instance.Emit(_c, pass, site, last); break;
            case UnitKind.Output: OutputLayerBlock.Instance.Emit(_c, pass, site, last); break;
            default:
                // Full recomputation: rerun this layer's forward from its saved input just before its backward.
                if (unit.Backward && _st.Recompute) Layer(BlockPass.Recompute, gpus, unit.Layer, mb, last);
                Layer(pass, gpus, unit.Layer, mb, last);
                break;
        }
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
            sends[li] = _b.AddSend(fromGpus[li], toGpus[li], ScatterGathered || _c.SequenceParallel ? _activationBytes / _st.TP : _activationBytes, LayerContext.Deps(outputs[li]), consumer.Microbatch);
        return sends;
    }

    // ----- layers: the blocks of the layer pattern -----------------------------------------------------------------

    private void Layer(BlockPass pass, int[] gpus, int layer, int mb, int[] last)
    {
        var blocks = _pattern.BlocksOf(layer);
        var site = new LayerSite(gpus, layer, mb);
        if (pass != BlockPass.Backward)
        {
            foreach (var block in blocks) block.Emit(_c, pass, site, last);
            return;
        }
        for (var i = blocks.Count - 1; i >= 0; i--) blocks[i].Emit(_c, pass, site, last);
        for (var li = 0; li < gpus.Length; li++) _layerBackwardDone[(gpus[li], layer)] = last[li];
    }

    // ----- gradient synchronisation and optimizer ----------------------------------------------------------------

    /// <summary>
    /// Gradient all-reduce / reduce-scatter for every layer of a chunk, once its last backward is issued: one bucket
    /// per layer, issued in backward order (last layer first), as PyTorch DDP and Megatron's DDP fill and launch their
    /// buckets, so on the in-order communication stream each layer's sync runs while earlier layers' backward computes.
    /// </summary>
    private void EmitGradientSync(int chunk, List<int>[] gradientOps)
    {
        if (Fsdp) return;   // ZeRO-3 reduce-scatters each unit's gradient after its backward, every microbatch (CorrectedDerivation.Gathers.cs)
        var stage = StageOf(chunk);
        var (first, count) = _chunkLayers[chunk];
        // ZeRO 2-3 and Megatron's distributed optimizer reduce-scatter the gradient buckets (each rank keeps the
        // reduced 1/N it updates); otherwise they are all-reduced.
        var kind = _st.ZeroStage >= 2 || _st.UseDistributedOptimizer ? OpKind.GradientReduceScatter : OpKind.GradientAllReduce;
        _b.Phase = OpPhase.Update;
        // The last chunk's multi-token-prediction depths (layers Layers + k) finish their backward first.
        var top = chunk == _chunkCount - 1 ? _m.Layers + _m.MtpLayers - 1 : first + count - 1;
        for (var layer = top; layer >= first; layer--)
        {
            var p = layer >= _m.Layers ? ParameterCounts.PerMtpDepth(_m, _st) : ParameterCounts.PerLayer(_m, _st, layer);
            for (var er = 0; er < _st.EP; er++)
            {
                for (var tr = 0; tr < _st.TP; tr++)
                {
                    // Non-expert weights are shared by the data-parallel replicas and, with data-parallel attention,
                    // by the EP ranks too; expert weights only by the replicas.
                    if (er == 0 || !_c.AttentionDp)
                        Sync(kind, SharedRanks(stage, er, tr, includeEp: _c.AttentionDp), p.NonExpert * _e, layer, gradientOps);
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
        // Folded: a member's last backward is its representative's (same operation, same time), the group stays whole.
        var deps = _st.OverlapGradReduce
            ? ranks.Select(g => _layerBackwardDone[(Rep(g), layer)]).Distinct().ToArray()
            : ranks.Select(g => _lastBackward![Rep(g)]).Distinct().ToArray();
        var op = _b.AddCommunication(kind, _b.Group(ranks), bytes, layer, deps);
        foreach (var g in ranks) if (_b.IsBuilt(g)) gradientOps[g].Add(op);
    }

    private void EmitOptimizer(List<int>[] gradientOps)
    {
        _b.Phase = OpPhase.Update;
        foreach (var (g, op) in _zeroGradientOps) gradientOps[g].Add(op);
        var steps = _stepOf = new int[_st.GpuCount];
        for (var dp = 0; dp < _builtReplicas; dp++)
        for (var pp = 0; pp < _st.PP; pp++)
        for (var er = 0; er < _st.EP; er++)
        for (var tr = 0; tr < _st.TP; tr++)
        {
            var g = _st.Rank(dp, pp, er, tr);
            var p = ParameterCounts.OnStage(_m, _st, pp);
            var shard = _st.ZeroStage >= 1 ? _st.DP : 1;
            // Mixed-precision Adam: read fp32 master, m, v and the bf16 gradient, write them back (2 x 14 bytes/param).
            // The distributed optimizer updates 1/N of each buffer, N the ranks that reduced it: DP x EP for the
            // non-expert weights under data-parallel attention, DP for expert weights.
            // ZeRO-3 shards like the distributed optimizer: over the ranks that gather and reduce each weight.
            var bytes = _st.UseDistributedOptimizer || Fsdp
                ? p.NonExpert * 28 / NonExpertSyncRanks + p.ExpertPerRank * 28 / _st.DP
                : p.Total * 28 / shard;
            var deps = gradientOps[g].Count > 0 ? gradientOps[g].Distinct().ToArray() : LastBackwardOn(g);
            steps[g] = _b.AddElementwise(g, bytes, -1, deps, index: 6);
        }
        // --overlap-param-gather: the updated parameters are gathered during the next step's forward (the gathers open
        // this step's DAG, CorrectedDerivation.Gathers.cs).
        if (_st.UseDistributedOptimizer && !ParamGatherOverlapped)
        {
            // Megatron's distributed optimizer without --overlap-param-gather: after the step every bucket's updated
            // parameters are all-gathered over the ranks that reduce-scattered it (the same groups as the gradients),
            // bucket by bucket (the buckets --overlap-param-gather spreads over the next forward, BucketParameters).
            for (var pp = 0; pp < _st.PP; pp++)
            foreach (var p in BucketParameters(pp))
            {
                for (var er = 0; er < _st.EP; er++)
                for (var tr = 0; tr < _st.TP; tr++)
                {
                    if (er == 0 || !_c.AttentionDp) Gather(SharedRanks(pp, er, tr, includeEp: _c.AttentionDp), p.NonExpert * _e);
                    Gather(SharedRanks(pp, er, tr, includeEp: false), p.ExpertPerRank * _e);
                }
            }
            return;
        }
        if (_st.UseDistributedOptimizer) return;
        // ZeRO-3 keeps only its shard: the next step's forward gathers each unit (CorrectedDerivation.Gathers.cs).
        if (_st.ZeroStage != 2 || _st.DP < 2) return;
        // ZeRO-2: each replica updated its shard; gather the updated weights back.
        for (var pp = 0; pp < _st.PP; pp++)
        for (var er = 0; er < _st.EP; er++)
        for (var tr = 0; tr < _st.TP; tr++)
        {
            var ranks = Enumerable.Range(0, _st.DP).Select(dp => _st.Rank(dp, pp, er, tr)).ToArray();
            _b.AddCommunication(OpKind.ParameterAllGather, _b.Group(ranks), ParameterCounts.OnStage(_m, _st, pp).Total * _e, -1, ranks.Select(g => steps[Rep(g)]).Distinct().ToArray());
        }
    }

    /// <summary>Ranks that share (and reduce) the non-expert gradients: the replicas, and the EP ranks under data-parallel attention.</summary>
    private int NonExpertSyncRanks => _st.DP * (_c.AttentionDp ? _st.EP : 1);

    private void Gather(int[] ranks, long bytes)
    {
        if (ranks.Length < 2 || bytes <= 0) return;
        _b.AddCommunication(OpKind.ParameterAllGather, _b.Group(ranks), bytes, -1, ranks.Select(g => _stepOf[Rep(g)]).Distinct().ToArray());
    }

    private int[] LastBackwardOn(int gpu) =>
        _layerBackwardDone.Where(kv => kv.Key.Gpu == gpu).Select(kv => kv.Value).DefaultIfEmpty(-1).Max() is var op and >= 0 ? [op] : [];

    /// <summary>Layers per chunk: as even as possible, earlier chunks take the remainder.</summary>
    internal static (int First, int Count)[] SplitLayers(int layers, int stages) => PipelineLayers.Split(layers, stages, 1, null, null);
}

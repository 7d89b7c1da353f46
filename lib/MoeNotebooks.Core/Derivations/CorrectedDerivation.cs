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

    /// <summary>DualPipe in training: microbatches enter from both ends, so each rank holds model stages s and pp - 1 - s.</summary>
    private readonly bool _dualPipe;

    /// <summary>Weight-gradient GEMMs a zero-bubble B pass deferred, per replica and item, until the item's W pass.</summary>
    private readonly Dictionary<(int Dp, PipelineItem Item), List<DeferredWeightGradient>> _deferredWeightGradients = new();
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

    /// <summary>
    /// Folding units one context-parallel ring spans (<see cref="StrategySpec.ContextParallelUnits"/>, 1 when the ring
    /// lies inside a unit): their items are emitted together so the attention block can pass K/V blocks around the ring
    /// (<see cref="AttentionBlock.EmitRing"/>).
    /// </summary>
    private readonly int _ringReplicas;
    private readonly int[]? _representative;

    /// <summary>
    /// Microbatches whose pipeline items are emitted: the strategy's, or fewer for microbatch-periodic extrapolation
    /// (<see cref="Analysis.MicrobatchPeriodicity"/>): the shapes stay those of the strategy's microbatch (the layer
    /// context is the strategy's), only the pipeline plan is that of <see cref="_planMicrobatches"/> microbatches.
    /// </summary>
    private readonly int _planMicrobatches;

    /// <summary>Each emitted item's contiguous operation range (its layers and its onward send), in emission order.</summary>
    private readonly List<ItemSpan> _items = new();

    /// <summary>False once an item was emitted outside <see cref="_items"/> (a zero-bubble W pass, an overlapped pair).</summary>
    private bool _itemsComplete = true;

    private CorrectedDerivation(ModelSpec model, StrategySpec st, DagFolding folding, int planMicrobatches = 0, bool productsApart = false)
    {
        _planMicrobatches = planMicrobatches > 0 ? planMicrobatches : st.Microbatches;
        _m = model;
        _st = st;
        _b = new DagBuilder(st.GpuCount, model.ElementBytes, model.Dtype, $"corrected derivation, {st}")
        {
            CommunicationOverlapsCompute = st.OverlapCommunication,
        };
        _c = new LayerContext(model, st, _b) { ProductsApart = productsApart };
        if (!model.IsDense) { _b.ExpertsPerRank = _c.ExpertsPerRank; _b.RouterTopK = model.TopK; }
        if (st.AttentionKernel == AttentionKernel.Fused) _b.AttentionHeadsPerRank = _c.HeadsPerRank;
        _pattern = LayerPattern.Of(model);
        _training = _c.Training;
        _e = model.ElementBytes;
        _activationBytes = _c.ActivationBytes;
        _chunkCount = st.PP * st.VirtualStages;
        _chunkLayers = st.ChunkLayers(model.Layers);
        // Replicas are the stage's folding units (the DP replicas with ETP = TP; lcm(TP, EP x ETP) ranks each when folded).
        _builtReplicas = st.FoldUnits;
        _ringReplicas = st.ContextParallelUnits;
        _dualPipe = _training && st.Schedule == PipelineSchedule.DualPipe;
        var foldReplicas = folding is DagFolding.Symmetric or DagFolding.Replicas && st.FoldUnits > _ringReplicas;
        if (foldReplicas)
        {
            // Context parallelism over whole units: the units of one CP ring are built together and stand for the others.
            _builtReplicas = _ringReplicas;
            var representative = new int[st.GpuCount];
            for (var dp = 0; dp < st.FoldUnits; dp++)
            for (var pp = 0; pp < st.PP; pp++)
            for (var li = 0; li < st.FoldUnitGpus; li++)
                representative[st.UnitRank(dp, pp, li)] = st.UnitRank(dp % _ringReplicas, pp, li);
            _b.FoldOnto(representative);
            _representative = representative;
            _b.FoldDescription = $"{st.FoldUnits} DP replicas -> 1 representative per stage";
        }
        // Symmetric ranks within a unit (TP, and EP under uniform routing): RankSymmetry.cs.
        if (folding == DagFolding.Symmetric && RankSymmetry.Of(model, st) is { } ranks)
            ranks.Declare(_b, st, foldReplicas ? st.FoldUnits : 1, "");
    }

    /// <summary>The GPU whose operations stand for <paramref name="gpu"/> (replica 0's image when folded).</summary>
    private int Rep(int gpu) => _representative is null ? gpu : _representative[gpu];

    /// <param name="expectedOperations">Room to reserve up front (an estimate; the builder still grows past it).</param>
    /// <param name="folding">Build every GPU, or one data-parallel replica standing for all (exact, see <see cref="_builtReplicas"/>).</param>
    public static OperatorDag Build(ModelSpec model, StrategySpec st, double expectedOperations = 0, DagFolding folding = DagFolding.None) =>
        Build(model, st, expectedOperations, folding, productsApart: false);

    /// <param name="productsApart">One head and one expert at a time (<see cref="LayerContext.ProductsApart"/>): the oracle of
    /// the repeated products (same schedule, <see cref="DagBuilder.AddRepeatedMatmul"/>), and the DAG this derivation built
    /// before them, operation by operation.</param>
    internal static OperatorDag Build(ModelSpec model, StrategySpec st, double expectedOperations, DagFolding folding, bool productsApart)
    {
        try
        {
            var derivation = new CorrectedDerivation(model, st, folding, productsApart: productsApart);
            derivation._b.Reserve(expectedOperations);
            return derivation.BuildDag();
        }
        catch (RankFoldException e) when (folding == DagFolding.Symmetric)
        {
            if (Environment.GetEnvironmentVariable("MOE_DEBUG_FOLD") is not null) Console.Error.WriteLine("rank fold: " + e.Message);
            // A folded rank issued other operations than its representative: fold replicas only.
            return Build(model, st, expectedOperations, DagFolding.Replicas, productsApart);
        }
    }

    /// <summary>
    /// The DAG of the strategy's microbatch shapes with only <paramref name="planMicrobatches"/> microbatches in the
    /// pipeline plan, and the operation range of every emitted item (for <see cref="Analysis.MicrobatchPeriodicity"/>).
    /// </summary>
    internal static (OperatorDag Dag, IReadOnlyList<ItemSpan>? Items) BuildWithItems(ModelSpec model, StrategySpec st, int planMicrobatches, DagFolding folding, double expectedOperations = 0)
    {
        try
        {
            var derivation = new CorrectedDerivation(model, st, folding, planMicrobatches);
            derivation._b.Reserve(expectedOperations);
            var dag = derivation.BuildDag();
            return (dag, derivation._itemsComplete ? derivation._items : null);
        }
        catch (RankFoldException) when (folding == DagFolding.Symmetric)
        {
            return BuildWithItems(model, st, planMicrobatches, DagFolding.Replicas, expectedOperations);
        }
    }

    /// <summary>The pipeline rank running an item: chunk mod pp, or under DualPipe by its direction (<see cref="PipelinePlan.StageOf"/>).</summary>
    private int StageOf(PipelineItem item) => PipelinePlan.StageOf(item, _st.PP);

    /// <summary>
    /// The pipeline ranks holding a chunk's weights: chunk mod pp, or under DualPipe both s and pp - 1 - s (DeepSeek-V3
    /// report §3.2.1: "DualPipe requires keeping two copies of the model parameters"). The two copies are replicas of
    /// the same weights, so their gradients are summed like data-parallel replicas' before the optimizer.
    /// </summary>
    private int[] PositionsOf(int chunk) => _dualPipe ? [chunk, _st.PP - 1 - chunk] : [chunk % _st.PP];

    /// <summary>Replicas of every weight: 2 under DualPipe (each rank holds two stages), else 1.</summary>
    private int Copies => ParameterCounts.DualPipeCopies(_st);

    /// <summary>An item as the key of its outputs: a backward's B part stands for the whole backward (it produces dX).</summary>
    private static PipelineItem Key(PipelineItem item) => item with { Part = PipelinePart.Full, OverlapsNext = false };

    /// <summary>One folding unit of a stage (with ETP = TP: replica dp's EP x TP GPUs, local rank er x TP + tr).</summary>
    private int[] StageGpus(int dp, int stage)
    {
        var gpus = new int[_st.FoldUnitGpus];
        for (var li = 0; li < gpus.Length; li++) gpus[li] = _st.UnitRank(dp, stage, li);
        return gpus;
    }

    /// <summary>
    /// Stops the builds of this thread (checked once per round of pipeline items): set by a build started beside another
    /// way to the same answer (<see cref="Config.Scenario.Evaluate"/>), dropped when that way answers first.
    /// </summary>
    [ThreadStatic] internal static CancellationToken Cancellation;

    private OperatorDag BuildDag()
    {
        var plan = PipelinePlan.Build(_st.PP, _st.VirtualStages, _planMicrobatches, _st.Schedule, _training);
        if (_training && _st.MoeAllToAllOverlap == MoeAllToAllOverlap.OneFOneB)
            for (var s = 0; s < plan.Length; s++) plan[s] = PipelinePlan.MergedForwardBackward(plan[s]);
        // Outputs of each emitted item, per replica and per local rank: the next item's inputs.
        var outputs = new Dictionary<PipelineItem, int[][]>();
        var next = new int[_st.PP];
        var remaining = plan.Sum(p => p.Count);
        var gradientOps = new List<int>[_st.GpuCount];
        for (var g = 0; g < gradientOps.Length; g++) gradientOps[g] = new List<int>();
        var deferredSyncs = new List<int>();
        // Where each stage issues the last backward (any part) of each of its chunks: the chunk's gradients are then
        // complete on that rank. Under DualPipe a chunk's two copies finish on two ranks; its sync waits for both.
        var lastBackward = new Dictionary<(int Chunk, int Direction), int>[_st.PP];
        for (var stage = 0; stage < _st.PP; stage++)
        {
            lastBackward[stage] = new Dictionary<(int, int), int>();
            for (var i = 0; i < plan[stage].Count; i++)
                if (plan[stage][i].Backward) lastBackward[stage][(plan[stage][i].Chunk, plan[stage][i].Direction)] = i;
        }
        var copiesPending = new int[_chunkCount];
        Array.Fill(copiesPending, Copies);
        bool Ready(PipelineItem item) => InputOf(item) is not { } input || outputs.ContainsKey(input);
        int[]? InputOn(int dp, PipelineItem item) => InputOf(item) is { } input ? outputs[input][dp] : null;
        void Emit(PipelineItem item, int[][]? inputs = null)
        {
            var perReplica = new int[_builtReplicas][];
            if (_ringReplicas > 1)
            {
                // A context-parallel ring over several units is emitted as one interleaved span, the item of its first unit:
                // the same operations in the same order for every microbatch, which is what the search bound reads from
                // item spans (microbatch periodicity refuses context parallelism before it reads any).
                for (var dp0 = 0; dp0 < _builtReplicas; dp0 += _ringReplicas)
                {
                    var first = _b.Count;
                    var ring = Enumerable.Range(dp0, _ringReplicas).ToArray();
                    var emitted = EmitRingItem(ring, item, ring.Select(dp => inputs is null ? InputOn(dp, item) : inputs[dp]).ToArray());
                    for (var r = 0; r < ring.Length; r++) perReplica[ring[r]] = SendOnward(ring[r], item, emitted[r]);
                    _items.Add(new ItemSpan(dp0, StageOf(item), item, first, _b.Count));
                }
            }
            else if (GathersParameters(item))
            {
                // Parameters gathered per unit (ZeRO-3 / FSDP, or --overlap-param-gather): every replica's stage emits
                // the item unit by unit in lock step, so each gather joins all its members (CorrectedDerivation.Gathers.cs).
                // The replicas' operations interleave: no per-replica item spans (no periodic extrapolation).
                _itemsComplete = false;
                var lasts = EmitItemGathered(item, inputs ?? Enumerable.Range(0, _builtReplicas).Select(dp => InputOn(dp, item)).ToArray());
                for (var dp = 0; dp < _builtReplicas; dp++) perReplica[dp] = SendOnward(dp, item, lasts[dp]);
            }
            else
                for (var dp = 0; dp < _builtReplicas; dp++)
                {
                    var first = _b.Count;
                    perReplica[dp] = SendOnward(dp, item, EmitItem(dp, item, inputs is null ? InputOn(dp, item) : inputs[dp]));
                    _items.Add(new ItemSpan(dp, StageOf(item), item, first, _b.Count));
                }
            outputs[Key(item)] = perReplica;
        }
        void AfterBackward(int stage, int index)
        {
            var item = plan[stage][index];
            if (!item.Backward || lastBackward[stage][(item.Chunk, item.Direction)] != index || --copiesPending[item.Chunk] > 0) return;
            // --overlap-grad-reduce: each chunk's buckets go as soon as its last backward is issued;
            // without it Megatron reduces every bucket after the whole backward (finalize_model_grads).
            if (_st.OverlapGradReduce) EmitGradientSync(item.Chunk, gradientOps);
            else deferredSyncs.Add(item.Chunk);
        }
        var cancellation = Cancellation;
        while (remaining > 0)
        {
            cancellation.ThrowIfCancellationRequested();
            var progress = false;
            for (var stage = 0; stage < _st.PP; stage++)
            {
                while (next[stage] < plan[stage].Count)
                {
                    var item = plan[stage][next[stage]];
                    var count = 1;
                    if (item.Part == PipelinePart.WeightGradient)
                    {
                        _itemsComplete = false;
                        // Zero-bubble W: the weight gradients its B pass deferred (that B ran earlier on this stage).
                        for (var dp = 0; dp < _builtReplicas; dp++)
                        {
                            var key = (dp, Key(item));
                            foreach (var (gpuLayer, op) in _c.EmitWeightGradients(_deferredWeightGradients[key]))
                                _layerBackwardDone[gpuLayer] = op;
                            _deferredWeightGradients.Remove(key);
                        }
                    }
                    else if (item.OverlapsNext)
                    {
                        // A forward merged with the next item, a whole backward of another microbatch: Megatron-Core's
                        // 1F1B all-to-all overlap, or a DualPipe F&B pair (DeepSeek-V3 report §3.2.1, Figure 4); both are
                        // issued layer by layer so one microbatch's all-to-all runs under the other's compute.
                        _itemsComplete = false;
                        var partner = plan[stage][next[stage] + 1];
                        if (!Ready(item) || !Ready(partner)) break;
                        if (item.Backward || !partner.Backward || partner.Part != PipelinePart.Full)
                            throw new InvalidOperationException($"an overlapped pair is a forward then a whole backward, got {item} {partner}");
                        var fOut = new int[_builtReplicas][];
                        var bOut = new int[_builtReplicas][];
                        for (var dp = 0; dp < _builtReplicas; dp++)
                        {
                            var (fIn, bIn) = (InputOn(dp, item), InputOn(dp, partner));
                            // deepseek-ai/DualPipe's _forward_backward_chunk receives both chunks' inputs before it starts
                            // (recv forward, recv backward, then wait): under DualPipe both chunks wait for a join of the two.
                            if (_dualPipe) fIn = bIn = JoinInputs(StageGpus(dp, stage), fIn, bIn, item.Microbatch);
                            var (f, b) = EmitMergedPair(dp, item, fIn, partner, bIn);
                            fOut[dp] = SendOnward(dp, item, f);
                            bOut[dp] = SendOnward(dp, partner, b);
                        }
                        outputs[Key(item)] = fOut;
                        outputs[Key(partner)] = bOut;
                        count = 2;
                    }
                    else
                    {
                        if (!Ready(item)) break;
                        Emit(item);
                    }
                    for (var k = 0; k < count; k++) AfterBackward(stage, next[stage] + k);
                    next[stage] += count;
                    remaining -= count;
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

    /// <summary>The item whose outputs feed this one: the previous chunk's forward, the next chunk's backward, or (for the last chunk) its own forward.</summary>
    private PipelineItem? InputOf(PipelineItem item)
    {
        var key = Key(item);
        if (!item.Backward) return item.Chunk == 0 ? null : key with { Chunk = item.Chunk - 1 };
        return item.Chunk == _chunkCount - 1 ? key with { Backward = false } : key with { Chunk = item.Chunk + 1 };
    }

    /// <summary>Emits one item on one replica's stage; returns the op each local rank's next consumer waits for.</summary>
    private int[] EmitItem(int dp, PipelineItem item, int[]? input)
    {
        var stage = StageOf(item);
        var gpus = StageGpus(dp, stage);
        var mb = item.Microbatch;
        var (first, count) = _chunkLayers[item.Chunk];
        var last = ItemInput(gpus, item, input);
        var site = new LayerSite(gpus, first, mb);
        var lastSite = new LayerSite(gpus, first + count - 1, mb);
        var hasEmbedding = item.Chunk == 0 && _m.Vocabulary > 0;
        var hasOutput = item.Chunk == _chunkCount - 1 && _m.Vocabulary > 0;
        if (!item.Backward)
        {
            _b.Phase = OpPhase.Forward;
            if (hasEmbedding) EmbeddingBlock.Instance.Emit(_c, BlockPass.Forward, site, last);
            for (var layer = first; layer < first + count; layer++) Layer(BlockPass.Forward, gpus, layer, mb, last);
            if (hasOutput)
            {
                OutputLayerBlock.Instance.Emit(_c, BlockPass.Forward, lastSite, last);
                // Multi-token-prediction depths after the main model: input + one layer, then the shared head and loss.
                for (var layer = _m.Layers; layer < _m.Layers + _m.MtpLayers; layer++)
                {
                    Layer(BlockPass.Forward, gpus, layer, mb, last);
                    OutputLayerBlock.Instance.Emit(_c, BlockPass.Forward, new LayerSite(gpus, layer, mb), last);
                }
            }
            return last;
        }
        return EmitBackward(dp, item, gpus, first, count, mb, last, lastSite, hasOutput);
    }

    /// <summary>
    /// Emits one item on the stages of the folding units one context-parallel ring spans, together (the attention
    /// blocks pass K/V blocks between them; every other block runs per unit, as <see cref="EmitItem"/> does); returns,
    /// per unit, the op each local rank's next consumer waits for. Whole backwards only (zero-bubble B/W splits and
    /// merged pairs are refused with such rings, <see cref="StrategySpec"/>).
    /// </summary>
    private int[][] EmitRingItem(int[] replicas, PipelineItem item, int[]?[] input)
    {
        if (item.Part != PipelinePart.Full) throw new InvalidOperationException($"a context-parallel ring over {replicas.Length} units emits whole items, got {item}");
        var stage = StageOf(item);
        var n = replicas.Length;
        var gpus = replicas.Select(dp => StageGpus(dp, stage)).ToArray();
        var mb = item.Microbatch;
        var (first, count) = _chunkLayers[item.Chunk];
        var last = new int[n][];
        for (var r = 0; r < n; r++) last[r] = ItemInput(gpus[r], item, input[r]);
        LayerSite Site(int r, int layer) => new(gpus[r], layer, mb);
        var hasEmbedding = item.Chunk == 0 && _m.Vocabulary > 0;
        var hasOutput = item.Chunk == _chunkCount - 1 && _m.Vocabulary > 0;
        if (!item.Backward)
        {
            _b.Phase = OpPhase.Forward;
            if (hasEmbedding) for (var r = 0; r < n; r++) EmbeddingBlock.Instance.Emit(_c, BlockPass.Forward, Site(r, first), last[r]);
            for (var layer = first; layer < first + count; layer++) Layer(BlockPass.Forward, gpus, layer, mb, last);
            if (hasOutput)
            {
                for (var r = 0; r < n; r++) OutputLayerBlock.Instance.Emit(_c, BlockPass.Forward, Site(r, first + count - 1), last[r]);
                for (var layer = _m.Layers; layer < _m.Layers + _m.MtpLayers; layer++)
                {
                    Layer(BlockPass.Forward, gpus, layer, mb, last);
                    for (var r = 0; r < n; r++) OutputLayerBlock.Instance.Emit(_c, BlockPass.Forward, Site(r, layer), last[r]);
                }
            }
            return last;
        }
        if (hasOutput)
        {
            for (var layer = _m.Layers + _m.MtpLayers - 1; layer >= _m.Layers; layer--)
            {
                for (var r = 0; r < n; r++) OutputLayerBlock.Instance.Emit(_c, BlockPass.Backward, Site(r, layer), last[r]);
                if (_st.Recompute) Layer(BlockPass.Recompute, gpus, layer, mb, last);
                Layer(BlockPass.Backward, gpus, layer, mb, last);
            }
            for (var r = 0; r < n; r++) OutputLayerBlock.Instance.Emit(_c, BlockPass.Backward, Site(r, first + count - 1), last[r]);
        }
        for (var layer = first + count - 1; layer >= first; layer--)
        {
            if (_st.Recompute) Layer(BlockPass.Recompute, gpus, layer, mb, last);
            Layer(BlockPass.Backward, gpus, layer, mb, last);
        }
        return last;
    }

    private int[] EmitBackwardLayers(int[] gpus, int first, int count, int mb, int[] last, LayerSite lastSite, bool hasOutput)
    {
        if (hasOutput)
        {
            for (var layer = _m.Layers + _m.MtpLayers - 1; layer >= _m.Layers; layer--)
            {
                OutputLayerBlock.Instance.Emit(_c, BlockPass.Backward, new LayerSite(gpus, layer, mb), last);
                if (_st.Recompute) Layer(BlockPass.Recompute, gpus, layer, mb, last);
                Layer(BlockPass.Backward, gpus, layer, mb, last);
            }
            OutputLayerBlock.Instance.Emit(_c, BlockPass.Backward, lastSite, last);
        }
        for (var layer = first + count - 1; layer >= first; layer--)
        {
            // Full recomputation: rerun this layer's forward from its saved input just before its backward.
            if (_st.Recompute) Layer(BlockPass.Recompute, gpus, layer, mb, last);
            Layer(BlockPass.Backward, gpus, layer, mb, last);
        }
        return last;
    }

    /// <summary>
    /// Emits a backward: whole (dX and dW of every GEMM in place), or a zero-bubble B pass whose dW GEMMs are held for
    /// the item's W pass (<see cref="LayerContext.DeferredWeightGradients"/>).
    /// </summary>
    private int[] EmitBackward(int dp, PipelineItem item, int[] gpus, int first, int count, int mb, int[] last, LayerSite lastSite, bool hasOutput)
    {
        if (item.Part != PipelinePart.InputGradient) return EmitBackwardLayers(gpus, first, count, mb, last, lastSite, hasOutput);
        var deferred = new List<DeferredWeightGradient>();
        _c.DeferredWeightGradients = deferred;
        try { return EmitBackwardLayers(gpus, first, count, mb, last, lastSite, hasOutput); }
        finally
        {
            _c.DeferredWeightGradients = null;
            _deferredWeightGradients[(dp, Key(item))] = deferred;
        }
    }

    /// <summary>Per local rank, a zero-byte join of two items' inputs (or the one present; null when neither is).</summary>
    private int[]? JoinInputs(int[] gpus, int[]? a, int[]? b, int mb)
    {
        if (a is null && b is null) return null;
        _b.Phase = OpPhase.Forward;
        var joined = new int[gpus.Length];
        for (var li = 0; li < gpus.Length; li++)
        {
            int[] deps = [.. new[] { a?[li] ?? -1, b?[li] ?? -1 }.Where(op => op >= 0).Distinct()];
            joined[li] = deps.Length == 0 ? -1 : _b.AddElementwise(gpus[li], 0, -1, deps, index: 3, microbatch: mb);
        }
        return joined;
    }

    /// <summary>Each local rank's first dependency of an item: its input (all-gathered over TP under scatter/gather), or -1.</summary>
    private int[] ItemInput(int[] gpus, PipelineItem item, int[]? input)
    {
        var last = new int[gpus.Length];
        if (input is null) { Array.Fill(last, -1); return last; }
        input.CopyTo(last, 0);
        // Scatter/gather: the slices that arrived from another stage are all-gathered over each TP group.
        if (ScatterGathered && InputOf(item) is { } from && StageOf(from) != StageOf(item))
        {
            _b.Phase = item.Backward ? OpPhase.BackwardData : OpPhase.Forward;
            _c.TensorGroupCollective(gpus, OpKind.PipelineAllGather, _activationBytes, -1, item.Microbatch, last);
        }
        return last;
    }

    /// <summary>
    /// Megatron-Core's EP all-to-all overlap (<c>--overlap-moe-expert-parallel-comm</c>; combined_1f1b.py and
    /// TransformerModelChunkSchedulePlan.run in megatron/core/models/common/model_chunk_schedule_plan.py): the forward
    /// of one microbatch and the backward of another on the same stage, emitted as one merged step. The forward's
    /// embedding runs first, then the backward's output layer (and multi-token-prediction depths) and, with full
    /// recomputation, the recompute of the backward chunk's every layer (Megatron's VPP-stage recompute, whose
    /// all-to-alls are exposed by design); then forward layer i is paired with backward layer (count - 1 - i), each
    /// pair issued in the order of TransformerLayerSchedulePlan.run:
    /// <code>
    /// comm: combine_bwd | dispatch_fwd -> dispatch_bwd | combine_fwd
    /// comp: attn_fwd    | mlp_bwd -> mlp_fwd           | attn_bwd
    /// </code>
    /// so each all-to-all waits only on its own microbatch and runs on the communication stream under the other
    /// microbatch's compute; the scheduler then hides it exactly as far as that compute allows. Layers without a
    /// partner run alone; the forward's output layer comes last. The DAG only orders the work: nothing is priced here.
    /// DualPipe's F&amp;B chunk pairs (<see cref="PipelineItem.OverlapsNext"/>) use the same emission.
    /// </summary>
    private (int[] Forward, int[] Backward) EmitMergedPair(int dp, PipelineItem f, int[]? fInput, PipelineItem b, int[]? bInput)
    {
        var stage = StageOf(f);
        var gpus = StageGpus(dp, stage);
        var lastF = ItemInput(gpus, f, fInput);
        var lastB = ItemInput(gpus, b, bInput);
        var (fFirst, fCount) = _chunkLayers[f.Chunk];
        var (bFirst, bCount) = _chunkLayers[b.Chunk];
        _b.Phase = OpPhase.Forward;
        if (f.Chunk == 0 && _m.Vocabulary > 0) EmbeddingBlock.Instance.Emit(_c, BlockPass.Forward, new LayerSite(gpus, fFirst, f.Microbatch), lastF);
        if (b.Chunk == _chunkCount - 1 && _m.Vocabulary > 0)
        {
            for (var layer = _m.Layers + _m.MtpLayers - 1; layer >= _m.Layers; layer--)
            {
                OutputLayerBlock.Instance.Emit(_c, BlockPass.Backward, new LayerSite(gpus, layer, b.Microbatch), lastB);
                if (_st.Recompute) Layer(BlockPass.Recompute, gpus, layer, b.Microbatch, lastB);
                Layer(BlockPass.Backward, gpus, layer, b.Microbatch, lastB);
            }
            OutputLayerBlock.Instance.Emit(_c, BlockPass.Backward, new LayerSite(gpus, bFirst + bCount - 1, b.Microbatch), lastB);
        }
        if (_st.Recompute)
            for (var layer = bFirst; layer < bFirst + bCount; layer++) Layer(BlockPass.Recompute, gpus, layer, b.Microbatch, lastB);
        var pairs = Math.Min(fCount, bCount);
        for (var i = 0; i < pairs; i++)
        {
            var fw = new SegmentCursor(_b, OpPhase.Forward, LayerSegments(BlockPass.Forward, gpus, fFirst + i, f.Microbatch, lastF).GetEnumerator());
            var bw = new SegmentCursor(_b, OpPhase.BackwardData, LayerSegments(BlockPass.Backward, gpus, bFirst + bCount - 1 - i, b.Microbatch, lastB).GetEnumerator());
            bw.Next(MoeSegment.BeforeExchange);
            bw.Next(MoeSegment.FirstExchange);    // combine backward (comm) ...
            fw.Next(MoeSegment.BeforeExchange);   // ... under attention forward
            bw.Next(MoeSegment.Experts);          // experts backward ...
            fw.Next(MoeSegment.FirstExchange);    // ... over dispatch forward
            bw.Next(MoeSegment.SecondExchange);   // dispatch backward ...
            fw.Next(MoeSegment.Experts);          // ... under experts forward
            fw.Next(MoeSegment.SecondExchange);   // combine forward ...
            bw.Next(MoeSegment.After);            // ... under attention backward
            fw.Next(MoeSegment.After);
            fw.End();
            bw.End();
        }
        for (var i = pairs; i < bCount; i++) Layer(BlockPass.Backward, gpus, bFirst + bCount - 1 - i, b.Microbatch, lastB);
        _b.Phase = OpPhase.Forward;
        for (var i = pairs; i < fCount; i++) Layer(BlockPass.Forward, gpus, fFirst + i, f.Microbatch, lastF);
        if (f.Chunk == _chunkCount - 1 && _m.Vocabulary > 0)
        {
            _b.Phase = OpPhase.Forward;
            OutputLayerBlock.Instance.Emit(_c, BlockPass.Forward, new LayerSite(gpus, fFirst + fCount - 1, f.Microbatch), lastF);
            for (var layer = _m.Layers; layer < _m.Layers + _m.MtpLayers; layer++)
            {
                Layer(BlockPass.Forward, gpus, layer, f.Microbatch, lastF);
                OutputLayerBlock.Instance.Emit(_c, BlockPass.Forward, new LayerSite(gpus, layer, f.Microbatch), lastF);
            }
        }
        return (lastF, lastB);
    }

    /// <summary>
    /// One layer's forward or backward in the five segments of <see cref="MoeBlock.Segments"/>: the forward's blocks
    /// before the FFN run in the first segment, the backward's after it in the last; a dense FFN fills the experts
    /// segment and leaves the exchange segments empty.
    /// </summary>
    private IEnumerable<MoeSegment> LayerSegments(BlockPass pass, int[] gpus, int layer, int mb, int[] last)
    {
        var blocks = _pattern.BlocksOf(layer);
        var site = new LayerSite(gpus, layer, mb);
        var ffn = blocks[^1];
        if (pass != BlockPass.Backward)
        {
            for (var i = 0; i < blocks.Count - 1; i++) blocks[i].Emit(_c, pass, site, last);
            foreach (var segment in Ffn()) yield return segment;
            yield break;
        }
        IEnumerable<MoeSegment> Ffn() => ffn is MoeBlock moe ? moe.Segments(_c, pass, site, last) : Dense();
        IEnumerable<MoeSegment> Dense()
        {
            yield return MoeSegment.BeforeExchange;
            yield return MoeSegment.FirstExchange;
            ffn.Emit(_c, pass, site, last);
            yield return MoeSegment.Experts;
            yield return MoeSegment.SecondExchange;
            yield return MoeSegment.After;
        }
        foreach (var segment in Ffn())
        {
            if (segment == MoeSegment.After)
            {
                for (var i = blocks.Count - 2; i >= 0; i--) blocks[i].Emit(_c, pass, site, last);
                for (var li = 0; li < gpus.Length; li++) _layerBackwardDone[(gpus[li], layer)] = last[li];
            }
            yield return segment;
        }
    }

    /// <summary>Steps a layer's segments, keeping the builder's phase of that pass across the interleaving.</summary>
    private sealed class SegmentCursor(DagBuilder builder, OpPhase phase, IEnumerator<MoeSegment> segments)
    {
        private OpPhase _phase = phase;

        public void Next(MoeSegment expected)
        {
            builder.Phase = _phase;
            if (!segments.MoveNext() || segments.Current != expected)
                throw new InvalidOperationException($"layer segments out of step: expected {expected}");
            _phase = builder.Phase;
        }

        public void End()
        {
            if (segments.MoveNext()) throw new InvalidOperationException("layer segments left over");
            segments.Dispose();
        }
    }

    /// <summary>
    /// Megatron-LM's scatter/gather of pipeline tensors, which it skips under sequence parallelism (p2p_communication:
    /// "scatter_gather_tensors_in_pipeline and not sequence_parallel"): the activation is already 1/TP per rank.
    /// </summary>
    private bool ScatterGathered => _st.ScatterGather && _st.TP > 1 && !_c.SequenceParallel;

    /// <summary>The item that consumes this one's outputs (the inverse of <see cref="InputOf"/>), or null for the first chunk's backward.</summary>
    private PipelineItem? ConsumerOf(PipelineItem item)
    {
        var key = Key(item);
        if (!item.Backward) return item.Chunk == _chunkCount - 1 ? key with { Backward = true } : key with { Chunk = item.Chunk + 1 };
        return item.Chunk == 0 ? null : key with { Chunk = item.Chunk - 1 };
    }

    /// <summary>
    /// When the consumer of an item lives on another stage, sends the activation (or its gradient) across right after
    /// the item, so each send sits in its sender's issue order where the sender's program posts it; returns the ops
    /// the consumer waits for.
    /// </summary>
    private int[] SendOnward(int dp, PipelineItem item, int[] outputs)
    {
        if (ConsumerOf(item) is not { } consumer || StageOf(consumer) == StageOf(item)) return outputs;
        var fromGpus = StageGpus(dp, StageOf(item));
        var toGpus = StageGpus(dp, StageOf(consumer));
        _b.Phase = item.Backward ? OpPhase.BackwardData : OpPhase.Forward;
        var sends = new int[outputs.Length];
        for (var li = 0; li < outputs.Length; li++)
            sends[li] = _b.AddSend(fromGpus[li], toGpus[li], ScatterGathered || _c.SequenceParallel ? _activationBytes / _st.TP : _activationBytes, LayerContext.Deps(outputs[li]), consumer.Microbatch);
        return sends;
    }

    // ----- layers: the blocks of the layer pattern -----------------------------------------------------------------

    /// <summary>
    /// One layer's blocks on each unit of a context-parallel ring: the attention block for all of them together (its
    /// K/V blocks travel between the units' ranks), every other block per unit.
    /// </summary>
    private void Layer(BlockPass pass, int[][] gpus, int layer, int mb, int[][] last)
    {
        var blocks = _pattern.BlocksOf(layer);
        void Emit(ILayerBlock block)
        {
            if (block is AttentionBlock attention)
            {
                attention.EmitRing(_c, pass, gpus.Select(g => new LayerSite(g, layer, mb)).ToArray(), last);
                return;
            }
            for (var r = 0; r < gpus.Length; r++) block.Emit(_c, pass, new LayerSite(gpus[r], layer, mb), last[r]);
        }
        if (pass != BlockPass.Backward)
        {
            foreach (var block in blocks) Emit(block);
            return;
        }
        for (var i = blocks.Count - 1; i >= 0; i--) Emit(blocks[i]);
        for (var r = 0; r < gpus.Length; r++)
            for (var li = 0; li < gpus[r].Length; li++) _layerBackwardDone[(gpus[r][li], layer)] = last[r][li];
    }

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
        var positions = PositionsOf(chunk);
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
            for (var li = 0; li < _st.FoldUnitGpus; li++)
            {
                // Non-expert weights are shared by the data-parallel replicas and, with data-parallel attention,
                // by the EP ranks too (every rank of the stage with the same attention TP rank); expert weights only by
                // the expert-data-parallel replicas (the same ETP and EP rank).
                if (li < _st.TP || !_c.AttentionDp)
                    Sync(kind, NonExpertRanks(positions, li), p.NonExpert * _e, layer, gradientOps);
                if (li < _st.EP * _st.ETP)
                    Sync(kind, ExpertRanks(positions, li), p.ExpertPerRank * _e, layer, gradientOps);
            }
        }
    }

    /// <summary>
    /// Ranks sharing local rank li's non-expert weights on the stages holding them: the attention data-parallel group
    /// (same TP rank), or under tensor-parallel attention the replicas.
    /// </summary>
    private int[] NonExpertRanks(int[] positions, int li)
    {
        var ranks = new List<int>();
        for (var dp = 0; dp < _st.FoldUnits; dp++)
        foreach (var stage in positions)
        {
            if (_c.AttentionDp)
            {
                for (var l = li % _st.TP; l < _st.FoldUnitGpus; l += _st.TP) ranks.Add(_st.UnitRank(dp, stage, l));
            }
            else ranks.Add(_st.UnitRank(dp, stage, li));
        }
        return ranks.ToArray();
    }

    /// <summary>Ranks sharing local rank li's expert weights: the expert-data-parallel group (same ETP and EP rank in every expert replica).</summary>
    private int[] ExpertRanks(int[] positions, int li)
    {
        var ranks = new List<int>();
        var replica = _st.EP * _st.ETP;
        for (var dp = 0; dp < _st.FoldUnits; dp++)
        foreach (var stage in positions)
            for (var l = li % replica; l < _st.FoldUnitGpus; l += replica) ranks.Add(_st.UnitRank(dp, stage, l));
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
        for (var li = 0; li < _st.FoldUnitGpus; li++)
        {
            var g = _st.UnitRank(dp, pp, li);
            var p = ParameterCounts.OnRank(_m, _st, pp);
            var shard = _st.ZeroStage >= 1 ? _st.DP * Copies : 1;
            // Mixed-precision Adam: read fp32 master, m, v and the bf16 gradient, write them back (2 x 14 bytes/param).
            // The distributed optimizer updates 1/N of each buffer, N the ranks that reduced it: DP x EP for the
            // non-expert weights under data-parallel attention, DP for expert weights.
            // ZeRO-3 shards like the distributed optimizer: over the ranks that gather and reduce each weight.
            var bytes = _st.UseDistributedOptimizer || Fsdp
                ? p.NonExpert * 28 / NonExpertSyncRanks + p.ExpertPerRank * 28 / (_st.DP * Copies)
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
            // Under DualPipe per model stage: both copies' ranks gather it.
            for (var pp = 0; pp < _st.PP; pp++)
            {
                var positions = PositionsOf(pp);
                foreach (var p in BucketParameters(pp))
                for (var li = 0; li < _st.FoldUnitGpus; li++)
                {
                    if (li < _st.TP || !_c.AttentionDp) Gather(NonExpertRanks(positions, li), p.NonExpert * _e);
                    if (li < _st.EP * _st.ETP) Gather(ExpertRanks(positions, li), p.ExpertPerRank * _e);
                }
            }
            return;
        }
        if (_st.UseDistributedOptimizer) return;
        // ZeRO-3 keeps only its shard: the next step's forward gathers each unit (CorrectedDerivation.Gathers.cs).
        if (_st.ZeroStage != 2 || _st.DP < 2) return;
        // ZeRO-2: each replica updated its shard; gather the updated weights back.
        for (var pp = 0; pp < _st.PP; pp++)
        for (var li = 0; li < _st.FoldUnitGpus; li++)
        {
            var ranks = ExpertRanks(PositionsOf(pp), li);   // ZeRO is refused with ETP != TP: one rank's replicas
            _b.AddCommunication(OpKind.ParameterAllGather, _b.Group(ranks), ParameterCounts.OnStage(_m, _st, pp).Total * _e, -1, ranks.Select(g => steps[Rep(g)]).Distinct().ToArray());
        }
    }

    /// <summary>Ranks that share (and reduce) the non-expert gradients: the replicas, and the EP ranks under data-parallel attention.</summary>
    private int NonExpertSyncRanks => (_c.AttentionDp ? _st.AttentionDataParallelSize : _st.DP) * Copies;

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

/// <summary>
/// One emitted pipeline item: replica (for a context-parallel ring over several units, the first of them: the span holds
/// the whole ring), stage, and the contiguous range
/// [<see cref="First"/>, <see cref="End"/>) of operation ids it emitted (its layers and its onward send).
/// </summary>
internal readonly record struct ItemSpan(int Replica, int Stage, PipelineItem Item, int First, int End);

using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Parameter all-gathers issued per unit inside the step: ZeRO-3 / FSDP full shard, and Megatron's
/// <c>--overlap-param-gather</c> with the distributed optimizer.
/// <para><b>ZeRO-3 / FSDP</b> (PyTorch FSDP FULL_SHARD with reshard-after-forward, DeepSpeed ZeRO-3, Megatron-FSDP
/// optim_grads_params): each unit (a transformer layer, the embedding, the output layer) holds 1/N of its parameters;
/// before the unit's forward its parameters are all-gathered over the N ranks that share them, and freed after it; in
/// the backward they are all-gathered again before the unit's recompute (which keeps them for its backward: FSDP does
/// not reshard inside the backward's recomputed forward) or, without recompute, before its backward; after the unit's
/// backward its gradient is reduce-scattered, every microbatch (FSDP2's default for gradient accumulation,
/// pytorch/pytorch#126166). Prefetch by one unit: the next unit's all-gather is issued before the current unit's compute
/// (forward_prefetch=True; backward_prefetch=BACKWARD_PRE: "the next unit's all-gather before the current unit's
/// gradient computation"), and limit_all_gathers keeps at most two units gathered: unit u+1's gather waits until unit
/// u-1 is done (freed). Each unit's first kernel waits for its own gather (the compute stream waits on the all-gather
/// event). PyTorch FSDP notes, "FSDP Prefetch Nuances" (docs.pytorch.org/docs/stable/notes/fsdp.html).</para>
/// <para><b>--overlap-param-gather</b> (Megatron-Core distributed optimizer): the parameters updated at the end of a
/// step are all-gathered during the next step's forward, per bucket in forward order, the next bucket's all-gather
/// dispatched when the current one is waited for (one-bucket prefetch), each layer's first forward waiting for its
/// bucket. In the one-step DAG the previous step's update is outside, so the gathers open the step and overlap the
/// first microbatch's forward (the steady state). Buckets here are units (one layer each).</para>
/// <para>Groups: the ranks that share (and reduce) the weights, as the gradient synchronisation uses them: the
/// data-parallel replicas, with the EP ranks for non-expert weights under data-parallel attention; experts over the
/// replicas. Bytes are each rank's whole gathered (or reduced) buffer, the unit's parameters on one rank before
/// sharding.</para>
/// </summary>
internal sealed partial class CorrectedDerivation
{
    /// <summary>What an item's units hold: the embedding, a transformer layer (or MTP depth), the output layer.</summary>
    private enum UnitKind { Embedding, Layer, Output }

    /// <summary>
    /// A piece of an item with its own parameters, in the order the item emits it: an FSDP unit (PyTorch FSDP wraps each
    /// transformer layer; Megatron-FSDP's fsdp_unit_modules are the layers too). A layer's backward unit includes its
    /// recompute. Emitted unit by unit, an item is the same operations in the same order as <see cref="EmitItem"/>.
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

    /// <summary>ZeRO-3: parameters sharded per unit and gathered around every use.</summary>
    private bool Fsdp => _st.ZeroStage >= 3;

    /// <summary>Megatron's distributed optimizer with --overlap-param-gather.</summary>
    private bool ParamGatherOverlapped => _st.UseDistributedOptimizer && _st.OverlapParamGather;

    /// <summary>
    /// Items emitted unit by unit with gathers: every item under ZeRO-3, the first microbatch's forward of each chunk
    /// with --overlap-param-gather. (ZeRO-3 and --overlap-param-gather are refused with the schedules that split or
    /// merge passes, StrategySpec.CheckModelled, so these items are whole passes.)
    /// </summary>
    private bool GathersParameters(PipelineItem item) =>
        item.Part == PipelinePart.Full && !item.OverlapsNext && (Fsdp || (ParamGatherOverlapped && !item.Backward && item.Microbatch == 0));

    /// <summary>The output layer is the embedding matrix itself (tied, one stage): it has no gradient of its own to reduce.</summary>
    private bool OutputTiedInPlace => _m.TieEmbeddings && _st.PP == 1;

    private long VocabularyShard => checked(_m.Vocabulary * _m.HiddenSize) / _st.TP;

    /// <summary>Parameters of a unit on one rank before sharding (non-expert, expert).</summary>
    private GpuParameters UnitParameters(ItemUnit unit) => unit.Kind switch
    {
        UnitKind.Layer => unit.Layer >= _m.Layers ? ParameterCounts.PerMtpDepth(_m, _st) : ParameterCounts.PerLayer(_m, _st, unit.Layer),
        _ => new GpuParameters(VocabularyShard, 0),
    };

    /// <summary>Bytes a unit all-gathers before its compute (per rank, whole buffer).</summary>
    private GpuParameters GatherParameters(ItemUnit unit)
    {
        if (unit.Kind != UnitKind.Output || Fsdp) return UnitParameters(unit);   // FSDP regathers a tied head: it was freed after the embedding
        // The distributed optimizer gathers each updated parameter once: the head once (not again for each MTP depth),
        // and not at all when it is the embedding matrix.
        return OutputTiedInPlace || unit.Layer >= _m.Layers ? default : UnitParameters(unit);
    }

    /// <summary>Bytes a unit reduce-scatters after its backward: the head once (after its last use) and not when tied in place.</summary>
    private GpuParameters GradientParameters(ItemUnit unit) =>
        unit.Kind == UnitKind.Output && (OutputTiedInPlace || unit.Layer >= _m.Layers) ? default : UnitParameters(unit);

    /// <summary>
    /// Emits an item on every built replica unit by unit, with each unit's parameter all-gather (prefetched one unit
    /// ahead) and, for ZeRO-3 in the backward, its gradient reduce-scatter; returns each replica's outputs.
    /// </summary>
    private int[][] EmitItemGathered(PipelineItem item, int[]?[]? inputs)
    {
        var stage = StageOf(item);
        var mb = item.Microbatch;
        var n = _builtReplicas;
        var gpus = new int[n][];
        var last = new int[n][];
        var phase = new OpPhase[n];
        var units = UnitsOf(item);
        // What one all-gather brings: a unit (FSDP), or a bucket of consecutive units (Megatron).
        var slotOf = Fsdp ? Enumerable.Range(0, units.Count).ToArray() : Buckets(units);
        var slots = units.Count == 0 ? 0 : slotOf[^1] + 1;
        var firstUnit = new int[slots];
        for (var u = units.Count - 1; u >= 0; u--) firstUnit[slotOf[u]] = u;
        var gathers = new List<(int Op, int[] Ranks)>?[slots];
        var ends = new Dictionary<int, int>[units.Count];

        void Issue(int k)
        {
            if (k >= slots || gathers[k] is not null) return;
            var saved = _b.Phase;
            _b.Phase = item.Backward ? OpPhase.BackwardData : OpPhase.Forward;
            // limit_all_gathers: at most two units gathered, so unit u's gather waits until unit u-2 is freed (FSDP);
            // Megatron's bucket gathers wait only for the previous bucket on the stream.
            // Across items the two units emitted last on the stage (the previous item's) are the ones to free.
            var recent = _recentUnitEnds.TryGetValue(stage, out var r) ? r : null;
            var freed = !Fsdp ? null : k >= 2 ? ends[k - 2] : recent is not null && recent.Count >= 2 - k ? recent[recent.Count - (2 - k)] : null;
            var p = new GpuParameters(0, 0);
            for (var u = firstUnit[k]; u < units.Count && slotOf[u] == k; u++) p += GatherParameters(units[u]);
            gathers[k] = UnitCollectives(stage, p, OpKind.ParameterAllGather, units[firstUnit[k]], mb,
                g => freed is not null && freed.TryGetValue(g, out var op) ? op : -1);
            _b.Phase = saved;
        }

        // The first two gathers go before the item's input is received (and all-gathered over TP under scatter/gather):
        // they do not depend on it, and Megatron launches a chunk's first bucket before its forward begins.
        Issue(0);
        Issue(1);
        for (var dp = 0; dp < n; dp++)
        {
            gpus[dp] = StageGpus(dp, stage);
            last[dp] = ItemInput(gpus[dp], item, inputs?[dp]);
            if (!item.Backward) _b.Phase = OpPhase.Forward;
            phase[dp] = _b.Phase;
        }
        for (var u = 0; u < units.Count; u++)
        {
            var k = slotOf[u];
            if (firstUnit[k] == u)
            {
                Issue(k);
                Issue(k + 1);   // prefetch: the next unit's (bucket's) gather goes before this one's compute
                foreach (var (op, ranks) in gathers[k]!)
                    foreach (var g in ranks)
                        if (_b.IsBuilt(g)) _b.WaitBeforeNextCompute(g, op);
            }
            var end = new Dictionary<int, int>();
            for (var dp = 0; dp < n; dp++)
            {
                _b.Phase = phase[dp];
                EmitUnit(units[u], gpus[dp], mb, last[dp]);
                phase[dp] = _b.Phase;
                for (var li = 0; li < gpus[dp].Length; li++) end[gpus[dp][li]] = last[dp][li];
            }
            ends[u] = end;
            if (Fsdp && item.Backward) ReduceScatterGradients(stage, GradientParameters(units[u]), units[u], mb, end);
        }
        if (units.Count > 0)
        {
            var recentEnds = _recentUnitEnds.TryGetValue(stage, out var kept) ? kept : _recentUnitEnds[stage] = new List<Dictionary<int, int>>(2);
            for (var u = Math.Max(0, units.Count - 2); u < units.Count; u++) recentEnds.Add(ends[u]);
            if (recentEnds.Count > 2) recentEnds.RemoveRange(0, recentEnds.Count - 2);
        }
        // The embedding has no backward GEMM (its sparse gradient is accumulated with the first layer's backward): its
        // gradient is reduce-scattered once the first chunk's backward is done.
        if (Fsdp && item.Backward && item.Chunk == 0 && _m.Vocabulary > 0 && units.Count > 0)
            ReduceScatterGradients(stage, new GpuParameters(VocabularyShard, 0), new ItemUnit(UnitKind.Embedding, -1, true), mb, ends[^1]);
        for (var dp = 0; dp < n; dp++) _b.Phase = phase[dp];
        return last;
    }

    /// <summary>
    /// Megatron's parameter buckets over an item's units: filled in backward order (the last unit first, as the
    /// gradient buckets are) and closed once they hold bucket_size parameters, max(40,000,000, 1,000,000 x DP)
    /// (Megatron-Core DistributedDataParallelConfig.bucket_size), so a small model is one bucket; returns each unit's
    /// bucket, numbered in forward order.
    /// </summary>
    private int[] Buckets(List<ItemUnit> units)
    {
        var bucketSize = Math.Max(40_000_000L, 1_000_000L * NonExpertSyncRanks);
        var reversed = new int[units.Count];
        int bucket = 0;
        long filled = 0;
        for (var u = units.Count - 1; u >= 0; u--)
        {
            reversed[u] = bucket;
            filled += GatherParameters(units[u]).Total;
            if (filled >= bucketSize && u > 0) { bucket++; filled = 0; }
        }
        return reversed.Select(b => bucket - b).ToArray();
    }

    /// <summary>The distributed optimizer's parameter buckets of a stage (each chunk's, in forward order): what one all-gather brings.</summary>
    private IEnumerable<GpuParameters> BucketParameters(int stage)
    {
        for (var chunk = stage; chunk < _chunkCount; chunk += _st.PP)
        {
            var units = UnitsOf(new PipelineItem(chunk, 0, false));
            var bucketOf = Buckets(units);
            var sums = new GpuParameters[units.Count == 0 ? 0 : bucketOf[^1] + 1];
            for (var u = 0; u < units.Count; u++) sums[bucketOf[u]] += GatherParameters(units[u]);
            foreach (var p in sums) yield return p;
        }
    }

    private void ReduceScatterGradients(int stage, GpuParameters p, ItemUnit unit, int mb, Dictionary<int, int> done)
    {
        var saved = _b.Phase;
        _b.Phase = OpPhase.Update;
        foreach (var (op, ranks) in UnitCollectives(stage, p, OpKind.GradientReduceScatter, unit, mb, g => done.TryGetValue(g, out var x) ? x : -1))
            foreach (var g in ranks)
                if (_b.IsBuilt(g)) _zeroGradientOps.Add((g, op));
        _b.Phase = saved;
    }

    /// <summary>Per stage, the completion (per GPU) of the last two units emitted with gathers: what the next item's first gathers wait to free.</summary>
    private readonly Dictionary<int, List<Dictionary<int, int>>> _recentUnitEnds = new();

    /// <summary>Gradient reduce-scatters per microbatch (ZeRO-3): the optimizer step waits for them.</summary>
    private readonly List<(int Gpu, int Op)> _zeroGradientOps = new();

    /// <summary>
    /// One collective per group sharing the unit's weights on the stage (see the class summary), each waiting for
    /// <paramref name="depOf"/> of its members (by representative when folded); groups under two ranks and empty
    /// buffers emit nothing.
    /// </summary>
    private List<(int Op, int[] Ranks)> UnitCollectives(int stage, GpuParameters p, OpKind kind, ItemUnit unit, int mb, Func<int, int> depOf)
    {
        var ops = new List<(int, int[])>();
        var layer = unit.Kind == UnitKind.Layer ? unit.Layer : -1;
        void One(int[] ranks, long bytes)
        {
            if (ranks.Length < 2 || bytes <= 0) return;
            var deps = ranks.Select(g => depOf(Rep(g))).Where(d => d >= 0).Distinct().ToArray();
            ops.Add((_b.AddCommunication(kind, _b.Group(ranks), bytes, layer, deps, microbatch: mb), ranks));
        }
        for (var li = 0; li < _st.FoldUnitGpus; li++)
        {
            if (li < _st.TP || !_c.AttentionDp) One(NonExpertRanks([stage], li), p.NonExpert * _e);
            if (li < _st.EP * _st.ETP) One(ExpertRanks([stage], li), p.ExpertPerRank * _e);
        }
        return ops;
    }
}

using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Analysis;

/// <summary>Bytes one GPU of a pipeline stage holds at its peak, by component.</summary>
public sealed record StageMemory(
    int Stage,
    double WeightsBytes,
    double GradientsBytes,
    double OptimizerBytes,
    double ActivationsBytes,
    double AllToAllBufferBytes,
    int MicrobatchesInFlight)
{
    public double TotalBytes => WeightsBytes + GradientsBytes + OptimizerBytes + ActivationsBytes + AllToAllBufferBytes;

    public IReadOnlyList<(string Component, double Bytes)> Components => new (string, double)[]
    {
        ("weights", WeightsBytes), ("gradients", GradientsBytes), ("optimizer", OptimizerBytes),
        ("activations", ActivationsBytes), ("all-to-all buffers", AllToAllBufferBytes),
    };
}

/// <summary>What does not fit: the amount over capacity and the largest component on the fullest GPU.</summary>
public sealed record MemoryOverflow(double Bytes, string LargestComponent, double LargestComponentBytes)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Bytes / 1e9:F1} GB over capacity; largest component: {LargestComponent} ({LargestComponentBytes / 1e9:F1} GB)");
}

/// <summary>The memory verdict of a scenario.</summary>
public sealed record MemoryReport(
    IReadOnlyList<StageMemory> Stages,
    double PeakBytesPerGpu,
    double CapacityBytes,
    MemoryOverflow? Overflow,
    int Microbatches,
    int? SmallestFittingMicrobatches,
    string Notes)
{
    public bool Feasible => Overflow is null;

    public override string ToString() => (Feasible
        ? string.Create(CultureInfo.InvariantCulture, $"fits: {PeakBytesPerGpu / 1e9:F1} of {CapacityBytes / 1e9:F0} GB per GPU")
        : string.Create(CultureInfo.InvariantCulture,
            $"does not fit: {PeakBytesPerGpu / 1e9:F1} GB needed per GPU, {CapacityBytes / 1e9:F0} GB available ({Overflow}); {FitHint}"))
        + (Notes.Contains(MemoryModel.DualPipeNote, StringComparison.Ordinal) ? $" ({MemoryModel.DualPipeNote})" : "");

    private string FitHint => SmallestFittingMicrobatches is { } m ? $"fits with {m} microbatches"
        : Notes.StartsWith("seed", StringComparison.Ordinal) ? "the seed layout has no microbatches; the corrected derivation can split the batch"
        : "no microbatch count fits";
}

/// <summary>
/// Per-GPU memory: weights, gradients and Adam states (mixed precision: 2 + 2 + 12 bytes per parameter,
/// Rajbhandari et al., ZeRO, SC20), partitioned over data-parallel ranks by ZeRO stage; activations saved for
/// backward (flash attention: no score matrix; a materialized kernel keeps the probabilities) for every microbatch the schedule holds in flight, or only
/// layer inputs with full recomputation; all-to-all send and receive buffers. Inference holds one layer's
/// working set. The seed derivation processes every token on every GPU, and is sized that way.
/// </summary>
public static class MemoryModel
{
    private const double AdamStateBytesPerParameter = 12;   // fp32 master weights, momentum and variance

    /// <summary>What a DualPipe memory report says about its weights (DeepSeek-V3 report §3.2.1, Table 2: 2x parameters).</summary>
    public const string DualPipeNote = "DualPipe: two parameter copies per GPU, stages s and pp - 1 - s";

    public static MemoryReport Estimate(ModelSpec model, StrategySpec st, HardwareSpec hardware)
    {
        var report = EstimateFixed(model, st, hardware, st.Microbatches);
        return report with { SmallestFittingMicrobatches = FirstFitting(model, st, hardware) };
    }

    /// <summary>
    /// <see cref="Estimate"/> without <see cref="MemoryReport.SmallestFittingMicrobatches"/> (null here): the verdict,
    /// peak and stages at the strategy's own microbatch count, which is all a sweep row shows. The search for the
    /// smallest fitting count estimates up to 32 other counts, most of the cost when a layout does not fit.
    /// </summary>
    internal static MemoryReport EstimateAtMicrobatches(ModelSpec model, StrategySpec st, HardwareSpec hardware) =>
        EstimateFixed(model, st, hardware, st.Microbatches);

    /// <summary>Parameters of the largest FSDP unit on a stage, on one rank: a layer, or the embedding / output layer.</summary>
    private static long LargestUnitParameters(ModelSpec model, StrategySpec st, int stage)
    {
        long largest = 0;
        foreach (var layer in ParameterCounts.LayerIndicesOnStage(model, st, stage)) largest = Math.Max(largest, ParameterCounts.PerLayer(model, st, layer).Total);
        if (stage == st.PP - 1 && model.MtpLayers > 0) largest = Math.Max(largest, ParameterCounts.PerMtpDepth(model, st).Total);
        if (model.Vocabulary > 0 && (stage == 0 || stage == st.PP - 1)) largest = Math.Max(largest, checked(model.Vocabulary * model.HiddenSize) / st.TP);
        return largest;
    }

    private static int? FirstFitting(ModelSpec model, StrategySpec st, HardwareSpec hardware)
    {
        if (st.Derivation == Derivation.Seed) return null;   // the seed's layout has no microbatches
        var attentionRanks = st.Attention == AttentionPlacement.DataParallel ? st.EP : 1;
        var sequences = model.Batch / ((long)st.DP * attentionRanks);
        // Only divisors of the sequences are microbatch counts: enumerate them in O(sqrt n) (never scan every m up to n).
        var counts = Divisors(sequences)
            .Where(m => m <= Bounds.Microbatches.Max && (st.Schedule != PipelineSchedule.Interleaved || m % st.PP == 0))
            .ToArray();
        bool Fits(long m) => EstimateFixed(model, st with { Microbatches = (int)m }, hardware, (int)m).Feasible;
        if (counts.Length <= 32)
        {
            foreach (var m in counts) if (Fits(m)) return (int)m;
            return null;
        }
        // Many divisors (a highly composite batch): binary search, O(log n) estimates. Per-GPU memory does not grow
        // with the microbatch count (activations per microbatch shrink as 1/m; 1F1B holds min(m, pp) in flight, GPipe m).
        if (!Fits(counts[^1])) return null;
        int lo = 0, hi = counts.Length - 1;
        while (lo < hi)
        {
            var mid = (lo + hi) / 2;
            if (Fits(counts[mid])) hi = mid; else lo = mid + 1;
        }
        return (int)counts[lo];
    }

    /// <summary>The divisors of <paramref name="n"/> in ascending order, in O(sqrt n).</summary>
    public static IReadOnlyList<long> Divisors(long n)
    {
        var low = new List<long>();
        var high = new List<long>();
        for (long d = 1; d * d <= n; d++)
        {
            if (n % d != 0) continue;
            low.Add(d);
            if (d != n / d) high.Add(n / d);
        }
        high.Reverse();
        low.AddRange(high);
        return low;
    }

    private static MemoryReport EstimateFixed(ModelSpec model, StrategySpec st, HardwareSpec hardware, int microbatches)
    {
        var training = st.Mode == WorkloadMode.Training;
        var seed = st.Derivation == Derivation.Seed;
        double e = model.ElementBytes, h = model.HiddenSize, f = model.FfnHiddenSize;
        var attentionDp = st.Attention == AttentionPlacement.DataParallel;
        var attnTp = attentionDp ? st.TP : st.TP * st.EP;
        // Tokens one GPU's attention processes per microbatch (the seed gives every GPU all tokens).
        double tokens = seed ? model.Tokens : RoutingOutcome.AttentionTokensPerRank(model, st with { Microbatches = microbatches });
        // Tokens one GPU's experts receive, with the routing's busiest rank and capacity.
        double expertTokens;
        if (model.IsDense) expertTokens = 0;
        else if (seed) expertTokens = Math.Ceiling((double)model.Tokens * model.TopK / model.Experts) * Math.Max(1, model.Experts / Math.Max(st.EP, st.PP));
        else expertTokens = RoutingOutcome.Of(model, st with { Microbatches = microbatches })!.TokensPerRank.Max();
        var ffnShard = seed ? f : f / st.TP;
        // Saved per layer and microbatch (bytes): layer-norm inputs, Q/K/V and attention outputs, FFN/expert
        // inputs and intermediates, router logits (fp32), flash-attention softmax statistics (fp32).
        // Materialized scores instead save the probabilities (e bytes per score) and, with dropout, its mask and
        // output (1 + e more); Korthikanti et al. 2022 count 5 a s^2 b for fp16 with dropout.
        var scoresPerLayer = tokens * model.SequenceLength * model.AttentionHeads / attnTp;
        // Q, K, V and attention-output widths per rank: heads x head dims over the attention TP ranks (GQA: fewer KV
        // heads, at least one per rank); MLA: its latents (replicated) and the up-projected q, k, v per head.
        double headsPerRank = (double)model.AttentionHeads / attnTp;
        var qkvo = seed ? 4 * h / attnTp
            : model.Mla is { } mla ? mla.QLoraRank + mla.KvLoraRank + mla.QkRopeHeadDim + headsPerRank * (2 * mla.QkHeadDim + 2 * mla.VHeadDim)
            : 2 * headsPerRank * model.HeadDim + 2 * Math.Max(1.0, (double)model.KeyValueHeads / attnTp) * model.HeadDim;
        // Sequence parallelism (TP > 1): the norm inputs and the norm outputs the column-parallel GEMMs save (Megatron-Core
        // saves the sequence-sharded input and all-gathers it again in the backward) hold 1/TP of the tokens
        // (Korthikanti et al. 2022 §4.2.2, Table 2: 34/t instead of 10 + 24/t); in an MoE layer the router's input and
        // logits too (each rank routes its own T/TP tokens).
        var sp = !seed && st.SequenceParallel && st.TP > 1 ? st.TP : 1;
        var attentionActs = e * tokens * (2 * h / sp + qkvo) + st.AttentionKernel switch
        {
            AttentionKernel.Materialized => e * scoresPerLayer,
            AttentionKernel.MaterializedDropout => (2 * e + 1) * scoresPerLayer,
            _ => 4 * tokens * model.AttentionHeads / attnTp,
        };
        // FFN intermediates: up output and activation output (gated: the fused [2F] output and F). A model with dense
        // first layers is sized by its MoE layers.
        var intermediates = model.GatedFfn ? 3 : 2;
        var expertFfnShard = seed ? model.ExpertFfnHiddenSize : model.ExpertFfnHiddenSize / st.ETP;   // fc1/fc2 split over ETP
        var sharedShard = (double)model.SharedExperts * model.SharedExpertWidth / st.TP;
        var ffnActs = model.IsDense
            ? e * tokens * (2 * h / sp + intermediates * ffnShard)
            : e * tokens * 2 * h / sp + 4 * tokens / sp * model.Experts + e * expertTokens * (model.ExpertInputWidth + intermediates * expertFfnShard) + e * tokens * intermediates * sharedShard;
        // Selective recomputation (strategy.recomputeModules): what each listed module no longer keeps per layer and microbatch.
        var keptWithoutSelective = attentionActs + ffnActs;
        bool R(RecomputeModules m) => !seed && training && (st.RecomputeModules & m) != 0;
        var normOutput = e * tokens * h / sp;   // what a norm's output saved for the following GEMM holds (one of its 2 h)
        if (!seed && training && st.RecomputeModules != RecomputeModules.None)
        {
            // layernorm: the norm output the following GEMM saved.
            if (R(RecomputeModules.Layernorm)) { attentionActs -= normOutput; ffnActs -= normOutput; }
            // core_attn: the materialized scores (a fused kernel keeps nothing beyond Q, K, V and O, saved anyway).
            if (R(RecomputeModules.CoreAttn) && st.AttentionKernel != AttentionKernel.Fused)
                attentionActs -= (st.AttentionKernel == AttentionKernel.MaterializedDropout ? 2 * e + 1 : e) * scoresPerLayer;
            // mla_up_proj: the up-projected Q, K and V per head.
            if (R(RecomputeModules.MlaUpProj) && model.Mla is { } m) attentionActs -= e * tokens * headsPerRank * (2 * m.QkHeadDim + m.VHeadDim);
            if (model.IsDense)
            {
                // mlp: the FFN keeps only its input.
                if (R(RecomputeModules.Mlp)) ffnActs -= e * tokens * intermediates * ffnShard;
            }
            else if (R(RecomputeModules.Moe))
            {
                // moe: the MoE layer keeps only its input (and the norm's, above).
                ffnActs = (R(RecomputeModules.Layernorm) ? 1 : 2) * normOutput;
            }
            else
            {
                // moe_act: the experts' activation output; shared_experts: the shared experts' intermediates.
                if (R(RecomputeModules.MoeAct)) ffnActs -= e * expertTokens * expertFfnShard;
                if (R(RecomputeModules.SharedExperts)) ffnActs -= e * tokens * intermediates * sharedShard;
            }
        }
        var perLayer = attentionActs + ffnActs;
        // The backward of one layer at a time holds what its recompute brings back (full: the whole layer, below).
        var selectiveWorkingSet = keptWithoutSelective - perLayer;
        if (model.IsHybrid && !seed)
        {
            // Hybrid layers hold one block each: the mean over the pattern of what each kind saves. Mamba-2 (per rank):
            // the norm input, the in-projection output, the conv output, the scan output y and the gated-norm output
            // (e bytes per element), and the fp32 chunk states [heads/TP, P, N] per chunk of Q tokens.
            var mambaTp = (double)attnTp;
            var mambaActs = e * tokens * (2 * h / sp + (model.MambaInProjWidth + model.MambaConvDim + 2 * model.MambaInner) / mambaTp)
                            + 4 * Math.Ceiling(tokens / model.MambaChunkSize) * model.MambaHeads / mambaTp * model.MambaHeadDim * model.MambaStateDim;
            var denseActs = e * tokens * (2 * h / sp + intermediates * ffnShard);
            if (R(RecomputeModules.Layernorm)) { mambaActs -= normOutput; denseActs -= normOutput; }
            if (R(RecomputeModules.Mlp)) denseActs -= e * tokens * intermediates * ffnShard;
            perLayer = Enumerable.Range(0, model.Layers).Average(l => model.LayerKindOf(l) switch
            {
                HybridLayerKind.Mamba => mambaActs,
                HybridLayerKind.Attention => attentionActs,
                HybridLayerKind.Mlp => denseActs,
                _ => ffnActs,
            });
        }
        var a2aBuffers = model.IsDense || (st.EP == 1 && !seed) ? 0 : 2 * e * Math.Max(tokens / sp * model.TopK, expertTokens) * model.ExpertInputWidth;

        var plan = PipelinePlan.Build(st.PP, st.VirtualStages, microbatches, st.Schedule, training);
        // Megatron-Core's EP all-to-all overlap runs one extra warm-up forward: one more microbatch's activations live.
        if (training && !seed && st.MoeAllToAllOverlap == MoeAllToAllOverlap.OneFOneB)
            for (var s = 0; s < plan.Length; s++) plan[s] = PipelinePlan.MergedForwardBackward(plan[s]);
        var chunkLayers = seed ? PipelineLayers.Split(model.Layers, st.PP, 1, null, null) : st.ChunkLayers(model.Layers);
        var stages = new List<StageMemory>();
        for (var stage = 0; stage < st.PP; stage++)
        {
            // DualPipe: each rank holds two stages' weights (two copies of the model over the pipeline), sharded by a
            // partitioned optimizer over both copies' replicas. Non-expert weights are shared by the attention
            // data-parallel ranks (EP x DP with ETP = TP), experts by the expert-data-parallel ones.
            var p = seed ? SeedParameters(model, st) : ParameterCounts.OnRank(model, st, stage);
            var copies = seed ? 1 : ParameterCounts.DualPipeCopies(st);
            var nonExpertShard = (double)(attentionDp ? st.AttentionDataParallelSize : st.DP) * copies;
            var expertShard = (double)st.DP * copies;
            double Sharded(double bytesPerParam, bool partitioned) =>
                bytesPerParam * (partitioned ? p.NonExpert / nonExpertShard + p.ExpertPerRank / expertShard : p.Total);
            var weights = Sharded(e, st.ZeroStage >= 3);
            // ZeRO-3 / FSDP: besides the shard, only the gathered units live: the one computing and the one prefetched
            // (limit_all_gathers keeps two), each a whole layer (or the embedding / output layer) on this rank.
            if (st.ZeroStage >= 3 && !seed) weights += 2.0 * e * LargestUnitParameters(model, st, stage);
            var grads = training ? Sharded(e, st.ZeroStage >= 2) : 0;
            var optimizer = training ? Sharded(AdamStateBytesPerParameter, st.ZeroStage >= 1 || st.UseDistributedOptimizer) : 0;
            double activations;
            var inFlight = 1;
            if (!training) activations = perLayer;   // one layer's working set at a time
            else
            {
                // Forward items held before their backward, walked in the stage's schedule order: each holds its
                // chunk's layers (all saved activations, or only layer inputs with full recomputation); only items
                // of the last chunk hold the fp32 logits, so under interleaving the logits are charged to the
                // last-chunk microbatches actually live, not to every microbatch in flight.
                inFlight = PipelinePlan.PeakInFlight(plan[stage]);
                var logits = model.Vocabulary > 0 ? 4.0 * tokens * model.Vocabulary / st.TP : 0;
                activations = PeakLiveActivationBytes(plan[stage], chunkLayers, st.Recompute ? e * tokens * h / sp : perLayer, logits)
                              + (st.Recompute ? perLayer : selectiveWorkingSet);
            }
            stages.Add(new StageMemory(stage, weights, grads, optimizer, activations, a2aBuffers, inFlight));
        }
        var fullest = stages.MaxBy(s => s.TotalBytes)!;
        var capacity = hardware.Gpu.HbmCapacityBytes;
        MemoryOverflow? overflow = null;
        if (fullest.TotalBytes > capacity)
        {
            var (component, bytes) = fullest.Components.MaxBy(c => c.Bytes);
            overflow = new MemoryOverflow(fullest.TotalBytes - capacity, component, bytes);
        }
        var notes = seed ? "seed derivation: every GPU holds all tokens' activations"
            : ParameterCounts.DualPipeCopies(st) == 2 ? $"corrected derivation; {DualPipeNote}" : "corrected derivation";
        return new MemoryReport(stages, fullest.TotalBytes, capacity, overflow, microbatches, null, notes);
    }

    /// <summary>
    /// Peak bytes of the activations a stage holds, walking its items in schedule order: a forward adds its chunk's
    /// layers x <paramref name="bytesPerLayer"/> (plus <paramref name="logitsBytes"/> if it is the last chunk), its
    /// backward (or zero-bubble B part) releases them.
    /// </summary>
    internal static double PeakLiveActivationBytes(IReadOnlyList<PipelineItem> items, (int First, int Count)[] chunkLayers, double bytesPerLayer, double logitsBytes)
    {
        double live = 0, peak = 0;
        var lastChunk = chunkLayers.Length - 1;
        foreach (var item in items)
        {
            if (item.Part == PipelinePart.WeightGradient) continue;
            var bytes = chunkLayers[item.Chunk].Count * bytesPerLayer + (item.Chunk == lastChunk ? logitsBytes : 0);
            live += item.Backward ? -bytes : bytes;
            peak = Math.Max(peak, live);
        }
        return peak;
    }

    /// <summary>The seed's layouts: EP = n holds full attention weights and its experts; TP x PP shards both dimensions (§2).</summary>
    private static GpuParameters SeedParameters(ModelSpec m, StrategySpec st)
    {
        long h = m.HiddenSize, f = m.FfnHiddenSize;
        if (st.EP > 1 || (st.TP == 1 && st.PP == 1))
            return m.Layers * new GpuParameters(4 * h * h + h * m.Experts, Math.Max(1, m.Experts / st.EP) * 2 * h * f);
        return (m.Layers / st.PP) * new GpuParameters(4 * (h / st.TP) * (h / st.TP), Math.Max(1, m.Experts / st.PP) * 2 * h * f);
    }
}

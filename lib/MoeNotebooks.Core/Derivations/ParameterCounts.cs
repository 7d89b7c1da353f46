using MoeNotebooks.Config;

namespace MoeNotebooks.Derivations;

/// <summary>Parameters held by one GPU: shared (non-expert) weights and its experts' weights.</summary>
public readonly record struct GpuParameters(long NonExpert, long ExpertPerRank)
{
    // Checked: ModelSpec bounds the model's parameters (Bounds.Parameters) so these never overflow; if a caller bypasses
    // validation, an OverflowException is better than a negative parameter count and a "fits" verdict.
    public long Total => checked(NonExpert + ExpertPerRank);
    public static GpuParameters operator +(GpuParameters a, GpuParameters b) => new(checked(a.NonExpert + b.NonExpert), checked(a.ExpertPerRank + b.ExpertPerRank));
    public static GpuParameters operator *(int n, GpuParameters a) => new(checked(n * a.NonExpert), checked(n * a.ExpertPerRank));
}

/// <summary>A whole model's parameters: total, active per token, and the parts.</summary>
/// <param name="Total">Every weight (embedding and output once each when untied).</param>
/// <param name="ActiveNonEmbedding">Weights a token's GEMMs touch in the transformer layers (top-k + shared experts), without the embedding and output layer.</param>
/// <param name="Embedding">The input embedding matrix V x H.</param>
/// <param name="Output">The output layer V x H (0 when tied to the embedding).</param>
public sealed record ModelParameters(long Total, long ActiveNonEmbedding, long Embedding, long Output)
{
    /// <summary>
    /// The multi-token-prediction depths' own weights (projections, norms, transformer layers; the embedding and
    /// output head are shared and counted once in <see cref="Total"/>), not included in <see cref="Total"/>, which is
    /// the main model as publishers state it (DeepSeek-V3: 671B main + 14B MTP module).
    /// </summary>
    public long Mtp { get; init; }

    /// <summary>The MTP depths' weights a token's GEMMs touch (top-k + shared experts of their layers, projections).</summary>
    public long MtpActiveNonEmbedding { get; init; }

    /// <summary>Main model and MTP depths together.</summary>
    public long TotalWithMtp => checked(Total + Mtp);

    /// <summary>Active parameters counting the embedding matrices as a publisher does: "both", "output" or "none".</summary>
    public long Active(string counts) => counts switch
    {
        "both" => ActiveNonEmbedding + Embedding + Output,   // a tied output layer is the embedding matrix, counted once
        "output" => ActiveNonEmbedding + (Output > 0 ? Output : Embedding),
        "none" => ActiveNonEmbedding,
        _ => throw new ArgumentException($"unknown convention \"{counts}\": use both, output or none", nameof(counts)),
    };
}

/// <summary>Parameter counts per GPU under a strategy (corrected derivation sharding) and for a whole model. Biases are ignored.</summary>
public static class ParameterCounts
{
    /// <summary>Attention weights of one layer (unsharded) and the share split over attention TP ranks vs replicated.</summary>
    private static (long Split, long Replicated) Attention(ModelSpec m, int attnTp)
    {
        long h = m.HiddenSize;
        if (m.Mla is { } mla)
        {
            long heads = m.AttentionHeads;
            var q = mla.QLoraRank > 0 ? mla.QLoraRank * heads * mla.QkHeadDim : h * heads * mla.QkHeadDim;
            var replicated = (mla.QLoraRank > 0 ? h * mla.QLoraRank + mla.QLoraRank : 0) + h * (mla.KvLoraRank + mla.QkRopeHeadDim) + mla.KvLoraRank;
            return (q + mla.KvLoraRank * heads * (mla.QkNopeHeadDim + mla.VHeadDim) + heads * mla.VHeadDim * h, replicated);
        }
        var qo = 2 * h * m.AttentionHeads * m.HeadDim;
        var kv = 2 * h * m.KeyValueHeads * m.HeadDim;
        // KV heads fewer than the TP ranks are replicated: each rank holds one head's K and V.
        var kvPerRank = m.KeyValueHeads >= attnTp ? kv / attnTp : 2 * h * m.HeadDim;
        return (qo + kvPerRank * attnTp, 0);
    }

    private static long FfnMatrices(ModelSpec m) => m.GatedFfn ? 3 : 2;

    /// <summary>One transformer layer's parameters on one GPU (the last layer: an MoE layer in a model with experts).</summary>
    public static GpuParameters PerLayer(ModelSpec m, StrategySpec st) => PerLayer(m, st, m.Layers - 1);

    /// <summary>Layer <paramref name="layer"/>'s parameters on one GPU.</summary>
    public static GpuParameters PerLayer(ModelSpec m, StrategySpec st, int layer)
    {
        long h = m.HiddenSize;
        var attnTp = st.Attention == AttentionPlacement.DataParallel ? st.TP : st.TP * st.EP;
        var (split, replicated) = Attention(m, attnTp);
        var kind = m.LayerKindOf(layer);
        switch (kind)
        {
            // Hybrid layers: one block and one pre-norm each.
            case HybridLayerKind.Mamba: return new(Mamba(m, attnTp) + h, 0);
            case HybridLayerKind.Attention: return new(split / attnTp + replicated + h, 0);
            case HybridLayerKind.Mlp: return new(FfnMatrices(m) * h * m.FfnHiddenSize / st.TP + h, 0);
        }
        var attention = kind == HybridLayerKind.Moe ? h : split / attnTp + replicated + 2 * 2 * h;   // Q, K, V, O shards + two layer norms
        if (!m.IsMoeLayer(layer)) return new(attention + FfnMatrices(m) * h * m.FfnHiddenSize / st.TP, 0);
        var gate = h * m.Experts;
        var shared = m.SharedExperts * FfnMatrices(m) * h * m.SharedExpertWidth / st.TP;
        var latent = m.MoeLatentSize is { } l ? 2 * h * l : 0;   // [H -> latent] and [latent -> H], replicated over TP
        var experts = (long)(m.Experts / st.EP) * FfnMatrices(m) * m.ExpertInputWidth * m.ExpertFfnHiddenSize / st.ETP;   // fc1/fc2 split over ETP (= TP unless folded)
        return new(attention + gate + shared + latent, experts);
    }

    /// <summary>
    /// One Mamba-2 mixer's parameters on one of <paramref name="tp"/> ranks (Megatron-Core MambaMixer): in-projection
    /// H x (2 d_inner + 2 G N + heads), conv1d weight and bias conv_dim x (d_conv + 1), A_log, D and dt_bias per head,
    /// the gated norm's d_inner weights and the out-projection d_inner x H, all split over TP.
    /// </summary>
    public static long Mamba(ModelSpec m, int tp)
    {
        long h = m.HiddenSize;
        return h * m.MambaInProjWidth / tp + m.MambaConvDim / tp * (m.MambaConvKernel + 1) + 3L * m.MambaHeads / tp + m.MambaInner / tp + m.MambaInner / tp * h;
    }

    /// <summary>
    /// One multi-token-prediction depth's own parameters on one GPU (DeepSeek-V3 technical report §2.2): two RMSNorms,
    /// the projection M_k [2H -> H] (column-parallel over TP) and one transformer layer of the last layer's kind.
    /// </summary>
    public static GpuParameters PerMtpDepth(ModelSpec m, StrategySpec st)
    {
        long h = m.HiddenSize;
        // A hybrid model's depth is its attention block followed by its last layer's block (Nemotron-3 Super: "*E").
        var layer = m.IsHybrid ? PerLayer(m with { HybridOverridePattern = "*" }, st, 0) + PerLayer(m, st, m.Layers - 1) : PerLayer(m, st, m.Layers - 1);
        return layer + new GpuParameters(2 * h * h / st.TP + 2 * h, 0);
    }

    /// <summary>Layers held by a pipeline stage (over all its virtual chunks).</summary>
    public static int LayersOnStage(ModelSpec m, StrategySpec st, int stage) => LayerIndicesOnStage(m, st, stage).Count();

    /// <summary>The layers a pipeline stage holds.</summary>
    public static IEnumerable<int> LayerIndicesOnStage(ModelSpec m, StrategySpec st, int stage)
    {
        var chunks = st.ChunkLayers(m.Layers);
        for (var c = stage; c < chunks.Length; c += st.PP)
            for (var l = chunks[c].First; l < chunks[c].First + chunks[c].Count; l++) yield return l;
    }

    /// <summary>Everything a GPU of <paramref name="stage"/> holds, including the embedding (first stage) and output layer (last stage).</summary>
    public static GpuParameters OnStage(ModelSpec m, StrategySpec st, int stage)
    {
        var p = new GpuParameters(0, 0);
        foreach (var layer in LayerIndicesOnStage(m, st, stage)) p += PerLayer(m, st, layer);
        var vocabShard = checked(m.Vocabulary * m.HiddenSize) / st.TP;
        if (stage == 0) p += new GpuParameters(vocabShard, 0);
        // The output layer: its own matrix when untied; a tied copy on the last stage when that is another stage.
        if (stage == st.PP - 1 && (st.PP > 1 || !m.TieEmbeddings)) p += new GpuParameters(vocabShard, 0);
        // The multi-token-prediction depths run on the last stage after the main layers.
        if (stage == st.PP - 1 && m.MtpLayers > 0) p += m.MtpLayers * PerMtpDepth(m, st);
        return p;
    }

    /// <summary>
    /// Parameters one pipeline rank holds: its stage's (<see cref="OnStage"/>), and under DualPipe in training also
    /// stage pp - 1 - rank's, the second copy (DeepSeek-V3 report §3.2.1, Table 2: DualPipe keeps 2x the parameters).
    /// </summary>
    public static GpuParameters OnRank(ModelSpec m, StrategySpec st, int rank) =>
        DualPipeCopies(st) == 2 ? OnStage(m, st, rank) + OnStage(m, st, st.PP - 1 - rank) : OnStage(m, st, rank);

    /// <summary>Copies of every weight over the pipeline: 2 under DualPipe in training (each rank holds stages s and pp - 1 - s), else 1.</summary>
    public static int DualPipeCopies(StrategySpec st) => st.Schedule == PipelineSchedule.DualPipe && st.Mode == WorkloadMode.Training ? 2 : 1;

    /// <summary>The whole model's parameters (one GPU, no sharding), with its active parameters per token.</summary>
    public static ModelParameters Of(ModelSpec m)
    {
        var one = new StrategySpec(1, 1, 1, 1);
        long total = 0, active = 0;
        var f = FfnMatrices(m) * m.ExpertInputWidth;
        for (var layer = 0; layer < m.Layers; layer++)
        {
            var p = PerLayer(m, one, layer);
            total += p.Total;
            active += p.NonExpert + (m.IsMoeLayer(layer) ? m.TopK * f * m.ExpertFfnHiddenSize : 0);
        }
        var embedding = m.Vocabulary * m.HiddenSize;
        var output = m.TieEmbeddings ? 0 : embedding;
        var mtp = PerMtpDepth(m, one);
        var mtpActive = mtp.NonExpert + (m.IsMoeLayer(m.Layers - 1) ? m.TopK * f * m.ExpertFfnHiddenSize : 0);
        return new ModelParameters(total + embedding + output + m.HiddenSize, active, embedding, output)
        {
            Mtp = checked(m.MtpLayers * mtp.Total),
            MtpActiveNonEmbedding = checked(m.MtpLayers * mtpActive),
        };
    }
}

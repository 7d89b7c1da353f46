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

/// <summary>Parameter counts per GPU under a strategy (corrected derivation sharding). Biases are ignored.</summary>
public static class ParameterCounts
{
    /// <summary>One transformer layer's parameters on one GPU.</summary>
    public static GpuParameters PerLayer(ModelSpec m, StrategySpec st)
    {
        long h = m.HiddenSize, f = m.FfnHiddenSize;
        var attnTp = st.Attention == AttentionPlacement.DataParallel ? st.TP : st.TP * st.EP;
        var attention = checked(4 * h * h) / attnTp + 2 * 2 * h;                // Q, K, V, O shards + two layer norms
        if (m.IsDense) return new(attention + checked(2 * h * f) / st.TP, 0);
        var gate = h * m.Experts;
        var experts = checked((long)(m.Experts / st.EP) * 2 * h * f) / st.TP;
        return new(attention + gate, experts);
    }

    /// <summary>Layers held by a pipeline stage (over all its virtual chunks).</summary>
    public static int LayersOnStage(ModelSpec m, StrategySpec st, int stage)
    {
        var chunks = CorrectedDerivation.SplitLayers(m.Layers, st.PP * st.VirtualStages);
        var layers = 0;
        for (var c = stage; c < chunks.Length; c += st.PP) layers += chunks[c].Count;
        return layers;
    }

    /// <summary>Everything a GPU of <paramref name="stage"/> holds, including the embedding (first stage) and output layer (last stage).</summary>
    public static GpuParameters OnStage(ModelSpec m, StrategySpec st, int stage)
    {
        var p = LayersOnStage(m, st, stage) * PerLayer(m, st);
        var vocabShard = checked(m.Vocabulary * m.HiddenSize) / st.TP;
        if (stage == 0) p += new GpuParameters(vocabShard, 0);
        if (stage == st.PP - 1 && st.PP > 1) p += new GpuParameters(vocabShard, 0);
        return p;
    }
}

using MoeNotebooks.Config;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Analysis;

/// <summary>One model's size and work per token (a row of the presets table).</summary>
/// <param name="Model">Preset or model name.</param>
/// <param name="TotalParameters">Every weight.</param>
/// <param name="ActiveParameters">Weights one token's GEMMs touch, with the output layer (the 6N convention; no embedding lookup).</param>
/// <param name="TrainingFlopsPerToken">Forward + backward: 3 x (2 x active GEMM parameters + causal/windowed attention products).</param>
/// <param name="AttentionShare">Share of <see cref="TrainingFlopsPerToken"/> in the score and value products.</param>
/// <param name="AllToAllBytesPerToken">Per EP size: bytes one token sends to other EP ranks in a training step's dispatch and combine (forward and backward, every MoE layer), uniform routing.</param>
public sealed record ModelSummaryRow(string Model, double TotalParameters, double ActiveParameters, double TrainingFlopsPerToken, double AttentionShare,
    IReadOnlyDictionary<int, double> AllToAllBytesPerToken);

/// <summary>Parameters, FLOPs per token and all-to-all traffic per token of a model, from its description alone.</summary>
public static class ModelSummary
{
    /// <summary>
    /// FLOPs per token of a training step (no recomputation): 3x the forward's 2 x N (N = active GEMM parameters:
    /// attention, router, top-k routed and shared experts, output layer) plus, per layer and head, 2 x (qk + v head
    /// dims) x the keys a query attends (causal: (s + 1) / 2; sliding window w: about w). Equals the DAG's FLOPs (test).
    /// </summary>
    public static (double Total, double Attention) TrainingFlopsPerToken(ModelSpec m)
    {
        var p = ParameterCounts.Of(m);
        // Norm weights are parameters but not GEMM work: two per layer (weight and bias counted, 4H) and MLA's latent norms.
        var norms = 4.0 * m.HiddenSize * m.Layers + (m.Mla is { } mla ? (double)m.Layers * (mla.QLoraRank + mla.KvLoraRank) : 0);
        if (m.IsHybrid)
        {
            // Hybrid layers have one pre-norm (H) each; a Mamba layer's conv1d, A, D, dt bias and gated-norm weights are no GEMM work.
            var mamba = m.CountLayers(HybridLayerKind.Mamba);
            norms = (double)m.HiddenSize * m.Layers + mamba * ((double)m.MambaConvDim * (m.MambaConvKernel + 1) + 3.0 * m.MambaHeads + m.MambaInner);
        }
        var n = p.Active("output") - norms;
        // Multi-token-prediction depths: their layer, projection and one more pass through the shared output head
        // (norms apart: the layer's four H plus MLA's latent norms, and the depth's two RMSNorms).
        var mtpNorms = m.MtpLayers * (6.0 * m.HiddenSize + (m.Mla is { } mtpMla ? mtpMla.QLoraRank + mtpMla.KvLoraRank : 0));
        n += p.MtpActiveNonEmbedding - mtpNorms + (double)m.MtpLayers * m.Vocabulary * m.HiddenSize;
        double attention = 0;
        for (var layer = 0; layer < m.Layers + m.MtpLayers; layer++)
            if (layer >= m.Layers || m.HasAttention(layer)) attention += 2.0 * m.AttentionHeads * (m.QkHeadDim + m.VHeadDim) * m.AttendedKeys(layer);
        // Mamba-2 layers: the SSD chunked scan's products per token (Dao and Gu 2024 §6; MambaBlock), counted with attention as sequence mixing.
        attention += m.CountLayers(HybridLayerKind.Mamba) * SsdScanFlopsPerToken(m);
        return (3 * (2 * n + attention), 3 * attention);
    }

    /// <summary>
    /// Forward FLOPs per token of one Mamba-2 layer's SSD chunked scan with chunk Q = min(chunk size, s): the intra-chunk
    /// C B^T (2 Q N per group), the masked product with X (2 Q P per head), the chunk states B^T X and the state output
    /// C h (2 N P per head each).
    /// </summary>
    public static double SsdScanFlopsPerToken(ModelSpec m)
    {
        double q = Math.Min(m.MambaChunkSize, m.SequenceLength), n = m.MambaStateDim, p = m.MambaHeadDim;
        return 2 * (q * n * m.MambaNumGroups + q * p * m.MambaHeads + 2 * n * p * m.MambaHeads);
    }

    /// <summary>
    /// Bytes one token sends over the all-to-all in a training step at expert parallelism <paramref name="ep"/>: its top-k
    /// copies of H elements leave its rank with probability (ep - 1) / ep under uniform routing, in the dispatch and
    /// back in the combine, forward and backward, in every MoE layer; BF16 unless the recipe dispatches in FP8.
    /// </summary>
    public static double AllToAllBytesPerToken(ModelSpec m, int ep)
    {
        if (m.IsDense || ep <= 1) return 0;
        var moeLayers = m.IsHybrid ? m.CountLayers(HybridLayerKind.Moe) : m.Layers - m.DenseLayers;
        double bf16 = m.ElementBytes;
        var dispatch = m.Precision is { Fp8Dispatch: true } ? 1 + 4.0 / 128 : bf16;
        var perDirection = (double)m.TopK * m.ExpertInputWidth * (ep - 1) / ep;   // a latent MoE moves latent-width tokens
        // Forward: dispatch + combine; backward: the gradients go the other way (both BF16).
        return moeLayers * perDirection * (dispatch + bf16 + 2 * bf16);
    }

    public static ModelSummaryRow Of(ModelSpec m, params int[] eps)
    {
        var p = ParameterCounts.Of(m);
        var (flops, attention) = TrainingFlopsPerToken(m);
        return new ModelSummaryRow(m.Name, p.Total, p.Active("output"), flops, attention / flops,
            eps.ToDictionary(ep => ep, ep => AllToAllBytesPerToken(m, ep)));
    }
}

using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Pre-norm self-attention with its residual: layer norm, column-parallel Q, K, V [T, H] x [H, H/TP] (Megatron-LM:
/// heads / TP per rank with the full head dimension), per-head score and value products batched over sequences
/// (softmax fused flash-style, or a softmax/dropout pass over scores in HBM by <see cref="Config.StrategySpec.AttentionKernel"/>),
/// row-parallel output [T, H/TP] x [H/TP, H], the TP all-reduce, then residual add + the next norm.
/// </summary>
internal sealed class AttentionBlock : ILayerBlock
{
    public static AttentionBlock Instance { get; } = new();

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        if (pass == BlockPass.Backward) Backward(c, site, last);
        else Forward(c, pass, site, last);
    }

    private static void Forward(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        var b = c.B;
        b.Phase = pass.ForwardPhase();
        var (gpus, layer, mb) = site;
        var t = c.TokensPerRank;
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            var norm = b.AddElementwise(g, 2 * c.ActivationBytes, layer, LayerContext.Deps(last[li]), index: 0, microbatch: mb);
            // Column-parallel Q, K, V: [T, H] x [H, H/TP] (seed §2 writes [T, H/8] x [H/8, H/8]; seed §1 uses all T
            // tokens on every GPU, here each EP rank takes T / EP).
            var q = b.AddMatmul(OpKind.QProjection, g, new(t, c.H, c.H / c.AttnTp), layer, [norm], microbatch: mb);
            var k = b.AddMatmul(OpKind.KProjection, g, new(t, c.H, c.H / c.AttnTp), layer, [norm], microbatch: mb);
            var v = b.AddMatmul(OpKind.VProjection, g, new(t, c.H, c.H / c.AttnTp), layer, [norm], microbatch: mb);
            var heads = new int[c.HeadsPerRank];
            var rankInAttention = c.AttentionDp ? li % c.St.TP : li;
            var scores = new int[c.HeadsPerRank];
            for (var hr = 0; hr < c.HeadsPerRank; hr++)
                scores[hr] = b.AddMatmul(OpKind.AttentionScore, g, new(c.S, c.D, c.S, c.SequencesPerRank), layer, [q, k], rankInAttention * c.HeadsPerRank + hr, mb);
            // Materialized scores: the softmax (and dropout) pass over [sequences, heads, s, s] in HBM sits between
            // the two products; a fused kernel keeps it on chip.
            var softmax = c.ScoreBytes.Forward > 0 ? b.AddElementwise(g, c.ScoreBytes.Forward, layer, scores, index: OpKindExtensions.AttentionSoftmaxRole, microbatch: mb) : -1;
            for (var hr = 0; hr < c.HeadsPerRank; hr++)
                heads[hr] = b.AddMatmul(OpKind.AttentionValue, g, new(c.S, c.S, c.D, c.SequencesPerRank), layer, softmax >= 0 ? [softmax, v] : [scores[hr], v], rankInAttention * c.HeadsPerRank + hr, mb);
            // Row-parallel output [T, H/TP] x [H/TP, H] (seed §2: [T, H/8] x [H/8, H/8]).
            last[li] = b.AddMatmul(OpKind.OutputProjection, g, new(t, c.H / c.AttnTp, c.H), layer, heads, microbatch: mb);
        }
        c.AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, c.ActivationBytes, layer, mb, last);
        c.Elementwise(site, 3 * c.ActivationBytes, 1, last);   // residual add + the FFN's pre-norm
    }

    private static void Backward(LayerContext c, LayerSite site, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var t = c.TokensPerRank;
        b.Phase = OpPhase.BackwardData;
        c.Elementwise(site, 3 * c.ActivationBytes, 1, last);
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            var o = c.Backward(OpKind.OutputProjection, g, new(t, c.H / c.AttnTp, c.H), layer, [last[li]], -1, mb);
            var heads = new int[c.HeadsPerRank];
            var rankInAttention = c.AttentionDp ? li % c.St.TP : li;
            var dProbs = new int[c.HeadsPerRank];
            for (var hr = 0; hr < c.HeadsPerRank; hr++)
                dProbs[hr] = c.Backward(OpKind.AttentionValue, g, new(c.S, c.S, c.D, c.SequencesPerRank), layer, [o], rankInAttention * c.HeadsPerRank + hr, mb);
            var softmax = c.ScoreBytes.Backward > 0 ? b.AddElementwise(g, c.ScoreBytes.Backward, layer, dProbs, index: OpKindExtensions.AttentionSoftmaxRole, microbatch: mb) : -1;
            for (var hr = 0; hr < c.HeadsPerRank; hr++)
                heads[hr] = c.Backward(OpKind.AttentionScore, g, new(c.S, c.D, c.S, c.SequencesPerRank), layer, softmax >= 0 ? [softmax] : [dProbs[hr]], rankInAttention * c.HeadsPerRank + hr, mb);
            var dq = c.Backward(OpKind.QProjection, g, new(t, c.H, c.H / c.AttnTp), layer, heads, -1, mb);
            var dk = c.Backward(OpKind.KProjection, g, new(t, c.H, c.H / c.AttnTp), layer, heads, -1, mb);
            last[li] = c.Backward(OpKind.VProjection, g, new(t, c.H, c.H / c.AttnTp), layer, [dq, dk], -1, mb);
        }
        // The conjugate of the forward all-reduce: column-parallel input gradients are summed over the TP group.
        c.AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, c.ActivationBytes, layer, mb, last);
        c.Elementwise(site, 2 * c.ActivationBytes, 0, last);   // the pre-norm's backward
    }
}

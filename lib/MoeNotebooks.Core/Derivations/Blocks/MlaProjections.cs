using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Multi-head latent attention's projections (DeepSeek-V2 arXiv:2405.04434 §2.1.2-2.1.3; Megatron-Core
/// MLASelfAttention): the down-projections are replicated over TP (duplicated linears), the up-projections
/// column-parallel over heads. Queries: [T, H] x [H, qLoraRank], RMSNorm, [T, qLoraRank] x [qLoraRank, heads/TP x
/// (qkNope + qkRope)] (one [H, heads/TP x (qkNope + qkRope)] matrix when qLoraRank = 0). Keys and values:
/// [T, H] x [H, kvLoraRank + qkRope] (the latent and the shared RoPE key), RMSNorm of the latent, [T, kvLoraRank] x
/// [kvLoraRank, heads/TP x (qkNope + vHead)].
/// </summary>
internal static class MlaProjections
{
    private static (MatmulShape? QDown, MatmulShape QUp, MatmulShape KvDown, MatmulShape KvUp) Shapes(LayerContext c)
    {
        var mla = c.M.Mla!;
        var t = c.TokensPerRank;
        var qOut = c.HeadsPerRank * mla.QkHeadDim;
        MatmulShape? qDown = mla.QLoraRank > 0 ? new(t, c.H, mla.QLoraRank) : null;
        var qUp = mla.QLoraRank > 0 ? new MatmulShape(t, mla.QLoraRank, qOut) : new MatmulShape(t, c.H, qOut);
        return (qDown, qUp, new(t, c.H, mla.KvLoraRank + mla.QkRopeHeadDim), new(t, mla.KvLoraRank, c.HeadsPerRank * (mla.QkNopeHeadDim + mla.VHeadDim)));
    }

    /// <summary>Emits the forward projections from the (quantized) normed input; returns the ops standing for Q, K and V.</summary>
    public static (int Q, int K, int V) Forward(LayerContext c, BlockPass pass, int g, int layer, int mb, int input)
    {
        var mla = c.M.Mla!;
        var (qDownShape, qUpShape, kvDownShape, kvUpShape) = Shapes(c);
        var t = c.TokensPerRank;
        int q;
        if (qDownShape is { } qd)
        {
            var down = c.LinearForward(OpKind.QDownProjection, g, qd, layer, [input], -1, mb, pass);
            var norm = c.B.AddElementwise(g, 2 * t * mla.QLoraRank * c.E, layer, [down], index: 0, microbatch: mb);
            q = c.LinearForward(OpKind.QUpProjection, g, qUpShape, layer, [c.QuantizeInput(g, t * mla.QLoraRank, layer, norm, mb)], -1, mb, pass);
        }
        else q = c.LinearForward(OpKind.QProjection, g, qUpShape, layer, [input], -1, mb, pass);
        var kvDown = c.LinearForward(OpKind.KvDownProjection, g, kvDownShape, layer, [input], -1, mb, pass);
        var kvNorm = c.B.AddElementwise(g, 2 * t * mla.KvLoraRank * c.E, layer, [kvDown], index: 0, microbatch: mb);
        var kv = c.LinearForward(OpKind.KvUpProjection, g, kvUpShape, layer, [c.QuantizeInput(g, t * mla.KvLoraRank, layer, kvNorm, mb)], -1, mb, pass);
        // Keys: the up-projected no-RoPE part and the shared RoPE key from the down-projection.
        return (q, kv, kv);
    }

    /// <summary>
    /// The up-projections again (selective recomputation, <c>mla_up_proj</c>): q_up [T, qLoraRank] x [qLoraRank, heads/TP x
    /// (qkNope + qkRope)] when queries are low-rank, and kv_up [T, kvLoraRank] x [kvLoraRank, heads/TP x (qkNope + vHead)],
    /// from their saved normed latents, after <paramref name="dep"/>; returns the last. The caller sets the phase.
    /// </summary>
    public static int RecomputeUp(LayerContext c, int g, int layer, int mb, int dep)
    {
        var (qDownShape, qUpShape, _, kvUpShape) = Shapes(c);
        if (qDownShape is not null) dep = c.LinearForward(OpKind.QUpProjection, g, qUpShape, layer, LayerContext.Deps(dep), -1, mb, BlockPass.Recompute);
        return c.LinearForward(OpKind.KvUpProjection, g, kvUpShape, layer, LayerContext.Deps(dep), -1, mb, BlockPass.Recompute);
    }

    /// <summary>Emits the backward of the projections from the heads' query/key/value gradients; returns the input gradient op.</summary>
    public static int Backward(LayerContext c, int g, int layer, int mb, int[] heads)
    {
        var mla = c.M.Mla!;
        var (qDownShape, qUpShape, kvDownShape, kvUpShape) = Shapes(c);
        var t = c.TokensPerRank;
        var kvUp = c.LinearBackward(OpKind.KvUpProjection, g, kvUpShape, layer, heads, -1, mb);
        var kvNorm = c.B.AddElementwise(g, 3 * t * mla.KvLoraRank * c.E, layer, [kvUp], index: 0, microbatch: mb);
        var kvDown = c.LinearBackward(OpKind.KvDownProjection, g, kvDownShape, layer, [kvNorm], -1, mb);
        if (qDownShape is not { } qd) return c.LinearBackward(OpKind.QProjection, g, qUpShape, layer, [.. heads, kvDown], -1, mb);
        var qUp = c.LinearBackward(OpKind.QUpProjection, g, qUpShape, layer, heads, -1, mb);
        var qNorm = c.B.AddElementwise(g, 3 * t * mla.QLoraRank * c.E, layer, [qUp], index: 0, microbatch: mb);
        return c.LinearBackward(OpKind.QDownProjection, g, qd, layer, [qNorm, kvDown], -1, mb);
    }
}

using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// How routed tokens reach their experts and come back. Data-parallel attention: all-to-all dispatch before the
/// experts and combine after (with the experts' TP all-reduce before the combine); tensor-parallel attention: every
/// rank holds all the group's tokens, and partial expert outputs are combined by one all-reduce over EP x TP.
/// In the backward the dispatch carries the output gradient (a combine-shaped exchange) and vice versa.
/// </summary>
internal static class TokenExchange
{
    public static void Dispatch(LayerContext c, BlockPass pass, LayerSite site, long a2aBytes, int[] last, int chunk)
    {
        if (!c.AttentionDp || c.St.EP <= 1) return;
        var backward = pass == BlockPass.Backward;
        if (!backward) c.B.Phase = pass.ForwardPhase();
        // FP8 dispatch (a precision recipe option): the forward dispatch carries 1-byte elements plus scales.
        if (!backward && c.M.Precision is { Fp8Dispatch: true } p)
            a2aBytes = (long)Math.Ceiling(a2aBytes / (double)c.E * (1 + 4.0 / 128));   // FP32 scale per 128 elements (DeepEP / DeepSeek-V3 1x128 tiles)
        c.AllToAll(site.Gpus, backward ? OpKind.AllToAllCombine : OpKind.AllToAllDispatch, a2aBytes, site.Layer, site.Microbatch, last, chunk);
    }

    public static void Combine(LayerContext c, BlockPass pass, LayerSite site, long a2aBytes, int[] last, int chunk)
    {
        var backward = pass == BlockPass.Backward;
        if (!backward) c.B.Phase = pass.ForwardPhase();
        var (gpus, layer, mb) = site;
        if (c.AttentionDp)
        {
            if (c.St.TP > 1) c.TensorGroupCollective(gpus, OpKind.ExpertAllReduce, MaxLocalTokens(c, c.ExpertTokensByChunk[chunk]) * c.ExpertWidth * c.E, layer, mb, last, chunk);
            if (c.St.EP > 1) c.AllToAll(gpus, backward ? OpKind.AllToAllDispatch : OpKind.AllToAllCombine, a2aBytes, layer, mb, last, chunk);
        }
        else
        {
            // Tensor-parallel attention: every rank holds all the group's tokens; partial expert outputs (and
            // TP partial sums) are combined by one all-reduce over the EP x TP group.
            c.AllReduceAttentionGroups(gpus, OpKind.ExpertAllReduce, (long)Math.Ceiling((double)c.ActivationBytes / c.St.AllToAllChunks), layer, mb, last, chunk);
        }
    }

    /// <summary>Tokens held by the busiest EP rank's experts.</summary>
    public static long MaxLocalTokens(LayerContext c, long[] tokens)
    {
        long max = 0;
        for (var er = 0; er < c.St.EP; er++)
        {
            long sum = 0;
            for (var j = 0; j < c.ExpertsPerRank; j++) sum += tokens[er * c.ExpertsPerRank + j];
            max = Math.Max(max, sum);
        }
        return max;
    }

    /// <summary>
    /// Per-rank all-to-all buffer of one chunk: the busiest rank's traffic, either what it sends (its routed tokens)
    /// or what it receives (the tokens of its experts), whichever is larger. Under skew the hot experts' rank dominates.
    /// </summary>
    public static long AllToAllBytes(LayerContext c, int chunk)
    {
        var chunks = c.St.AllToAllChunks;
        var routedShare = c.RoutedTokensPerRank / chunks + (chunk < c.RoutedTokensPerRank % chunks ? 1 : 0);
        return Math.Max(routedShare, MaxLocalTokens(c, c.ExpertTokensByChunk[chunk])) * c.ExpertWidth * c.E;
    }
}

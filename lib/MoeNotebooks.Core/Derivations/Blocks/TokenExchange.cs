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
        if (!c.AttentionDp || (c.St.EP <= 1 && !c.ShardedDispatch)) return;
        var backward = pass == BlockPass.Backward;
        if (!backward) c.B.Phase = pass.ForwardPhase();
        // FP8 dispatch (a precision recipe option): the forward dispatch carries 1-byte elements plus scales.
        if (!backward && c.M.Precision is { Fp8Dispatch: true } p)
            a2aBytes = (long)Math.Ceiling(a2aBytes / (double)c.E * (1 + 4.0 / 128));   // FP32 scale per 128 elements (DeepEP / DeepSeek-V3 1x128 tiles)
        if (c.St.EP > 1) c.AllToAll(site.Gpus, backward ? OpKind.AllToAllCombine : OpKind.AllToAllDispatch, a2aBytes, site.Layer, site.Microbatch, last, chunk);
        // Megatron-Core MoEAlltoAllTokenDispatcher: after the EP all-to-all each ETP rank holds 1/ETP of its experts'
        // tokens; gather_from_sequence_parallel_region over the ETP group gives every shard all of them (the busiest
        // rank's [tokens of its experts, H] is the gathered message). In backward the conjugate of the combine's
        // reduce-scatter, the same message.
        if (c.ShardedDispatch)
            c.ExpertTensorCollective(site.Gpus, OpKind.ExpertTensorAllGather, ExpertInputBytes(c, chunk), site.Layer, site.Microbatch, last, chunk);
    }

    /// <summary>The busiest rank's gathered expert input of one chunk, [tokens of its experts, H] (the ETP all-gather / reduce-scatter message).</summary>
    public static long ExpertInputBytes(LayerContext c, int chunk) => MaxLocalTokens(c, c.ExpertTokensByChunk[chunk]) * c.ExpertWidth * c.E;

    public static void Combine(LayerContext c, BlockPass pass, LayerSite site, long a2aBytes, int[] last, int chunk)
    {
        var backward = pass == BlockPass.Backward;
        if (!backward) c.B.Phase = pass.ForwardPhase();
        var (gpus, layer, mb) = site;
        if (c.AttentionDp && c.ShardedDispatch)
        {
            // Row-parallel fc2 partial sums reduce-scattered over the ETP group back to this rank's dispatched tokens,
            // then the all-to-all returns them to the ranks that routed them (token_unpermutation).
            c.ExpertTensorCollective(gpus, OpKind.ExpertTensorReduceScatter, ExpertInputBytes(c, chunk), layer, mb, last, chunk);
            if (c.St.EP > 1) c.AllToAll(gpus, backward ? OpKind.AllToAllDispatch : OpKind.AllToAllCombine, a2aBytes, layer, mb, last, chunk);
        }
        else if (c.AttentionDp)
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
    /// With the sharded dispatcher a rank sends the top-k copies of its own T/TP tokens and receives 1/ETP of its
    /// experts' tokens (each of the ETP EP groups of an expert replica routes 1/ETP of the replica's tokens); the rest
    /// reaches it by the ETP all-gather.
    /// </summary>
    public static long AllToAllBytes(LayerContext c, int chunk)
    {
        var chunks = c.St.AllToAllChunks;
        var routedShare = c.RoutedTokensPerRank / chunks + (chunk < c.RoutedTokensPerRank % chunks ? 1 : 0);
        var local = MaxLocalTokens(c, c.ExpertTokensByChunk[chunk]);
        var received = c.ShardedDispatch ? (local + c.St.ETP - 1) / c.St.ETP : local;
        return Math.Max(routedShare, received) * c.ExpertWidth * c.E;
    }
}

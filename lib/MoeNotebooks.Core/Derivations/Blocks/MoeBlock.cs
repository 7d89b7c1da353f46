using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The MoE FFN with its residual, composed of <see cref="Router"/> (gate GEMM, softmax/top-k), the token
/// permutation, <see cref="TokenExchange"/> (all-to-all dispatch and combine, or the TP-attention all-reduce),
/// <see cref="RoutedExperts"/>, the unpermutation and <see cref="SharedExperts"/>. Forward: gate, [top-k, permute],
/// dispatch, [shared experts], experts, TP all-reduce, combine, [unpermute], residual; backward mirrors it. Tokens
/// are split into <see cref="Config.StrategySpec.AllToAllChunks"/> chunks so chunk c + 1's all-to-all overlaps chunk
/// c's experts. Bracketed passes appear with <see cref="Config.ModelSpec.MoeMemoryBoundOps"/> / shared experts.
/// </summary>
internal sealed class MoeBlock : ILayerBlock
{
    public static MoeBlock Instance { get; } = new();

    /// <summary>
    /// Permute: read the rank's [T, H] tokens, write T x k copies in expert order. Unpermute: read the T x k expert
    /// outputs and their routing weights (4 bytes each), write [T, H]. Their backward passes move the same bytes.
    /// </summary>
    private static long PermuteBytes(LayerContext c) => c.MoeSourceTokensPerRank * c.ExpertWidth * c.E + c.RoutedTokensPerRank * c.ExpertWidth * c.E;
    private static long UnpermuteBytes(LayerContext c) => PermuteBytes(c) + c.RoutedTokensPerRank * 4;

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        foreach (var _ in Segments(c, pass, site, last)) { }
    }

    /// <summary>
    /// Selective recomputation at the start of the block's backward: the pre-MLP norm (<c>layernorm</c>) and, with
    /// <c>moe</c>, the whole MoE forward without its residual add (router, permutation, dispatch, experts, combine,
    /// unpermutation: Megatron-Core checkpoints the MoE layer's forward, all-to-alls included). The routed experts'
    /// activation (<c>moe_act</c>) and the shared experts (<c>shared_experts</c>) are recomputed where their backward
    /// starts (<see cref="RoutedExperts"/>, <see cref="SharedExperts"/>), unless <c>moe</c> already reran them.
    /// </summary>
    private void RecomputeAtBackward(LayerContext c, LayerSite site, int[] last)
    {
        c.RecomputeNorm(site, last);
        if (c.Recomputes(Config.RecomputeModules.Moe))
            c.InRecompute(() => { foreach (var _ in Segments(c, BlockPass.Recompute, site, last, residual: false)) { } });
    }

    /// <summary>
    /// Emits the block in five segments, yielding after each (the same operations in the same order as
    /// <see cref="Emit"/>): <see cref="MoeSegment.BeforeExchange"/> (forward: gate, [top-k, permute]; backward: the
    /// residual gradient, [unpermute backward]), <see cref="MoeSegment.FirstExchange"/> (forward: the dispatch
    /// all-to-all; backward: the combine's backward all-to-all), <see cref="MoeSegment.Experts"/> (shared and routed
    /// experts, the shared experts' TP all-reduce), <see cref="MoeSegment.SecondExchange"/> (forward: the experts' TP
    /// all-reduce and the combine all-to-all; backward: the dispatch's backward all-to-all) and
    /// <see cref="MoeSegment.After"/> (forward: [unpermute], residual; backward: [permute backward], router backward). Megatron-Core's EP overlap (<see cref="CorrectedDerivation"/>) interleaves the segments of one
    /// microbatch's forward layer with another's backward layer; a plain run drains them in a row.
    /// </summary>
    /// <param name="residual">Emit the forward's residual add (false: the MoE layer alone, as <c>moe</c> recomputation reruns it).</param>
    public IEnumerable<MoeSegment> Segments(LayerContext c, BlockPass pass, LayerSite site, int[] last, bool residual = true)
    {
        var b = c.B;
        var backward = pass == BlockPass.Backward;
        var gpus = site.Gpus;
        var memoryOps = c.M.MoeMemoryBoundOps;
        if (backward)
        {
            b.Phase = OpPhase.BackwardData;
            c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 2, last);
            RecomputeAtBackward(c, site, last);
        }
        var ffnInput = c.M.SharedExperts > 0 ? (int[])last.Clone() : null;
        if (!backward) Router.Forward(c, pass, site, last);
        Latent(c, pass, site, last, up: backward);
        if (memoryOps) Pass(c, backward ? OpKind.Unpermute : OpKind.Permute, backward ? UnpermuteBytes(c) : PermuteBytes(c), site, last);
        yield return MoeSegment.BeforeExchange;
        var blockInput = (int[])last.Clone();
        var chunks = c.St.AllToAllChunks;
        // Each rank's chunk outputs, to be summed (one chunk: its output is the block's, nothing to join).
        List<int>[]? chunkOutputs = null;
        if (chunks > 1)
        {
            chunkOutputs = new List<int>[gpus.Length];
            for (var li = 0; li < gpus.Length; li++) chunkOutputs[li] = new List<int>();
        }
        var cur = new int[chunks][];
        var a2aBytes = new long[chunks];
        // Every chunk's dispatch is issued first, so the communication stream sends chunk c + 1 while the experts
        // compute chunk c; each chunk's combine then follows its experts and overlaps the next chunk's experts.
        for (var ch = 0; ch < chunks; ch++)
        {
            cur[ch] = (int[])blockInput.Clone();
            a2aBytes[ch] = TokenExchange.AllToAllBytes(c, ch);
            TokenExchange.Dispatch(c, pass, site, a2aBytes[ch], cur[ch], ch);
        }
        yield return MoeSegment.FirstExchange;
        var shared = ffnInput is null ? null : SharedExperts.Emit(c, pass, site, ffnInput);
        for (var ch = 0; ch < chunks; ch++)
        {
            RoutedExperts.Emit(c, pass, site, c.ExpertTokensByChunk[ch], cur[ch]);
            // With one chunk the combine is its own segment (after the experts); with several each chunk's combine
            // follows its experts (Megatron's EP overlap is refused with alltoallChunks > 1).
            if (chunks == 1) yield return MoeSegment.Experts;
            TokenExchange.Combine(c, pass, site, a2aBytes[ch], cur[ch], ch);
            if (chunkOutputs is not null)
                for (var li = 0; li < gpus.Length; li++) chunkOutputs[li].Add(cur[ch][li]);
        }
        if (chunks > 1) yield return MoeSegment.Experts;
        yield return MoeSegment.SecondExchange;
        for (var li = 0; li < gpus.Length; li++)
        {
            if (chunkOutputs is null) { last[li] = cur[0][li]; continue; }
            if (c.SkipFoldedRank(gpus, li, last)) continue;
            last[li] = chunkOutputs[li].Count == 1 ? chunkOutputs[li][0] : b.AddElementwise(gpus[li], 0, site.Layer, chunkOutputs[li].Distinct().ToArray(), index: 3, microbatch: site.Microbatch);
        }
        if (memoryOps) Pass(c, backward ? OpKind.Permute : OpKind.Unpermute, backward ? PermuteBytes(c) : UnpermuteBytes(c), site, last);
        Latent(c, pass, site, last, up: !backward);
        if (backward) Router.Backward(c, site, last);
        if (shared is not null)
            for (var li = 0; li < gpus.Length; li++)
                if (!c.SkipFoldedRank(gpus, li, last))
                    last[li] = b.AddElementwise(gpus[li], 0, site.Layer, [last[li], shared[li]], index: 3, microbatch: site.Microbatch);   // routed + shared
        if (!backward && residual) c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 2, last);   // residual add
        yield return MoeSegment.After;
    }

    /// <summary>
    /// Latent MoE (<see cref="Config.ModelSpec.MoeLatentSize"/>, Megatron --moe-latent-size): the [T, H] x [H, latent]
    /// projection after the router and before the permutation, and [T, latent] x [latent, H] after the unpermutation;
    /// taken as replicated over the TP ranks, like the router (its TP split is not modelled). Nothing without a latent size.
    /// </summary>
    private static void Latent(LayerContext c, BlockPass pass, LayerSite site, int[] last, bool up)
    {
        if (c.M.MoeLatentSize is not { } latent) return;
        var t = c.MoeSourceTokensPerRank;   // the rank's routed-from tokens (1/TP of them under sequence parallelism)
        var kind = up ? OpKind.MoeLatentUp : OpKind.MoeLatentDown;
        var shape = up ? new MatmulShape(t, latent, c.H) : new MatmulShape(t, c.H, latent);
        for (var li = 0; li < site.Gpus.Length; li++)
        {
            if (c.SkipFoldedRank(site.Gpus, li, last)) continue;
            var g = site.Gpus[li];
            if (pass == BlockPass.Backward) last[li] = c.LinearBackward(kind, g, shape, site.Layer, LayerContext.Deps(last[li]), -1, site.Microbatch);
            else
            {
                c.B.Phase = pass.ForwardPhase();
                var input = c.QuantizeInput(g, t * shape.K, site.Layer, last[li], site.Microbatch);
                last[li] = c.LinearForward(kind, g, shape, site.Layer, LayerContext.Deps(input), -1, site.Microbatch, pass);
            }
        }
    }

    private static void Pass(LayerContext c, OpKind kind, long bytes, LayerSite site, int[] last)
    {
        for (var li = 0; li < site.Gpus.Length; li++)
            if (!c.SkipFoldedRank(site.Gpus, li, last))
                last[li] = c.B.AddMemoryBound(kind, site.Gpus[li], bytes, site.Layer, LayerContext.Deps(last[li]), microbatch: site.Microbatch);
    }
}

/// <summary>The segments <see cref="MoeBlock.Segments"/> yields after, in order.</summary>
internal enum MoeSegment
{
    BeforeExchange,
    FirstExchange,
    Experts,
    SecondExchange,
    After,
}

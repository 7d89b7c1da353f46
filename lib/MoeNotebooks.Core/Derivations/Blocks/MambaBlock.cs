using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// A Mamba-2 mixer layer (hybrid pattern 'M') with its pre-norm and residual, split over tensor parallelism as
/// Megatron-Core's MambaMixer (megatron/core/ssm/mamba_mixer.py) splits it: heads, groups and d_inner over the TP ranks
/// (the attention TP group), the in-projection column-parallel, the out-projection row-parallel followed by the TP
/// all-reduce (sequence parallelism: all-gather before the in-projection, reduce-scatter after the out-projection).
/// <para>Per rank, with t tokens, h = heads/TP, g = groups/TP, head dimension P, state N, chunk Q and c = chunks
/// (sequences x ceil(s / Q)):</para>
/// <list type="number">
/// <item>in-projection [t, H] x [H, (2 d_inner + 2 G N + heads)/TP] (z, x, B, C, dt);</item>
/// <item>causal depthwise conv1d + SiLU over x, B, C (conv_dim/TP channels): memory-bound, reads and writes t x conv_dim/TP;</item>
/// <item>the SSD chunked scan (Dao and Gu 2024, arXiv:2405.21060 §6, the "chunked algorithm"): intra-chunk C B^T
/// [Q, N] x [N, Q] batched over c x g, the masked (L o C B^T) X [Q, Q] x [Q, P] over c x h; chunk states B^T X
/// [N, Q] x [Q, P] over c x h; the inter-chunk recurrence over the c states (memory-bound: fp32 states [h, P, N] read
/// and written per chunk, with the dt/decay cumulative sums); the state-to-output C h [Q, N] x [N, P] over c x h.
/// The products are priced by shape like every product (the whole Q x Q block: the kernel computes the masked block
/// whole); forward FLOPs 2 t (Q N g + Q P h + 2 N P h);</item>
/// <item>gated RMSNorm norm(y) x SiLU(z): reads y and z, writes the result (memory-bound);</item>
/// <item>out-projection [t, d_inner/TP] x [d_inner/TP, H], the TP all-reduce, residual add and the next norm.</item>
/// </list>
/// Backward: every product's dX and dW (2x its forward FLOPs), the memory-bound passes reading the gradient and their
/// saved inputs (gated norm 5, conv 3 activation widths, state passing twice its forward bytes); recompute reruns the forward.
/// </summary>
internal sealed class MambaBlock : ILayerBlock
{
    public static MambaBlock Instance { get; } = new();

    /// <summary>What one rank of a Mamba layer computes: the shapes and bytes of its operations.</summary>
    internal readonly record struct RankShapes(
        MatmulShape InProjection, MatmulShape OutProjection, MatmulShape ChunkScores, MatmulShape ChunkOutput, MatmulShape ChunkStates, MatmulShape StateOutput,
        long ConvBytes, long StatePassingBytes, long GatedNormBytes, long InnerPerRank);

    internal static RankShapes Shapes(LayerContext c)
    {
        var m = c.M;
        var tp = c.AttnTp;
        var t = c.TokensPerRank;
        long heads = m.MambaHeads / tp, groups = m.MambaNumGroups / tp;
        long p = m.MambaHeadDim, n = m.MambaStateDim, q = m.MambaChunkSize;
        var inner = m.MambaInner / tp;
        var sequences = Math.Max(1, c.SequencesPerRank);
        var localSequence = t / sequences;
        var chunks = sequences * ((localSequence + q - 1) / q);
        var qq = Math.Min(q, localSequence);   // a sequence shorter than a chunk is one chunk of its length
        // State passing: per chunk, the fp32 state [h, P, N] read and written, and the per-token dt, dA cumulative sums (fp32, 2 per head).
        var passing = chunks * heads * p * n * 4 * 2 + t * heads * 4 * 2;
        return new RankShapes(
            new MatmulShape(t, c.H, m.MambaInProjWidth / tp),
            new MatmulShape(t, inner, c.H),
            new MatmulShape(qq, n, qq, chunks * groups),
            new MatmulShape(qq, qq, p, chunks * heads),
            new MatmulShape(n, qq, p, chunks * heads),
            new MatmulShape(qq, n, p, chunks * heads),
            2 * t * (m.MambaConvDim / tp) * c.E,
            passing,
            3 * t * inner * c.E,
            inner);
    }

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
        var s = Shapes(c);
        var t = c.TokensPerRank;
        c.PreNormGather(site, last);
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            var norm = c.PreNorm(site, li, last);
            var input = c.QuantizeInput(g, t * c.H, layer, norm, mb);
            var inProj = c.LinearForward(OpKind.MambaInProjection, g, s.InProjection, layer, [input], -1, mb, pass);
            var conv = b.AddMemoryBound(OpKind.MambaConv, g, s.ConvBytes, layer, [inProj], microbatch: mb);
            var scores = b.AddMatmul(OpKind.MambaChunkScan, g, s.ChunkScores, layer, [conv], 0, mb);
            var diagonal = b.AddMatmul(OpKind.MambaChunkScan, g, s.ChunkOutput, layer, [scores], 1, mb);
            var states = b.AddMatmul(OpKind.MambaChunkScan, g, s.ChunkStates, layer, [conv], 2, mb);
            var passing = b.AddMemoryBound(OpKind.MambaStatePassing, g, s.StatePassingBytes, layer, [states], microbatch: mb);
            var offDiagonal = b.AddMatmul(OpKind.MambaChunkScan, g, s.StateOutput, layer, [passing], 3, mb);
            var gated = b.AddMemoryBound(OpKind.MambaGatedNorm, g, s.GatedNormBytes, layer, [diagonal, offDiagonal], microbatch: mb);
            last[li] = c.LinearForward(OpKind.MambaOutProjection, g, s.OutProjection, layer, [c.QuantizeInput(g, t * s.InnerPerRank, layer, gated, mb)], -1, mb, pass);
        }
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, c.ActivationBytes, layer, mb, last);
        else c.AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, c.ActivationBytes, layer, mb, last);
        c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 1, last);   // residual add + the next layer's pre-norm
    }

    private static void Backward(LayerContext c, LayerSite site, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var s = Shapes(c);
        b.Phase = OpPhase.BackwardData;
        c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 1, last);
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, last);
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            var outProj = c.LinearBackward(OpKind.MambaOutProjection, g, s.OutProjection, layer, [last[li]], -1, mb);
            b.Phase = OpPhase.BackwardData;
            // Gated norm backward: reads the gradient, y and z, writes dy and dz.
            var gated = b.AddMemoryBound(OpKind.MambaGatedNorm, g, s.GatedNormBytes / 3 * 5, layer, [outProj], microbatch: mb);
            var offDiagonal = c.Backward(OpKind.MambaChunkScan, g, s.StateOutput, layer, [gated], 3, mb);
            var passing = b.AddMemoryBound(OpKind.MambaStatePassing, g, 2 * s.StatePassingBytes, layer, [offDiagonal], microbatch: mb);
            var states = c.Backward(OpKind.MambaChunkScan, g, s.ChunkStates, layer, [passing], 2, mb);
            var diagonal = c.Backward(OpKind.MambaChunkScan, g, s.ChunkOutput, layer, [gated], 1, mb);
            var scores = c.Backward(OpKind.MambaChunkScan, g, s.ChunkScores, layer, [diagonal], 0, mb);
            // Conv backward: reads the gradient and the saved input, writes the input gradient.
            var conv = b.AddMemoryBound(OpKind.MambaConv, g, s.ConvBytes / 2 * 3, layer, [scores, states], microbatch: mb);
            last[li] = c.LinearBackward(OpKind.MambaInProjection, g, s.InProjection, layer, [conv], -1, mb);
        }
        c.MixerBackwardTail(site, last);
    }
}

using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// A Mamba-2 mixer layer (hybrid pattern 'M') with its pre-norm and residual, split over tensor parallelism as
/// Megatron-Core's MambaMixer (megatron/core/ssm/mamba_mixer.py) splits it: heads, groups and d_inner over the TP ranks
/// (the attention TP group), the in-projection column-parallel, the out-projection row-parallel followed by the TP
/// all-reduce (sequence parallelism: all-gather before the in-projection, reduce-scatter after the out-projection).
/// <para>Between the projections the layer runs as MambaMixer runs it in training (<c>use_mem_eff_path</c>):
/// mamba_ssm's <c>mamba_split_conv1d_scan_combined</c> (mamba_ssm/ops/triton/ssd_combined.py,
/// MambaSplitConv1dScanCombinedFn), i.e. causal_conv1d's CUDA kernel, the chunked SSD algorithm (Dao and Gu 2024,
/// arXiv:2405.21060 §6) as five Triton kernels (_chunk_cumsum_fwd, _chunk_state_fwd, _state_passing_fwd,
/// _bmm_chunk_fwd, _chunk_scan_fwd) and the gated RMSNorm (layernorm_gated.py, norm(y x SiLU(z))). The backward
/// (<c>_mamba_chunk_scan_combined_bwd</c>) recomputes the conv, CB, the chunk states and the state passing, then runs
/// _chunk_scan_bwd_dstates, _state_passing_bwd, _chunk_scan_chunk_state_bwd_dx, _chunk_state_bwd_db,
/// _chunk_scan_bwd_dC, _chunk_scan_bwd_dcb, two _bmm_chunk_bwd, _chunk_scan_bwd_ddAcs_stable and _chunk_cumsum_bwd,
/// then the gated norm's and the conv's backward. With more than one sequence per rank, MambaMixer's layout changes
/// (<c>rearrange(zxBCdt, "l b d -> b l d").contiguous()</c> before the kernel, <c>"b l d -> l b d"</c> after) copy
/// the in-projection output and the mixer output, and their gradients in the backward.</para>
/// <para>These kernels run far below tensor-core peak: each SSD kernel is priced as a fused kernel
/// (<see cref="DagBuilder.AddFusedKernel"/>), the slower of its small batched products (by shape) and the HBM bytes of
/// the tensors it reads and writes once each (<see cref="KernelBytes"/>; B, C and CB are shared by the heads of a group
/// and re-read from L2, not HBM); conv, state passing and gated norm are memory-bound passes.</para>
/// </summary>
internal sealed class MambaBlock : ILayerBlock
{
    public static MambaBlock Instance { get; } = new();

    /// <summary>
    /// The HBM bytes of every kernel of one rank's Mamba layer (<see cref="Of"/> derives them). Element counts, per rank
    /// with t tokens, h = heads/TP, g = groups/TP, head dim P, state N, c chunks of Q tokens: X = t h P (x, z, y and
    /// their gradients), BC = t g N (B or C), S = c h P N (chunk states), CB = c g Q^2, T = t h (dt, dA per token and
    /// head); E bytes per activation element, fp32 (4 bytes) where the kernels keep fp32.
    /// </summary>
    internal readonly record struct KernelBytes(
        long Conv, long ChunkState, long StatePassing, long Bmm, long ChunkScan, long GatedNorm,
        long GatedNormBackward, long ConvRecompute, long StatePassingRecompute, long Dstates, long StatePassingBackward,
        long Dx, long Db, long Dc, long Dcb, long BmmBackward, long DdaCs, long ConvBackward)
    {
        public long Forward => Conv + ChunkState + StatePassing + Bmm + ChunkScan + GatedNorm;
        public long Backward => GatedNormBackward + ConvRecompute + Bmm + ChunkState + StatePassingRecompute + Dstates + StatePassingBackward + Dx + Db + Dc + Dcb + BmmBackward + DdaCs + ConvBackward;

        /// <param name="layoutCopies">Whether MambaMixer's rearrange(...).contiguous() copy (more than one sequence per rank).</param>
        public static KernelBytes Of(long t, long h, long g, long p, long n, long chunks, long q, long inProjWidth, long convDim, long e, bool layoutCopies)
        {
            const long F = 4;
            long x = t * h * p, bc = t * g * n, s = chunks * h * p * n, cb = chunks * g * q * q, tt = t * h;
            long zxbcdtCopy = layoutCopies ? 2 * t * inProjWidth * e : 0, yCopy = layoutCopies ? 2 * x * e : 0;
            var cumsum = tt * e + 2 * tt * F;                                    // read dt, write dt (softplus) and dA cumsum, fp32
            var chunkState = cumsum + x * e + bc * e + 2 * tt * F + s * F;     // read x, B, dt, dA; write the chunk states in fp32
            var bmm = 2 * bc * e + cb * F;                                     // read C, B; write CB in fp32
            return new KernelBytes(
                Conv: zxbcdtCopy + 2 * t * convDim * e,                        // layout copy; causal_conv1d_fwd reads xBC, writes xBC_conv
                ChunkState: chunkState,
                StatePassing: s * F + s * e,                                   // read fp32 states, write them passed in the input dtype
                Bmm: bmm,
                ChunkScan: cb * F + x * e + bc * e + s * e + 2 * tt * F + x * e, // read CB, x, C, states, dt, dA; write y
                GatedNorm: 3 * x * e + yCopy,                                  // read y, z; write the normed output; layout copy
                GatedNormBackward: yCopy + 5 * x * e,                          // layout copy of dy; read dy, y, z; write dy, dz
                ConvRecompute: 2 * t * convDim * e,
                StatePassingRecompute: cumsum + 2 * s * F,                     // cumsum again; states passed in fp32
                Dstates: bc * e + x * e + tt * F + s * F,                      // read C, dout, dA; write dstates in fp32
                StatePassingBackward: 2 * s * F + 2 * s * e,                   // read states, dstates (fp32); write both in the input dtype
                Dx: x * e + cb * F + x * e + 2 * tt * F + bc * e + s * e + x * e + tt * F, // read x, CB, dout, dt, dA, B, dstates; write dx, ddt
                Db: x * e + s * e + 2 * tt * F + bc * e + bc * e + tt * F,     // read x, dstates, dt, dA, B; write dB, ddA
                Dc: s * e + x * e + tt * F + bc * e + bc * e + tt * F,         // read states, dout, dA, C; write dC, ddA
                Dcb: 2 * x * e + 2 * tt * F + cb * F,                          // read x, dout, dt, dA; write dCB in fp32
                BmmBackward: 2 * (3 * bc * e + cb * F),                        // twice: read C (B), dCB, the residual; write dB (dC)
                DdaCs: 2 * x * e + 2 * tt * F + cb * F + tt * F + tt * F + 2 * tt * e, // read x, dout, dt, dA, CB; write ddA; cumsum bwd
                ConvBackward: 3 * t * convDim * e + zxbcdtCopy);               // read xBC, dxBC_conv; write dxBC; layout copy of dzxBCdt
        }
    }

    /// <summary>What one rank of a Mamba layer computes: the shapes of its projections and SSD products, the bytes of its kernels.</summary>
    /// <param name="ChunkScores">_bmm_chunk_fwd: C B^T, [Q, N] x [N, Q] over c x g.</param>
    /// <param name="ChunkStates">_chunk_state_fwd: B^T X, [N, Q] x [Q, P] over c x h.</param>
    /// <param name="ChunkScan">_chunk_scan_fwd: [C | L o CB] x [states ; X], [Q, N + Q] x [N + Q, P] over c x h (the state
    /// output C h and the masked (L o C B^T) X accumulate into one tile).</param>
    internal readonly record struct RankShapes(
        MatmulShape InProjection, MatmulShape OutProjection, MatmulShape ChunkScores, MatmulShape ChunkStates, MatmulShape ChunkScan,
        KernelBytes Bytes, long InnerPerRank);

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
        return new RankShapes(
            new MatmulShape(t, c.H, m.MambaInProjWidth / tp),
            new MatmulShape(t, inner, c.H),
            new MatmulShape(qq, n, qq, chunks * groups),
            new MatmulShape(n, qq, p, chunks * heads),
            new MatmulShape(qq, n + qq, p, chunks * heads),
            KernelBytes.Of(t, heads, groups, p, n, chunks, qq, m.MambaInProjWidth / tp, m.MambaConvDim / tp, c.E, sequences > 1),
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
        var k = s.Bytes;
        var t = c.TokensPerRank;
        c.PreNormGather(site, last);
        for (var li = 0; li < gpus.Length; li++)
        {
            if (c.SkipFoldedRank(gpus, li, last)) continue;
            var g = gpus[li];
            var norm = c.PreNorm(site, li, last);
            var input = c.QuantizeInput(g, t * c.H, layer, norm, mb);
            var inProj = c.LinearForward(OpKind.MambaInProjection, g, s.InProjection, layer, [input], -1, mb, pass);
            var conv = b.AddMemoryBound(OpKind.MambaConv, g, k.Conv, layer, [inProj], microbatch: mb);
            var states = b.AddFusedKernel(OpKind.MambaChunkScan, g, s.ChunkStates, k.ChunkState, layer, [conv], 0, mb);
            var passing = b.AddMemoryBound(OpKind.MambaStatePassing, g, k.StatePassing, layer, [states], microbatch: mb);
            var scores = b.AddFusedKernel(OpKind.MambaChunkScan, g, s.ChunkScores, k.Bmm, layer, [conv], 1, mb);
            var scan = b.AddFusedKernel(OpKind.MambaChunkScan, g, s.ChunkScan, k.ChunkScan, layer, [scores, passing], 2, mb);
            var gated = b.AddMemoryBound(OpKind.MambaGatedNorm, g, k.GatedNorm, layer, [scan], microbatch: mb);
            last[li] = c.LinearForward(OpKind.MambaOutProjection, g, s.OutProjection, layer, [c.QuantizeInput(g, t * s.InnerPerRank, layer, gated, mb)], -1, mb, pass);
        }
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, c.ActivationBytes, layer, mb, last);
        else c.AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, c.ActivationBytes, layer, mb, last);
        c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 1, last);   // residual add + the next layer's pre-norm
    }

    /// <summary>The backward's products, in the order _mamba_chunk_scan_combined_bwd runs them (see the class summary).</summary>
    internal static (MatmulShape Dstates, MatmulShape Dx, MatmulShape Db, MatmulShape Dc, MatmulShape Dcb, MatmulShape BmmBackward, MatmulShape DdaCs) BackwardShapes(RankShapes s)
    {
        var (scan, states, scores) = (s.ChunkScan, s.ChunkStates, s.ChunkScores);
        long q = scan.M, p = scan.N, n = states.M, perHead = scan.Batch, perGroup = scores.Batch;
        return (
            new MatmulShape(p, q, n, perHead),            // dstates = dout^T C per chunk
            scan,                                         // dx = [CB^T | B dstates] over the same tile as the forward scan
            new MatmulShape(q, p, n, perHead),            // dB = x dstates^T
            new MatmulShape(q, p, n, perHead),            // dC = dout states^T
            new MatmulShape(q, p, q, perHead),            // dCB = dout x^T
            new MatmulShape(q, q, n, 2 * perGroup),       // dB += dCB C, dC += dCB^T B
            new MatmulShape(q, p, q, perHead));           // ddA from (dout x^T) o CB
    }

    private static void Backward(LayerContext c, LayerSite site, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var s = Shapes(c);
        var k = s.Bytes;
        var d = BackwardShapes(s);
        b.Phase = OpPhase.BackwardData;
        c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 1, last);
        c.RecomputeNorm(site, last);
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, last);
        for (var li = 0; li < gpus.Length; li++)
        {
            if (c.SkipFoldedRank(gpus, li, last)) continue;
            var g = gpus[li];
            var outProj = c.LinearBackward(OpKind.MambaOutProjection, g, s.OutProjection, layer, [last[li]], -1, mb);
            b.Phase = OpPhase.BackwardData;
            var gated = b.AddMemoryBound(OpKind.MambaGatedNorm, g, k.GatedNormBackward, layer, [outProj], microbatch: mb);
            // Recomputed inside the backward: the conv, CB, the chunk states and their passing (fp32).
            var conv = b.AddMemoryBound(OpKind.MambaConv, g, k.ConvRecompute, layer, [outProj], microbatch: mb);
            var scores = b.AddFusedKernel(OpKind.MambaChunkScan, g, s.ChunkScores, k.Bmm, layer, [conv], 1, mb);
            var states = b.AddFusedKernel(OpKind.MambaChunkScan, g, s.ChunkStates, k.ChunkState, layer, [conv], 0, mb);
            var passing = b.AddMemoryBound(OpKind.MambaStatePassing, g, k.StatePassingRecompute, layer, [states], microbatch: mb);
            var dstates = b.AddFusedKernel(OpKind.MambaChunkScan, g, d.Dstates, k.Dstates, layer, [gated, passing], 3, mb);
            var passingBack = b.AddMemoryBound(OpKind.MambaStatePassing, g, k.StatePassingBackward, layer, [dstates], microbatch: mb);
            var dx = b.AddFusedKernel(OpKind.MambaChunkScan, g, d.Dx, k.Dx, layer, [passingBack, scores], 4, mb);
            var db = b.AddFusedKernel(OpKind.MambaChunkScan, g, d.Db, k.Db, layer, [dx], 5, mb);
            var dc = b.AddFusedKernel(OpKind.MambaChunkScan, g, d.Dc, k.Dc, layer, [db], 6, mb);
            var dcb = b.AddFusedKernel(OpKind.MambaChunkScan, g, d.Dcb, k.Dcb, layer, [dc], 7, mb);
            var bmm = b.AddFusedKernel(OpKind.MambaChunkScan, g, d.BmmBackward, k.BmmBackward, layer, [dcb], 8, mb);
            var dda = b.AddFusedKernel(OpKind.MambaChunkScan, g, d.DdaCs, k.DdaCs, layer, [bmm], 9, mb);
            var convBack = b.AddMemoryBound(OpKind.MambaConv, g, k.ConvBackward, layer, [dda], microbatch: mb);
            last[li] = c.LinearBackward(OpKind.MambaInProjection, g, s.InProjection, layer, [convBack], -1, mb);
        }
        c.MixerBackwardTail(site, last);
    }
}

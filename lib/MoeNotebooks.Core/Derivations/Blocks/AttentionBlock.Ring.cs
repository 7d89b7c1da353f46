using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Context parallelism (<c>--context-parallel-size</c>, Megatron-Core with Transformer Engine's
/// <c>AttnFuncWithCPAndKVP2P</c>, cp_comm_type "p2p"): each CP rank holds sequenceLength / CP tokens of every sequence
/// of its group, as two chunks i and 2CP - 1 - i of 2CP (causal load balancing), so projections, norms and the FFN/MoE
/// run on its own tokens only. Attention runs as a ring of CP steps: at step s a rank attends its queries to the K/V
/// block that started on CP rank (k - s) mod CP, while the block it holds is sent on to the next rank (the send of step
/// s + 1 is posted before step s's kernels and overlaps them; it waits for the previous step's kernels on both ends, as
/// NCCL p2p ops issued on the compute stream do). Causal sections per (sequence, head), c = S / (2 CP) tokens a chunk:
/// step 0 the diagonal (both local chunks, causal: 2c queries x c + 1 keys on average, the derivation's rounding of
/// <see cref="Config.ModelSpec.AttendedKeys"/>), steps s &lt;= k all local queries against the block's first chunk
/// (2c x c), steps s &gt; k the second local chunk against the whole block (c x 2c): equal work on every rank. Without a
/// causal mask every step is 2c x 2c. After each step the partial outputs are merged with the running output
/// (flash_attn_fwd_out_correction: read the step's output, read and write the accumulator). The backward walks the
/// steps in reverse order around the ring the other way; step i sends the K/V block on (i &lt; CP - 1) together with the
/// K/V gradient accumulated so far (i &gt; 0), so a rank sends (CP - 1) K/V blocks forward and (CP - 1) K/V blocks plus
/// (CP - 1) K/V gradients backward, each [tokens / CP, kv heads, d_qk + d_v] in the model's dtype; the gradient received
/// during a step is added to the step's dK, dV and dQ accumulated (dq.add_, dkv.add_).
/// </summary>
internal sealed partial class AttentionBlock
{
    /// <summary>Context-parallel attention over the stages of one or more replicas (one ring group), per-replica state in <paramref name="lasts"/>.</summary>
    public void EmitRing(LayerContext c, BlockPass pass, LayerSite[] sites, int[][] lasts)
    {
        if (sites.Length * sites[0].Gpus.Length / c.St.TP % c.St.CP != 0)
            throw new InvalidOperationException($"a CP ring of {c.St.CP} ranks needs whole rings: {sites.Length} unit(s) of {sites[0].Gpus.Length / c.St.TP} attention ranks given");
        if (pass == BlockPass.Backward) RingBackward(c, sites, lasts);
        else RingForward(c, pass, sites, lasts);
    }

    /// <summary>
    /// The ring's geometry over the flattened positions pos = r x U + li of the ring group's folding units (U ranks each,
    /// local rank li: attention tp = li mod TP, attention data-parallel index li / TP; with ETP = TP li = er x TP + tr).
    /// </summary>
    private readonly record struct Ring(int Cp, int Tp, int PerSite)
    {
        public static Ring Of(LayerContext c, LayerSite[] sites) => new(c.St.CP, c.St.TP, sites[0].Gpus.Length);
        /// <summary>Attention ranks of a unit (EP with ETP = TP).</summary>
        private int A => PerSite / Tp;
        /// <summary>Attention data-parallel index j = r x A + li / TP (CP rank j mod CP).</summary>
        private int J(int pos) => pos / PerSite * A + pos % PerSite / Tp;
        public int CpRank(int pos) => J(pos) % Cp;
        /// <summary>The position of CP rank (own + <paramref name="shift"/>) mod CP in the same ring (same TP rank).</summary>
        public int Peer(int pos, int shift)
        {
            var j = J(pos);
            var k = j % Cp;
            var target = j - k + ((k + shift) % Cp + Cp) % Cp;
            return target / A * PerSite + target % A * Tp + pos % Tp;
        }
    }

    /// <summary>Queries x attended keys per (sequence, head) of forward ring step <paramref name="step"/> on CP rank <paramref name="rank"/>.</summary>
    internal static (long Queries, long Keys) RingSection(LayerContext c, int rank, int step)
    {
        var chunk = c.S / (2 * c.St.CP);
        if (!c.M.Causal) return (2 * chunk, 2 * chunk);
        if (step == 0) return (2 * chunk, chunk + 1);
        return step <= rank ? (2 * chunk, chunk) : (chunk, 2 * chunk);
    }

    /// <summary>K and V of one rank's tokens, the block passed around the ring: tokens x kv heads x (d_qk + d_v) x element bytes (MLA: the expanded per-head K and V, as TE passes them).</summary>
    internal static long RingBlockBytes(LayerContext c) =>
        c.TokensPerRank * (c.M.Mla is not null ? c.HeadsPerRank : c.KvHeadsPerRank) * (c.M.QkHeadDim + c.M.VHeadDim) * c.E;

    private static MatmulShape RingScore(LayerContext c, (long Q, long K) s) => new(s.Q, c.M.QkHeadDim, s.K, c.SequencesPerRank);
    private static MatmulShape RingValue(LayerContext c, (long Q, long K) s) => new(s.Q, s.K, c.M.VHeadDim, c.SequencesPerRank);

    private static int[] Join(int[] a, params int[] more) => a.Concat(more).Where(x => x >= 0).Distinct().ToArray();

    private static void RingForward(LayerContext c, BlockPass pass, LayerSite[] sites, int[][] lasts)
    {
        var b = c.B;
        b.Phase = pass.ForwardPhase();
        var ring = Ring.Of(c, sites);
        var (layer, mb) = (sites[0].Layer, sites[0].Microbatch);
        var n = sites.Length * ring.PerSite;
        int Gpu(int pos) => sites[pos / ring.PerSite].Gpus[pos % ring.PerSite];
        var q = new int[n];
        var held = new int[n][];
        for (var r = 0; r < sites.Length; r++)
        {
            var (gpus, _, _) = sites[r];
            var last = lasts[r];
            c.PreNormGather(sites[r], last);
            for (var li = 0; li < gpus.Length; li++)
            {
                var g = gpus[li];
                var norm = c.PreNorm(sites[r], li, last);
                var (pq, pk, pv) = Projections(c, pass, g, layer, mb, norm);
                q[r * ring.PerSite + li] = pq;
                held[r * ring.PerSite + li] = pk == pv ? [pk] : [pk, pv];
            }
        }
        var kvBytes = RingBlockBytes(c);
        var merged = new int[n];
        Array.Fill(merged, -1);
        var heads = new int[c.HeadsPerRank];
        for (var step = 0; step < ring.Cp; step++)
        {
            // Post the send of the block held now (it is step + 1's block on the next rank) before this step's kernels.
            var next = new int[n][];
            if (step < ring.Cp - 1)
                for (var pos = 0; pos < n; pos++)
                {
                    var to = ring.Peer(pos, 1);
                    next[to] = [b.AddSend(OpKind.ContextParallelSend, Gpu(pos), Gpu(to), kvBytes, layer, Join(held[pos], merged[pos], merged[to]), step, mb)];
                }
            for (var pos = 0; pos < n; pos++)
            {
                var g = Gpu(pos);
                var section = RingSection(c, ring.CpRank(pos), step);
                var rankInAttention = pos % ring.Tp;
                for (var hr = 0; hr < c.HeadsPerRank; hr++)
                {
                    var score = b.AddMatmul(OpKind.AttentionScore, g, RingScore(c, section), layer, Join(held[pos], q[pos], merged[pos]), rankInAttention * c.HeadsPerRank + hr, mb);
                    heads[hr] = b.AddMatmul(OpKind.AttentionValue, g, RingValue(c, section), layer, Join(held[pos], score), rankInAttention * c.HeadsPerRank + hr, mb);
                }
                // Merge the step's partial output into the running output (first step: the scaled copy, read + write).
                var outBytes = c.SequencesPerRank * section.Queries * c.HeadsPerRank * c.M.VHeadDim * c.E;
                merged[pos] = b.AddElementwise(g, (step == 0 ? 2 : 3) * outBytes, layer, Join(heads, merged[pos]), index: OpKindExtensions.ContextParallelMergeRole, microbatch: mb);
            }
            held = next;
        }
        for (var r = 0; r < sites.Length; r++)
        {
            var (gpus, _, _) = sites[r];
            var last = lasts[r];
            for (var li = 0; li < gpus.Length; li++) last[li] = OutputForward(c, pass, gpus[li], layer, mb, [merged[r * ring.PerSite + li]]);
            if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, c.ActivationBytes, layer, mb, last);
            else c.AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, c.ActivationBytes, layer, mb, last);
            c.Elementwise(sites[r], c.SequenceShard(3 * c.ActivationBytes), 1, last);   // residual add + the FFN's pre-norm
        }
    }

    private static void RingBackward(LayerContext c, LayerSite[] sites, int[][] lasts)
    {
        var b = c.B;
        b.Phase = OpPhase.BackwardData;
        var ring = Ring.Of(c, sites);
        var (layer, mb) = (sites[0].Layer, sites[0].Microbatch);
        var n = sites.Length * ring.PerSite;
        int Gpu(int pos) => sites[pos / ring.PerSite].Gpus[pos % ring.PerSite];
        var dOut = new int[n];
        for (var r = 0; r < sites.Length; r++)
        {
            var (gpus, _, _) = sites[r];
            var last = lasts[r];
            c.Elementwise(sites[r], c.SequenceShard(3 * c.ActivationBytes), 1, last);
            c.RecomputeNorm(sites[r], last);
            if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, last);
            for (var li = 0; li < gpus.Length; li++)
            {
                last[li] = RecomputeMlaUp(c, gpus[li], layer, mb, last[li]);
                dOut[r * ring.PerSite + li] = c.LinearBackward(OpKind.OutputProjection, gpus[li], Output(c), layer, [last[li]], -1, mb);
            }
        }
        var kvBytes = RingBlockBytes(c);
        // The first step sends the K/V block saved by the forward: posted when the attention's backward starts (after the
        // output projection's dgrad), as Transformer Engine's ring backward posts it on entry, not before its layer's backward.
        var held = new int[n][];
        for (var pos = 0; pos < n; pos++) held[pos] = [dOut[pos]];
        var merged = new int[n];
        Array.Fill(merged, -1);
        var dScores = new int[c.HeadsPerRank];
        for (var i = 0; i < ring.Cp; i++)
        {
            b.Phase = OpPhase.BackwardData;
            // Step i's send (to the previous rank): the K/V block for step i + 1 and the K/V gradient accumulated so far.
            var bytes = (i < ring.Cp - 1 ? kvBytes : 0) + (i > 0 ? kvBytes : 0);
            var next = new int[n][];
            for (var pos = 0; pos < n; pos++)
            {
                var to = ring.Peer(pos, -1);
                next[to] = [b.AddSend(OpKind.ContextParallelSend, Gpu(pos), Gpu(to), bytes, layer, Join(held[pos], merged[pos], merged[to]), i, mb)];
            }
            for (var pos = 0; pos < n; pos++)
            {
                var g = Gpu(pos);
                // Backward step i redoes forward step CP - 1 - i's section.
                var section = RingSection(c, ring.CpRank(pos), ring.Cp - 1 - i);
                var rankInAttention = pos % ring.Tp;
                for (var hr = 0; hr < c.HeadsPerRank; hr++)
                {
                    var dProbs = c.Backward(OpKind.AttentionValue, g, RingValue(c, section), layer, Join(held[pos], dOut[pos], merged[pos]), rankInAttention * c.HeadsPerRank + hr, mb);
                    dScores[hr] = c.Backward(OpKind.AttentionScore, g, RingScore(c, section), layer, [dProbs], rankInAttention * c.HeadsPerRank + hr, mb);
                }
                // dq.add_ over the step's queries and dkv.add_ of the received gradient over the block (read, read, write).
                var seq = c.SequencesPerRank;
                var dq = seq * section.Queries * c.HeadsPerRank * c.M.QkHeadDim * c.E;
                var dkv = seq * section.Keys * (c.M.Mla is not null ? c.HeadsPerRank : c.KvHeadsPerRank) * (c.M.QkHeadDim + c.M.VHeadDim) * c.E;
                merged[pos] = b.AddElementwise(g, 3 * (dq + dkv), layer, Join(dScores, merged[pos], next[pos][0]), index: OpKindExtensions.ContextParallelMergeRole, microbatch: mb);
            }
            held = next;
        }
        for (var r = 0; r < sites.Length; r++)
        {
            var (gpus, _, _) = sites[r];
            var last = lasts[r];
            for (var li = 0; li < gpus.Length; li++) last[li] = ProjectionsBackward(c, gpus[li], layer, mb, [merged[r * ring.PerSite + li]]);
            c.MixerBackwardTail(sites[r], last);
        }
    }
}

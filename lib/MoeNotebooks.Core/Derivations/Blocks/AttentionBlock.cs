using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Pre-norm self-attention with its residual: layer norm, the projections (MHA/GQA: column-parallel Q [T, H] x
/// [H, heads/TP x d] and K, V [T, H] x [H, kvHeads/TP x d], Megatron-LM splitting heads, never the head dimension;
/// MLA: see <see cref="MlaProjections"/>), the rank's heads' score and value products batched over sequences, one repeated
/// operation each (<see cref="DagBuilder.AddRepeatedMatmul"/>; each query's
/// attended keys as N: causal and sliding-window masks, <see cref="Config.ModelSpec.AttendedKeys"/>; softmax fused
/// flash-style, or a softmax/dropout pass over scores in HBM by <see cref="Config.StrategySpec.AttentionKernel"/>),
/// row-parallel output [T, heads/TP x dv] x [heads/TP x dv, H], the TP all-reduce, then residual add + the next norm.
/// </summary>
internal sealed partial class AttentionBlock : ILayerBlock
{
    public static AttentionBlock Instance { get; } = new();

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        if (c.St.CP > 1) EmitRing(c, pass, [site], [last]);
        else if (pass == BlockPass.Backward) Backward(c, site, last);
        else Forward(c, pass, site, last);
    }

    private static MatmulShape Score(LayerContext c, int layer) => new(c.S, c.M.QkHeadDim, c.M.AttendedKeys(layer), c.SequencesPerRank);
    private static MatmulShape Value(LayerContext c, int layer) => new(c.S, c.M.AttendedKeys(layer), c.M.VHeadDim, c.SequencesPerRank);
    private static MatmulShape Output(LayerContext c) => new(c.TokensPerRank, c.HeadsPerRank * c.M.VHeadDim, c.H);
    private static MatmulShape QShape(LayerContext c) => new(c.TokensPerRank, c.H, c.HeadsPerRank * c.M.HeadDim);
    private static MatmulShape KvShape(LayerContext c) => new(c.TokensPerRank, c.H, c.KvHeadsPerRank * c.M.HeadDim);

    private static void Forward(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        var b = c.B;
        b.Phase = pass.ForwardPhase();
        var (gpus, layer, mb) = site;
        c.PreNormGather(site, last);
        for (var li = 0; li < gpus.Length; li++)
            if (!c.SkipFoldedRank(gpus, li, last))
                last[li] = ForwardRank(c, pass, site, li, c.PreNorm(site, li, last));
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, c.ActivationBytes, layer, mb, last);
        else c.AllReduceAttentionGroups(gpus, OpKind.AttentionAllReduce, c.ActivationBytes, layer, mb, last);
        c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 1, last);   // residual add + the FFN's pre-norm
    }

    /// <summary>One rank's attention forward from its normed input (a method of its own, so that folded ranks, which are skipped, allocate no closures).</summary>
    private static int ForwardRank(LayerContext c, BlockPass pass, LayerSite site, int li, int norm)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var g = gpus[li];
        var (q, k, v) = Projections(c, pass, g, layer, mb, norm);
        var firstHead = (c.AttentionDp ? li % c.St.TP : li) * c.HeadsPerRank;
        // The rank's heads' products, one repeated operation each (DagBuilder.AddRepeatedMatmul: back to back on the stream).
        var scores = c.PerHead((hr, n) => b.AddRepeatedMatmul(OpKind.AttentionScore, g, Score(c, layer), n, layer, [q, k], firstHead + hr, mb));
        // Materialized scores: the softmax (and dropout) pass over [sequences, heads, s, s] in HBM sits between
        // the two products; a fused kernel keeps it on chip.
        var softmax = c.ScoreBytes.Forward > 0 ? b.AddElementwise(g, c.ScoreBytes.Forward, layer, scores, index: OpKindExtensions.AttentionSoftmaxRole, microbatch: mb) : -1;
        var heads = c.PerHead((hr, n) => b.AddRepeatedMatmul(OpKind.AttentionValue, g, Value(c, layer), n, layer, softmax >= 0 ? [softmax, v] : [scores[hr], v], firstHead + hr, mb));
        return OutputForward(c, pass, g, layer, mb, heads);
    }

    /// <summary>The (quantized) normed input's Q, K and V projections on one rank; returns the ops standing for Q, K and V.</summary>
    private static (int Q, int K, int V) Projections(LayerContext c, BlockPass pass, int g, int layer, int mb, int norm)
    {
        var input = c.QuantizeInput(g, c.TokensPerRank * c.H, layer, norm, mb);
        if (c.M.Mla is not null) return MlaProjections.Forward(c, pass, g, layer, mb, input);
        // Column-parallel Q, K, V: [T, H] x [H, heads/TP x d] (seed §2 writes [T, H/8] x [H/8, H/8]; seed §1 uses
        // all T tokens on every GPU, here each EP rank takes T / EP); K and V shrink with grouped-query attention.
        var q = c.LinearForward(OpKind.QProjection, g, QShape(c), layer, [input], -1, mb, pass);
        var k = c.LinearForward(OpKind.KProjection, g, KvShape(c), layer, [input], -1, mb, pass);
        var v = c.LinearForward(OpKind.VProjection, g, KvShape(c), layer, [input], -1, mb, pass);
        return (q, k, v);
    }

    /// <summary>Row-parallel output [T, H/TP] x [H/TP, H] (seed §2: [T, H/8] x [H/8, H/8]) after the heads' outputs <paramref name="heads"/>.</summary>
    private static int OutputForward(LayerContext c, BlockPass pass, int g, int layer, int mb, int[] heads)
    {
        if (c.Quantization is null) return c.LinearForward(OpKind.OutputProjection, g, Output(c), layer, heads, -1, mb, pass);
        var context = c.B.AddElementwise(g, 0, layer, heads, index: 3, microbatch: mb);   // the heads' outputs, joined
        return c.LinearForward(OpKind.OutputProjection, g, Output(c), layer, [c.QuantizeInput(g, c.TokensPerRank * c.HeadsPerRank * c.M.VHeadDim, layer, context, mb)], -1, mb, pass);
    }

    /// <summary>The projections' backward from the heads' query/key/value gradients; returns the input-gradient op.</summary>
    private static int ProjectionsBackward(LayerContext c, int g, int layer, int mb, int[] heads)
    {
        if (c.M.Mla is not null) return MlaProjections.Backward(c, g, layer, mb, heads);
        var dq = c.LinearBackward(OpKind.QProjection, g, QShape(c), layer, heads, -1, mb);
        var dk = c.LinearBackward(OpKind.KProjection, g, KvShape(c), layer, heads, -1, mb);
        return c.LinearBackward(OpKind.VProjection, g, KvShape(c), layer, [dq, dk], -1, mb);
    }

    /// <summary>
    /// Selective recomputation of multi-head latent attention's up-projections (<c>mla_up_proj</c>): q_up and kv_up run
    /// again before the attention's backward needs their outputs (the core's Q, K and V); returns the last of them.
    /// <paramref name="dep"/> when not listed or the model has no MLA.
    /// </summary>
    private static int RecomputeMlaUp(LayerContext c, int g, int layer, int mb, int dep) =>
        c.M.Mla is not null && c.Recomputes(Config.RecomputeModules.MlaUpProj) ? c.InRecompute(() => MlaProjections.RecomputeUp(c, g, layer, mb, dep)) : dep;

    /// <summary>
    /// Selective recomputation of the attention core (<c>core_attn</c>): every head's score and value products (and the
    /// softmax pass over materialized scores) run again before the output projection's backward; returns their join.
    /// <paramref name="dep"/> when not listed.
    /// </summary>
    private static int RecomputeCore(LayerContext c, int g, int layer, int mb, int firstHead, int dep)
    {
        if (!c.Recomputes(Config.RecomputeModules.CoreAttn)) return dep;
        return c.InRecompute(() =>
        {
            var b = c.B;
            var scores = c.PerHead((hr, n) => b.AddRepeatedMatmul(OpKind.AttentionScore, g, Score(c, layer), n, layer, LayerContext.Deps(dep), firstHead + hr, mb));
            var softmax = c.ScoreBytes.Forward > 0 ? b.AddElementwise(g, c.ScoreBytes.Forward, layer, scores, index: OpKindExtensions.AttentionSoftmaxRole, microbatch: mb) : -1;
            var heads = c.PerHead((hr, n) => b.AddRepeatedMatmul(OpKind.AttentionValue, g, Value(c, layer), n, layer, softmax >= 0 ? [softmax] : [scores[hr]], firstHead + hr, mb));
            // The heads' outputs joined on the stream (one head: none), repeated or not, as one head at a time.
            return c.HeadsPerRank == 1 ? heads[0] : b.AddElementwise(g, 0, layer, heads, index: 3, microbatch: mb);
        });
    }

    private static void Backward(LayerContext c, LayerSite site, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        b.Phase = OpPhase.BackwardData;
        c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 1, last);
        c.RecomputeNorm(site, last);
        // Sequence parallelism: the conjugate of the forward reduce-scatter gathers the output gradient's tokens.
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, last);
        for (var li = 0; li < gpus.Length; li++)
            if (!c.SkipFoldedRank(gpus, li, last))
                last[li] = BackwardRank(c, site, li, last[li]);
        // The conjugate of the forward all-reduce: column-parallel input gradients are summed over the TP group.
        // Sequence parallelism: the conjugate of the forward all-gather, a reduce-scatter to 1/TP of the tokens.
        c.MixerBackwardTail(site, last);
    }

    /// <summary>One rank's attention backward from its output gradient (a method of its own: see <see cref="ForwardRank"/>).</summary>
    private static int BackwardRank(LayerContext c, LayerSite site, int li, int gradient)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var g = gpus[li];
        var firstHead = (c.AttentionDp ? li % c.St.TP : li) * c.HeadsPerRank;
        var input = RecomputeCore(c, g, layer, mb, firstHead, RecomputeMlaUp(c, g, layer, mb, gradient));
        var o = c.LinearBackward(OpKind.OutputProjection, g, Output(c), layer, [input], -1, mb);
        var dProbs = c.PerHead((hr, n) => c.Backward(OpKind.AttentionValue, g, Value(c, layer), layer, [o], firstHead + hr, mb, n));
        var softmax = c.ScoreBytes.Backward > 0 ? b.AddElementwise(g, c.ScoreBytes.Backward, layer, dProbs, index: OpKindExtensions.AttentionSoftmaxRole, microbatch: mb) : -1;
        var heads = c.PerHead((hr, n) => c.Backward(OpKind.AttentionScore, g, Score(c, layer), layer, softmax >= 0 ? [softmax] : [dProbs[hr]], firstHead + hr, mb, n));
        return ProjectionsBackward(c, g, layer, mb, heads);
    }

}

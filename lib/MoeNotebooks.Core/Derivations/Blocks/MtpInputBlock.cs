using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The input of one multi-token-prediction depth (DeepSeek-V3 technical report §2.2, eq. 21): the shared embedding's
/// lookup of token i + k (memory-bound, as <see cref="EmbeddingBlock"/>), RMSNorm of the previous depth's hidden state
/// and of that embedding, and the projection M_k [T, 2H] x [2H, H/TP] of their concatenation (column-parallel; its
/// output gathered over the TP group for the transformer layer that follows, its input gradient all-reduced in
/// backward). The depth's transformer layer and its loss through the shared output head are the usual blocks.
/// </summary>
internal sealed class MtpInputBlock : ILayerBlock
{
    public static MtpInputBlock Instance { get; } = new();

    private static MatmulShape Projection(LayerContext c) => new(c.TokensPerRank, 2 * c.H, c.H / c.St.TP);

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        if (pass != BlockPass.Backward)
        {
            b.Phase = pass.ForwardPhase();
            c.Elementwise(site, c.ActivationBytes, 4, last);          // embedding lookup of the shifted tokens
            c.Elementwise(site, c.SequenceShard(2 * c.ActivationBytes), 0, last);      // RMSNorm of the hidden state
            c.Elementwise(site, c.SequenceShard(2 * c.ActivationBytes), 0, last);      // RMSNorm of the embedding
            // Sequence parallelism: the column-parallel eh_proj all-gathers its sequence-sharded [T/TP, 2H] input first
            // (Megatron-Core ColumnParallelLinear with sequence_parallel; MultiTokenPredictionLayer).
            if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, 2 * c.ActivationBytes, layer, mb, last);
            for (var li = 0; li < gpus.Length; li++)
            {
                if (c.SkipFoldedRank(gpus, li, last)) continue;
                var input = c.QuantizeInput(gpus[li], c.TokensPerRank * 2 * c.H, layer, last[li], mb);
                last[li] = c.LinearForward(OpKind.MtpProjection, gpus[li], Projection(c), layer, LayerContext.Deps(input), -1, mb, pass);
            }
            // gather_from_tensor_model_parallel_region of the [T, H/TP] outputs; under sequence parallelism the result is
            // then scattered to the sequence-parallel region (a local split, no communication).
            if (c.St.TP > 1) c.TensorGroupCollective(gpus, OpKind.PipelineAllGather, c.ActivationBytes, layer, mb, last);
            return;
        }
        b.Phase = OpPhase.BackwardData;
        // Sequence parallelism: the scatter's backward all-gathers the [T/TP, H] output gradient (the gather's is a split).
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, last);
        for (var li = 0; li < gpus.Length; li++)
            if (!c.SkipFoldedRank(gpus, li, last))
                last[li] = c.LinearBackward(OpKind.MtpProjection, gpus[li], Projection(c), layer, LayerContext.Deps(last[li]), -1, mb);
        // The column-parallel input's gradient [T, 2H] is summed over the TP group (reduce-scattered to T/TP under SP).
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, 2 * c.ActivationBytes, layer, mb, last);
        else if (c.St.TP > 1) c.TensorGroupCollective(gpus, OpKind.AttentionAllReduce, 2 * c.ActivationBytes, layer, mb, last);
        c.Elementwise(site, c.SequenceShard(2 * c.ActivationBytes), 0, last);          // the two RMSNorms' backward
        c.Elementwise(site, c.SequenceShard(2 * c.ActivationBytes), 0, last);
    }
}

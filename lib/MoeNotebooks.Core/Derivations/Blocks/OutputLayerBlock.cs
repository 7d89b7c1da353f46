using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The output layer on the last chunk: logits [T, H] x [H, V/TP] (column-parallel), softmax cross-entropy over the
/// fp32 logits shard; backward: the loss gradient, the logits GEMM's dX/dW and the TP all-reduce of dX.
/// </summary>
internal sealed class OutputLayerBlock : ILayerBlock
{
    public static OutputLayerBlock Instance { get; } = new();

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var t = c.TokensPerRank;
        var vocab = c.M.Vocabulary / c.St.TP;
        var lossBytes = 2 * t * vocab * 4;
        if (pass != BlockPass.Backward)
        {
            b.Phase = pass.ForwardPhase();
            // Sequence parallelism: the final norm's 1/TP tokens are gathered before the column-parallel logits.
            if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, last);
            for (var li = 0; li < gpus.Length; li++)
            {
                if (c.SkipFoldedRank(gpus, li, last)) continue;
                var logits = b.AddMatmul(OpKind.Logits, gpus[li], new(t, c.H, vocab), layer, LayerContext.Deps(last[li]), microbatch: mb);
                // Softmax cross-entropy over the fp32 logits shard.
                last[li] = b.AddElementwise(gpus[li], lossBytes, layer, [logits], index: 5, microbatch: mb);
            }
            return;
        }
        b.Phase = OpPhase.BackwardData;
        for (var li = 0; li < gpus.Length; li++)
        {
            if (c.SkipFoldedRank(gpus, li, last)) continue;
            var loss = b.AddElementwise(gpus[li], lossBytes, layer, LayerContext.Deps(last[li]), index: 5, microbatch: mb);
            last[li] = c.Backward(OpKind.Logits, gpus[li], new(t, c.H, vocab), layer, [loss], -1, mb);
        }
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, c.ActivationBytes, layer, mb, last);
        else if (c.St.TP > 1) c.TensorGroupCollective(gpus, OpKind.AttentionAllReduce, c.ActivationBytes, layer, mb, last);
    }
}

using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The MoE router: the gate GEMM [T, H] x [H, experts] (replicated on every rank, kept in 16 bits by precision
/// recipes) and, with <see cref="Config.ModelSpec.MoeMemoryBoundOps"/>, its softmax/top-k over the FP32 logits:
/// forward reads the logits and writes the probabilities (2 x T x E x 4 bytes) and the top-k weights and indices
/// (T x k x 8); backward reads the gradient and probabilities and writes the logit gradient (3 x T x E x 4).
/// Under sequence parallelism each rank routes its own T/TP tokens (Megatron-Core routes the sequence-parallel shard).
/// </summary>
internal static class Router
{
    private static MatmulShape Gate(LayerContext c) => new(c.MoeSourceTokensPerRank, c.H, c.M.Experts);

    private static long TopKBytes(LayerContext c, bool backward) =>
        backward ? 3 * c.MoeSourceTokensPerRank * c.M.Experts * 4 : 2 * c.MoeSourceTokensPerRank * c.M.Experts * 4 + c.MoeSourceTokensPerRank * c.M.TopK * 8;

    public static void Forward(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        c.B.Phase = pass.ForwardPhase();
        for (var li = 0; li < site.Gpus.Length; li++)
        {
            if (c.SkipFoldedRank(site.Gpus, li, last)) continue;
            last[li] = c.B.AddMatmul(OpKind.Gate, site.Gpus[li], Gate(c), site.Layer, LayerContext.Deps(last[li]), microbatch: site.Microbatch);
            if (c.M.MoeMemoryBoundOps)
                last[li] = c.B.AddMemoryBound(OpKind.RouterTopK, site.Gpus[li], TopKBytes(c, false), site.Layer, [last[li]], microbatch: site.Microbatch);
        }
    }

    public static void Backward(LayerContext c, LayerSite site, int[] last)
    {
        for (var li = 0; li < site.Gpus.Length; li++)
        {
            if (c.SkipFoldedRank(site.Gpus, li, last)) continue;
            if (c.M.MoeMemoryBoundOps)
            {
                c.B.Phase = OpPhase.BackwardData;
                last[li] = c.B.AddMemoryBound(OpKind.RouterTopK, site.Gpus[li], TopKBytes(c, true), site.Layer, [last[li]], microbatch: site.Microbatch);
            }
            last[li] = c.Backward(OpKind.Gate, site.Gpus[li], Gate(c), site.Layer, [last[li]], -1, site.Microbatch);
        }
    }
}

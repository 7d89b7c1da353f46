using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>The MoE router: the gate GEMM [T, H] x [H, experts] (replicated on every rank).</summary>
internal static class Router
{
    private static MatmulShape Gate(LayerContext c) => new(c.TokensPerRank, c.H, c.M.Experts);

    public static void Forward(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        c.B.Phase = pass.ForwardPhase();
        for (var li = 0; li < site.Gpus.Length; li++)
            last[li] = c.B.AddMatmul(OpKind.Gate, site.Gpus[li], Gate(c), site.Layer, [last[li]], microbatch: site.Microbatch);
    }

    public static void Backward(LayerContext c, LayerSite site, int[] last)
    {
        for (var li = 0; li < site.Gpus.Length; li++)
            last[li] = c.Backward(OpKind.Gate, site.Gpus[li], Gate(c), site.Layer, [last[li]], -1, site.Microbatch);
    }
}

using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The MoE FFN with its residual, composed of <see cref="Router"/> (gate GEMM), <see cref="TokenExchange"/>
/// (all-to-all dispatch and combine, or the TP-attention all-reduce) and <see cref="RoutedExperts"/> (expert GEMMs).
/// Forward: gate, dispatch, experts, TP all-reduce, combine, residual; backward mirrors it. Tokens are split into
/// <see cref="Config.StrategySpec.AllToAllChunks"/> chunks so chunk c + 1's all-to-all overlaps chunk c's experts.
/// </summary>
internal sealed class MoeBlock : ILayerBlock
{
    public static MoeBlock Instance { get; } = new();

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        var b = c.B;
        var backward = pass == BlockPass.Backward;
        var gpus = site.Gpus;
        if (backward)
        {
            b.Phase = OpPhase.BackwardData;
            c.Elementwise(site, 3 * c.ActivationBytes, 2, last);
        }
        else Router.Forward(c, pass, site, last);
        var blockInput = (int[])last.Clone();
        var chunkOutputs = new List<int>[gpus.Length];
        for (var li = 0; li < gpus.Length; li++) chunkOutputs[li] = new List<int>();
        var chunks = c.St.AllToAllChunks;
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
        for (var ch = 0; ch < chunks; ch++)
        {
            RoutedExperts.Emit(c, pass, site, c.ExpertTokensByChunk[ch], cur[ch]);
            TokenExchange.Combine(c, pass, site, a2aBytes[ch], cur[ch], ch);
            for (var li = 0; li < gpus.Length; li++) chunkOutputs[li].Add(cur[ch][li]);
        }
        for (var li = 0; li < gpus.Length; li++)
            last[li] = chunkOutputs[li].Count == 1 ? chunkOutputs[li][0] : b.AddElementwise(gpus[li], 0, site.Layer, chunkOutputs[li].Distinct().ToArray(), index: 3, microbatch: site.Microbatch);
        if (backward) Router.Backward(c, site, last);
        else c.Elementwise(site, 3 * c.ActivationBytes, 2, last);   // residual add
    }
}

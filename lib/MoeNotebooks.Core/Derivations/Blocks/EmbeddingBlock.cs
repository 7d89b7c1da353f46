namespace MoeNotebooks.Derivations;

/// <summary>The input embedding lookup on the first chunk: a memory-bound pass writing the [T, H] activation (no backward GEMM).</summary>
internal sealed class EmbeddingBlock : ILayerBlock
{
    public static EmbeddingBlock Instance { get; } = new();

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        if (pass == BlockPass.Backward) return;   // the embedding's sparse gradient is folded into the optimizer step
        c.B.Phase = pass.ForwardPhase();
        c.Elementwise(site, c.ActivationBytes, 4, last);
    }
}

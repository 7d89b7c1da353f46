using MoeNotebooks.Config;

namespace MoeNotebooks.Derivations;

/// <summary>
/// A model as a layer pattern: for each transformer layer, the blocks it is made of, in forward order
/// (backward runs them in reverse): attention (its kind and span per layer from the model) followed by a dense FFN
/// (models without experts, and the first <see cref="ModelSpec.DenseLayers"/> layers) or an MoE FFN; the embedding
/// and output layer are blocks of the first and last pipeline chunk. A hybrid model (<see cref="ModelSpec.HybridOverridePattern"/>)
/// has one block per layer: <see cref="MambaBlock"/>, attention, a dense MLP or an MoE FFN, as its pattern says.
/// </summary>
internal sealed class LayerPattern
{
    private readonly ILayerBlock[][] _layers;

    private LayerPattern(ILayerBlock[][] layers) => _layers = layers;

    public static LayerPattern Of(ModelSpec m)
    {
        var layers = new ILayerBlock[m.Layers + m.MtpLayers][];
        for (var l = 0; l < m.Layers; l++)
            layers[l] = m.LayerKindOf(l) switch
            {
                // Hybrid models (Megatron --hybrid-override-pattern): one block per layer.
                HybridLayerKind.Mamba => [MambaBlock.Instance],
                HybridLayerKind.Attention => [AttentionBlock.Instance],
                HybridLayerKind.Mlp => [DenseFfnBlock.Instance],
                HybridLayerKind.Moe => [MoeBlock.Instance],
                _ => [AttentionBlock.Instance, m.IsMoeLayer(l) ? MoeBlock.Instance : DenseFfnBlock.Instance],
            };
        // Multi-token-prediction depths (layer indices Layers + k): their input (embedding, norms, projection) and one
        // transformer layer of the last layer's kind; the driver emits them with the shared output head after the main layers.
        for (var l = m.Layers; l < m.Layers + m.MtpLayers; l++)
            layers[l] = [MtpInputBlock.Instance, AttentionBlock.Instance, m.IsMoeLayer(m.Layers - 1) ? MoeBlock.Instance : DenseFfnBlock.Instance];
        return new LayerPattern(layers);
    }

    public IReadOnlyList<ILayerBlock> BlocksOf(int layer) => _layers[layer];
}

namespace MoeNotebooks.Config;

/// <summary>What one layer of a model is.</summary>
public enum HybridLayerKind
{
    /// <summary>A transformer layer: self-attention followed by an FFN (dense or MoE); every layer of a non-hybrid model.</summary>
    AttentionAndFfn,
    /// <summary>Hybrid 'M': a Mamba-2 mixer with its pre-norm and residual.</summary>
    Mamba,
    /// <summary>Hybrid '*': self-attention alone, with its pre-norm and residual.</summary>
    Attention,
    /// <summary>Hybrid '-': a dense MLP alone.</summary>
    Mlp,
    /// <summary>Hybrid 'E': an MoE FFN alone.</summary>
    Moe,
}

/// <summary>The symbols of Megatron-LM's hybrid layer pattern (megatron/core/ssm/mamba_hybrid_layer_allocation.py, class Symbols).</summary>
public static class HybridLayerKinds
{
    public const char Mamba = 'M', Attention = '*', Mlp = '-', Moe = 'E';

    public static bool IsSymbol(char c) => c is Mamba or Attention or Mlp or Moe;

    public static HybridLayerKind Of(char c) => c switch
    {
        Mamba => HybridLayerKind.Mamba,
        Attention => HybridLayerKind.Attention,
        Mlp => HybridLayerKind.Mlp,
        Moe => HybridLayerKind.Moe,
        _ => throw new ArgumentOutOfRangeException(nameof(c), c, "not a hybrid layer symbol (M, *, -, E)"),
    };
}

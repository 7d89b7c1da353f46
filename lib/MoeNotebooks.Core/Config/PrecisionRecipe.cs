using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>
/// Mixed precision as models are trained today (NVIDIA Transformer Engine recipes, as Megatron-Core runs them with
/// --fp8-format / --fp8-recipe): low precision on the inputs of the linear-layer GEMMs only (forward, dgrad and
/// wgrad), BF16 for attention products, norms, activations, router and logits; each low-precision GEMM input is
/// quantized by a memory-bound pass (read BF16, write the low-precision copy and its scales; in training a second,
/// transposed copy for the weight gradient); FP32 master weights, gradients and Adam states in memory.
/// Communication is BF16 unless <see cref="Fp8Dispatch"/> sends the MoE dispatch all-to-all in FP8.
/// </summary>
/// <param name="Name">bf16, fp8-delayed, fp8-current, mxfp8, nvfp4.</param>
/// <param name="GemmDtype">Peak key the GEMMs are priced at ("bf16", "fp8", "fp4").</param>
/// <param name="GemmOperandBytes">Bytes per GEMM operand element (2, 1, 0.5).</param>
/// <param name="ScaleBytesPerElement">Scale-factor bytes per element: MXFP8 one E8M0 per 32 (1/32), NVFP4 one E4M3 per 16 (1/16); per-tensor scales ~0.</param>
/// <param name="AmaxPass">Current scaling (and NVFP4's per-tensor global scale) reads each tensor once more for its amax before casting; delayed scaling takes it from the history.</param>
public sealed record PrecisionRecipe(string Name, string GemmDtype, double GemmOperandBytes, double ScaleBytesPerElement, bool AmaxPass)
{
    /// <summary>Send the MoE dispatch all-to-all in FP8 (1 byte per element plus scales) instead of BF16 (Megatron-Core --moe-fp8-dispatch style option).</summary>
    public bool Fp8Dispatch { get; init; }

    public bool Quantizes => GemmDtype != "bf16" && GemmDtype != "fp16";

    /// <summary>
    /// Sources: Transformer Engine "Using FP8 with Transformer Engine" (DelayedScaling: amax history; Float8CurrentScaling:
    /// amax of the current tensor; MXFP8BlockScaling: E8M0 scale per 32 elements; NVFP4BlockScaling: E4M3 scale per
    /// 16 elements plus an FP32 per-tensor scale), https://docs.nvidia.com/deeplearning/transformer-engine/user-guide/examples/fp8_primer.html;
    /// OCP Microscaling Formats (MX) v1.0 spec; NVIDIA, "Pretraining Large Language Models with NVFP4" (arXiv:2509.25149).
    /// </summary>
    public static IReadOnlyDictionary<string, PrecisionRecipe> Known { get; } = new Dictionary<string, PrecisionRecipe>(StringComparer.OrdinalIgnoreCase)
    {
        ["bf16"] = new("bf16", "bf16", 2, 0, false),
        ["fp8-delayed"] = new("fp8-delayed", "fp8", 1, 0, false),
        ["fp8-current"] = new("fp8-current", "fp8", 1, 0, true),
        ["mxfp8"] = new("mxfp8", "fp8", 1, 1.0 / 32, false),
        ["nvfp4"] = new("nvfp4", "fp4", 0.5, 1.0 / 16, true),
    };

    public static PrecisionRecipe Get(string name, string field = "model.precision", string? source = null)
    {
        if (Known.TryGetValue(name, out var r)) return r;
        throw new ConfigException(field, $"\"{name}\"", $"is not a known precision recipe; use one of {string.Join(", ", Known.Keys.Select(k => $"\"{k}\""))}", source);
    }

    /// <summary>
    /// HBM bytes of quantizing a BF16 tensor of <paramref name="elements"/> for a GEMM: read it (and once more for the
    /// amax with current scaling), write the low-precision copy with its scales, and in training a second
    /// (transposed / column-wise) copy for the weight-gradient GEMM (TE's fused cast-transpose).
    /// </summary>
    public long QuantizeBytes(long elements, bool withTransposedCopy)
    {
        if (!Quantizes) return 0;
        var copies = withTransposedCopy ? 2 : 1;
        var bytes = elements * (2.0 + (AmaxPass ? 2.0 : 0.0) + copies * (GemmOperandBytes + ScaleBytesPerElement));
        return (long)Math.Ceiling(bytes);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Name} (GEMMs at {GemmDtype}{(Fp8Dispatch ? ", FP8 dispatch" : "")})");
}

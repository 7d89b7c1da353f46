using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>
/// Multi-head latent attention (DeepSeek-V2/V3, arXiv:2405.04434 §2.1): queries through a low-rank
/// [H -> qLoraRank -> heads x (qkNope + qkRope)] path (or one [H -> heads x (qkNope + qkRope)] matrix when qLoraRank = 0),
/// keys and values through a shared latent [H -> kvLoraRank + qkRope] then [kvLoraRank -> heads x (qkNope + vHead)];
/// scores use qkNope + qkRope dimensions, values vHead. Names follow the Hugging Face config (q_lora_rank, ...).
/// </summary>
public sealed record MlaSpec(long QLoraRank, long KvLoraRank, long QkNopeHeadDim, long QkRopeHeadDim, long VHeadDim)
{
    public long QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;

    public MlaSpec Validated(string path, string? source)
    {
        if (QLoraRank < 0) throw new ConfigException($"{path}.qLoraRank", QLoraRank.ToString(CultureInfo.InvariantCulture), "must be >= 0 (0 = queries without low-rank compression)", source);
        Validate.Positive($"{path}.kvLoraRank", KvLoraRank);
        Validate.Positive($"{path}.qkNopeHeadDim", QkNopeHeadDim);
        Validate.Positive($"{path}.qkRopeHeadDim", QkRopeHeadDim);
        Validate.Positive($"{path}.vHeadDim", VHeadDim);
        if (QLoraRank > 0) Validate.Within($"{path}.qLoraRank", QLoraRank, Bounds.LatentRank, source);
        Validate.Within($"{path}.kvLoraRank", KvLoraRank, Bounds.LatentRank, source);
        Validate.Within($"{path}.qkNopeHeadDim", QkNopeHeadDim, Bounds.HeadDim, source);
        Validate.Within($"{path}.qkRopeHeadDim", QkRopeHeadDim, Bounds.HeadDim, source);
        Validate.Within($"{path}.vHeadDim", VHeadDim, Bounds.HeadDim, source);
        return this;
    }

    public static MlaSpec Read(JsonObjectReader r)
    {
        var m = new MlaSpec(r.OptionalLong("qLoraRank") ?? 0, r.Long("kvLoraRank"), r.Long("qkNopeHeadDim"), r.Long("qkRopeHeadDim"), r.Long("vHeadDim"));
        r.Finish();
        return m.Validated(r.Path, r.Source);
    }
}

/// <summary>FFN activation: plain (two matrices) or gated linear unit (three: gate, up, down; Shazeer 2020).</summary>
public enum FfnActivation
{
    Gelu,
    Relu,
    /// <summary>SiLU-gated (Llama, Mixtral, Qwen, DeepSeek, GPT-OSS).</summary>
    Swiglu,
    Geglu,
    /// <summary>Squared ReLU, plain (two matrices): Nemotron-H / Nemotron-3 (Megatron --squared-relu; So et al. 2021, Primer).</summary>
    SquaredRelu,
}

/// <summary>Attention span of a layer.</summary>
public enum AttentionLayerKind
{
    Full,
    /// <summary>Each query attends to the last <see cref="ModelSpec.SlidingWindow"/> positions.</summary>
    Sliding,
}

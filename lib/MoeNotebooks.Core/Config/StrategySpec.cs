using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>Which shapes a DAG builder uses.</summary>
public enum Derivation
{
    /// <summary>The founding document's shapes exactly as written (including its mistakes).</summary>
    Seed,

    /// <summary>Megatron-LM sharding, even pipeline split, data-parallel attention with explicit all-to-all under EP.</summary>
    Corrected,
}

/// <summary>
/// How the model is split over GPUs. GPU rank = tp + TP * (ep + EP * (pp + PP * dp)): tensor-parallel
/// ranks are adjacent (inside a node), then expert-parallel ranks, then pipeline stages, then replicas.
/// </summary>
/// <param name="EP">Expert-parallel size: experts are split over EP ranks; attention is data-parallel over them.</param>
/// <param name="TP">Tensor-parallel size (Megatron column/row sharding).</param>
/// <param name="PP">Pipeline stages; layers are split evenly.</param>
/// <param name="DP">Data-parallel replicas; the batch is split over them.</param>
/// <param name="Derivation">Which shapes to use.</param>
/// <param name="Microbatches">Microbatches per step flowing through the pipeline (GPipe order for forward passes).</param>
public sealed record StrategySpec(int EP, int TP, int PP, int DP, Derivation Derivation = Derivation.Corrected, int Microbatches = 1)
{
    public int GpuCount => EP * TP * PP * DP;

    public int Rank(int dp, int pp, int ep, int tp) => tp + TP * (ep + EP * (pp + PP * dp));

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"EP{EP} x TP{TP} x PP{PP} x DP{DP} ({JsonObjectReader.Kebab(Derivation.ToString())}, {Microbatches} microbatch{(Microbatches == 1 ? "" : "es")})");

    public StrategySpec Validated(string path = "strategy", string? source = null)
    {
        Validate.Positive($"{path}.ep", EP);
        Validate.Positive($"{path}.tp", TP);
        Validate.Positive($"{path}.pp", PP);
        Validate.Positive($"{path}.dp", DP);
        Validate.Positive($"{path}.microbatches", Microbatches);
        // GpuCount is an int: a product beyond it would wrap (65536 x 65536 -> 0) and the GPU-count check would then
        // compare against a wrong number.
        if (Validate.Product($"{path}.ep x tp x pp x dp", EP, TP, PP, DP) is var gpus and > int.MaxValue)
            throw new ConfigException($"{path}.ep x tp x pp x dp", string.Create(CultureInfo.InvariantCulture, $"{EP} x {TP} x {PP} x {DP} = {gpus}"),
                $"must fit a 32-bit GPU count (<= {int.MaxValue})", source);
        return this;
    }

    /// <summary>Checks the strategy against a model and a cluster; messages name the field and the valid values.</summary>
    public void CheckFits(ModelSpec model, int gpuCount, string? source = null)
    {
        Validated(source: source);
        model.Validated(source: source);
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        if ((long)EP * TP * PP * DP != gpuCount)
            throw new ConfigException("strategy.ep x tp x pp x dp", $"{EP} x {TP} x {PP} x {DP} = {I((long)EP * TP * PP * DP)}",
                $"must equal the GPU count hardware.gpus = {gpuCount}", source);
        if (model.Layers < PP)
            throw new ConfigException("strategy.pp", I(PP), $"must be <= model.layers = {model.Layers} (each stage needs a layer)", source);
        if (Derivation == Derivation.Seed)
        {
            if (DP != 1 || Microbatches != 1 || (EP > 1 && (TP > 1 || PP > 1)))
                throw new ConfigException("strategy", ToString(),
                    "the seed derivation reproduces the founding document's two layouts only: EP=n with TP=PP=DP=1, or TP x PP with EP=DP=1, one microbatch; use \"derivation\": \"corrected\" for others", source);
            if (model.AttentionHeads % TP != 0)
                throw new ConfigException("model.attentionHeads", I(model.AttentionHeads), $"must be divisible by strategy.tp = {TP}", source);
            if (model.HiddenSize % TP != 0 || model.HeadDim % TP != 0)
                throw new ConfigException("model.hiddenSize", I(model.HiddenSize), $"must make hiddenSize and head dimension divisible by strategy.tp = {TP}", source);
            if (model.Layers % PP != 0)
                throw new ConfigException("model.layers", I(model.Layers), $"must be divisible by strategy.pp = {PP}", source);
            return;
        }
        if (model.AttentionHeads % TP != 0)
            throw new ConfigException("model.attentionHeads", I(model.AttentionHeads), $"must be divisible by strategy.tp = {TP} (heads are split over TP ranks)", source);
        if (model.FfnHiddenSize % TP != 0)
            throw new ConfigException("model.ffnHiddenSize", I(model.FfnHiddenSize), $"must be divisible by strategy.tp = {TP}", source);
        if (model.HiddenSize % TP != 0)
            throw new ConfigException("model.hiddenSize", I(model.HiddenSize), $"must be divisible by strategy.tp = {TP}", source);
        if (model.Experts % EP != 0)
            throw new ConfigException("model.experts", I(model.Experts), $"must be divisible by strategy.ep = {EP} (each EP rank holds experts / ep experts)", source);
        var sequencesPerGroup = (long)DP * EP * Microbatches;
        if (model.Batch % sequencesPerGroup != 0)
            throw new ConfigException("model.batch", I(model.Batch),
                $"must be divisible by strategy.dp x ep x microbatches = {I(sequencesPerGroup)} (each data-parallel attention rank takes whole sequences)", source);
    }

    public static StrategySpec Read(JsonObjectReader r)
    {
        var s = new StrategySpec(
            r.OptionalInt("ep") ?? 1,
            r.OptionalInt("tp") ?? 1,
            r.OptionalInt("pp") ?? 1,
            r.OptionalInt("dp") ?? 1,
            r.Enum("derivation", Derivation.Corrected),
            r.OptionalInt("microbatches") ?? 1);
        r.Finish();
        return s.Validated(r.Path, r.Source);
    }
}

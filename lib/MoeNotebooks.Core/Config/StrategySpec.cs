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

/// <summary>Forward pass only, or a full training step.</summary>
public enum WorkloadMode
{
    /// <summary>One forward pass (what the founding document prices).</summary>
    Inference,

    /// <summary>Forward, backward (activation and weight gradients), gradient synchronisation and optimizer step.</summary>
    Training,
}

/// <summary>Order in which a pipeline stage runs its microbatches.</summary>
public enum PipelineSchedule
{
    /// <summary>All forwards, then all backwards.</summary>
    Gpipe,

    /// <summary>Warm-up forwards, then one forward one backward, then cool-down backwards (PipeDream-Flush / Megatron).</summary>
    OneFOneB,

    /// <summary>1F1B over virtual stages: each GPU holds several model chunks (Megatron interleaved schedule).</summary>
    Interleaved,
}

/// <summary>Where attention runs when experts are expert-parallel.</summary>
public enum AttentionPlacement
{
    /// <summary>Each EP rank runs attention for its own tokens (tokens / EP), tokens move by all-to-all.</summary>
    DataParallel,

    /// <summary>The EP group runs attention together with heads split over TP x EP ranks; every rank then holds all
    /// the group's tokens, picks those of its experts locally, and expert outputs are combined by an all-reduce.</summary>
    TensorParallel,
}

/// <summary>How the attention kernel treats the score matrix [sequences x heads x seq x seq].</summary>
public enum AttentionKernel
{
    /// <summary>Flash-attention style: scores and probabilities stay on chip; only Q, K, V and the output touch HBM.</summary>
    Fused,

    /// <summary>
    /// Scores written to HBM by the Q K^T product; a fused scale-mask-softmax reads them and writes the probabilities,
    /// which the backward reads again (Megatron-LM before FlashAttention, e.g. the SC21 runs).
    /// </summary>
    Materialized,

    /// <summary>Materialized, plus dropout on the probabilities (Megatron-LM's default): another read and write and a one-byte mask per score.</summary>
    MaterializedDropout,
}

/// <summary>
/// How the model is split over GPUs and executed. By default GPU rank = tp + TP * (ep + EP * (pp + PP * dp)):
/// tensor-parallel ranks are adjacent (inside a node), then expert-parallel ranks, then pipeline stages, then
/// replicas; <see cref="RankOrder"/> changes that nesting (e.g. "tp-pp-ep-dp" spreads an EP group over nodes).
/// </summary>
/// <param name="EP">Expert-parallel size: experts are split over EP ranks; attention is data-parallel over them.</param>
/// <param name="TP">Tensor-parallel size (Megatron column/row sharding).</param>
/// <param name="PP">Pipeline stages; layers are split evenly.</param>
/// <param name="DP">Data-parallel replicas; the batch is split over them.</param>
/// <param name="Derivation">Which shapes to use.</param>
/// <param name="Microbatches">Microbatches per step flowing through the pipeline (GPipe order for forward passes).</param>
public sealed record StrategySpec(int EP, int TP, int PP, int DP, Derivation Derivation = Derivation.Corrected, int Microbatches = 1)
{
    public WorkloadMode Mode { get; init; } = WorkloadMode.Inference;
    public PipelineSchedule Schedule { get; init; } = PipelineSchedule.OneFOneB;

    /// <summary>Model chunks per GPU for the interleaved schedule (1 otherwise).</summary>
    public int VirtualStages { get; init; } = 1;

    /// <summary>Full activation recomputation: each layer's forward runs again just before its backward.</summary>
    public bool Recompute { get; init; }

    /// <summary>ZeRO stage 0-3: 1 partitions optimizer states, 2 also gradients, 3 also weights, over data-parallel ranks.</summary>
    public int ZeroStage { get; init; }

    /// <summary>Communication on its own stream, overlapping compute where dependencies allow; false serialises it with compute.</summary>
    public bool OverlapCommunication { get; init; } = true;

    /// <summary>Chunks the tokens of the MoE block are split into, so chunk i's all-to-all overlaps chunk i-1's experts.</summary>
    public int AllToAllChunks { get; init; } = 1;

    public AttentionPlacement Attention { get; init; } = AttentionPlacement.DataParallel;

    /// <summary>
    /// Pipeline sends split over the TP ranks: each sends 1/TP of the activation over its own link and the receiving
    /// stage all-gathers the slices over its TP group (Megatron-LM's scatter/gather optimization, Narayanan et al.,
    /// SC21 §4.1); otherwise every TP rank sends the whole activation.
    /// </summary>
    public bool ScatterGather { get; init; }

    /// <summary>Whether attention scores stay on chip (fused) or go through HBM (materialized, optionally with dropout).</summary>
    public AttentionKernel AttentionKernel { get; init; } = AttentionKernel.Fused;

    /// <summary>Nesting of the parallel dimensions from innermost to outermost, e.g. "tp-ep-pp-dp".</summary>
    public string RankOrder { get; init; } = "tp-ep-pp-dp";

    public int GpuCount => EP * TP * PP * DP;

    public int Rank(int dp, int pp, int ep, int tp)
    {
        if (RankOrder == "tp-ep-pp-dp") return tp + TP * (ep + EP * (pp + PP * dp));
        int rank = 0, stride = 1;
        foreach (var dim in RankOrder.Split('-'))
        {
            var (index, size) = dim switch { "tp" => (tp, TP), "ep" => (ep, EP), "pp" => (pp, PP), _ => (dp, DP) };
            rank += index * stride;
            stride *= size;
        }
        return rank;
    }

    public override string ToString()
    {
        var extras = new List<string> { JsonObjectReader.Kebab(Derivation.ToString()) };
        if (Mode == WorkloadMode.Training) extras.Add("training");
        extras.Add(string.Create(CultureInfo.InvariantCulture, $"{Microbatches} microbatch{(Microbatches == 1 ? "" : "es")}"));
        if (PP > 1 && (Mode == WorkloadMode.Training || Schedule != PipelineSchedule.OneFOneB))
            extras.Add(Schedule == PipelineSchedule.Interleaved ? $"interleaved x{VirtualStages}" : JsonObjectReader.Kebab(Schedule.ToString()));
        if (Recompute) extras.Add("recompute");
        if (ZeroStage > 0) extras.Add($"ZeRO-{ZeroStage}");
        if (!OverlapCommunication) extras.Add("no overlap");
        if (AllToAllChunks > 1) extras.Add($"{AllToAllChunks} all-to-all chunks");
        if (Attention == AttentionPlacement.TensorParallel) extras.Add("TP attention");
        if (ScatterGather) extras.Add("scatter-gather");
        if (AttentionKernel != AttentionKernel.Fused) extras.Add($"{JsonObjectReader.Kebab(AttentionKernel.ToString())} attention");
        if (RankOrder != "tp-ep-pp-dp") extras.Add($"order {RankOrder}");
        return string.Create(CultureInfo.InvariantCulture, $"EP{EP} x TP{TP} x PP{PP} x DP{DP} ({string.Join(", ", extras)})");
    }

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
        Validate.Positive($"{path}.virtualStages", VirtualStages);
        Validate.Positive($"{path}.alltoallChunks", AllToAllChunks);
        Validate.Within($"{path}.ep", EP, Bounds.ParallelSize, source);
        Validate.Within($"{path}.tp", TP, Bounds.ParallelSize, source);
        Validate.Within($"{path}.pp", PP, Bounds.ParallelSize, source);
        Validate.Within($"{path}.dp", DP, Bounds.ParallelSize, source);
        Validate.Within($"{path}.microbatches", Microbatches, Bounds.Microbatches, source);
        Validate.Within($"{path}.virtualStages", VirtualStages, Bounds.VirtualStages, source);
        Validate.Within($"{path}.alltoallChunks", AllToAllChunks, Bounds.AllToAllChunks, source);
        if (ZeroStage is < 0 or > 3)
            throw new ConfigException($"{path}.zero", ZeroStage.ToString(CultureInfo.InvariantCulture), "must be 0, 1, 2 or 3", source);
        var dims = RankOrder.Split('-');
        if (dims.Length != 4 || dims.Distinct().Count() != 4 || dims.Any(d => d is not ("tp" or "ep" or "pp" or "dp")))
            throw new ConfigException($"{path}.rankOrder", $"\"{RankOrder}\"", "must name tp, ep, pp and dp once each, innermost first, e.g. \"tp-ep-pp-dp\"", source);
        if (VirtualStages > 1 && Schedule != PipelineSchedule.Interleaved)
            throw new ConfigException($"{path}.virtualStages", VirtualStages.ToString(CultureInfo.InvariantCulture), "needs \"schedule\": \"interleaved\"", source);
        if (Schedule == PipelineSchedule.Interleaved && Microbatches % PP != 0)
            throw new ConfigException($"{path}.microbatches", Microbatches.ToString(CultureInfo.InvariantCulture),
                $"must be a multiple of strategy.pp = {PP} for the interleaved schedule", source);
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
            if (this with { EP = 1, TP = 1, PP = 1, DP = 1, Microbatches = 1 } != new StrategySpec(1, 1, 1, 1, Derivation.Seed))
                throw new ConfigException("strategy", ToString(),
                    "the seed derivation is the founding document's forward pass only: leave mode, schedule, recompute, zero, overlap, alltoallChunks, attention, attentionKernel, scatterGather and rankOrder at their defaults, or use \"derivation\": \"corrected\"", source);
            if (DP != 1 || Microbatches != 1 || (EP > 1 && (TP > 1 || PP > 1)))
                throw new ConfigException("strategy", ToString(),
                    "the seed derivation reproduces the founding document's two layouts only: EP=n with TP=PP=DP=1, or TP x PP with EP=DP=1, one microbatch; use \"derivation\": \"corrected\" for others", source);
            if (model.AttentionHeads % TP != 0)
                throw new ConfigException("model.attentionHeads", I(model.AttentionHeads), $"must be divisible by strategy.tp = {TP}", source);
            if (model.HiddenSize % TP != 0 || model.HeadDim % TP != 0)
                throw new ConfigException("model.hiddenSize", I(model.HiddenSize), $"must make hiddenSize and head dimension divisible by strategy.tp = {TP}", source);
            if (model.Layers % PP != 0)
                throw new ConfigException("model.layers", I(model.Layers), $"must be divisible by strategy.pp = {PP}", source);
            if (model.IsDense || model.Experts % EP != 0)
                throw new ConfigException("model.experts", I(model.Experts), $"must be divisible by strategy.ep = {EP} and positive (the seed layouts give each GPU its experts)", source);
            return;
        }
        if (model.AttentionHeads % TP != 0)
            throw new ConfigException("model.attentionHeads", I(model.AttentionHeads), $"must be divisible by strategy.tp = {TP} (heads are split over TP ranks)", source);
        if (model.FfnHiddenSize % TP != 0)
            throw new ConfigException("model.ffnHiddenSize", I(model.FfnHiddenSize), $"must be divisible by strategy.tp = {TP}", source);
        if (model.HiddenSize % TP != 0)
            throw new ConfigException("model.hiddenSize", I(model.HiddenSize), $"must be divisible by strategy.tp = {TP}", source);
        if (model.IsDense && EP > 1)
            throw new ConfigException("strategy.ep", I(EP), "must be 1 for a dense model (model.experts = 0)", source);
        if (!model.IsDense && model.Experts % EP != 0)
            throw new ConfigException("model.experts", I(model.Experts), $"must be divisible by strategy.ep = {EP} (each EP rank holds experts / ep experts)", source);
        if (Attention == AttentionPlacement.TensorParallel && model.AttentionHeads % (TP * EP) != 0)
            throw new ConfigException("model.attentionHeads", I(model.AttentionHeads), $"must be divisible by strategy.tp x ep = {TP * EP} for tensor-parallel attention", source);
        if (model.Vocabulary % TP != 0)
            throw new ConfigException("model.vocabulary", I(model.Vocabulary), $"must be divisible by strategy.tp = {TP} (the logits layer is column-parallel)", source);
        var chunks = (long)PP * VirtualStages;
        if (model.Layers < chunks)
            throw new ConfigException("strategy.virtualStages", I(VirtualStages), $"needs model.layers >= pp x virtualStages = {chunks}", source);
        var sequencesPerGroup = (long)DP * (Attention == AttentionPlacement.DataParallel ? EP : 1) * Microbatches;
        if (model.Batch % sequencesPerGroup != 0)
            throw new ConfigException("model.batch", I(model.Batch),
                $"must be divisible by strategy.dp x ep x microbatches = {I(sequencesPerGroup)} (each data-parallel attention rank takes whole sequences)", source);
        var tokensPerChunk = model.Tokens / sequencesPerGroup;
        if (tokensPerChunk < AllToAllChunks)
            throw new ConfigException("strategy.alltoallChunks", I(AllToAllChunks), $"must be <= tokens per rank = {I(tokensPerChunk)}", source);
    }

    public static StrategySpec Read(JsonObjectReader r)
    {
        var defaults = new StrategySpec(1, 1, 1, 1);
        var s = new StrategySpec(
            r.OptionalInt("ep") ?? 1,
            r.OptionalInt("tp") ?? 1,
            r.OptionalInt("pp") ?? 1,
            r.OptionalInt("dp") ?? 1,
            r.Enum("derivation", Derivation.Corrected),
            r.OptionalInt("microbatches") ?? 1)
        {
            Mode = r.Enum("mode", defaults.Mode),
            Schedule = r.Enum("schedule", defaults.Schedule),
            VirtualStages = r.OptionalInt("virtualStages") ?? 1,
            Recompute = r.OptionalBool("recompute") ?? false,
            ZeroStage = r.OptionalInt("zero") ?? 0,
            OverlapCommunication = r.OptionalBool("overlap") ?? true,
            AllToAllChunks = r.OptionalInt("alltoallChunks") ?? 1,
            Attention = r.Enum("attention", defaults.Attention),
            AttentionKernel = r.Enum("attentionKernel", defaults.AttentionKernel),
            ScatterGather = r.OptionalBool("scatterGather") ?? false,
            RankOrder = r.OptionalString("rankOrder") ?? defaults.RankOrder,
        };
        r.Finish();
        return s.Validated(r.Path, r.Source);
    }
}

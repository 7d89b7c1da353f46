using System.Globalization;
using System.Text.Json.Nodes;

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

    /// <summary>
    /// Zero-bubble ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", §3.1): 1F1B with each backward split into
    /// an input-gradient part B and a weight-gradient part W; W is deferred to fill the cool-down bubble while the
    /// activation memory stays that of 1F1B. Bubble (p - 1)(T_F + T_B - T_W).
    /// </summary>
    ZeroBubbleH1,

    /// <summary>
    /// DualPipe (DeepSeek-V3 technical report §3.2.1, deepseek-ai/DualPipe): microbatches enter from both ends of the
    /// pipeline, each rank holds two model chunks (stage i and stage p - 1 - i), forward and backward chunks of the
    /// two directions run in overlapped pairs, and the tail uses zero-bubble W deferral. Bubble (p/2 - 1)(T_F&amp;B + T_B - 3 T_W).
    /// </summary>
    DualPipe,
}

/// <summary>How the MoE all-to-all is hidden (Megatron-Core / DeepEP options); the default is a plain run.</summary>
public enum MoeAllToAllOverlap
{
    /// <summary>Dispatch and combine run on the communication stream in dependency order; nothing else is done to hide them.</summary>
    None,

    /// <summary>Megatron-Core's <c>--overlap-moe-expert-parallel-comm</c>: in the 1F1B steady state one microbatch's
    /// all-to-all runs while another microbatch's forward or backward computes.</summary>
    OneFOneB,

    /// <summary>DeepEP-style kernels (<c>--moe-enable-deepep</c>): communication driven by SMs taken from compute while it runs.</summary>
    DeepEp,
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
/// <para>
/// MoE parallel folding (Megatron-Core, "MoE Parallel Folding", Liu et al. 2025): per pipeline stage the same
/// GPUs are laid out twice, attention as TP x CP x DP and MoE layers as ETP x EP x EDP. Here the GPU count is
/// EP x ETP x DP x PP, so <c>dp</c> is the expert-data-parallel size EDP and the attention data-parallel size
/// (Megatron's data-parallel size) is EP x ETP x DP / (TP x CP). With ETP = TP and CP = 1 (the defaults) this is
/// exactly today's meaning: attention data-parallel over EP x DP, experts sharded TP-wise and replicated DP times.
/// Megatron places ranks in the order "tp-cp-ep-dp-pp" (innermost first): attention coordinates follow
/// "tp-cp-dp-pp" and expert coordinates "etp-ep-edp-pp" over the same ranks (<see cref="AttentionCoordinates"/>,
/// <see cref="ExpertCoordinates"/>), so the innermost groups stay inside one NVLink domain.
/// </para>
/// </summary>
/// <param name="EP">Expert-parallel size (<c>--expert-model-parallel-size</c>): experts are split over EP ranks; attention is data-parallel over them.</param>
/// <param name="TP">Tensor-parallel size (<c>--tensor-model-parallel-size</c>, Megatron column/row sharding).</param>
/// <param name="PP">Pipeline stages (<c>--pipeline-model-parallel-size</c>); layers are split evenly unless first/last counts are given.</param>
/// <param name="DP">Expert-data-parallel replicas (for a dense model with CP = 1: the data-parallel size); the batch is split over the attention data-parallel ranks.</param>
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

    /// <summary>
    /// Selective recomputation (Megatron-Core <c>--recompute-granularity selective --recompute-modules</c>): the listed
    /// submodules' forward runs again inside the backward (<see cref="Config.RecomputeModules"/>). Excludes <see cref="Recompute"/>.
    /// </summary>
    public RecomputeModules RecomputeModules { get; init; }

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

    /// <summary><c>--expert-tensor-parallel-size</c>: tensor parallelism inside each expert; null means "as TP" (today's layout).</summary>
    public int? ExpertTensorParallelSize { get; init; }

    /// <summary><c>--context-parallel-size</c>: the sequence split over CP ranks (ring attention), carved out of the attention data-parallel ranks.</summary>
    public int ContextParallelSize { get; init; } = 1;

    /// <summary><c>--sequence-parallel</c>: TP all-reduces become reduce-scatter + all-gather; norms, dropout and residuals run on 1/TP of the tokens.</summary>
    public bool SequenceParallel { get; init; }

    /// <summary><c>--use-distributed-optimizer</c> (ZeRO-1 as Megatron runs it): gradients reduce-scattered, parameters all-gathered over DP (EDP for experts).</summary>
    public bool UseDistributedOptimizer { get; init; }

    /// <summary>
    /// <c>--overlap-grad-reduce</c>: gradient buckets are reduced while the backward continues. Default true here, which is
    /// what this tool has always modelled (Megatron's own default is off; <c>moe import-megatron</c> sets it from the flag).
    /// </summary>
    public bool OverlapGradReduce { get; init; } = true;

    /// <summary><c>--overlap-param-gather</c>: with the distributed optimizer, parameter all-gathers overlap the next forward.</summary>
    public bool OverlapParamGather { get; init; }

    /// <summary><c>--decoder-first-pipeline-num-layers</c>: layers on the first pipeline stage (null: even split).</summary>
    public int? DecoderFirstPipelineNumLayers { get; init; }

    /// <summary><c>--decoder-last-pipeline-num-layers</c>: layers on the last pipeline stage (null: even split).</summary>
    public int? DecoderLastPipelineNumLayers { get; init; }

    /// <summary>How the MoE all-to-all is hidden; <see cref="MoeAllToAllOverlap.None"/> (a plain run) by default.</summary>
    public MoeAllToAllOverlap MoeAllToAllOverlap { get; init; } = MoeAllToAllOverlap.None;

    /// <summary>
    /// Megatron-Bridge <c>cutedsl_fused_grouped_mlp</c> (Transformer Engine's op fuser with
    /// <c>NVTE_CUTEDSL_FUSED_GROUPED_MLP=1</c>): the routed experts' grouped MLP runs as CuTe DSL kernels that apply the
    /// GLU, its clamp included, inside the grouped GEMMs. Priced: the routed experts pay no separate clamp passes
    /// (<see cref="ModelSpec.ActivationClampValue"/>); the rest of the chain is priced as without it. False by default.
    /// </summary>
    public bool CutedslFusedGroupedMlp { get; init; }

    /// <summary>Effective expert tensor-parallel size (TP unless set).</summary>
    public int ETP => ExpertTensorParallelSize ?? TP;

    /// <summary>Context-parallel size.</summary>
    public int CP => ContextParallelSize;

    public int GpuCount => EP * ETP * PP * DP;

    /// <summary>GPUs per pipeline stage.</summary>
    public int StageGpuCount => EP * ETP * DP;

    /// <summary>Megatron's data-parallel size for the attention (non-expert) weights: GPUs per stage / (TP x CP).</summary>
    public int AttentionDataParallelSize => StageGpuCount / (TP * CP);

    /// <summary>Expert-data-parallel size (replicas of each expert shard): GPUs per stage / (ETP x EP) = DP.</summary>
    public int ExpertDataParallelSize => DP;

    /// <summary>
    /// GPUs of one folding unit of a stage: the smallest block of consecutive ranks that holds whole attention TP groups
    /// and whole expert ETP x EP replicas, lcm(TP, EP x ETP). With ETP = TP it is today's EP x TP stage group of one
    /// replica. The DAG builds a stage as <see cref="FoldUnits"/> identical units (local rank li: attention tp = li mod TP;
    /// experts etp = li mod ETP, ep = li / ETP mod EP).
    /// </summary>
    public int FoldUnitGpus => (int)FoldUnitGpusOf(TP, EP, ETP);

    /// <summary>lcm(<paramref name="tp"/>, <paramref name="ep"/> x <paramref name="etp"/>): the GPUs of one folding unit (<see cref="FoldUnitGpus"/>) for any layout, also one that is not a whole strategy (the validation suite's slices).</summary>
    public static long FoldUnitGpusOf(int tp, int ep, int etp) => Lcm(tp, (long)ep * etp);

    /// <summary>Folding units per stage: DP (EDP) with ETP = TP.</summary>
    public int FoldUnits => StageGpuCount / FoldUnitGpus;

    /// <summary>
    /// Folding units one context-parallel ring spans: CP / (attention ranks of a unit, FoldUnitGpus / TP = EP with
    /// ETP = TP) when CP exceeds them, else 1 (the ring lies inside a unit). The DAG emits those units together.
    /// </summary>
    public int ContextParallelUnits => CP > FoldUnitGpus / TP ? CP / (FoldUnitGpus / TP) : 1;

    private static long Lcm(long a, long b)
    {
        long x = a, y = b;
        while (y != 0) (x, y) = (y, x % y);
        return a / x * b;
    }

    /// <summary>
    /// Global rank of local rank <paramref name="li"/> of folding unit <paramref name="unit"/> on stage <paramref name="pp"/>:
    /// with ETP = TP <see cref="Rank"/> (li = ep x TP + tp, unit = dp); otherwise the unit's ranks are consecutive and
    /// nest like EP x TP in <see cref="RankOrder"/> ("tp-ep-pp-dp": li + U (pp + PP unit); "tp-ep-dp-pp", Megatron's: li + U (unit + units pp)).
    /// </summary>
    public int UnitRank(int unit, int pp, int li)
    {
        if (ETP == TP) return Rank(unit, pp, li / TP, li % TP);
        var u = FoldUnitGpus;
        return RankOrder == "tp-ep-dp-pp" ? li + u * (unit + FoldUnits * pp) : li + u * (pp + PP * unit);
    }

    /// <summary>Whether any field beyond today's layout is in use (folding with ETP != TP, CP, SP, distributed optimizer, ...).</summary>
    public bool UsesFolding => ETP != TP || CP > 1;

    /// <summary>
    /// Attention coordinates of a global rank in Megatron-Core's order "tp-cp-dp-pp" (innermost first):
    /// rank = tp + TP (cp + CP (dp + DPattn pp)).
    /// </summary>
    public (int Tp, int Cp, int Dp, int Pp) AttentionCoordinates(int rank)
    {
        var a = AttentionDataParallelSize;
        return (rank % TP, rank / TP % CP, rank / (TP * CP) % a, rank / (TP * CP * a));
    }

    /// <summary>Expert coordinates of a global rank in Megatron-Core's order "etp-ep-edp-pp": rank = etp + ETP (ep + EP (edp + EDP pp)).</summary>
    public (int Etp, int Ep, int Edp, int Pp) ExpertCoordinates(int rank) =>
        (rank % ETP, rank / ETP % EP, rank / (ETP * EP) % DP, rank / (ETP * EP * DP));

    /// <summary>
    /// The ranks of the group of <paramref name="rank"/> along one Megatron dimension ("tp", "cp", "dp", "etp", "ep",
    /// "edp", "pp"), in Megatron's placement; with <c>gpusPerDomain</c> a caller tells whether the group stays inside
    /// one NVLink domain (<see cref="InsideDomain"/>).
    /// </summary>
    public int[] MegatronGroup(int rank, string dimension)
    {
        var members = new List<int>();
        for (var r = 0; r < GpuCount; r++)
        {
            var (tp, cp, dp, pp) = AttentionCoordinates(r);
            var (etp, ep, edp, epp) = ExpertCoordinates(r);
            var (mtp, mcp, mdp, mpp) = AttentionCoordinates(rank);
            var (metp, mep, medp, _) = ExpertCoordinates(rank);
            var same = dimension switch
            {
                "tp" => cp == mcp && dp == mdp && pp == mpp,
                "cp" => tp == mtp && dp == mdp && pp == mpp,
                "dp" => tp == mtp && cp == mcp && pp == mpp,
                "pp" => tp == mtp && cp == mcp && dp == mdp,
                "etp" => ep == mep && edp == medp && epp == mpp,
                "ep" => etp == metp && edp == medp && epp == mpp,
                "edp" => etp == metp && ep == mep && epp == mpp,
                _ => throw new ConfigException("dimension", $"\"{dimension}\"", "must be tp, cp, dp, pp, etp, ep or edp"),
            };
            if (same) members.Add(r);
        }
        return members.ToArray();
    }

    /// <summary>Whether all <paramref name="ranks"/> lie in one NVLink domain of <paramref name="gpusPerDomain"/> consecutive ranks.</summary>
    public static bool InsideDomain(IReadOnlyList<int> ranks, int gpusPerDomain) =>
        ranks.Count == 0 || ranks.All(r => r / gpusPerDomain == ranks[0] / gpusPerDomain);

    /// <summary>
    /// Layers of each model chunk (pp x virtualStages chunks, chunk c on stage c mod pp): Megatron's
    /// --decoder-first/last-pipeline-num-layers fix the first stage's and the last stage's layers and the rest are
    /// split evenly over the middle stages; without them as even as possible, earlier chunks taking the remainder.
    /// </summary>
    public (int First, int Count)[] ChunkLayers(int layers) =>
        PipelineLayers.Split(layers, PP, VirtualStages, DecoderFirstPipelineNumLayers, DecoderLastPipelineNumLayers);

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
            extras.Add(Schedule == PipelineSchedule.Interleaved ? $"interleaved x{VirtualStages}" : Schedule switch
            {
                PipelineSchedule.DualPipe => "dualpipe",
                PipelineSchedule.ZeroBubbleH1 => "zb-h1",
                _ => JsonObjectReader.Kebab(Schedule.ToString()),
            });
        if (Recompute) extras.Add("recompute");
        if (RecomputeModules != RecomputeModules.None) extras.Add($"recompute {RecomputeModules.ToText()}");
        if (ZeroStage > 0) extras.Add($"ZeRO-{ZeroStage}");
        if (!OverlapCommunication) extras.Add("no overlap");
        if (AllToAllChunks > 1) extras.Add($"{AllToAllChunks} all-to-all chunks");
        if (Attention == AttentionPlacement.TensorParallel) extras.Add("TP attention");
        if (ScatterGather) extras.Add("scatter-gather");
        if (AttentionKernel != AttentionKernel.Fused) extras.Add($"{JsonObjectReader.Kebab(AttentionKernel.ToString())} attention");
        if (RankOrder != "tp-ep-pp-dp") extras.Add($"order {RankOrder}");
        if (SequenceParallel) extras.Add("sequence-parallel");
        if (UseDistributedOptimizer) extras.Add("distributed optimizer");
        if (!OverlapGradReduce) extras.Add("no grad-reduce overlap");
        if (OverlapParamGather) extras.Add("param-gather overlap");
        if (DecoderFirstPipelineNumLayers is { } fl) extras.Add(string.Create(CultureInfo.InvariantCulture, $"first stage {fl} layers"));
        if (DecoderLastPipelineNumLayers is { } ll) extras.Add(string.Create(CultureInfo.InvariantCulture, $"last stage {ll} layers"));
        if (MoeAllToAllOverlap != MoeAllToAllOverlap.None) extras.Add($"a2a overlap {JsonObjectReader.Kebab(MoeAllToAllOverlap.ToString())}");
        var etp = ExpertTensorParallelSize is { } x && x != TP ? string.Create(CultureInfo.InvariantCulture, $" x ETP{x}") : "";
        var cp = CP > 1 ? string.Create(CultureInfo.InvariantCulture, $" x CP{CP}") : "";
        return string.Create(CultureInfo.InvariantCulture, $"EP{EP} x TP{TP}{etp}{cp} x PP{PP} x DP{DP} ({string.Join(", ", extras)})");
    }

    public StrategySpec Validated(string path = "strategy", string? source = null)
    {
        if (ValidatedOnce.Has(this)) return this;
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
        if ((RecomputeModules & ~RecomputeModulesText.All) != 0)
            throw new ConfigException($"{path}.recomputeModules", ((int)RecomputeModules).ToString(CultureInfo.InvariantCulture), $"must combine only Megatron's modules ({RecomputeModulesText.Valid})", source);
        if (Recompute && RecomputeModules != RecomputeModules.None)
            throw new ConfigException($"{path}.recomputeModules", RecomputeModules.ToText(),
                "cannot be combined with \"recompute\": true: Megatron's --recompute-granularity is full or selective, not both", source);
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
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        if (ExpertTensorParallelSize is { } etp)
        {
            Validate.Positive($"{path}.expertTensorParallelSize", etp);
            Validate.Within($"{path}.expertTensorParallelSize", etp, Bounds.ParallelSize, source);
        }
        Validate.Positive($"{path}.contextParallelSize", ContextParallelSize);
        Validate.Within($"{path}.contextParallelSize", ContextParallelSize, Bounds.ParallelSize, source);
        if (Validate.Product($"{path}.ep x expertTensorParallelSize x pp x dp", EP, ETP, PP, DP) > int.MaxValue)
            throw new ConfigException($"{path}.ep x expertTensorParallelSize x pp x dp", $"{EP} x {ETP} x {PP} x {DP}", $"must fit a 32-bit GPU count (<= {int.MaxValue})", source);
        if (StageGpuCount % ((long)TP * CP) != 0)
            throw new ConfigException($"{path}.tp x contextParallelSize", $"{TP} x {CP} = {I((long)TP * CP)}",
                $"must divide the GPUs per stage ep x expertTensorParallelSize x dp = {I(StageGpuCount)} (attention is laid out as TP x CP x DP over the same GPUs as the experts' ETP x EP x EDP)", source);
        if (Attention == AttentionPlacement.TensorParallel && UsesFolding)
            throw new ConfigException($"{path}.attention", "\"tensor-parallel\"", "cannot be combined with expertTensorParallelSize != tp or contextParallelSize > 1; use \"data-parallel\"", source);
        if (Schedule is PipelineSchedule.DualPipe or PipelineSchedule.ZeroBubbleH1 && VirtualStages != 1)
            throw new ConfigException($"{path}.virtualStages", I(VirtualStages), $"must be 1 for the {JsonObjectReader.Kebab(Schedule.ToString())} schedule (it places its own chunks)", source);
        if (Schedule == PipelineSchedule.DualPipe)
        {
            if (PP % 2 != 0)
                throw new ConfigException($"{path}.pp", I(PP), "must be even for DualPipe (each rank holds stage i and stage pp - 1 - i)", source);
            if (Microbatches % 2 != 0 || Microbatches < 2 * PP)
                throw new ConfigException($"{path}.microbatches", I(Microbatches), $"must be even and >= 2 x pp = {I(2L * PP)} for DualPipe (half enter from each end; deepseek-ai/DualPipe asserts num_chunks >= 2 x ranks)", source);
        }
        foreach (var (field, value) in new[] { ("decoderFirstPipelineNumLayers", DecoderFirstPipelineNumLayers), ("decoderLastPipelineNumLayers", DecoderLastPipelineNumLayers) })
        {
            if (value is not { } n) continue;
            Validate.Positive($"{path}.{field}", n);
            Validate.Within($"{path}.{field}", n, Bounds.StageLayers, source);
            if (PP < 2) throw new ConfigException($"{path}.{field}", I(n), "needs strategy.pp >= 2 (it sets one pipeline stage's layers)", source);
            if (Schedule == PipelineSchedule.DualPipe) throw new ConfigException($"{path}.{field}", I(n), "cannot be combined with the dualpipe schedule", source);
        }
        if (UseDistributedOptimizer && ZeroStage > 0)
            throw new ConfigException($"{path}.useDistributedOptimizer", "true", $"already partitions optimizer states (ZeRO-1); leave strategy.zero at 0 (it is {ZeroStage})", source);
        if (OverlapParamGather && !UseDistributedOptimizer)
            throw new ConfigException($"{path}.overlapParamGather", "true", "needs \"useDistributedOptimizer\": true (Megatron gathers parameters only with the distributed optimizer)", source);
        ValidatedOnce.Remember(this);
        return this;
    }

    /// <summary>Checks the strategy against a model and a cluster; messages name the field and the valid values.</summary>
    public void CheckFits(ModelSpec model, int gpuCount, string? source = null)
    {
        Validated(source: source);
        model.Validated(source: source);
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        if ((long)EP * ETP * PP * DP != gpuCount)
            throw ExpertTensorParallelSize is { } etp && etp != TP
                ? new ConfigException("strategy.ep x expertTensorParallelSize x pp x dp", $"{EP} x {ETP} x {PP} x {DP} = {I((long)EP * ETP * PP * DP)}",
                    $"must equal the GPU count hardware.gpus = {gpuCount}", source)
                : new ConfigException("strategy.ep x tp x pp x dp", $"{EP} x {TP} x {PP} x {DP} = {I((long)EP * TP * PP * DP)}",
                    $"must equal the GPU count hardware.gpus = {gpuCount}", source);
        if (model.Layers < PP)
            throw new ConfigException("strategy.pp", I(PP), $"must be <= model.layers = {model.Layers} (each stage needs a layer)", source);
        if (Derivation == Derivation.Seed)
        {
            if (this with { EP = 1, TP = 1, PP = 1, DP = 1, Microbatches = 1 } != new StrategySpec(1, 1, 1, 1, Derivation.Seed))
                throw new ConfigException("strategy", ToString(),
                    "the seed derivation is the founding document's forward pass only: leave mode, schedule, recompute, recomputeModules, zero, overlap, alltoallChunks, attention, attentionKernel, scatterGather, rankOrder and the Megatron-Core layout fields (expertTensorParallelSize, contextParallelSize, sequenceParallel, useDistributedOptimizer, overlap flags, first/last stage layers, moeAllToAllOverlap) at their defaults, or use \"derivation\": \"corrected\"", source);
            if (DP != 1 || Microbatches != 1 || (EP > 1 && (TP > 1 || PP > 1)))
                throw new ConfigException("strategy", ToString(),
                    "the seed derivation reproduces the founding document's two layouts only: EP=n with TP=PP=DP=1, or TP x PP with EP=DP=1, one microbatch; use \"derivation\": \"corrected\" for others", source);
            if (model.AttentionHeads % TP != 0)
                throw new ConfigException("model.attentionHeads", I(model.AttentionHeads), $"must be divisible by strategy.tp = {TP}", source);
            if (model.IsHybrid)
                throw new ConfigException("model.hybridOverridePattern", $"\"{model.HybridOverridePattern}\"", "needs \"derivation\": \"corrected\" (the seed derivation is the founding document's attention + MoE layers)", source);
            if (model.HiddenSize % TP != 0 || model.HeadDim % TP != 0)
                throw new ConfigException("model.hiddenSize", I(model.HiddenSize), $"must make hiddenSize and head dimension divisible by strategy.tp = {TP}", source);
            if (model.Layers % PP != 0)
                throw new ConfigException("model.layers", I(model.Layers), $"must be divisible by strategy.pp = {PP}", source);
            if (model.IsDense || model.Experts % EP != 0)
                throw new ConfigException("model.experts", I(model.Experts), $"must be divisible by strategy.ep = {EP} and positive (the seed layouts give each GPU its experts)", source);
            return;
        }
        CheckModelled(source);
        CheckAllToAllOverlap(model, source);
        CheckExpertTensorParallel(model, source);
        ChunkLayersChecked(model.Layers, source);
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
        var sequencesPerGroup = (long)(Attention == AttentionPlacement.DataParallel ? AttentionDataParallelSize : DP) * Microbatches;
        if (model.Batch % sequencesPerGroup != 0)
            throw new ConfigException("model.batch", I(model.Batch),
                UsesFolding
                    ? $"must be divisible by the attention data-parallel size x microbatches = {I(AttentionDataParallelSize)} x {Microbatches} = {I(sequencesPerGroup)} (each data-parallel attention rank takes whole sequences)"
                    : $"must be divisible by strategy.dp x ep x microbatches = {I(sequencesPerGroup)} (each data-parallel attention rank takes whole sequences)", source);
        if (CP > 1 && model.SequenceLength % (2L * CP) != 0)
            throw new ConfigException("model.sequenceLength", I(model.SequenceLength), $"must be divisible by 2 x strategy.contextParallelSize = {I(2L * CP)} (causal load balancing gives each CP rank two chunks)", source);
        if (CP > 1) CheckContextParallel(model, source);
        if (!model.IsDense && model.FfnHiddenSize % ETP != 0)
            throw new ConfigException("model.ffnHiddenSize", I(model.FfnHiddenSize), $"must be divisible by strategy.expertTensorParallelSize = {ETP}", source);
        var tokensPerChunk = model.Tokens / sequencesPerGroup;
        if (tokensPerChunk < AllToAllChunks)
            throw new ConfigException("strategy.alltoallChunks", I(AllToAllChunks), $"must be <= tokens per rank = {I(tokensPerChunk)}", source);
    }

    /// <summary>
    /// MoE parallel folding with ETP != TP and sequence parallelism with MoE, as Megatron-Core's MoEAlltoAllTokenDispatcher
    /// runs them: every rank dispatches its own tokens (1/TP of the attention group's under SP), so TP > 1 needs SP
    /// (Megatron-Core's MoELayer refuses MoE with TP > 1 without it in training); the unit of a stage is consecutive
    /// ranks (<see cref="UnitRank"/>), so only the default and Megatron's rank orders are laid out.
    /// </summary>
    private void CheckExpertTensorParallel(ModelSpec model, string? source)
    {
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        if (ETP != TP)
        {
            if (model.IsDense)
                throw new ConfigException("strategy.expertTensorParallelSize", I(ETP), $"has no experts to shard in a dense model (model.experts = 0); leave it unset or equal to strategy.tp = {TP}", source);
            if (TP > 1 && !SequenceParallel)
                throw new ConfigException("strategy.sequenceParallel", "false", $"must be true with strategy.expertTensorParallelSize = {ETP} != strategy.tp = {TP} > 1 (Megatron-Core's MoE token dispatcher takes sequence-parallel tokens when TP > 1)", source);
            if (RankOrder is not ("tp-ep-pp-dp" or "tp-ep-dp-pp"))
                throw new ConfigException("strategy.rankOrder", $"\"{RankOrder}\"", $"must be \"tp-ep-pp-dp\" or \"tp-ep-dp-pp\" with strategy.expertTensorParallelSize = {ETP} != strategy.tp (a folding unit is lcm(TP, EP x ETP) consecutive ranks)", source);
            if (ZeroStage > 0)
                throw new ConfigException("strategy.zero", I(ZeroStage), $"must be 0 with strategy.expertTensorParallelSize = {ETP} != strategy.tp (use \"useDistributedOptimizer\": true, Megatron's ZeRO-1 over DP and EDP)", source);
            if (model.ExpertFfnHiddenSize % ETP != 0)
                throw new ConfigException("model.moeFfnHiddenSize", I(model.ExpertFfnHiddenSize), $"must be divisible by strategy.expertTensorParallelSize = {ETP} (expert fc1/fc2 are split over the ETP ranks)", source);
        }
        if (SequenceParallel && TP > 1 && !model.IsDense)
        {
            if (Attention == AttentionPlacement.TensorParallel && EP > 1)
                throw new ConfigException("strategy.sequenceParallel", "true", "cannot be combined with \"attention\": \"tensor-parallel\" and ep > 1 in an MoE model (Megatron-Core's dispatcher takes each rank's sequence shard); use \"data-parallel\"", source);
            var tokens = MoeNotebooks.Derivations.RoutingOutcome.AttentionTokensPerRank(model, this);
            if (tokens % TP != 0)
                throw new ConfigException("model.sequenceLength", I(model.SequenceLength), $"gives {I(tokens)} tokens per attention rank and microbatch, not divisible by strategy.tp = {TP} (sequence parallelism gives each TP rank 1/TP of them)", source);
        }
    }

    /// <summary>
    /// The corrected derivation prices today's layout and the fields implemented so far; a field it does not price yet
    /// is rejected naming it, rather than silently ignored.
    /// </summary>
    private void CheckModelled(string? source)
    {
        var unpriced = new List<(string Field, string Value, string Default)>();
        // FSDP's per-unit gathers (and the first microbatch's bucket gathers) are emitted with whole passes; the
        // schedules that split a backward (zero-bubble B/W) or merge two microbatches' passes (DualPipe, 1F1B all-to-all
        // overlap) do not interleave them yet.
        var splitOrMerged = Mode == WorkloadMode.Training && (Schedule is PipelineSchedule.DualPipe or PipelineSchedule.ZeroBubbleH1 || MoeAllToAllOverlap == MoeAllToAllOverlap.OneFOneB);
        if (ZeroStage >= 3 && splitOrMerged)
            unpriced.Add(("zero", "3", "0-2 with this schedule or moeAllToAllOverlap (ZeRO-3's per-layer gathers with split or merged passes are not priced yet)"));
        if (OverlapParamGather && splitOrMerged)
            unpriced.Add(("overlapParamGather", "true", "false with this schedule or moeAllToAllOverlap (the bucket gathers with split or merged passes are not priced yet)"));
        if (unpriced.Count > 0)
        {
            var (field, value, fallback) = unpriced[0];
            throw new ConfigException($"strategy.{field}", value, $"is not priced by the corrected derivation yet; use {fallback}", source);
        }
    }

    /// <summary>
    /// Context parallelism as the corrected derivation prices it (Transformer Engine's ring attention, cp_comm_type
    /// "p2p", which Megatron-Core runs only with TE's fused/flash kernels): data-parallel attention, a fused kernel, full
    /// (or causal) attention without sliding windows, and CP groups that tile the stage's EP ranks or whole replicas.
    /// </summary>
    private void CheckContextParallel(ModelSpec model, string? source)
    {
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        var cp = I(CP);
        if (Attention != AttentionPlacement.DataParallel)
            throw new ConfigException("strategy.contextParallelSize", cp, "needs data-parallel attention (strategy.attention \"data-parallel\"): the CP ranks are carved out of the attention data-parallel ranks", source);
        if ((RecomputeModules & RecomputeModules.CoreAttn) != 0)
            throw new ConfigException("strategy.recomputeModules", "core_attn", "with contextParallelSize > 1 is not priced yet (the ring attention's recompute is not emitted); leave core_attn out or use contextParallelSize 1", source);
        if (AttentionKernel != AttentionKernel.Fused)
            throw new ConfigException("strategy.contextParallelSize", cp, $"needs strategy.attentionKernel \"fused\" (ring attention runs on Transformer Engine's flash/fused kernels), got \"{JsonObjectReader.Kebab(AttentionKernel.ToString())}\"", source);
        if (model.SlidingWindow is not null && Enumerable.Range(0, model.Layers).Any(l => model.AttentionKindOf(l) == AttentionLayerKind.Sliding))
            throw new ConfigException("strategy.contextParallelSize", cp, "cannot be combined with sliding-window layers (model.slidingWindow): the ring's sliding-window masking is not priced; use 1", source);
        var a = FoldUnitGpus / TP;
        if (a % CP != 0 && CP % a != 0)
            throw new ConfigException("strategy.contextParallelSize", cp, $"and the {a} attention data-parallel ranks of a folding unit (lcm(tp, ep x etp) / tp, = ep with etp = tp): one must divide the other (CP groups tile a unit's ranks, or whole units)", source);
        if (CP > a && FoldUnits % (CP / a) != 0)
            throw new ConfigException("strategy.contextParallelSize", cp, $"spans {CP / a} folding units of {a} attention ranks: the stage's {FoldUnits} units must be a multiple of {CP / a}", source);
        if (CP > a && (ZeroStage >= 3 || OverlapParamGather))
            throw new ConfigException("strategy.contextParallelSize", cp, $"spans {CP / a} folding units of {a} attention ranks, whose per-unit parameter gathers (zero 3 / overlapParamGather) are not emitted with the ring yet: use contextParallelSize <= {a}, or zero <= 2 without overlapParamGather", source);
        if (CP > a && Mode == WorkloadMode.Training && (MoeAllToAllOverlap == MoeAllToAllOverlap.OneFOneB || Schedule is PipelineSchedule.ZeroBubbleH1 or PipelineSchedule.DualPipe))
            throw new ConfigException("strategy.contextParallelSize", cp, $"spans {CP / a} folding units of {a} attention ranks, which merged 1F1B steps (moeAllToAllOverlap \"1f1b\") and zero-bubble / DualPipe schedules do not emit together yet: use contextParallelSize <= {a}, or moeAllToAllOverlap \"none\" with schedule \"1f1b\" / \"interleaved\"", source);
    }

    /// <summary>
    /// Megatron-Core's EP all-to-all overlap needs what its argument checks ask for (megatron/training/arguments.py,
    /// <c>--overlap-moe-expert-parallel-comm</c>): expert parallelism with all-to-all token exchange, a training run,
    /// and with pipeline parallelism the interleaved schedule; here also one all-to-all chunk and overlapping streams.
    /// </summary>
    private void CheckAllToAllOverlap(ModelSpec model, string? source)
    {
        if (MoeAllToAllOverlap != MoeAllToAllOverlap.OneFOneB) return;
        const string field = "strategy.moeAllToAllOverlap";
        const string value = "\"1f1b\"";
        string? why =
            Mode != WorkloadMode.Training ? "overlaps one microbatch's forward with another's backward, so it needs \"mode\": \"training\""
            : model.IsDense || EP < 2 ? "needs expert parallelism (strategy.ep > 1 and a model with experts), as Megatron's --overlap-moe-expert-parallel-comm asserts"
            : Attention != AttentionPlacement.DataParallel ? "overlaps the all-to-all of data-parallel attention; with \"attention\": \"tensor-parallel\" there is none"
            : Schedule is not (PipelineSchedule.OneFOneB or PipelineSchedule.Interleaved) ? $"runs in the 1F1B steady state: use \"schedule\": \"1f1b\" (pp = 1) or \"interleaved\", not \"{JsonObjectReader.Kebab(Schedule.ToString())}\""
            : PP > 1 && VirtualStages < 2 ? "needs the interleaved schedule (virtualStages >= 2) when pp > 1, as Megatron asserts (virtual_pipeline_model_parallel_size must be set)"
            : AllToAllChunks != 1 ? $"hides each all-to-all under the other microbatch's compute, not by chunking: use alltoallChunks 1 (it is {AllToAllChunks})"
            : !OverlapCommunication ? "needs communication on its own stream: use \"overlap\": true"
            : null;
        if (why is not null) throw new ConfigException(field, value, why, source);
    }

    private (int First, int Count)[] ChunkLayersChecked(int layers, string? source)
    {
        try { return ChunkLayers(layers); }
        catch (ConfigException e) when (e.Source is null && source is not null) { throw e.WithSource(source); }
    }

    /// <summary>The strategy as scenario JSON (the keys <see cref="Read"/> accepts); fields at their defaults are left out.</summary>
    public JsonObject ToJson()
    {
        var d = new StrategySpec(1, 1, 1, 1);
        var o = new JsonObject { ["ep"] = EP, ["tp"] = TP, ["pp"] = PP, ["dp"] = DP };
        void Add(string key, JsonNode? value, bool isDefault) { if (!isDefault) o[key] = value; }
        static string K<T>(T e) where T : struct, Enum => e switch
        {
            PipelineSchedule.DualPipe => "dualpipe",
            _ => JsonObjectReader.Kebab(e.ToString()),
        };
        o["derivation"] = K(Derivation);
        Add("mode", K(Mode), Mode == d.Mode);
        Add("microbatches", Microbatches, Microbatches == 1);
        Add("schedule", K(Schedule), Schedule == d.Schedule);
        Add("virtualStages", VirtualStages, VirtualStages == 1);
        Add("recompute", Recompute, !Recompute);
        Add("recomputeModules", new JsonArray(RecomputeModules.MegatronNames().Select(n => (JsonNode)n).ToArray()), RecomputeModules == RecomputeModules.None);
        Add("zero", ZeroStage, ZeroStage == 0);
        Add("overlap", OverlapCommunication, OverlapCommunication);
        Add("alltoallChunks", AllToAllChunks, AllToAllChunks == 1);
        Add("attention", K(Attention), Attention == d.Attention);
        Add("attentionKernel", K(AttentionKernel), AttentionKernel == d.AttentionKernel);
        Add("scatterGather", ScatterGather, !ScatterGather);
        Add("rankOrder", RankOrder, RankOrder == d.RankOrder);
        Add("expertTensorParallelSize", ExpertTensorParallelSize, ExpertTensorParallelSize is null);
        Add("contextParallelSize", ContextParallelSize, ContextParallelSize == 1);
        Add("sequenceParallel", SequenceParallel, !SequenceParallel);
        Add("useDistributedOptimizer", UseDistributedOptimizer, !UseDistributedOptimizer);
        Add("overlapGradReduce", OverlapGradReduce, OverlapGradReduce);
        Add("overlapParamGather", OverlapParamGather, !OverlapParamGather);
        Add("decoderFirstPipelineNumLayers", DecoderFirstPipelineNumLayers, DecoderFirstPipelineNumLayers is null);
        Add("decoderLastPipelineNumLayers", DecoderLastPipelineNumLayers, DecoderLastPipelineNumLayers is null);
        Add("moeAllToAllOverlap", K(MoeAllToAllOverlap), MoeAllToAllOverlap == d.MoeAllToAllOverlap);
        Add("cutedslFusedGroupedMlp", CutedslFusedGroupedMlp, !CutedslFusedGroupedMlp);
        return o;
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
            RecomputeModules = RecomputeModulesText.Read(r, "recomputeModules"),
            ZeroStage = r.OptionalInt("zero") ?? 0,
            OverlapCommunication = r.OptionalBool("overlap") ?? true,
            AllToAllChunks = r.OptionalInt("alltoallChunks") ?? 1,
            Attention = r.Enum("attention", defaults.Attention),
            AttentionKernel = r.Enum("attentionKernel", defaults.AttentionKernel),
            ScatterGather = r.OptionalBool("scatterGather") ?? false,
            RankOrder = r.OptionalString("rankOrder") ?? defaults.RankOrder,
            ExpertTensorParallelSize = r.OptionalInt("expertTensorParallelSize"),
            ContextParallelSize = r.OptionalInt("contextParallelSize") ?? 1,
            SequenceParallel = r.OptionalBool("sequenceParallel") ?? false,
            UseDistributedOptimizer = r.OptionalBool("useDistributedOptimizer") ?? false,
            OverlapGradReduce = r.OptionalBool("overlapGradReduce") ?? true,
            OverlapParamGather = r.OptionalBool("overlapParamGather") ?? false,
            DecoderFirstPipelineNumLayers = r.OptionalInt("decoderFirstPipelineNumLayers"),
            DecoderLastPipelineNumLayers = r.OptionalInt("decoderLastPipelineNumLayers"),
            MoeAllToAllOverlap = r.Enum("moeAllToAllOverlap", defaults.MoeAllToAllOverlap),
            CutedslFusedGroupedMlp = r.OptionalBool("cutedslFusedGroupedMlp") ?? false,
        };
        r.Finish();
        return s.Validated(r.Path, r.Source);
    }
}

/// <summary>How layers are split over pipeline chunks (even, or Megatron's explicit first/last stage counts).</summary>
public static class PipelineLayers
{
    /// <summary>
    /// Layers of each of pp x vp chunks (chunk c on stage c mod pp, local chunk c / pp). Without first/last counts:
    /// as even as possible, earlier chunks taking the remainder (today's split). With them (Megatron-Core
    /// <c>--decoder-first-pipeline-num-layers</c> / <c>--decoder-last-pipeline-num-layers</c>): the first / last stage
    /// holds that many layers, the remaining layers are split evenly over the other stages (Megatron requires this to
    /// divide), and each stage's layers are split evenly over its vp chunks (must divide too).
    /// </summary>
    public static (int First, int Count)[] Split(int layers, int pp, int vp, int? firstStage, int? lastStage)
    {
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        var chunks = pp * vp;
        var counts = new int[chunks];
        if (firstStage is null && lastStage is null)
        {
            for (var i = 0; i < chunks; i++) counts[i] = layers / chunks + (i < layers % chunks ? 1 : 0);
        }
        else
        {
            var perStage = new int[pp];
            var fixedLayers = (firstStage ?? 0) + (lastStage ?? 0);
            var middle = pp - (firstStage is null ? 0 : 1) - (lastStage is null ? 0 : 1);
            var rest = layers - fixedLayers;
            var field = firstStage is not null ? "strategy.decoderFirstPipelineNumLayers" : "strategy.decoderLastPipelineNumLayers";
            if (rest < 0 || (middle == 0 && rest != 0) || (middle > 0 && (rest % middle != 0 || rest / middle == 0)))
                throw new ConfigException(field, I(firstStage ?? lastStage ?? 0),
                    middle == 0
                        ? $"with strategy.pp = {pp}, first + last stage layers must equal model.layers = {layers} (got {fixedLayers})"
                        : $"leaves {rest} of model.layers = {layers} for {middle} other stage(s): must be a positive multiple of {middle} (Megatron splits the rest evenly)");
            for (var s = 0; s < pp; s++) perStage[s] = middle > 0 ? rest / middle : 0;
            if (firstStage is { } f) perStage[0] = f;
            if (lastStage is { } l) perStage[pp - 1] = l;
            for (var s = 0; s < pp; s++)
            {
                if (perStage[s] % vp != 0)
                    throw new ConfigException(field, I(firstStage ?? lastStage ?? 0),
                        $"gives stage {s} {perStage[s]} layers, not divisible by strategy.virtualStages = {vp}");
                for (var v = 0; v < vp; v++) counts[v * pp + s] = perStage[s] / vp;
            }
        }
        var result = new (int, int)[chunks];
        var first = 0;
        for (var i = 0; i < chunks; i++)
        {
            result[i] = (first, counts[i]);
            first += counts[i];
        }
        return result;
    }
}

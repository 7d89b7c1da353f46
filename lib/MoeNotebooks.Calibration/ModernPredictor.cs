using System.Globalization;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration;

/// <summary>Seconds of one training step by what the time is spent on (critical-path attribution); every part scales on its own.</summary>
/// <param name="Ssd">The Mamba-2 mixer's kernels between its projections (causal conv1d, the SSD Triton kernels, state passing, gated norm): 0 without Mamba layers.</param>
/// <param name="TensorParallel">Tensor-parallel collectives of the layers (the TP all-reduces, and under sequence parallelism the reduce-scatters and all-gathers); apart from <paramref name="OtherCommunication"/> so that Transformer Engine's TP communication overlap can expose only its share.</param>
public sealed record StepParts(double DenseGemm, double Logits, double ExpertGemm, double Attention, double Elementwise, double AllToAll, double OtherCommunication, double Ssd = 0, double TensorParallel = 0)
{
    public static StepParts Zero { get; } = new(0, 0, 0, 0, 0, 0, 0);
    public double Total => DenseGemm + Logits + ExpertGemm + Attention + Elementwise + AllToAll + OtherCommunication + Ssd + TensorParallel;
    public static StepParts operator +(StepParts a, StepParts b) => new(a.DenseGemm + b.DenseGemm, a.Logits + b.Logits, a.ExpertGemm + b.ExpertGemm, a.Attention + b.Attention, a.Elementwise + b.Elementwise, a.AllToAll + b.AllToAll, a.OtherCommunication + b.OtherCommunication, a.Ssd + b.Ssd, a.TensorParallel + b.TensorParallel);
    public static StepParts operator -(StepParts a, StepParts b) => a + (-1) * b;
    public static StepParts operator *(double k, StepParts a) => new(k * a.DenseGemm, k * a.Logits, k * a.ExpertGemm, k * a.Attention, k * a.Elementwise, k * a.AllToAll, k * a.OtherCommunication, k * a.Ssd, k * a.TensorParallel);

    /// <summary>The layers' tensor-parallel collectives: AttentionAllReduce and ExpertAllReduce (the FFN's TP all-reduce), and sequence parallelism's reduce-scatters and all-gathers.</summary>
    public static bool IsTensorParallel(OpKind kind) => kind is OpKind.AttentionAllReduce or OpKind.ExpertAllReduce or OpKind.SequenceReduceScatter or OpKind.SequenceAllGather;

    /// <summary>Critical-path seconds of a scheduled DAG by part; sums to its total.</summary>
    public static StepParts Of(CriticalPathResult r)
    {
        double d = 0, l = 0, e = 0, a = 0, el = 0, x = 0, o = 0, ssd = 0, tp = 0;
        foreach (var op in r.CriticalOps)
        {
            var t = r.Durations[op];
            var kind = r.Dag.Kind(op);
            if (kind is OpKind.MambaChunkScan or OpKind.MambaConv or OpKind.MambaStatePassing or OpKind.MambaGatedNorm) { ssd += t; continue; }
            switch (kind.Category())
            {
                case OpCategory.Attention: a += t; break;
                case OpCategory.Elementwise: el += t; break;
                case OpCategory.Communication when kind is OpKind.AllToAllDispatch or OpKind.AllToAllCombine: x += t; break;
                case OpCategory.Communication when IsTensorParallel(kind): tp += t; break;
                case OpCategory.Communication: o += t; break;
                default:
                    if (kind == OpKind.Logits) l += t;
                    else if (kind is OpKind.ExpertUp or OpKind.ExpertDown or OpKind.Gate) e += t;
                    else d += t;   // attention projections (MHA/GQA/MLA), dense FFN, shared experts, Mamba projections
                    break;
            }
        }
        return new StepParts(d, l, e, a, el, x, o, ssd, tp);
    }
}

/// <summary>A row the suite cannot write as a scenario yet, and why (listed, never dropped silently).</summary>
public sealed record UnexpressedRun(ModernRun Run, string Reason);

/// <summary>The scenario one row becomes: the model the core can describe today, the architecture it stands for, the hardware.</summary>
/// <param name="Model">The model as the core's description can write it from the row's columns (MHA with head dim hidden/heads, two-matrix FFN at the expert width, every layer MoE, one dtype).</param>
/// <param name="Hardware">The row's system preset with all its GPUs.</param>
/// <param name="LayersPerStage">Layers on the largest pipeline stage (all its virtual chunks): VP x ceil(L / (PP x VP)).</param>
/// <param name="Preset">The model as the core describes it with its blocks (issue 11's preset with the row's batch and sequence, causal attention; MPT from its columns), with every layer MoE for the slice (<c>denseLayers</c> 0), no MTP depths (<c>mtpLayers</c> 0: priced by the FLOP factors) and no precision recipe; null when no preset exists for the family.</param>
/// <param name="Recipe">The row's precision recipe as the core prices it (null: bf16).</param>
/// <param name="RecipeNote">Why the recipe differs from the row's, when it must.</param>
/// <param name="Launch">The row's published Megatron-Bridge launch settings (<see cref="BridgeLaunchCatalog"/>), null when none were found.</param>
/// <param name="LaunchNote">Why <paramref name="Launch"/> is null (the row keeps plain settings).</param>
public sealed record ModernScenario(ModernRun Run, ModernArchitecture Architecture, ModelSpec Model, HardwareSpec Hardware, int LayersPerStage, int VirtualStages, int MtpLayers,
    ModelSpec? Preset = null, PrecisionRecipe? Recipe = null, string? RecipeNote = null, BridgeLaunch? Launch = null, string? LaunchNote = null)
{
    /// <summary>
    /// Layers whose linear-layer GEMMs stay BF16 under the row's recipe: the family's NVFP4 recipe's BF16 tail
    /// (<see cref="ModernArchitecture.Nvfp4LayersAtEndInBf16"/>) when the row runs NVFP4 and the GPU prices it, else 0.
    /// </summary>
    public int Bf16TailLayers => Recipe?.Name == "nvfp4" && Preset is not null ? Architecture.Nvfp4LayersAtEndInBf16 : 0;

    /// <summary>The all-to-all overlap the launch turns on, where the slice can price it (an MoE model with EP > 1).</summary>
    public MoeAllToAllOverlap LaunchOverlap => Launch is { } l && Run.EP > 1 && Model.Experts > 0 ? l.Overlap : MoeAllToAllOverlap.None;

    /// <summary>
    /// Megatron-Bridge's Llama recipes (megatron.bridge.recipes.llama: llama3_8b/70b, llama31_405b pretrain configs) run
    /// tensor parallelism with sequence parallelism (<c>sequence_parallel=True</c>): dense Megatron-Bridge rows with TP > 1
    /// are sliced with it (reduce-scatter / all-gather instead of the TP all-reduce, norms on 1/TP of the tokens).
    /// </summary>
    public bool SequenceParallel => Run.Framework == ModernFramework.MegatronBridge && Run.TP > 1 && Architecture.Experts == 0 && Architecture.Hybrid is null;

    /// <summary>
    /// Transformer Engine's userbuffers TP communication overlap as the Llama performance scripts launch it
    /// (Megatron-Bridge scripts/performance/configs/llama/llama3_llm_pretrain.py, commit 2a0d46e, and
    /// llama31_llm_pretrain.py, commit 0013c9a: <c>tp_comm_overlap_cfg = userbuffers_*_b200_*</c> and
    /// <c>tp_comm_overlap = False if precision == "nvfp4"</c>): on for the sequence-parallel dense rows except NVFP4.
    /// </summary>
    public bool TpCommOverlap => SequenceParallel && Run.Precision != TrainingPrecision.Nvfp4;

    /// <summary>Whether the launch fuses the routed experts' grouped MLP (<see cref="BridgeLaunch.CutedslFusedGroupedMlp"/>) where that changes what the slice prices: a model whose GLU is clamped.</summary>
    public bool LaunchFusedGroupedMlp => Launch?.CutedslFusedGroupedMlp == true && Preset?.ActivationClampValue is not null && Model.Experts > 0;

    /// <summary>
    /// Whether the pipeline split counts the embedding and the loss as one layer slot each (Megatron-Core's
    /// <c>account_for_embedding_in_pipeline_split</c> / <c>account_for_loss_in_pipeline_split</c>): L + 2 slots over the
    /// PP x VP virtual stages, so the first virtual stage holds one layer fewer and the last stage's last chunk holds the
    /// output layer in place of a transformer layer. Megatron-Bridge's Llama-3.1-405B recipe sets both
    /// (src/megatron/bridge/recipes/llama/llama31_405b.py, commit 3594df9, <c>model_config</c> defaults True; 126 + 2 = 128
    /// slots over PP 8 or 16 and VP 4 or 8). Set by <see cref="ModernPredictor.ScenarioOf"/> for the recipes in
    /// <see cref="ModernPredictor.EmbeddingAndLossInPipelineSplit"/> when the slots divide evenly, as Megatron-Core requires.
    /// </summary>
    public bool LossInPipelineSplit { get; init; }

    /// <summary>
    /// Transformer layers whose activations the launch offloads to host memory (Megatron-Core's
    /// <c>cpu_offloading_num_layers</c> with <c>cpu_offloading_activations</c>; 0: none), from
    /// <see cref="ModernPredictor.CpuOffloadingNumLayers"/>. Priced by <see cref="ModernPredictor.OffloadBytesPerLayer"/>
    /// over the hardware's <see cref="HardwareSpec.HostLink"/> (<see cref="PartFactors.OffloadLayerVisits"/>).
    /// </summary>
    public int CpuOffloadedLayers { get; init; }

    /// <summary>
    /// The selective recomputation priced: the run's own (<see cref="ModernRun.RecomputeModules"/>, a user's description)
    /// or else its launch's <c>recompute_modules</c>; none when the row recomputes whole layers or has neither.
    /// </summary>
    public RecomputeModules LaunchRecomputeModules =>
        Run.Recompute ? RecomputeModules.None : Run.RecomputeModules != RecomputeModules.None ? Run.RecomputeModules : Launch?.Recomputes ?? RecomputeModules.None;

    /// <summary>The all-to-all implementation the launch's dispatcher maps to (NCCL without a launch).</summary>
    public AllToAllImplementation LaunchAllToAll => Launch?.AllToAll ?? AllToAllImplementation.Nccl;

    /// <summary>Megatron FLOPs per sequence of the architecture as the slice builds it: every layer MoE, no MTP.</summary>
    public MegatronFlops SliceArchitectureFlops => MegatronFlops.PerSequence(Architecture with { DenseLayers = 0 }, Run.SequenceLength, 0);

    /// <summary>Megatron FLOPs per sequence of the real architecture (what the run computes).</summary>
    public MegatronFlops ArchitectureFlops => MegatronFlops.PerSequence(Architecture, Run.SequenceLength, MtpLayers);

    /// <summary>The FLOP count the row's publisher used (its TFLOP/s convention).</summary>
    public MegatronFlops PublishedFlops => MegatronFlops.AsPublished(Architecture, Run, MtpLayers);

    /// <summary>Megatron FLOPs per sequence of <see cref="Model"/> as the core builds it (MHA, two-matrix FFN, full attention, every layer MoE, no MTP).</summary>
    public MegatronFlops ModelFlops
    {
        get
        {
            var m = Model;
            var a = new ModernArchitecture(m.Name, m.Layers, m.HiddenSize, m.AttentionHeads, m.AttentionHeads, m.HeadDim, m.FfnHiddenSize, m.IsDense ? 0 : m.FfnHiddenSize,
                m.Experts, m.TopK, 0, 0, m.Vocabulary, false, null, 0, 0, 0, null, "core model");
            var f = MegatronFlops.PerSequence(a, m.SequenceLength, 0);
            return f with { AttentionCore = 2 * f.AttentionCore };   // the core's attention computes the whole score matrix
        }
    }
}

/// <summary>What the predictor computed for one row under one set of modelling choices, before any fitted factor.</summary>
/// <param name="Parts">Critical-path seconds of the pipeline step by part (pipeline law applied part by part).</param>
/// <param name="DataParallelSeconds">Gradient/parameter synchronisation over the data-parallel groups priced on its own (not yet overlapped).</param>
/// <param name="LayerMicrobatches">Layer-microbatch visits on the critical path, (m + (p - 1) / v) x layers per stage: what a per-layer framework overhead multiplies.</param>
/// <param name="BubbleSeconds">Of <see cref="Parts"/>, the pipeline fill and drain: ((p - 1) / v) t less the middle stages' logits.</param>
public sealed record ModernStep(StepParts Parts, double DataParallelSeconds, double LayerMicrobatches, long SimulatedOperations, double BubbleSeconds = 0)
{
    public double Seconds => Parts.Total + DataParallelSeconds;

    /// <summary>
    /// (1 - <paramref name="w"/>) <paramref name="a"/> + <paramref name="w"/> <paramref name="b"/> part by part (the
    /// visits of <paramref name="a"/>, both steps' operations): a stage whose layers run two ways in the share w : 1 - w,
    /// exact under the pipeline law where both steps have the same layers, visits and edges (the law is linear in the layers).
    /// </summary>
    public static ModernStep Mix(ModernStep a, ModernStep b, double w) =>
        new((1 - w) * a.Parts + w * b.Parts, (1 - w) * a.DataParallelSeconds + w * b.DataParallelSeconds, a.LayerMicrobatches,
            a.SimulatedOperations + b.SimulatedOperations, (1 - w) * a.BubbleSeconds + w * b.BubbleSeconds);
}

/// <summary>
/// Predicts a modern run's training step from a small slice of its DAG, the way <see cref="Sc21Predictor"/> does.
/// <para>Slice: one data-parallel replica's EP x TP ranks of two pipeline stages (one stage when PP = 1) holding l = 1 and
/// l = 2 layers each (one and two repeats of an attention layer pattern), simulated at m1 = 2 and m2 = 4 microbatches (plain 1F1B). Per part c, the steady-state time per
/// microbatch is t_c(l) = (T_c(l, m2) - T_c(l, m1)) / (m2 - m1) and the edge r_c(l) = T_c(l, m1) - (m1 + s - 1) t_c(l)
/// (s: slice stages); both are extended linearly in layers to the largest real stage, x(L) = x(l1) + (L - l1)(x(l2) - x(l1)) / (l2 - l1),
/// and the step is the pipeline law T_c = (m + (p - 1) / v) t_c(L) + r_c(L) with the run's m, p and v, less the logits
/// part of t for the p - 2 middle stages, which have no output layer. The law is checked against the full DAG of small
/// replicas (within 2 %, interleaved within 5 %: the slice runs plain 1F1B and v enters only the bubble term).</para>
/// <para>Data-parallel synchronisation (Megatron's distributed optimizer: gradients reduce-scattered in fp32, parameters
/// all-gathered in bf16, over DP for dense and DP/EP for expert parameters) is priced on its own from the real rank
/// placement (Megatron order tp-ep-dp-pp). Fully sharded runs (<see cref="ShardsParameters"/>: MPT's FSDP FULL_SHARD,
/// Megatron-FSDP) are simulated with their whole data-parallel group as ZeRO-3 instead, built folded (replica 0 stands
/// for all, the collectives keep their whole groups): each layer's parameters all-gathered before its forward and again
/// before its recompute (or backward), its gradient reduce-scattered after its backward, one layer prefetched and at most
/// two gathered (limit_all_gathers), all inside the slice's DAG (CorrectedDerivation.Gathers), so what the gathers cost
/// is what the schedule leaves exposed.</para>
/// </summary>
public sealed class ModernPredictor
{
    public const int SliceMicrobatches1 = 2, SliceMicrobatches2 = 4;

    /// <summary>The model preset (data/models, issue 11) each Megatron-Bridge family is.</summary>
    public static readonly IReadOnlyDictionary<string, string> FamilyPresets = new Dictionary<string, string>
    {
        ["DeepSeek-V3"] = "deepseek-v3", ["Kimi-K2"] = "kimi-k2", ["Qwen3-30B-A3B"] = "qwen3-30b-a3b", ["Qwen3-235B-A22B"] = "qwen3-235b-a22b",
        ["GPT-OSS-120B"] = "gpt-oss-120b", ["Nemotron-3-Nano"] = "nemotron3-nano", ["Nemotron-3-Super"] = "nemotron3-super", ["Nemotron-3-Ultra"] = "nemotron3-ultra",
        ["Llama-3-8B"] = "llama3-8b", ["Llama-3-70B"] = "llama3-70b", ["Llama-3.1-405B"] = "llama3-405b",
    };

    /// <summary>The model preset a family is built from: its <see cref="FamilyPresets"/> entry, else the preset the family names (<see cref="ModernArchitecture.PresetNamed"/>), else null.</summary>
    public static string? PresetOf(string family) =>
        FamilyPresets.TryGetValue(family, out var p) && ModelPresets.Names.Contains(p) ? p : ModernArchitecture.PresetNamed(family);

    /// <summary>
    /// Families whose Megatron-Bridge recipe counts the embedding and the loss in the pipeline split
    /// (<see cref="ModernScenario.LossInPipelineSplit"/>): Llama-3.1-405B (recipes/llama/llama31_405b.py, commit 3594df9).
    /// The Llama-3 8B / 70B recipes do not set them (70B's 80 + 2 slots would not divide over PP 4 x VP 5).
    /// </summary>
    public static readonly IReadOnlySet<string> EmbeddingAndLossInPipelineSplit = new HashSet<string> { "Llama-3.1-405B" };

    /// <summary>Whether the run's pipeline split holds the embedding and loss as layer slots: its recipe sets it, PP > 1, and L + 2 divides over PP x VP.</summary>
    public static bool LossInPipelineSplit(ModernRun run, int layers) =>
        run.Framework == ModernFramework.MegatronBridge && run.PP > 1 && EmbeddingAndLossInPipelineSplit.Contains(run.Family)
        && (layers + 2) % (run.PP * (run.VP ?? 1)) == 0;

    /// <summary>
    /// <c>cpu_offloading_num_layers</c> of the Megatron-FSDP launch configs, by (family, GPU of the config, precision):
    /// NVIDIA-NeMo/Megatron-Bridge scripts/performance/configs/llama/llama3_workload_base_configs.py (commit 00919dc:
    /// LLAMA3_70B_PRETRAIN_CONFIG_GB200_FP8_CS 40, GB300_FP8_CS 20, both micro-batch 2 and use_megatron_fsdp) and
    /// llama31_workload_base_configs.py (commit 0013c9a: LLAMA31_405B_PRETRAIN_CONFIG_GB200_FP8_CS_V1 92 with TP 2 and
    /// use_megatron_fsdp; the V2 configs turn FSDP and offloading off). Launch facts for the Megatron-FSDP rows only
    /// (a row with FSDP and a config without offloading would read 0).
    /// </summary>
    public static readonly IReadOnlyDictionary<(string Family, string System, TrainingPrecision Precision), int> CpuOffloadingNumLayers =
        new Dictionary<(string, string, TrainingPrecision), int>
        {
            [("Llama-3-70B", "GB200-NVL72", TrainingPrecision.Fp8CurrentScaling)] = 40,
            [("Llama-3-70B", "GB300-NVL72", TrainingPrecision.Fp8CurrentScaling)] = 20,
            [("Llama-3.1-405B", "GB200-NVL72", TrainingPrecision.Fp8CurrentScaling)] = 92,
        };

    /// <summary>Layers the row's launch offloads to the CPU: <see cref="CpuOffloadingNumLayers"/> for Megatron-FSDP rows, else 0.</summary>
    public static int CpuOffloadedLayers(ModernRun run) =>
        run.IsMegatronFsdp && CpuOffloadingNumLayers.TryGetValue((run.Family, run.System, run.Precision), out var n) ? n : 0;

    /// <summary>
    /// Bytes one offloaded layer moves to the host per microbatch (and back before its backward): the activations a
    /// layer saves for its backward on one rank, as <see cref="MemoryModel"/> counts them (norm inputs, Q/K/V and the
    /// attention output, flash softmax statistics, FFN input and gated intermediates, at the model's element bytes),
    /// taken as the difference between a two-layer and a one-layer stage of the row's model at one microbatch under the
    /// row's TP and sequence parallelism (the logits cancel).
    /// </summary>
    public static double OffloadBytesPerLayer(ModernScenario s)
    {
        var m = s.Preset ?? s.Model;
        var st = new StrategySpec(1, s.Run.TP, 1, 1, Derivation.Corrected, 1) { Mode = WorkloadMode.Training, SequenceParallel = s.SequenceParallel }.Validated();
        double Activations(int layers) => MemoryModel.Estimate(m with { Layers = layers, Batch = s.Run.MicroBatch }, st, s.Hardware).Stages[0].ActivationsBytes;
        return Activations(2) - Activations(1);
    }

    /// <summary>The core's precision recipe for a row's precision.</summary>
    public static string RecipeName(TrainingPrecision p) => p switch
    {
        TrainingPrecision.Bf16 => "bf16",
        TrainingPrecision.Fp8CurrentScaling => "fp8-current",
        TrainingPrecision.Mxfp8 => "mxfp8",
        _ => "nvfp4",
    };

    /// <summary>The recipe the GPU can price: the row's, or the nearest lower one its description has a peak for (with why).</summary>
    public static (PrecisionRecipe Recipe, string? Note) RecipeFor(TrainingPrecision p, GpuSpec gpu)
    {
        var recipe = PrecisionRecipe.Get(RecipeName(p));
        if (gpu.PeakFlopsPerSecond.ContainsKey(recipe.GemmDtype)) return (recipe, null);
        if (recipe.GemmDtype == "fp4" && gpu.PeakFlopsPerSecond.ContainsKey("fp8"))
            return (PrecisionRecipe.Get("mxfp8"), $"NVFP4 priced as MXFP8: {gpu.Name} lists no FP4 peak");
        return (PrecisionRecipe.Get("bf16"), $"{RecipeName(p)} priced as BF16: {gpu.Name} lists no {recipe.GemmDtype} peak");
    }

    /// <summary>The row as a scenario, or the reason it cannot be one yet.</summary>
    public static (ModernScenario? Scenario, string? Reason) ScenarioOf(ModernRun run)
    {
        // A Megatron-Bridge family's architecture (the catalog's, or a preset's); MPT rows give theirs in their columns.
        var known = run.Framework == ModernFramework.MosaicMpt ? null : ModernArchitecture.Of(run.Family);
        if (run.Layers is null && known is null)
            return (null, $"no architecture: the row gives none (\"{run.Arch}\"), no public config is in data/{ModernArchitecture.ResourceName} and no model preset in data/models has its name");
        if (run.CP > 1 && run.EP % run.CP != 0 && run.CP % run.EP != 0)
            return (null, $"context parallelism CP = {run.CP} with EP = {run.EP}: neither divides the other (the core's CP rings tile EP ranks or whole replicas)");
        if (ShardsParameters(run) && (run.CP > 1 || run.PP > 1 || run.EP > 1))
            return (null, $"fully sharded data parallelism ({run.Sharding}) with CP = {run.CP}, PP = {run.PP}, EP = {run.EP}: the suite's FSDP slice holds TP x DP ranks only (the core refuses ZeRO-3 gathers with CP rings spanning replicas)");
        if (run.EP > 1 && run.DP % run.EP != 0 && !FoldsExperts(run))
            return (null, run.CP > 1
                ? $"EP = {run.EP} does not divide DP = {run.DP} with context parallelism CP = {run.CP}: the slice folds experts over TP x DP only without CP"
                : $"EP = {run.EP} divides neither DP = {run.DP} nor the GPUs of a stage TP x DP = {run.TP * run.DP}: no expert-parallel layout (EP x ETP x EDP = TP x DP) holds it");
        // The gpu label resolved over the hardware catalog (ModernSystems); an unknown label names itself and the valid labels.
        if (ModernSystems.Resolve(run.GpuLabel) is not { Preset: { } system }) return (null, ModernSystems.Resolve(run.GpuLabel).Reason);
        ModernArchitecture? arch;
        if (run.Framework == ModernFramework.MosaicMpt)
        {
            if (run.Layers is not { } l || run.Hidden is not { } h || run.Heads is not { } hd || run.FfnHidden is not { } f || run.Vocabulary is not { } vocab)
                return (null, "architecture columns missing");
            arch = new ModernArchitecture(run.Family, l, h, hd, hd, h / hd, f, 0, 0, 0, 0, 0, vocab, false, null, 0, 0, 0, null, "the row's columns (MPT: MHA, GELU FFN 4h)");
        }
        else if ((arch = known) is null)
            return (null, $"architecture of {run.Family} not in data/{ModernArchitecture.ResourceName} nor a model preset");
        var hardware = LaunchedOn(HardwareCatalog.Get(system), run.Gpus);
        // The core's model from the row's columns: MHA, head dim hidden / heads, two-matrix FFN at the (expert) width.
        var experts = arch.Experts;
        var model = new ModelSpec(run.Family, arch.Layers, arch.HiddenSize, arch.AttentionHeads, experts > 0 ? arch.MoeFfnHiddenSize : arch.FfnHiddenSize,
            experts, experts > 0 ? arch.TopK : 1, run.GlobalBatch, run.SequenceLength) { Vocabulary = arch.Vocabulary };
        // Heads that do not divide the hidden size (GLM-4.5: 96 of 128 over 5120) keep the architecture's head dimension.
        if (arch.HiddenSize % arch.AttentionHeads != 0) model = model with { HeadDim = arch.KvChannels };
        try { model = model.Validated(); }
        catch (ConfigException e) { return (null, $"the core cannot describe it: {e.Message}"); }
        var v = run.VP ?? 1;
        var split = LossInPipelineSplit(run, arch.Layers);
        // With the embedding and loss as slots the middle stages hold (L + 2) / PP layers, the last one fewer and the logits.
        var lps = split ? (arch.Layers + 2) / run.PP : v * (int)Math.Ceiling(arch.Layers / (double)(run.PP * v));
        var mtp = run.MtpLayersOverride ?? arch.MtpLayers;
        ModelSpec? preset = null;
        if (run.Framework == ModernFramework.MosaicMpt) preset = (model with { Causal = true }).Validated();
        else if (PresetOf(run.Family) is { } presetName)
            preset = (ModelPresets.Get(presetName, run.GlobalBatch, run.SequenceLength) with { DenseLayers = 0, Precision = null, MtpLayers = 0 }).Validated();   // MTP: by the FLOP factors, as the dense first layers
        var (recipe, recipeNote) = RecipeFor(run.Precision, hardware.Gpu);
        var (launch, launchNote) = run.Framework == ModernFramework.MegatronBridge ? BridgeLaunchCatalog.Published.For(run) : (null, null);
        return (new ModernScenario(run, arch, model, hardware, lps, v, mtp, preset, recipe, recipeNote, launch, launch is null ? launchNote : null) { LossInPipelineSplit = split, CpuOffloadedLayers = CpuOffloadedLayers(run) }, null);
    }

    public ModernPredictor(Func<HardwareSpec, CostModel> costModel) => CostOf = costModel;

    /// <summary>Tile-wave compute on the GPU's tile table and datasheet links: nothing fitted.</summary>
    public static ModernPredictor Datasheet { get; } = new(h => new CostModel($"tile-wave({h.Gpu.Architecture}), fused attention", new TileWaveCompute(h.Gpu, TileWaveTable.For(h.Gpu)), new LinkCommunication(h)) { FusedAttentionHeads = true });

    public Func<HardwareSpec, CostModel> CostOf { get; }

    /// <summary>
    /// Replicas of the run's EP x TP ranks one slice holds: 1, or with context parallelism over more ranks than EP the
    /// CP / EP replicas one ring spans (Megatron's order tp-cp-ep-dp-pp puts the CP ranks right after TP; here they are
    /// consecutive replicas, at stride TP x EP in the slice's rank order).
    /// </summary>
    public static int SliceReplicas(ModernRun run) => FoldsExperts(run) ? FoldUnitGpus(run) / run.EP : run.CP > run.EP ? run.CP / run.EP : 1;

    /// <summary>
    /// Runs whose parameters, gradients and optimizer states are fully sharded over the data-parallel ranks: MosaicML's
    /// MPT benchmarks (composer FSDP FULL_SHARD, llm-foundry scripts/train/benchmarking/submit_benchmarks.py sets
    /// <c>limit_all_gathers: True</c>, mixed precision PURE: bf16 parameters, gradients and reduction) and Megatron-Bridge's
    /// Megatron-FSDP rows (scripts/performance/utils/helpers.py <c>set_megatron_fsdp_overrides</c>:
    /// <c>data_parallel_sharding_strategy = "optim_grads_params"</c>, i.e. ZeRO-3, per transformer layer unit). Their
    /// data-parallel communication is per-layer gathers and reduce-scatters inside the step, priced in the slice's DAG.
    /// </summary>
    public static bool ShardsParameters(ModernRun run) =>
        run.Framework == ModernFramework.MosaicMpt || run.Sharding.Contains("FSDP", StringComparison.OrdinalIgnoreCase);

    /// <summary>Data-parallel replicas the slice carries as ZeRO-3 (folded): the run's DP for a fully sharded run with <paramref name="priceDataParallel"/>, else 1.</summary>
    public static int ShardedReplicas(ModernRun run, bool priceDataParallel) => priceDataParallel && ShardsParameters(run) && run.DP > 1 ? run.DP : 1;

    /// <summary>Attention data-parallel ranks of the slice: EP x replicas / CP (EP without context parallelism); folded, the unit's TP x DP ranks / TP.</summary>
    public static int SliceAttentionRanks(ModernRun run) => FoldsExperts(run) ? FoldUnitGpus(run) / run.TP : run.EP * SliceReplicas(run) / run.CP;

    /// <summary>
    /// Whether the run folds its experts over the attention ranks (Megatron-Core's MoE parallel folding, Liu et al.
    /// 2025): the expert layout ETP x EP x EDP covers the TP x DP ranks of a stage with ETP = 1, as Megatron-Core's
    /// parallel_state builds the expert groups over the same ranks. Two reasons, without CP only and with EP dividing TP x DP:
    /// EP larger than DP (EP does not divide DP: the default ETP = TP would need EP x TP > TP x DP GPUs), and a
    /// Megatron-Bridge row with TP > 1, because Megatron-Bridge's MoE performance configs set
    /// <c>expert_tensor_parallel_size=1</c> in their base configs (scripts/performance/configs/nemotronh/
    /// nemotron_3_workload_base_configs.py BASE_NEMOTRON_3_NANO_CONFIG / BASE_NEMOTRON_3_SUPER_CONFIG, and
    /// qwen/qwen3_workload_base_configs.py BASE_QWEN3_235B_A22B_CONFIG, which its TP 2 presets inherit): the row's
    /// columns give no ETP, the launcher's default is 1. In the file this adds one row, Nemotron-3-Ultra TP 2 x EP 64 x DP
    /// 128 on GB200: with ETP = TP its EP groups spanned TP x EP = 128 GPUs, two 64-GPU NVLink segments.
    /// </summary>
    public static bool FoldsExperts(ModernRun run) =>
        run.EP > 1 && run.CP == 1 && run.TP > 1 && (long)run.TP * run.DP % run.EP == 0
        && (run.DP % run.EP != 0 || run.Framework == ModernFramework.MegatronBridge);

    /// <summary><c>--expert-tensor-parallel-size</c> the slice uses: 1 when the run folds its experts (<see cref="FoldsExperts"/>), else TP (Megatron's default).</summary>
    public static int ExpertTensorParallel(ModernRun run) => FoldsExperts(run) ? 1 : run.TP;

    /// <summary>GPUs of one folding unit, lcm(TP, EP x ETP): the smallest block of ranks holding whole TP groups and whole EP groups.</summary>
    public static int FoldUnitGpus(ModernRun run) => checked((int)StrategySpec.FoldUnitGpusOf(run.TP, run.EP, ExpertTensorParallel(run)));

    /// <summary>The strategy of the slice: the run's EP, TP and CP over <paramref name="stages"/> stages, one replica (or one CP ring of them), plain 1F1B, fused attention; <paramref name="overlap"/>: the launch's all-to-all overlap.</summary>
    /// <para><paramref name="sharded"/> > 1: that many data-parallel replicas sharded as ZeRO-3 (a fully sharded run, <see cref="ShardedReplicas"/>).</para>
    /// <para><paramref name="fusedGroupedMlp"/>: the launch's CuTe DSL fused grouped MLP (<see cref="ModernScenario.LaunchFusedGroupedMlp"/>).</para>
    /// <para><paramref name="recomputeModules"/>: the launch's selective recomputation (<see cref="ModernScenario.LaunchRecomputeModules"/>).</para>
    public static StrategySpec SliceStrategy(ModernScenario s, int stages, int microbatches, MoeAllToAllOverlap overlap = MoeAllToAllOverlap.None, int sharded = 1, bool fusedGroupedMlp = false,
        RecomputeModules recomputeModules = RecomputeModules.None) =>
        new StrategySpec(s.Run.EP, s.Run.TP, stages, sharded > 1 ? sharded : SliceReplicas(s.Run), Derivation.Corrected, microbatches)
        {
            // Folded experts: ETP 1 and sequence parallelism (Megatron-Core requires it with TP > 1 and EP > 1); else as before.
            ExpertTensorParallelSize = FoldsExperts(s.Run) ? 1 : null,
            ZeroStage = sharded > 1 ? 3 : 0,
            ContextParallelSize = s.Run.CP,
            Mode = WorkloadMode.Training,
            Recompute = s.Run.Recompute,
            RecomputeModules = recomputeModules,
            Schedule = PipelineSchedule.OneFOneB,
            RankOrder = "tp-ep-dp-pp",
            MoeAllToAllOverlap = overlap,
            SequenceParallel = s.SequenceParallel || FoldsExperts(s.Run),
            CutedslFusedGroupedMlp = fusedGroupedMlp,
        }.Validated();

    /// <summary>The cost model with the launch's all-to-all implementation (the same model when it is NCCL or the communication model is not the link model).</summary>
    public CostModel CostFor(HardwareSpec hardware, AllToAllImplementation allToAll)
    {
        var cost = CostOf(hardware);
        return allToAll != AllToAllImplementation.Nccl && cost.Communication is LinkCommunication link && link.AllToAll != allToAll
            ? new CostModel(cost.Name, cost.Compute, new LinkCommunication(hardware, allToAll)) { GroupedExpertGemms = cost.GroupedExpertGemms, FusedAttentionHeads = cost.FusedAttentionHeads, AllToAllSmShare = cost.AllToAllSmShare } : cost;
    }

    /// <summary>The slice model: <paramref name="layersPerStage"/> x stages layers, EP x microbatches x micro-batch sequences.</summary>
    public static ModelSpec SliceModel(ModernScenario s, int stages, int layersPerStage, int microbatches, ModelSpec? model = null, int sharded = 1) =>
        (model ?? s.Model) with { Layers = stages * layersPerStage, Batch = (long)SliceAttentionRanks(s.Run) * Math.Max(1, sharded) * microbatches * s.Run.MicroBatch };

    /// <summary>A hybrid slice: every stage holds the layers of <paramref name="unit"/> (pattern symbols), EP x microbatches x micro-batch sequences.</summary>
    public static ModelSpec HybridSliceModel(ModernScenario s, int stages, string unit, int microbatches, ModelSpec model) =>
        model with
        {
            Layers = stages * unit.Length,
            HybridOverridePattern = string.Concat(Enumerable.Repeat(unit, stages)),
            Batch = (long)SliceAttentionRanks(s.Run) * microbatches * s.Run.MicroBatch,
        };

    /// <summary>
    /// The per-kind slices of a hybrid model: a base unit with one layer of each kind its pattern has (in order of first
    /// appearance) and, per kind, the unit with one more layer of that kind; the largest stage's layer counts per kind
    /// (the pattern's counts over the stages' share of the layers).
    /// </summary>
    public static (string Base, IReadOnlyList<(char Kind, string Unit, double Extra)> PerKind) HybridSlices(ModelSpec model, int layersPerStage)
    {
        var pattern = model.HybridOverridePattern!;
        var kinds = pattern.Distinct().ToArray();
        var unit = new string(kinds);
        var share = layersPerStage / (double)pattern.Length;
        return (unit, kinds.Select(k => (k, unit.Insert(unit.IndexOf(k), k.ToString()), pattern.Count(ch => ch == k) * share - 1)).ToArray());
    }

    /// <summary>
    /// The system as the row's job was placed on it. Megatron-Bridge's performance launcher (scripts/performance,
    /// README "Slurm arguments", <c>--segment</c>) asks Slurm for NVLink-domain segments on rack-scale systems: "4-GPU-node
    /// jobs use all nodes when the job has at most 18 nodes, otherwise the largest divisor of the node count up to 18".
    /// A 256-GPU job on GB200/GB300 NVL72 racks (64 trays of 4) therefore runs in four 16-tray segments: NVLink domains
    /// of 64 GPUs, not 72 (an EP 64 group never straddles two racks). Systems whose NVLink domain is one host are
    /// unchanged.
    /// </summary>
    public static HardwareSpec LaunchedOn(HardwareSpec preset, int gpus)
    {
        var hardware = preset.WithGpus(gpus);
        if (hardware.GpusPerNvlinkDomain <= hardware.GpusPerNode || gpus % hardware.GpusPerNode != 0) return hardware;
        var nodes = gpus / hardware.GpusPerNode;
        var domainNodes = hardware.GpusPerNvlinkDomain / hardware.GpusPerNode;
        var segment = nodes <= domainNodes ? nodes : Enumerable.Range(1, domainNodes).Last(d => nodes % d == 0);
        return (hardware with { NvlinkDomainGpus = segment * hardware.GpusPerNode }).Validated();
    }

    /// <summary>Layers per slice stage simulated: 1 and 2, or one and two repeats of the model's attention pattern (GPT-OSS alternates full and sliding layers).</summary>
    public static (int L1, int L2) SliceLayers(ModelSpec model) => model.AttentionPattern is { Count: > 1 } p ? (p.Count, 2 * p.Count) : (1, 2);

    /// <summary>
    /// The step under this predictor's cost model on <paramref name="hardware"/>, with interleaving <paramref name="virtualStages"/>;
    /// <paramref name="asLaunched"/>: with the row's published launch settings (<see cref="ModernScenario.Launch"/>): the
    /// dispatcher's all-to-all implementation in the cost model and Megatron-Core's 1F1B all-to-all overlap in the slice.
    /// With one slice stage (PP = 1) the overlap is in the slice's DAG. With PP > 1 Megatron runs it only interleaved, which
    /// the two-stage slice (plain 1F1B) is not: there the per-microbatch time is the two-stage slice's less what the overlap
    /// hides per microbatch in a one-stage slice of the same layers (the steady state pairs one microbatch's forward with
    /// another's backward in every stage alike), part by part. The law then hides it on all m + (p - 1) / v visits, where
    /// Megatron's warm-up and cool-down do not pair: at most (1 + (p - 1) / v) / m too much (under 4 % of the hidden time for
    /// the rows that use it, m >= 32).
    /// </summary>
    public ModernStep Predict(ModernScenario s, HardwareSpec hardware, int virtualStages, bool priceDataParallel, ModelSpec? model = null, bool asLaunched = false)
    {
        var baseModel = model ?? s.Model;
        var cost = asLaunched ? CostFor(hardware, s.LaunchAllToAll) : CostOf(hardware);
        var overlap = asLaunched ? s.LaunchOverlap : MoeAllToAllOverlap.None;
        var fusedMlp = asLaunched && s.LaunchFusedGroupedMlp;
        var recomputeModules = asLaunched ? s.LaunchRecomputeModules : RecomputeModules.None;
        var stages = s.Run.PP > 1 ? 2 : 1;
        // Fully sharded runs carry their data-parallel group in the slice as ZeRO-3 (per-layer gathers in the DAG).
        var sharded = ShardedReplicas(s.Run, priceDataParallel);
        long ops = 0;
        // One slice: the model <paramref name="build"/> makes for (slice stages, microbatches), at m1 and m2 microbatches.
        (StepParts PerMb, StepParts Edge) SliceOf(Func<int, int, ModelSpec> build, int sliceStages, MoeAllToAllOverlap o)
        {
            var runs = new[] { SliceMicrobatches1, SliceMicrobatches2 }.Select(m =>
            {
                var strategy = SliceStrategy(s, sliceStages, m, o, sharded, fusedMlp, recomputeModules);
                var sliceModel = build(sliceStages, m);
                // Sharded replicas are identical: one is built and stands for all (exact, DagFolding.Symmetric), unless the
                // cost model prices them differently (then the whole group is built).
                var dag = sharded > 1 ? strategy.BuildDag(sliceModel, DagFolding.Symmetric) : strategy.BuildDag(sliceModel);
                if (dag.IsFolded && !cost.PricesFoldSymmetrically(dag)) dag = strategy.BuildDag(sliceModel);
                ops += dag.Count;
                return StepParts.Of(dag.CriticalPath(cost));
            }).ToArray();
            var perMb = 1.0 / (SliceMicrobatches2 - SliceMicrobatches1) * (runs[1] - runs[0]);
            return (perMb, runs[0] - (SliceMicrobatches1 + sliceStages - 1) * perMb);
        }
        (StepParts PerMb, StepParts Edge) LaunchedOf(Func<int, int, ModelSpec> build)
        {
            if (overlap == MoeAllToAllOverlap.None) return SliceOf(build, stages, overlap);
            if (stages == 1) return SliceOf(build, 1, overlap);
            var plain = SliceOf(build, stages, MoeAllToAllOverlap.None);
            var hidden = SliceOf(build, 1, MoeAllToAllOverlap.None).PerMb - SliceOf(build, 1, overlap).PerMb;
            return (plain.PerMb - hidden, plain.Edge);
        }
        (StepParts PerMb, StepParts Edge) Launched(int l) => LaunchedOf((st, m) => SliceModel(s, st, l, m, baseModel, sharded));
        var lps = s.LayersPerStage;
        StepParts perMb, edge;
        if (baseModel.IsHybrid)
        {
            // Hybrid layers differ by kind: the law extended per kind. Each kind's steady time per microbatch and edge
            // per layer is the difference between the base unit (one layer of each kind) and the unit with one more
            // of that kind; the stage is the base unit plus (count - 1) more layers of each kind.
            (StepParts PerMb, StepParts Edge) Unit(string unit) => LaunchedOf((st, m) => HybridSliceModel(s, st, unit, m, baseModel));
            var (unitBase, perKind) = HybridSlices(baseModel, lps);
            var b = Unit(unitBase);
            (perMb, edge) = b;
            foreach (var (_, unit, extra) in perKind)
            {
                var k = Unit(unit);
                perMb += extra * (k.PerMb - b.PerMb);
                edge += extra * (k.Edge - b.Edge);
            }
        }
        else
        {
            var (l1, l2) = SliceLayers(baseModel);
            var one = Launched(l1);
            var two = Launched(l2);
            var slope = (lps - l1) / (double)(l2 - l1);
            perMb = one.PerMb + slope * (two.PerMb - one.PerMb);
            edge = one.Edge + slope * (two.Edge - one.Edge);
            if (s.LossInPipelineSplit && s.Run.PP > 1)
            {
                // The loss takes a layer's slot: the last stage holds lps - 1 layers and the logits, every other stage lps
                // layers without them. The steady state runs at the slower of the two (a middle stage unless the logits
                // cost more than a layer); with the middle stage's time the logits leave every visit, and the law's
                // subtraction of the middle stages' logits below is then zero.
                var last = one.PerMb + (lps - 1 - l1) / (double)(l2 - l1) * (two.PerMb - one.PerMb);
                var middleStage = perMb - (StepParts.Zero with { Logits = perMb.Logits });
                perMb = last.Total > middleStage.Total ? last : middleStage;
            }
        }
        var m = s.Run.Microbatches;
        var visits = m + (s.Run.PP - 1) / (double)virtualStages;
        // Middle stages carry no output layer: the p - 2 stages the slice does not hold fill and drain the pipeline
        // without the logits part of the last stage's time per microbatch.
        var middle = Math.Max(0, s.Run.PP - stages) / (double)virtualStages;
        var parts = visits * perMb + edge - middle * (StepParts.Zero with { Logits = perMb.Logits });
        var dp = priceDataParallel ? DataParallelSeconds(s, hardware, cost) : 0;
        var bubble = (s.Run.PP - 1) / (double)virtualStages * perMb.Total - middle * perMb.Logits;
        return new ModernStep(parts, dp, visits * lps, ops, Math.Max(0, bubble));
    }

    /// <summary>Data-parallel synchronisation seconds (see the class summary), on the real placement of the first stage's ranks.</summary>
    public static double DataParallelSeconds(ModernScenario s, HardwareSpec hardware, CostModel cost)
    {
        var r = s.Run;
        // Weights are replicated over the CP ranks too: Megatron reduces over the data-parallel group with context
        // parallelism, DP x CP ranks (experts: DP x CP / EP), the CP ranks adjacent to TP in its rank order.
        var dp = r.DP * r.CP;
        if (dp <= 1) return 0;
        var a = s.Architecture;
        var flops = s.ArchitectureFlops;
        // Parameters on the largest stage from the architecture's GEMM work (a linear layer of P parameters costs 6P FLOPs per token).
        double perToken = 1.0 / r.SequenceLength / 6;
        double denseParams = (flops.DenseGemms * perToken + (a.Experts > 0 ? 0 : 0)) / r.PP / r.TP + a.Vocabulary * a.HiddenSize / (double)r.TP;
        double expertParamsTotal = a.Experts > 0 ? (double)a.MoeLayers * a.Experts * a.MoeFfnHiddenSize * (a.MoeLatentSize ?? a.HiddenSize) * (a.Swiglu ? 3 : 2) : 0;
        double expertParams = expertParamsTotal / r.PP / r.EP;
        double Sync(double parameters, int[] group) => group.Length < 2 ? 0
            : cost.Communication.Seconds(CollectivePattern.ReduceScatter, parameters * 4, group) + cost.Communication.Seconds(CollectivePattern.AllGather, parameters * 2, group);
        // Fully sharded runs gather and reduce per layer inside the step: priced in the slice's DAG (see the class summary).
        if (ShardsParameters(r)) return 0;
        if (FoldsExperts(r))
        {
            // Folded: dense weights over the DP ranks of TP rank 0 (Megatron order tp-cp-dp-pp), expert weights (1 / (EP x ETP)
            // of them per rank) over the expert-data-parallel group, EDP = TP x DP / (EP x ETP) ranks (order etp-ep-edp-pp).
            var folded = new StrategySpec(r.EP, r.TP, r.PP, r.TP * r.DP / (r.EP * ExpertTensorParallel(r))) { ExpertTensorParallelSize = ExpertTensorParallel(r) };
            return Sync(denseParams, folded.MegatronGroup(0, "dp")) + Sync(expertParamsTotal / r.PP / (r.EP * ExpertTensorParallel(r)), folded.MegatronGroup(0, "edp"));
        }
        var real = new StrategySpec(r.EP, r.TP, r.PP, dp / r.EP) { RankOrder = "tp-ep-dp-pp" };
        var dpGroup = new List<int>();
        for (var d = 0; d < dp / r.EP; d++)
            for (var e = 0; e < r.EP; e++) dpGroup.Add(real.Rank(d, 0, e, 0));
        var edpGroup = Enumerable.Range(0, dp / r.EP).Select(d => real.Rank(d, 0, 0, 0)).ToArray();
        return Sync(denseParams, dpGroup.ToArray()) + Sync(expertParams, edpGroup);
    }
}

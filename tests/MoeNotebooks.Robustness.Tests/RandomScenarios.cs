using System.Globalization;
using CsCheck;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// One random valid configuration, kept as plain numbers so a failing case prints as a readable line and can
/// be turned into a <see cref="Scenario"/> (record API) or into scenario JSON (loader path) alike.
/// </summary>
public sealed record RandomCase(
    Derivation Derivation, string Preset, int GpusPerNode, bool Efficiency, string Dtype,
    int EP, int TP, int PP, int DP, int Microbatches,
    int Layers, long HiddenSize, int Heads, long Ffn, int Experts, int TopK, long Batch, long Sequence,
    WorkloadMode Mode = WorkloadMode.Inference, PipelineSchedule Schedule = PipelineSchedule.OneFOneB, bool Recompute = false, double Zipf = 0,
    AttentionKernel Kernel = AttentionKernel.Fused, bool Overlap = true, bool ScatterGather = false)
{
    public int Gpus => EP * TP * PP * DP;

    /// <summary>Megatron-Core execution fields (issue 12): distributed optimizer, gradient-reduce overlap, explicit first-stage layers.</summary>
    public bool DistributedOptimizer { get; init; }
    public bool OverlapGradReduce { get; init; } = true;
    public int? FirstStageLayers { get; init; }

    /// <summary><c>--overlap-param-gather</c> (with the distributed optimizer only).</summary>
    public bool OverlapParamGather { get; init; }

    /// <summary>Issue 12's all-to-all options: Megatron-Core's EP overlap, DeepEP (with a DeepEP cost model taking <see cref="DeepEpSms"/> SMs).</summary>
    public MoeAllToAllOverlap AllToAllOverlap { get; init; }
    public int? DeepEpSms { get; init; }

    /// <summary>Megatron-Core's selective recomputation (<c>--recompute-modules</c>), training without full recompute only.</summary>
    public RecomputeModules RecomputeModules { get; init; }

    /// <summary>NVLink ports contended in the scheduler (<c>costModel.nvlinkContention</c>).</summary>
    public bool NvlinkContention { get; init; }
    /// <summary>A hybrid layer pattern (Megatron --hybrid-override-pattern: M, *, -, E; one 'E' at least) with its Mamba-2 sizes; null: attention + FFN layers.</summary>
    public string? HybridPattern { get; init; }
    public int MambaHeads { get; init; } = 1;
    public int MambaHeadDim { get; init; } = 8;
    public int MambaState { get; init; } = 4;
    public int MambaChunk { get; init; } = 16;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Derivation} {Preset} ({GpusPerNode}/node) {(Efficiency ? "typical-hopper" : "ideal")} {Dtype}; EP{EP} TP{TP} PP{PP} DP{DP} mb{Microbatches}; " +
        $"layers {Layers}, H {HiddenSize}, heads {Heads}, F {Ffn}, experts {Experts}, topK {TopK}, batch {Batch}, seq {Sequence}; " +
        $"{Mode} {Schedule}{(Recompute ? " recompute" : "")}{(Zipf > 0 ? $" zipf {Zipf}" : "")} {Kernel}{(Overlap ? "" : " blocking")}{(ScatterGather ? " scatter-gather" : "")}" +
        $"{(DistributedOptimizer ? " dist-opt" : "")}{(OverlapGradReduce ? "" : " no-grad-overlap")}{(FirstStageLayers is { } f ? $" first-stage {f}" : "")}" +
        $"{(HybridPattern is { } p ? $" hybrid {p} mamba {MambaHeads}x{MambaHeadDim} N {MambaState} Q {MambaChunk}" : "")}" +
        $"{(AllToAllOverlap != MoeAllToAllOverlap.None ? $" a2a {AllToAllOverlap}" : "")}{(DeepEpSms is { } sms ? $" deep-ep-normal {sms} SMs" : "")}{(OverlapParamGather ? " param-gather-overlap" : "")}{(NvlinkContention ? " nvlink-ports" : "")}" +
        $"{(RecomputeModules != RecomputeModules.None ? $" recompute-modules {RecomputeModules.ToText()}" : "")}");

    private ModelSpec Plain => new("random", Layers, HiddenSize, Heads, Ffn, Experts, TopK, Batch, Sequence, ModelSpec.DtypeBytes[Dtype], Dtype)
    {
        Routing = Zipf > 0 ? new RoutingSpec(RoutingDistribution.Zipf, Zipf) : RoutingSpec.Uniform,
    };

    public ModelSpec Model => HybridPattern is null ? Plain : Plain with
    {
        HybridOverridePattern = HybridPattern, MambaNumHeads = MambaHeads, MambaHeadDim = MambaHeadDim, MambaStateDim = MambaState,
        MambaNumGroups = TP, MambaChunkSize = MambaChunk,
    };

    private string HybridJson => HybridPattern is null ? "" : string.Create(CultureInfo.InvariantCulture,
        $", \"hybridOverridePattern\": \"{HybridPattern}\", \"mambaNumHeads\": {MambaHeads}, \"mambaHeadDim\": {MambaHeadDim}, \"mambaStateDim\": {MambaState}, \"mambaNumGroups\": {TP}, \"mambaChunkSize\": {MambaChunk}");

    public StrategySpec Strategy => new(EP, TP, PP, DP, Derivation, Microbatches) { Mode = Mode, Schedule = Schedule, Recompute = Recompute, AttentionKernel = Kernel, OverlapCommunication = Overlap, ScatterGather = ScatterGather,
        UseDistributedOptimizer = DistributedOptimizer, OverlapGradReduce = OverlapGradReduce, DecoderFirstPipelineNumLayers = FirstStageLayers, MoeAllToAllOverlap = AllToAllOverlap,
        OverlapParamGather = OverlapParamGather, RecomputeModules = RecomputeModules };

    /// <summary>The same case with <paramref name="microbatches"/> microbatches of the same size (the batch scaled with them).</summary>
    public RandomCase WithMicrobatches(int microbatches) => this with { Microbatches = microbatches, Batch = Batch / Microbatches * microbatches };

    public HardwareSpec Hardware => HardwareCatalog.Get(Preset) with { GpuCount = Gpus, GpusPerNode = GpusPerNode };

    public CostModelSpec CostModel => ((Efficiency ? new CostModelSpec(CostModelKind.RooflineEfficiency, EfficiencyTable.Get("typical-hopper")) : CostModelSpec.Ideal) is var c && DeepEpSms is { } sms
        ? c with { AllToAll = AllToAllImplementation.DeepEpNormal, DeepEpSms = sms } : c) with { NvlinkContention = NvlinkContention };

    public Scenario Scenario => new Scenario("random", Model, Hardware, Strategy, CostModel).Validated();

    private string RoutingJson => Zipf > 0 ? string.Create(CultureInfo.InvariantCulture, $", \"routing\": {{ \"distribution\": \"zipf\", \"zipfExponent\": {Zipf} }}") : "";

    private string ExecutionJson => Derivation == Derivation.Seed ? "" :
        $", \"mode\": \"{JsonObjectReader.Kebab(Mode.ToString())}\", \"schedule\": \"{JsonObjectReader.Kebab(Schedule.ToString())}\", \"recompute\": {(Recompute ? "true" : "false")}" +
        $", \"attentionKernel\": \"{JsonObjectReader.Kebab(Kernel.ToString())}\", \"overlap\": {(Overlap ? "true" : "false")}, \"scatterGather\": {(ScatterGather ? "true" : "false")}" +
        $", \"useDistributedOptimizer\": {(DistributedOptimizer ? "true" : "false")}, \"overlapGradReduce\": {(OverlapGradReduce ? "true" : "false")}" +
        (OverlapParamGather ? ", \"overlapParamGather\": true" : "") +
        (RecomputeModules == RecomputeModules.None ? "" : $", \"recomputeModules\": [{string.Join(", ", RecomputeModules.MegatronNames().Select(n => $"\"{n}\""))}]") +
        (FirstStageLayers is { } f ? string.Create(CultureInfo.InvariantCulture, $", \"decoderFirstPipelineNumLayers\": {f}") : "") +
        (AllToAllOverlap == MoeAllToAllOverlap.None ? "" : $", \"moeAllToAllOverlap\": \"{(AllToAllOverlap == MoeAllToAllOverlap.OneFOneB ? "1f1b" : "deep-ep")}\"");

    private string CostModelJson => string.Create(CultureInfo.InvariantCulture,
        $"{{ \"kind\": \"{(Efficiency ? "roofline-efficiency" : "roofline-ideal")}\"{(Efficiency ? ", \"efficiency\": \"typical-hopper\"" : "")}{(DeepEpSms is { } sms ? $", \"alltoall\": \"deep-ep-normal\", \"deepEpSms\": {sms}" : "")}{(NvlinkContention ? ", \"nvlinkContention\": true" : "")} }}");

    /// <summary>The same configuration as a scenario file, for the loader and CLI paths.</summary>
    public string Json => string.Create(CultureInfo.InvariantCulture, $$"""
        {
          "name": "random",
          "model": { "layers": {{Layers}}, "hiddenSize": {{HiddenSize}}, "attentionHeads": {{Heads}}, "ffnHiddenSize": {{Ffn}},
                     "experts": {{Experts}}, "topK": {{TopK}}, "batch": {{Batch}}, "sequenceLength": {{Sequence}}, "dtype": "{{Dtype}}"{{RoutingJson}}{{HybridJson}} },
          "hardware": { "preset": "{{Preset}}", "gpus": {{Gpus}}, "gpusPerNode": {{GpusPerNode}} },
          "strategy": { "ep": {{EP}}, "tp": {{TP}}, "pp": {{PP}}, "dp": {{DP}}, "microbatches": {{Microbatches}}, "derivation": "{{JsonObjectReader.Kebab(Derivation.ToString())}}"{{ExecutionJson}} },
          "costModel": {{CostModelJson}}
        }
        """);
}

/// <summary>Generators of valid configurations, for both derivations, all presets and both cost models.</summary>
public static class RandomScenarios
{
    private static readonly string[] Presets = ["H100-SXM", "H200", "A100-80GB"];

    /// <summary>
    /// Small sizes (1-4 layers, at most 16 GPUs, narrow layers) so that a property can afford 10,000 cases.
    /// With <paramref name="large"/> the sizes reach the founding document's (H = 8192, 10,000 tokens per sequence,
    /// batch in the thousands) while the operation count stays small: for the soak, which hunts NaN and overflow.
    /// </summary>
    public static Gen<RandomCase> Valid(bool large = false) =>
        Gen.Frequency((1, Seed(large)), (3, Corrected(large)));

    private static Gen<string> Dtype(string preset) =>
        preset == "A100-80GB" ? Gen.OneOf("bf16", "fp16", "fp32") : Gen.OneOf("bf16", "fp16", "fp8", "fp32");

    private static Gen<RandomCase> Corrected(bool large) =>
        from tp in Gen.OneOf(1, 2, 4)
        from ep in Gen.OneOf(1, 2, 4)
        from pp in Gen.Int[1, 3]
        from dp in Gen.OneOf(1, 2)
        where tp * ep * pp * dp <= 16
        from mb in Gen.Int[1, 3]
        from layers in Gen.Int[pp, 4]
        from headsPerRank in Gen.Int[1, 3]
        from headDim in large ? Gen.OneOf(64, 128) : Gen.OneOf(4, 8, 16, 32)
        from ffnFactor in Gen.OneOf(1, 2, 4)
        from expertsPerRank in Gen.Int[1, 3]
        from topK in Gen.Int[1, 4]
        from sequencesPerRank in large ? Gen.Int[1, 64] : Gen.Int[1, 4]
        from seq in large ? Gen.Int[1, 16384] : Gen.Int[1, 256]
        from hw in Hardware
        from dtype in Dtype(hw.Preset)
        from execution in Execution
        from megatron in Megatron
        from a2a in Gen.Int[0, 3]
        from deepEpSms in Gen.OneOf(1, 20, 60)
        let heads = tp * headsPerRank
        let hidden = (long)heads * headDim
        let experts = ep * expertsPerRank
        // DualPipe needs an even pipeline and at least 2 x pp microbatches, even (deepseek-ai/DualPipe): on an odd
        // pipeline the draw falls back to 1F1B; its microbatches are 2 x pp.
        let schedule = execution.Schedule == PipelineSchedule.DualPipe && pp % 2 != 0 ? PipelineSchedule.OneFOneB : execution.Schedule
        let microbatches = schedule == PipelineSchedule.DualPipe ? 2 * pp : mb
        select new RandomCase(Derivation.Corrected, hw.Preset, hw.PerNode, hw.Efficiency, dtype, ep, tp, pp, dp, microbatches,
            layers, hidden, heads, hidden * ffnFactor, experts, Math.Min(topK, experts), (long)dp * ep * microbatches * sequencesPerRank, seq,
            execution.Mode, schedule, execution.Recompute, execution.Zipf, execution.Kernel, execution.Overlap, execution.ScatterGather)
        {
            DistributedOptimizer = megatron.DistributedOptimizer,
            OverlapGradReduce = megatron.OverlapGradReduce,
            // --overlap-param-gather is refused with split or merged passes (zero-bubble, DualPipe, the 1F1B all-to-all
            // overlap): not priced together yet.
            OverlapParamGather = megatron.DistributedOptimizer && megatron.OverlapParamGather
                && schedule is not (PipelineSchedule.ZeroBubbleH1 or PipelineSchedule.DualPipe)
                && !(a2a == 0 && execution.Mode == WorkloadMode.Training && ep > 1 && pp == 1 && schedule == PipelineSchedule.OneFOneB && execution.Overlap),
            // Megatron's first-stage count: the other pp - 1 stages one layer each, the first the rest (not with
            // DualPipe, whose ranks hold stages s and pp - 1 - s).
            FirstStageLayers = megatron.Uneven && pp > 1 && schedule != PipelineSchedule.DualPipe ? layers - (pp - 1) : null,
            // Megatron-Core's EP overlap (1 in 4 where Megatron allows it here: training, EP > 1, 1F1B with one stage,
            // overlapping streams); DeepEP's normal kernels with a random SM count (1 in 4), as Megatron's
            // --moe-enable-deepep (the strategy value) when not overlapped.
            AllToAllOverlap = a2a == 0 && execution.Mode == WorkloadMode.Training && ep > 1 && pp == 1 && schedule == PipelineSchedule.OneFOneB && execution.Overlap
                ? MoeAllToAllOverlap.OneFOneB : a2a == 1 ? MoeAllToAllOverlap.DeepEp : MoeAllToAllOverlap.None,
            DeepEpSms = a2a == 1 || (a2a == 0 && deepEpSms != 1) ? deepEpSms : null,
        };

    /// <summary>
    /// Hybrid cases (issue 14's Mamba block): a corrected-derivation case of the stream made a hybrid. Its own stream, so
    /// the shared stream's cases (and the properties tuned on them) stay as they were.
    /// </summary>
    public static Gen<RandomCase> Hybrids() =>
        from c in Corrected(false)
        from hybrid in Hybrid(c.Layers)
        where hybrid.Pattern is not null
        select c with
        {
            HybridPattern = hybrid.Pattern,
            MambaHeads = c.TP * hybrid.HeadsPerRank,
            MambaHeadDim = hybrid.HeadDim,
            MambaState = hybrid.State,
            MambaChunk = hybrid.Chunk,
        };

    /// <summary>
    /// Selective recomputation cases: training cases of the corrected stream without full recomputation, with a random
    /// non-empty set of Megatron's recompute modules. Its own stream, so the shared stream's cases stay as they were.
    /// </summary>
    public static Gen<RandomCase> SelectiveRecomputes() =>
        from c in Corrected(false)
        where c.Mode == WorkloadMode.Training && !c.Recompute
        from modules in Gen.Int[1, 127]
        select c with { RecomputeModules = (RecomputeModules)modules };

    /// <summary>
    /// A hybrid pattern (three draws in four; null otherwise): a pattern of the case's layer count over M, *, -, E with one position forced to 'E'
    /// (the random models have experts); Mamba heads a multiple of TP (groups = TP), small heads, state and chunk.
    /// </summary>
    private static Gen<(string? Pattern, int HeadsPerRank, int HeadDim, int State, int Chunk)> Hybrid(int layers) =>
        from draw in Gen.Int[0, 3]
        from symbols in Gen.OneOf('M', '*', '-', 'E').Array[layers]
        from forced in Gen.Int[0, layers - 1]
        from headsPerRank in Gen.Int[1, 2]
        from headDim in Gen.OneOf(4, 8, 16)
        from state in Gen.OneOf(2, 4, 8)
        from chunk in Gen.OneOf(8, 16, 64)
        select (draw != 0 ? new string(symbols.Select((c, i) => i == forced ? 'E' : c).ToArray()) : null, headsPerRank, headDim, state, chunk);

    /// <summary>Distributed optimizer (1 in 4; with it --overlap-param-gather 1 in 2), no gradient-reduce overlap (1 in 4), explicit first-stage layers (1 in 3, with pp &gt; 1).</summary>
    private static Gen<(bool DistributedOptimizer, bool OverlapGradReduce, bool Uneven, bool OverlapParamGather)> Megatron =>
        from distributed in Gen.Int[0, 3]
        from overlap in Gen.Int[0, 3]
        from uneven in Gen.Int[0, 2]
        from paramGather in Gen.Bool
        select (distributed == 0, overlap != 0, uneven == 0, paramGather);

    /// <summary>
    /// Forward pass (3 in 4) or training step with GPipe, 1F1B, ZB-H1 or DualPipe and optional recompute; uniform or Zipf routing;
    /// flash-style or materialized attention; communication overlapping compute (3 in 4) or blocking; scatter/gather sends.
    /// </summary>
    private static Gen<(WorkloadMode Mode, PipelineSchedule Schedule, bool Recompute, double Zipf, AttentionKernel Kernel, bool Overlap, bool ScatterGather)> Execution =>
        from training in Gen.Int[0, 3]
        from schedule in Gen.OneOf(PipelineSchedule.Gpipe, PipelineSchedule.OneFOneB, PipelineSchedule.ZeroBubbleH1, PipelineSchedule.DualPipe)
        from recompute in Gen.Bool
        from zipf in Gen.OneOf(0.0, 0.0, 1.0, 1.5)
        from kernel in Gen.OneOf(AttentionKernel.Fused, AttentionKernel.Fused, AttentionKernel.Materialized, AttentionKernel.MaterializedDropout)
        from overlap in Gen.Int[0, 3]
        from scatterGather in Gen.Bool
        select (training == 0 ? WorkloadMode.Training : WorkloadMode.Inference, schedule, recompute && training == 0, zipf, kernel, overlap != 0, scatterGather);

    /// <summary>The founding document's two layouts: EP = n alone, or TP x PP alone; one replica, one microbatch.</summary>
    private static Gen<RandomCase> Seed(bool large) =>
        from expertLayout in Gen.Bool
        from ep in expertLayout ? Gen.OneOf(1, 2, 4, 8) : Gen.Const(1)
        from tp in expertLayout ? Gen.Const(1) : Gen.OneOf(1, 2, 4)
        from pp in expertLayout ? Gen.Const(1) : Gen.OneOf(1, 2)
        from layersPerStage in Gen.Int[1, 2]
        from headsPerRank in Gen.Int[1, 3]
        from headDim in large ? Gen.OneOf(64, 128) : Gen.OneOf(4, 8, 16)
        from ffnFactor in Gen.OneOf(1, 4)
        from expertsPerRank in Gen.Int[1, 2]
        from topK in Gen.Int[1, 2]
        from batch in large ? Gen.Int[1, 4096] : Gen.Int[1, 8]
        from seq in large ? Gen.Int[1, 16384] : Gen.Int[1, 256]
        from hw in Hardware
        from dtype in Dtype(hw.Preset)
        let heads = tp * headsPerRank
        let hidden = (long)heads * headDim * tp
        let experts = Math.Max(ep, 1) * expertsPerRank
        select new RandomCase(Derivation.Seed, hw.Preset, hw.PerNode, hw.Efficiency, dtype, ep, tp, pp, 1, 1,
            layersPerStage * pp, hidden, heads, hidden * ffnFactor, experts, Math.Min(topK, experts), batch, seq);

    private static Gen<(string Preset, int PerNode, bool Efficiency)> Hardware =>
        from preset in Gen.OneOf(Presets)
        from perNode in Gen.OneOf(1, 2, 4, 8)
        from efficiency in Gen.Bool
        select (preset, perNode, efficiency);
}

/// <summary>
/// Runs a property over a fixed, reproducible stream of cases: CsCheck generators driven by one PCG seeded from
/// MOE_PROPERTY_SEED (default 20260101) for MOE_PROPERTY_ITER cases (default 10,000). CsCheck's own
/// <c>Sample</c> seeds only its first iteration and draws the rest from thread-local generators, so it would not
/// give the same cases on every CI run; this loop does.
/// </summary>
public static class Property
{
    public static long Iterations => Env("MOE_PROPERTY_ITER", 10_000);
    public static ulong SeedValue => (ulong)Env("MOE_PROPERTY_SEED", 20260101);

    public static long Env(string name, long fallback) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } s ? long.Parse(s, CultureInfo.InvariantCulture) : fallback;

    /// <summary>The cases a property sees, in order: identical for a given seed and count.</summary>
    public static IEnumerable<T> Cases<T>(Gen<T> gen, long? count = null, ulong? seed = null)
    {
        var pcg = new PCG(7, seed ?? SeedValue);
        for (long i = 0; i < (count ?? Iterations); i++) yield return gen.Generate(pcg, null!, out _);
    }

    /// <summary>Checks <paramref name="assert"/> on every case; the first failure names its index, seed and case.</summary>
    public static long Check<T>(Gen<T> gen, Action<T> assert, long? count = null)
    {
        long i = 0;
        foreach (var c in Cases(gen, count))
        {
            try { assert(c); }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException($"property failed on case {i} (MOE_PROPERTY_SEED={SeedValue}): {c}\n{e.GetType().Name}: {e.Message}");
            }
            i++;
        }
        return i;
    }
}

using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>What the data cannot pin down, fitted once per GPU generation: multipliers on the priced parts and a framework overhead.</summary>
/// <param name="Gemm">Multiplier on dense GEMM and logits time (GEMM efficiency relative to the tile-wave model).</param>
/// <param name="GroupedGemm">Multiplier on expert (grouped) GEMM time.</param>
/// <param name="Attention">Multiplier on core attention time (flash kernel efficiency).</param>
/// <param name="AllToAll">Multiplier on exposed all-to-all time (dispatch/combine efficiency).</param>
/// <param name="MemoryBound">Multiplier on memory-bound work: norms, activations, residuals and the MoE permute/unpermute passes.</param>
/// <param name="DataParallelExposed">Fraction of the data-parallel synchronisation not hidden behind compute.</param>
/// <param name="OverheadMicroseconds">Framework overhead per layer per microbatch on the critical path (launches, routing syncs).</param>
/// <param name="Ssd">Multiplier on the Mamba-2 mixer's kernels (<see cref="StepParts.Ssd"/>: mamba_ssm's Triton SSD kernels, causal conv1d, gated norm),
/// priced as the slower of their products and the HBM bytes they stream: how far the Triton kernels fall short of that on this generation.</param>
/// <param name="ExpertLaunchMicroseconds">Host time to launch one local expert's forward work in an MoE layer (see <see cref="PartFactors.ExpertLaunches"/>).</param>
public sealed record GenerationFit(string Generation, double Gemm, double GroupedGemm, double Attention, double AllToAll, double MemoryBound, double DataParallelExposed, double OverheadMicroseconds, int Rows, double Ssd = 1,
    double ExpertLaunchMicroseconds = 0)
{
    public static GenerationFit Unfitted(string generation) => new(generation, 1, 1, 1, 1, 1, 1, 0, 0);

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Generation} ({Rows} rows): GEMM x{Gemm:F2}, grouped GEMM x{GroupedGemm:F2}, attention x{Attention:F2}, all-to-all x{AllToAll:F2}, memory-bound x{MemoryBound:F2}, Mamba SSD kernels x{Ssd:F2}, DP sync exposed {DataParallelExposed:P0}, overhead {OverheadMicroseconds:F0} us per layer-microbatch, host launch {ExpertLaunchMicroseconds:F0} us per local expert per MoE-layer forward");
}

/// <summary>Multipliers on a step's parts for what its DAG leaves out (FLOP ratios), and memory-bound seconds it lacks.</summary>
/// <param name="ExpertLaunches">
/// Host-launched expert forwards per MoE-layer visit: the rank's local experts (experts / EP), twice with full recompute
/// (the forward runs again before the backward); 0 for dense models, for hybrid (Mamba) models (not priced, see
/// <see cref="WithExpertLaunches"/>), for token-drop runs (padded to capacity: no host sync) and where a full-iteration CUDA graph replays the
/// step. Why they can be exposed: Megatron-Core's dropless token dispatchers bring the tokens-per-expert counts to the
/// host (Transformer Engine's GroupedLinear takes m_splits as host integers), so every MoE layer's forward waits for the
/// GPU to drain and then launches the rest of the layer from the host, its expert work one local expert at a time
/// (Transformer Engine's grouped linear runs as one GEMM, with its quantize kernels under FP8 recipes, per local expert).
/// After the sync the GPU has nothing queued: the layer's forward takes the longer of the host's launches and the GPU's
/// forward, and the GPU idles for the difference: per visit max(0, launches x host time per expert - the layer's forward
/// seconds) (<see cref="ModernRowModel.ExposedLaunchSeconds"/>). That window replaces the per-layer framework overhead
/// on these visits (<see cref="HostOverheadShare"/>).
/// </param>
/// <param name="MoeLayerShare">Share of the layer visits that are MoE layers (the dense first layers launch no experts).</param>
/// <param name="ForwardShare">Share of a layer's GPU time that is its forward (1/3; 2/4 with full recompute, whose backward reruns the forward).</param>
/// <param name="TensorParallelExposed">Share of the critical path's tensor-parallel collectives left exposed (<see cref="TpCommOverlapExposedShare"/> under Transformer Engine's TP communication overlap, else 1).</param>
/// <param name="OffloadLayerVisits">Offloaded layer-microbatch visits on the critical path (offloaded layers x microbatches; 0: no CPU offloading).</param>
/// <param name="OffloadSecondsPerLayer">Seconds one offloaded layer's activations take over the host link, each way (bytes / host-link bandwidth + latency).</param>
/// <param name="HostOverheadShare">Share of the layer-microbatch visits that pay the fitted framework overhead
/// (<see cref="GenerationFit.OverheadMicroseconds"/>), a host cost the GPU's queue does not hide: 1; 0 where a
/// full-iteration CUDA graph replays the whole step (Megatron-Core's <c>cuda_graph_impl="full_iteration"</c>: one graph
/// launch per step, no host work or host synchronisation per layer; the launch files name it,
/// <see cref="BridgeLaunch.CudaGraphImpl"/>); and 1 - <see cref="MoeLayerShare"/> where the MoE layers synchronise with
/// the host (<see cref="ExpertLaunches"/> > 0): their visits pay the host-bound forward instead, the dense first layers
/// the overhead. Set with the expert launches (<see cref="WithExpertLaunches"/>).</param>
public sealed record PartFactors(double Dense, double Expert, double Attention, double Logits, double ExtraMemorySeconds = 0, double TensorParallelExposed = 1,
    double ExpertLaunches = 0, double MoeLayerShare = 0, double ForwardShare = 1.0 / 3, double OffloadLayerVisits = 0, double OffloadSecondsPerLayer = 0,
    double HostOverheadShare = 1)
{
    /// <summary>
    /// The CPU activation offloading fields of a scenario (<see cref="ModernScenario.CpuOffloadedLayers"/>): N offloaded
    /// layers x m microbatches visits (one pipeline stage: Megatron-FSDP rows run PP 1), each moving
    /// <see cref="ModernPredictor.OffloadBytesPerLayer"/> over the GPU's host link; unchanged without offloading or host link.
    /// </summary>
    public PartFactors WithCpuOffload(ModernScenario s)
    {
        if (s.CpuOffloadedLayers <= 0 || s.Hardware.HostLink is not { } link) return this;
        return this with
        {
            OffloadLayerVisits = (double)s.CpuOffloadedLayers * s.Run.Microbatches,
            OffloadSecondsPerLayer = ModernPredictor.OffloadBytesPerLayer(s) / link.BytesPerSecond + link.LatencySeconds,
        };
    }

    /// <summary>
    /// Exposed share of a layer's TP collectives under Transformer Engine's userbuffers comm+GEMM overlap as the
    /// Llama performance configs set it (userbuffers_*_b200_h8192_tp2 / h16384_tp4: qkv_fprop, fc1_fprop, proj_dgrad and
    /// fc2_dgrad "ring_exchange", qkv/fc1 dgrad and wgrad "bulk", proj_fprop and fc2_fprop "pipeline"). With sequence
    /// parallelism a layer has 8 TP collectives of equal bytes (forward: all-gather before QKV and FC1, reduce-scatter
    /// after the projection and FC2; backward the conjugates). Ring exchange pipelines the all-gather's TP chunks behind
    /// the GEMM's chunks (the first chunk is local): none exposed; bulk overlaps the dgrad reduce-scatter with the wgrad
    /// GEMM: none exposed; the pipelined reduce-scatter splits the GEMM in 4 (Transformer Engine's default num_splits for
    /// "pipeline") and only the last chunk's reduce-scatter is exposed: 1/4 of each of the two forward reduce-scatters.
    /// Exposed: 2 x 1/4 of 8 collectives = 1/16. Holds while a chunk's transfer is shorter than its GEMM chunk (NVLink).
    /// </summary>
    public const double TpCommOverlapExposedShare = 2 * (1.0 / 4) / 8;

    public static PartFactors One { get; } = new(1, 1, 1, 1);

    /// <summary>The host-launch fields of a scenario: local experts per MoE-layer forward (none under a full-iteration CUDA graph), MoE share, forward share, the visits that pay the per-layer overhead.</summary>
    public PartFactors WithExpertLaunches(ModernScenario s)
    {
        var a = s.Architecture;
        // Hybrid (Mamba) rows: not priced. With the host time the MoE rows fit (127 us), Nemotron-3-Super's 64 local
        // experts at EP 8 would idle 8 ms per MoE layer forward, and the hybrid rows measured say otherwise (their LOMO
        // 12.2 -> 15.1 %, the Super EP 8 rows 20-25 % too slow): one host time per expert does not hold across them.
        var graphed = s.Launch?.CudaGraphImpl == "full_iteration";
        if (a.Experts == 0 || s.Run.EP < 1 || a.Layers == 0 || a.Hybrid is not null) return this with { ExpertLaunches = 0, MoeLayerShare = 0, HostOverheadShare = graphed ? 0 : 1 };
        // Token-drop rows never wait for the GPU: Megatron-Bridge's apply_moe_token_drop (capacity factor 1.0,
        // moe_pad_expert_input_to_capacity=True, alltoall dispatcher only) makes Megatron-Core's alltoall dispatcher
        // drop and pad, whose tokens-per-expert counts are host constants (the capacity; preprocess returns a CPU
        // torch.full and sets no cuda_sync_point, token_dispatcher.py), so the host launches the experts ahead of the GPU.
        var synced = !s.Run.TokenDrop && !graphed;
        var moeShare = a.MoeLayers / (double)a.Layers;
        return this with
        {
            ExpertLaunches = synced ? a.Experts / (double)s.Run.EP * (s.Run.Recompute ? 2 : 1) : 0,
            MoeLayerShare = moeShare,
            ForwardShare = s.Run.Recompute ? 0.5 : 1.0 / 3,
            HostOverheadShare = graphed ? 0 : synced ? 1 - moeShare : 1,
        };
    }
}

/// <summary>The rungs of the ablation, each adding one kind of fact to the one before.</summary>
/// <para><see cref="Launch"/>: the row's published Megatron-Bridge launch settings (all-to-all overlap, dispatcher); the same step as <see cref="Topology"/> where none were found or they change nothing the core prices.</para>
public enum ModernRung { Naive, Architecture, Precision, Layout, Topology, Launch }

/// <summary>One expressible row with everything each rung needs (no fitted factor applied yet).</summary>
/// <param name="Steps">Per rung, the simulated step and the factors for what its DAG leaves out.</param>
public sealed record ModernRowModel(ModernScenario Scenario, IReadOnlyDictionary<ModernRung, (ModernStep Step, PartFactors Factors)> Steps, string? PrecisionNote)
{
    public ModernRun Run => Scenario.Run;

    /// <summary>The full model's step (all rungs on, launch settings included).</summary>
    public ModernStep Topology => Steps[ModernRung.Launch].Step;

    /// <summary>Predicted step seconds under a fit at a rung (default: all rungs on).</summary>
    public double Seconds(GenerationFit f, ModernRung rung = ModernRung.Launch)
    {
        var (step, k) = Steps[rung];
        var p = step.Parts;
        return f.Gemm * (k.Dense * p.DenseGemm + k.Logits * p.Logits) + f.GroupedGemm * k.Expert * p.ExpertGemm + f.Attention * k.Attention * p.Attention
            + f.MemoryBound * (p.Elementwise + k.ExtraMemorySeconds) + f.AllToAll * p.AllToAll + p.OtherCommunication + f.Ssd * p.Ssd + k.TensorParallelExposed * p.TensorParallel
            + f.DataParallelExposed * step.DataParallelSeconds + FrameworkOverheadSeconds(f, rung)
            + ExposedLaunchSeconds(f, rung) + ExposedOffloadSeconds(f, rung);
    }

    /// <summary>The fitted per-layer-microbatch framework overhead on the critical path, none under a full-iteration CUDA graph (<see cref="PartFactors.HostOverheadShare"/>).</summary>
    public double FrameworkOverheadSeconds(GenerationFit f, ModernRung rung = ModernRung.Launch)
    {
        var (step, k) = Steps[rung];
        return k.HostOverheadShare * f.OverheadMicroseconds * 1e-6 * step.LayerMicrobatches;
    }

    /// <summary>
    /// Seconds CPU activation offloading leaves on the critical path (<see cref="PartFactors.OffloadLayerVisits"/>). As
    /// Transformer Engine's double-buffered offload handler runs it (Megatron-Core's cpu_offloading_context): a layer's
    /// saved activations are copied to the host on their own stream while the next layer computes its forward, and the
    /// next layer's forward waits for that copy; in the backward the layer's activations are reloaded while the layer
    /// above computes its backward. Per offloaded layer-microbatch, with x the transfer seconds and t the forward seconds
    /// of one layer under the fit (its GEMM, attention and memory-bound parts per layer-microbatch, one third of the
    /// layer's work without recomputation; the backward twice that): max(0, x - t) + max(0, x - 2 t).
    /// </summary>
    public double ExposedOffloadSeconds(GenerationFit f, ModernRung rung = ModernRung.Launch)
    {
        var (step, k) = Steps[rung];
        if (k.OffloadLayerVisits <= 0 || step.LayerMicrobatches <= 0) return 0;
        var forward = LayerComputeSeconds(f, step.Parts, k) / step.LayerMicrobatches / 3;
        var x = k.OffloadSecondsPerLayer;
        return k.OffloadLayerVisits * (Math.Max(0, x - forward) + Math.Max(0, x - 2 * forward));
    }

    /// <summary>
    /// Seconds the GPU idles while the host launches a synchronised MoE layer's forward after its token-count
    /// synchronisation (<see cref="PartFactors.ExpertLaunches"/>): per MoE-layer visit, max(0, launches x the fitted host
    /// time per expert - the GPU seconds of a layer's forward under the fit), times the MoE-layer visits. A layer's
    /// forward is <see cref="PartFactors.ForwardShare"/> of the GPU time per layer-microbatch visit of the step's
    /// layer parts (GEMMs but the logits, attention, memory-bound work, exposed all-to-all).
    /// </summary>
    public double ExposedLaunchSeconds(GenerationFit f, ModernRung rung = ModernRung.Launch)
    {
        var (step, k) = Steps[rung];
        var visits = step.LayerMicrobatches * k.MoeLayerShare;
        if (k.ExpertLaunches <= 0 || visits <= 0 || f.ExpertLaunchMicroseconds <= 0) return 0;
        var layerForward = (LayerComputeSeconds(f, step.Parts, k) + f.AllToAll * step.Parts.AllToAll) * k.ForwardShare / step.LayerMicrobatches;
        return visits * Math.Max(0, k.ExpertLaunches * f.ExpertLaunchMicroseconds * 1e-6 - layerForward);
    }

    /// <summary>The layers' GPU compute of a step under a fit: GEMMs but the logits, attention, memory-bound work (what a layer's visits are made of).</summary>
    private static double LayerComputeSeconds(GenerationFit f, StepParts p, PartFactors k) =>
        f.Gemm * k.Dense * p.DenseGemm + f.GroupedGemm * k.Expert * p.ExpertGemm + f.Attention * k.Attention * p.Attention + f.MemoryBound * (p.Elementwise + k.ExtraMemorySeconds);

    /// <summary>The predicted breakdown under a fit (all rungs on): seconds per part.</summary>
    public IReadOnlyDictionary<string, double> Breakdown(GenerationFit f)
    {
        var (step, k) = Steps[ModernRung.Launch];
        var p = step.Parts;
        return new Dictionary<string, double>
        {
            ["dense GEMMs"] = f.Gemm * k.Dense * p.DenseGemm,
            ["logits"] = f.Gemm * k.Logits * p.Logits,
            ["expert GEMMs"] = f.GroupedGemm * k.Expert * p.ExpertGemm,
            ["attention"] = f.Attention * k.Attention * p.Attention,
            ["Mamba SSD kernels"] = f.Ssd * p.Ssd,
            ["elementwise"] = f.MemoryBound * (p.Elementwise + k.ExtraMemorySeconds),
            ["all-to-all exposed"] = f.AllToAll * p.AllToAll,
            ["other communication"] = p.OtherCommunication + k.TensorParallelExposed * p.TensorParallel,
            ["DP sync exposed"] = f.DataParallelExposed * step.DataParallelSeconds,
            ["framework overhead"] = FrameworkOverheadSeconds(f),
            ["host-bound MoE forward"] = ExposedLaunchSeconds(f),
            ["CPU offload exposed"] = ExposedOffloadSeconds(f),
        };
    }

    /// <summary>
    /// The predicted step (all rungs, fitted) split as notebook 08 shows it for MoE runs: expert GEMMs, attention
    /// (projections and core), other GEMMs (dense, logits), all-to-all exposed, other communication, elementwise and
    /// overhead, pipeline bubble, DP sync exposed. The parts are critical-path seconds, so nothing is idle on the path;
    /// the bubble (fill and drain) is taken out of every pipeline part in proportion, as the law adds it.
    /// </summary>
    public IReadOnlyList<(string Part, double Seconds)> MoeBreakdown(GenerationFit f)
    {
        var b = Breakdown(f);
        var pipeline = b.Where(k => k.Key != "DP sync exposed").Sum(k => k.Value);
        var rawPipeline = Topology.Parts.Total;
        var bubbleShare = rawPipeline > 0 ? Math.Clamp(Topology.BubbleSeconds / rawPipeline, 0, 1) : 0;
        var keep = 1 - bubbleShare;
        return
        [
            ("expert GEMMs", keep * b["expert GEMMs"]),
            ("attention", keep * (b["attention"] + b["Mamba SSD kernels"])),   // sequence mixing: attention or the Mamba mixer's kernels
            ("dense GEMMs and logits", keep * (b["dense GEMMs"] + b["logits"])),
            ("all-to-all exposed", keep * b["all-to-all exposed"]),
            ("other communication", keep * b["other communication"]),
            ("elementwise and overhead", keep * (b["elementwise"] + b["framework overhead"] + b["host-bound MoE forward"] + b["CPU offload exposed"])),
            ("pipeline bubble", bubbleShare * pipeline),
            ("DP sync exposed", b["DP sync exposed"]),
        ];
    }

    /// <summary>What the model does not capture for this row yet (known gaps that apply to it), for the worst-rows table.</summary>
    public IReadOnlyList<string> KnownGaps()
    {
        var gaps = new List<string>();
        var run = Run;
        var a = Scenario.Architecture;
        if (Scenario.Preset is null && run.Framework == ModernFramework.MegatronBridge)
            gaps.Add((a.Mla is not null ? "MLA" : a.QueryGroups < a.AttentionHeads ? "GQA" : "attention") + " projections, SwiGLU and shared experts scaled by FLOPs (no model preset)");
        if (run.IsMoe) gaps.Add("expert GEMMs priced as one shape per expert at the balanced token count (no grouped-GEMM small-m penalty, issue 12)");
        if (a.DenseLayers > 0) gaps.Add($"the {a.DenseLayers} dense first layers priced by FLOPs (the slice is all MoE layers)");
        if (Scenario.Launch is { } launch) gaps.AddRange(launch.Unexpressed().Select(u => $"launch setting not priced: {u}"));
        else if (run.Framework == ModernFramework.MegatronBridge) gaps.Add($"plain launch settings: {Scenario.LaunchNote}");
        if (run.IsMoe && run.EP > 8 && Scenario.Hardware.GpusPerNode <= 8 && Scenario.LaunchOverlap == MoeAllToAllOverlap.None) gaps.Add($"EP {run.EP} spans nodes: all-to-all priced as one flat exchange on datasheet NICs, no DeepEP/overlap with compute (issues 12, 13)");
        if (run.TokenDrop) gaps.Add("token dropping (capacity factor) not modelled: priced as dropless");
        if (a.Hybrid is not null) gaps.Add("Mamba-2 mixer kernels (mamba_ssm's SSD Triton kernels, conv1d, gated norm) priced by the HBM bytes they stream, their shortfall one fitted factor per generation (no measured kernel efficiency)");
        if (a.MoeLatentSize is not null) gaps.Add("latent MoE projections taken as replicated over TP");
        if (Scenario.Bf16TailLayers > 0)
            gaps.Add($"the NVFP4 recipe's last {Scenario.Bf16TailLayers} of {a.Layers} layers priced in BF16 (nemotron_3_super_bf16_with_nvfp4_mixed; which recipe ran this release is not stated); per-module quantization choices (te_quant.cfg) not priced");
        if (PrecisionNote is not null) gaps.Add(PrecisionNote);
        if (Scenario.Preset is null && run.Precision != TrainingPrecision.Bf16) gaps.Add("quantize/cast passes of the recipe not priced");
        if (a.SlidingWindow > 0) gaps.Add("sliding-window attention at the tile model's efficiency for 128-token windows");
        if (Scenario.MtpLayers > 0) gaps.Add("MTP layer priced as FLOPs on the logits and layer parts");
        if (run.PP > 1 && Scenario.Architecture.Layers % run.PP != 0 && !Scenario.LossInPipelineSplit) gaps.Add($"uneven pipeline ({a.Layers} layers over PP {run.PP}): the largest stage assumed everywhere (issue 12)");
        if (run.IsMegatronFsdp)
            gaps.Add(Scenario.CpuOffloadedLayers > 0 && Scenario.Hardware.HostLink is not null
                ? $"CPU activation offloading of {Scenario.CpuOffloadedLayers} layers priced by bytes over the host link, overlapped with the next layer (TE's double buffer); the host link's bandwidth under two GPUs' traffic ASSUMED (an even split of NVLink-C2C)"
                : "Megatron-FSDP as launched offloads activations to the CPU (cpu_offloading_num_layers): not priced (no offload count or no host link in the description)");
        if (run.Framework == ModernFramework.MosaicMpt)
        {
            gaps.Add("FSDP per-layer gathers and reduce-scatters priced on the preset's datasheet links (NCCL over RoCE not measured)");
            if (run.SequenceLength >= 16384) gaps.Add($"long sequence ({run.SequenceLength}): FlashAttention efficiency at this length priced by the tile model");
            gaps.Add("ALiBi bias not priced");
        }
        return gaps;
    }

    /// <summary>The row's metric for a predicted step: model TFLOP/s per GPU (Megatron-Bridge), MFU % (MPT).</summary>
    public double Metric(double seconds) => Run.Framework == ModernFramework.MosaicMpt
        ? Run.MeasuredMfuPct!.Value * Run.MeasuredIterationSeconds / seconds
        : Scenario.PublishedFlops.Total * Run.GlobalBatch / (Run.Gpus * seconds) / 1e12;

    public double MeasuredMetric => Run.Framework == ModernFramework.MosaicMpt ? Run.MeasuredMfuPct!.Value : Run.MeasuredTflopsPerGpu;

    /// <summary>
    /// The prediction's relative error under a fit in the row's own metric (model TFLOP/s per GPU, or MFU), as the suite
    /// reports it: predicted / measured - 1. The fit minimises its mean absolute value, so it minimises the MAPE it is
    /// judged by; both metrics go as 1 / step seconds, so this is measured seconds / predicted seconds - 1, which a
    /// prediction too fast by a factor pays more for than one too slow by the same factor (a step-seconds MAPE pays the
    /// reverse).
    /// </summary>
    public double MetricError(GenerationFit f) => Metric(Seconds(f)) / MeasuredMetric - 1;
}

/// <summary>One row's prediction in its own metric, in-sample and leave-one-model-out.</summary>
public sealed record ModernRowResult(ModernRowModel Row, double Measured, double InSample, double LeaveOneModelOut)
{
    public double InSampleErrorPct => 100 * (InSample - Measured) / Measured;
    public double LomoErrorPct => 100 * (LeaveOneModelOut - Measured) / Measured;
}

/// <summary>One rung of the ablation: MAPE over the expressible rows with that much of the model switched on.</summary>
public sealed record ModernAblationRung(string Name, string What, double? MapePct, IReadOnlyDictionary<string, double> MapeByGroup, string? Status = null);

/// <summary>The whole training-modern suite: predictions, fits, ablation and the rows not expressed.</summary>
public sealed record ModernSuiteResult(
    IReadOnlyList<ModernRowResult> Rows,
    IReadOnlyList<UnexpressedRun> Unexpressed,
    IReadOnlyDictionary<string, GenerationFit> Fits,
    IReadOnlyList<ModernAblationRung> Ablation,
    long SimulatedOperations)
{
    public static double Mape(IEnumerable<double> errorsPct) => errorsPct.Select(Math.Abs).DefaultIfEmpty(double.NaN).Average();

    /// <summary>MAPE in-sample and LOMO per key (family, system, precision or target group).</summary>
    public IReadOnlyList<(string Key, int Rows, double InSample, double Lomo)> By(Func<ModernRowResult, string> key) => By(Rows, key);

    /// <summary>MAPE in-sample and LOMO per key over some of the rows (one target group's).</summary>
    public static IReadOnlyList<(string Key, int Rows, double InSample, double Lomo)> By(IEnumerable<ModernRowResult> rows, Func<ModernRowResult, string> key) =>
        rows.GroupBy(key).OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => (g.Key, g.Count(), Mape(g.Select(r => r.InSampleErrorPct)), Mape(g.Select(r => r.LomoErrorPct)))).ToArray();

    /// <summary>Each target group's leave-one-model-out MAPE against its target (<see cref="ModernSuite.TargetsPct"/>).</summary>
    public IReadOnlyList<ModernTargetVerdict> Verdicts() =>
        By(r => r.Row.Run.TargetGroup).Where(g => ModernSuite.TargetsPct.ContainsKey(g.Key))
            .Select(g => new ModernTargetVerdict(g.Key, g.Rows, g.Lomo, ModernSuite.TargetsPct[g.Key])).ToArray();

    /// <summary>
    /// Where a target group's leave-one-model-out error comes from, one entry per model family, largest share first:
    /// the family's rows and MAPE, its share of the group's summed absolute error, and the group's MAPE over the other
    /// families' rows (what the group would score were that family predicted exactly as well as the rest).
    /// </summary>
    public IReadOnlyList<ModernFamilyShare> ErrorShares(string group)
    {
        var rows = Rows.Where(r => r.Row.Run.TargetGroup == group).ToArray();
        var total = rows.Sum(r => Math.Abs(r.LomoErrorPct));
        return rows.GroupBy(r => r.Row.Run.Family)
            .Select(f => new ModernFamilyShare(f.Key, f.Count(), Mape(f.Select(r => r.LomoErrorPct)),
                total > 0 ? 100 * f.Sum(r => Math.Abs(r.LomoErrorPct)) / total : 0,
                Mape(rows.Where(r => r.Row.Run.Family != f.Key).Select(r => r.LomoErrorPct))))
            .OrderByDescending(f => f.SharePct).ThenBy(f => f.Family, StringComparer.Ordinal).ToArray();
    }
}

/// <summary>A target group's leave-one-model-out MAPE against its target; <see cref="MarginPts"/> is positive when met.</summary>
public sealed record ModernTargetVerdict(string Group, int Rows, double LomoPct, double TargetPct)
{
    public bool Met => LomoPct <= TargetPct;
    public double MarginPts => TargetPct - LomoPct;
    public string Text => Met ? $"met by {MarginPts:F1} pts" : $"missed by {-MarginPts:F1} pts";
}

/// <summary>One family's part of a target group's leave-one-model-out error (<see cref="ModernSuiteResult.ErrorShares"/>).</summary>
/// <param name="SharePct">The family's share of the group's summed absolute error, %.</param>
/// <param name="GroupLomoWithoutPct">The group's MAPE over the other families' rows (NaN when the family is the whole group).</param>
public sealed record ModernFamilyShare(string Family, int Rows, double LomoPct, double SharePct, double GroupLomoWithoutPct);

/// <summary>
/// The training-modern validation suite over <c>training_modern_public.csv</c>: every row written as a scenario
/// (<see cref="ModernPredictor.ScenarioOf"/>) or listed with its reason; predicted from a DAG slice and the pipeline law
/// (<see cref="ModernPredictor"/>); compared in the row's own metric; one <see cref="GenerationFit"/> per GPU generation
/// fitted to minimise the MAPE of the rows' own metric (<see cref="ModernRowModel.MetricError"/>; Nelder-Mead on the log of each factor, a weak pull towards 1 for factors the rows do not
/// constrain), with leave-one-model-out cross-validation beside the in-sample error; and an ablation.
/// </summary>
public static class ModernSuite
{
    public const string Name = "training-modern";
    public const string File = "training_modern_public.csv";

    /// <summary>Targets on leave-one-model-out MAPE (issue 14).</summary>
    public static readonly IReadOnlyDictionary<string, double> TargetsPct = new Dictionary<string, double> { ["moe"] = 12, ["dense"] = 8, ["mpt"] = 10, ["hybrid"] = 12, ["megatron-fsdp"] = 8 };

    private static readonly object Gate = new();
    private static readonly Dictionary<string, ModernSuiteResult> Cache = new();

    /// <summary>The suite on a data folder, computed once per process (the notebook, the CLI and the tests share it).</summary>
    public static ModernSuiteResult Run(PublicData data)
    {
        lock (Gate)
        {
            if (!Cache.TryGetValue(data.Directory, out var result))
                Cache[data.Directory] = result = Run(ModernRun.Read(data.PathOf(File)), ModernPredictor.Datasheet);
            return result;
        }
    }

    public static ModernRowModel Model(ModernScenario s, ModernPredictor predictor)
    {
        var run = s.Run;
        var hw = s.Hardware;
        var naiveHw = NaiveHardware(hw);
        var v = s.VirtualStages;
        var naive = predictor.Predict(s, naiveHw, 1, priceDataParallel: false);
        var steps = new Dictionary<ModernRung, (ModernStep, PartFactors)> { [ModernRung.Naive] = (naive, PartFactors.One) };
        string? note;
        if (s.Preset is { } preset)
        {
            // The blocks build the architecture (GQA/MLA, SwiGLU, shared experts, causal and sliding-window attention,
            // router and permutation passes) and the recipe (GEMM dtype, quantize passes); FLOP factors cover only what
            // the all-MoE slice leaves out: dense first layers and MTP.
            var full = s.ArchitectureFlops;
            var slice = s.SliceArchitectureFlops;
            double R(double a, double b) => b > 0 ? a / b : 1;
            var k = run.Framework == ModernFramework.MosaicMpt ? PartFactors.One
                : new PartFactors(R(full.DenseGemms, slice.DenseGemms), R(full.RoutedExperts, slice.RoutedExperts), R(full.SequenceMixing, slice.SequenceMixing), R(full.Logits, slice.Logits));
            var withRecipe = (preset with { Precision = s.Recipe }).Validated();
            // A recipe that keeps the last layers' GEMMs in BF16 (Megatron's num_layers_at_end_in_bf16): the step mixes the
            // recipe's and BF16's in the layer share of those layers (ModernStep.Mix).
            var tail = s.Bf16TailLayers / (double)s.Architecture.Layers;
            var bf16 = tail > 0 ? (preset with { Precision = PrecisionRecipe.Get("bf16") }).Validated() : null;
            ModernStep Recipe(HardwareSpec h, int stages, bool dp, bool launched = false)
            {
                var q = predictor.Predict(s, h, stages, dp, withRecipe, launched);
                return bf16 is null ? q : ModernStep.Mix(q, predictor.Predict(s, h, stages, dp, bf16, launched), tail);
            }
            var arch = predictor.Predict(s, naiveHw, 1, false, preset);
            var precision = Recipe(naiveHw, 1, false);
            var layout = Recipe(naiveHw, v, true);
            var topology = ReferenceEquals(naiveHw, hw) ? layout : Recipe(hw, v, true);
            steps[ModernRung.Architecture] = (arch, k);
            steps[ModernRung.Precision] = (precision, k);
            steps[ModernRung.Layout] = (layout, k);
            steps[ModernRung.Topology] = (topology, k);
            var launchFactors = s.TpCommOverlap ? k with { TensorParallelExposed = PartFactors.TpCommOverlapExposedShare } : k;
            steps[ModernRung.Launch] = (ChangesPricing(s) ? Recipe(hw, v, true, launched: true) : topology,
                run.Framework == ModernFramework.MosaicMpt ? launchFactors : launchFactors.WithExpertLaunches(s).WithCpuOffload(s));
            note = s.RecipeNote;
        }
        else
        {
            // No preset: the architecture by FLOP ratios over the core's plain model, precision by peak ratio.
            var layout = predictor.Predict(s, naiveHw, v, priceDataParallel: true);
            var topology = ReferenceEquals(naiveHw, hw) ? layout : predictor.Predict(s, hw, v, priceDataParallel: true);
            var archF = s.ArchitectureFlops;
            var core = s.ModelFlops;
            double Ratio(double a, double b) => b > 0 ? a / b : 1;
            var (q, n) = PrecisionFactor(run.Precision, hw.Gpu);
            note = n;
            var a = new PartFactors(Ratio(archF.DenseGemms, core.DenseGemms), Ratio(archF.RoutedExperts, core.RoutedExperts), Ratio(archF.AttentionCore, core.AttentionCore),
                Ratio(archF.Logits, core.Logits), MoeMemorySeconds(s, naive));
            var withPrecision = a with { Dense = a.Dense * q, Expert = a.Expert * q };
            steps[ModernRung.Architecture] = (naive, a);
            steps[ModernRung.Precision] = (naive, withPrecision);
            steps[ModernRung.Layout] = (layout, withPrecision with { ExtraMemorySeconds = MoeMemorySeconds(s, layout) });
            steps[ModernRung.Topology] = (topology, withPrecision with { ExtraMemorySeconds = MoeMemorySeconds(s, topology) });
            var launched = ChangesPricing(s) ? predictor.Predict(s, hw, v, priceDataParallel: true, asLaunched: true) : topology;
            steps[ModernRung.Launch] = (launched, (withPrecision with { ExtraMemorySeconds = MoeMemorySeconds(s, launched) }).WithExpertLaunches(s));
        }
        return new ModernRowModel(s, steps, note);
    }

    /// <summary>Whether the row's launch settings change what the core prices (all-to-all overlap, a non-NCCL dispatcher, a fused grouped MLP over a clamped GLU, or selective recomputation); otherwise the launch rung is the topology step.</summary>
    public static bool ChangesPricing(ModernScenario s) => s.LaunchOverlap != MoeAllToAllOverlap.None || (s.LaunchAllToAll != AllToAllImplementation.Nccl && s.Run.EP > 1) || s.LaunchFusedGroupedMlp
        || s.LaunchRecomputeModules != RecomputeModules.None;

    /// <summary>
    /// The naive rung's hardware: the preset with NVLink domains of at most 8 GPUs, as a DGX-style node (an NVL72 rack
    /// as if it were 8-GPU nodes), and its links at line rate (no measured point-to-point fraction,
    /// <see cref="LinkSpec.PointToPointEfficiency"/>: the datasheet's links, as the founding document prices them); the
    /// same object when the preset already is both. The topology rung adds both back.
    /// </summary>
    public static HardwareSpec NaiveHardware(HardwareSpec hw)
    {
        var naive = EightGpuDomains(hw);
        return naive.IntraNode.PointToPointEfficiency == 1 && naive.InterNode.PointToPointEfficiency == 1 ? naive
            : naive with { IntraNode = naive.IntraNode with { PointToPointEfficiency = 1 }, InterNode = naive.InterNode with { PointToPointEfficiency = 1 } };
    }

    /// <summary>
    /// The preset with NVLink domains of at most 8 GPUs; the same object when its domain is already 8 GPUs or fewer.
    /// Written as a preset override, <c>{"preset", "gpus", "gpusPerNode", "gpusPerNvlinkDomain"}</c>; a hardware
    /// description without the NVLink-domain field (before issue 13) treats a node as the domain, so only gpusPerNode is set.
    /// </summary>
    private static HardwareSpec EightGpuDomains(HardwareSpec hw)
    {
        var domainProperty = typeof(HardwareSpec).GetProperty("GpusPerNvlinkDomain");
        var domain = domainProperty?.GetValue(hw) is int d ? d : hw.GpusPerNode;
        if (domain <= 8) return hw;
        string Override(bool withDomain) => string.Create(CultureInfo.InvariantCulture,
            $"{{\"preset\": \"{hw.Name}\", \"gpus\": {hw.GpuCount}, \"gpusPerNode\": {Math.Min(8, hw.GpusPerNode)}{(withDomain ? ", \"gpusPerNvlinkDomain\": 8" : "")}}}");
        HardwareSpec Read(string text)
        {
            using var o = JsonObjectReader.Parse(text, "naive hardware");
            return HardwareSpec.Read(new JsonObjectReader(o.RootElement, "hardware", "naive hardware"));
        }
        return Read(Override(withDomain: domainProperty is not null));
    }

    /// <summary>
    /// Memory-bound MoE passes per step: per MoE layer and microbatch, with T = micro-batch x sequence / TP tokens per
    /// rank, the permutation reads T h and writes T k h elements, the unpermutation the reverse, the gated activation
    /// reads 2 T k F and writes T k F; backward moves twice the forward bytes, recompute once more; bf16 elements at
    /// the GPU's HBM bandwidth. Spread over the MoE share of the stage's layer-microbatch visits.
    /// </summary>
    public static double MoeMemorySeconds(ModernScenario s, ModernStep step)
    {
        var a = s.Architecture;
        if (a.Experts == 0) return 0;
        double t = s.Run.MicroBatch * (double)s.Run.SequenceLength / s.Run.TP, h = a.HiddenSize, k = a.TopK, f = a.MoeFfnHiddenSize / (double)s.Run.TP;
        var forward = 2.0 * (2 * t * h * (1 + k) + (a.Swiglu ? 3 : 0) * t * k * f);
        var perVisit = forward * (3 + (s.Run.Recompute ? 1 : 0)) / s.Hardware.Gpu.HbmBytesPerSecond;
        return perVisit * step.LayerMicrobatches * a.MoeLayers / a.Layers;
    }

    /// <summary>GEMM time at the recipe's rate relative to bf16: peak(bf16) / peak(recipe) from the GPU's description.</summary>
    public static (double Factor, string? Note) PrecisionFactor(TrainingPrecision p, GpuSpec gpu)
    {
        if (p == TrainingPrecision.Bf16) return (1, null);
        var bf16 = gpu.PeakFor("bf16");
        double? Peak(string d) => gpu.PeakFlopsPerSecond.TryGetValue(d, out var v) ? v : null;
        if (p == TrainingPrecision.Nvfp4)
        {
            if ((Peak("nvfp4") ?? Peak("fp4")) is { } fp4) return (bf16 / fp4, null);
            if (Peak("fp8") is { } fp8n) return (bf16 / fp8n, $"NVFP4 priced at the FP8 rate: {gpu.Name} lists no FP4 peak");
        }
        if ((Peak(p == TrainingPrecision.Mxfp8 ? "mxfp8" : "fp8") ?? Peak("fp8")) is { } fp8) return (bf16 / fp8, null);
        return (1, $"{p} priced at the bf16 rate: {gpu.Name} lists no FP8 peak");
    }

    public static ModernSuiteResult Run(IReadOnlyList<ModernRun> runs, ModernPredictor predictor)
    {
        var unexpressed = new List<UnexpressedRun>();
        var models = new List<ModernRowModel>();
        long ops = 0;
        foreach (var run in runs)
        {
            var (s, reason) = ModernPredictor.ScenarioOf(run);
            if (s is null) { unexpressed.Add(new UnexpressedRun(run, reason!)); continue; }
            try
            {
                var m = Model(s, predictor);
                ops += m.Steps.Values.Select(x => x.Step).Distinct().Sum(x => x.SimulatedOperations);
                models.Add(m);
            }
            catch (ConfigException e) { unexpressed.Add(new UnexpressedRun(run, $"the core rejects the slice: {e.Message}")); }
        }
        var fits = models.GroupBy(m => m.Run.Generation).ToDictionary(g => g.Key, g => Fit(g.Key, g.Where(InFit).ToArray()));
        var results = new List<ModernRowResult>();
        foreach (var gen in models.GroupBy(m => m.Run.Generation))
        {
            var rows = gen.ToArray();
            var fitted = rows.Where(InFit).ToArray();
            // A held-out row's model is never in the fit: the generation's fit is already its leave-one-model-out fit.
            var lomo = rows.Select(r => r.Run.Family).Distinct().ToDictionary(f => f, f => fitted.Any(r => r.Run.Family == f) ? Fit(gen.Key, fitted.Where(r => r.Run.Family != f).ToArray()) : fits[gen.Key]);
            foreach (var r in rows)
                results.Add(new ModernRowResult(r, r.MeasuredMetric, r.Metric(r.Seconds(fits[gen.Key])), r.Metric(r.Seconds(lomo[r.Run.Family]))));
        }
        return new ModernSuiteResult(results, unexpressed, fits, Ablation(models, fits, results), ops);
    }

    /// <summary>
    /// Whether hybrid (Mamba) rows enter the per-generation fit. They do: <see cref="Fit"/> fits the shared factors on
    /// the rows without Mamba layers and the Mamba SSD factor, which only hybrid rows constrain, on the hybrid rows, so
    /// every other row's prediction is what it was without them. (A joint fit of all factors over all rows, measured
    /// when this landed: SSD x5.7, per-layer overhead 0, hybrid LOMO 17.3 %, MoE 28.0 %, dense 11.6 % past its 10.5 %
    /// regression bound; before the SSD kernels were priced by their bytes and fitted: overhead 3.6 ms, dense 11.8 %.)
    /// False: hybrid rows predicted out of sample with the factors of the other rows (SSD x1).
    /// </summary>
    public const bool HybridRowsInFit = true;

    /// <summary>
    /// Whether the Megatron-FSDP rows enter the per-generation fit. They became expressible (per-layer FSDP in the slice's
    /// DAG) after the Blackwell fit was settled, and their published launch configs offload the activations of 20 to 40
    /// of the 80 layers to the CPU (Megatron-Bridge scripts/performance/configs/llama/llama3_workload_base_configs.py,
    /// <c>cpu_offloading_num_layers</c> with <c>use_megatron_fsdp</c>), which the core does not price: in the fit they pulled
    /// the per-layer overhead from 0.97 to 0.42 ms and the dense group's leave-one-model-out MAPE from 9.5 to 15.1 %.
    /// Until offloading is priced they are predicted out of sample with the factors fitted on the other rows.
    /// Offloading is priced now (<see cref="ModernRowModel.ExposedOffloadSeconds"/>: 24.0 -> 11.3 % out of the fit, after
    /// the 405B pipeline split); they stay out: all six are still too fast (+1 to +19 %, mean +11 %), so something specific
    /// to them is still missing (the host link's share under two GPUs' traffic is ASSUMED, Megatron-FSDP's own buffers
    /// and copies are not priced), and in the fit they bend the shared factors (GEMM x1.06 -> x1.14) for every group:
    /// measured with them in, Megatron-FSDP 9.1 %, dense 7.4 -> 7.7 %, MoE 26.4 -> 26.7 %, hybrid 9.9 -> 10.2 %.
    /// </summary>
    public const bool MegatronFsdpRowsInFit = false;

    /// <summary>Whether a row enters its generation's fit (see <see cref="HybridRowsInFit"/> and <see cref="MegatronFsdpRowsInFit"/>).</summary>
    public static bool InFit(ModernRowModel row) =>
        (HybridRowsInFit || row.Scenario.Architecture.Hybrid is null) && (MegatronFsdpRowsInFit || !row.Run.IsMegatronFsdp);

    /// <summary>
    /// Weight of the pull of each multiplier's logarithm towards 0 (factor 1) added to the MAPE (as a fraction): a factor
    /// off by x2 costs 0.05 x 0.48 = 2.4 points of MAPE, so a factor moves only where many rows ask for it. The exposed
    /// share of the DP synchronisation is pulled (a sixteenth as hard, on its logit) towards one half.
    /// </summary>
    public const double PriorWeight = 0.05;

    /// <summary>Nelder-Mead restarts of the shared fit from its best point (0: the single run the fit had before).</summary>
    public const int MaxRestarts = 4;

    /// <summary>
    /// The factors of one generation minimising the MAPE in the rows' own metric (<see cref="ModernRowModel.MetricError"/>) over <paramref name="rows"/> (no rows: unfitted), in two stages so
    /// that the factor only the hybrid rows constrain never moves the others: (1) the shared factors and the host time per
    /// local expert (<see cref="GenerationFit.ExpertLaunchMicroseconds"/>, which only the MoE rows whose layers
    /// synchronise with the host constrain) together on the rows without Mamba layers; (2) the Mamba SSD factor, which
    /// only hybrid rows constrain, on the hybrid rows with the factors of (1) held. A generation with hybrid rows only
    /// fits all shared factors on them at once.
    /// <para>Why the host time is in the shared stage: a synchronised MoE layer's forward is host-bound
    /// (<see cref="PartFactors.ExpertLaunches"/>) instead of paying the per-layer framework overhead
    /// (<see cref="PartFactors.HostOverheadShare"/>), so the overhead is fitted on the rows that pay it and the host
    /// time on those that launch experts, at once. The dropless dispatchers bring the tokens-per-expert counts to the host
    /// every MoE layer forward (alltoall: <c>_maybe_dtoh_and_synchronize</c> before the EP all-to-all and
    /// <c>tokens_per_expert.tolist()</c> in TEGroupedMLP.forward, Megatron-LM megatron/core/transformer/moe/
    /// token_dispatcher.py and experts.py; flex/DeepEP: DeepEP's normal dispatch returns
    /// <c>num_recv_tokens_per_expert_list</c> as a host list, "the CPU will wait for GPU's signal to arrive", DeepEP
    /// README; Megatron-Bridge's flat Qwen3 recipes set <c>moe_use_grouped_tensor</c> because "the legacy grouped MLP path
    /// syncs tokens_per_expert to the host every layer, which serializes the CPU behind the GPU"), and Transformer
    /// Engine's GroupedLinear then launches one cuBLAS GEMM per expert on Blackwell
    /// (transformer_engine/common/gemm/cublaslt_gemm.cu, nvte_multi_tensor_gemm: the CUTLASS grouped GEMM path is
    /// Hopper-only, <c>is_hopper &amp;&amp; NVTE_USE_CUTLASS_GROUPED_GEMM</c>; otherwise multi_stream_cublas_gemm loops
    /// over the GEMMs), with Python-side per-expert work around it (quantization padding, split quantize). What the joint
    /// fit replaced, and what it measured: docs/training-modern-fit.md.</para>
    /// </summary>
    /// <remarks>
    /// The terms tried on the carried rows and not shipped, each with the MAPEs it measured, are listed in
    /// docs/training-modern-fit.md (history, not code); a term that lands moves from there into this method.
    /// </remarks>
    public static GenerationFit Fit(string generation, IReadOnlyList<ModernRowModel> rows)
    {
        if (rows.Count == 0) return GenerationFit.Unfitted(generation);
        var hybrid = rows.Where(HasSsd).ToArray();
        if (hybrid.Length == rows.Count) return FitShared(generation, rows, withSsd: true);
        var others = rows.Where(r => !HasSsd(r)).ToArray();
        var shared = FitShared(generation, others, withSsd: false) with { Rows = rows.Count };
        if (hybrid.Length == 0) return shared;
        double Objective(double[] x) =>
            hybrid.Average(r => Math.Abs(r.MetricError(shared with { Ssd = Math.Exp(x[0]) }))) + PriorWeight * x[0] * x[0];
        var (best, _, _) = NelderMead.Minimize(Objective, [0], [0.3], maxIterations: 500, tolerance: 1e-10);
        return shared with { Ssd = Math.Exp(best[0]) };
    }

    /// <summary>Rows that launch experts from the host after a token-count sync (<see cref="PartFactors.ExpertLaunches"/> > 0): the only rows the host time per expert acts on.</summary>
    public static bool LaunchesExperts(ModernRowModel r) => r.Steps[ModernRung.Launch].Factors.ExpertLaunches > 0;

    private static bool HasSsd(ModernRowModel r) => r.Steps[ModernRung.Launch].Step.Parts.Ssd > 0;

    /// <summary>
    /// All factors at once over <paramref name="rows"/>: the multipliers, the DP exposure, the overhead, the host time per
    /// local expert when some row launches experts (else 0; 100 x^2 us, never negative, unpulled: it acts only on the rows
    /// whose host is slower than their layers' forward), and the Mamba SSD factor only when <paramref name="withSsd"/> (else 1).
    /// </summary>
    private static GenerationFit FitShared(string generation, IReadOnlyList<ModernRowModel> rows, bool withSsd)
    {
        var launches = rows.Any(LaunchesExperts);
        int n = 7, launch = launches ? n++ : -1, ssdAt = withSsd ? n++ : -1;
        GenerationFit Of(double[] x) => new(generation, Math.Exp(x[0]), Math.Exp(x[1]), Math.Exp(x[2]), Math.Exp(x[3]), Math.Exp(x[4]), 1 / (1 + Math.Exp(-x[5])), 100 * x[6] * x[6], rows.Count,
            withSsd ? Math.Exp(x[ssdAt]) : 1, launches ? 100 * x[launch] * x[launch] : 0);
        double Objective(double[] x)
        {
            var f = Of(x);
            var mape = rows.Average(r => Math.Abs(r.MetricError(f)));
            return mape + PriorWeight * (x[0] * x[0] + x[1] * x[1] + x[2] * x[2] + x[3] * x[3] + x[4] * x[4] + x[5] * x[5] / 16 + (withSsd ? x[ssdAt] * x[ssdAt] : 0));
        }
        // Every factor starts at 1 (log 0); the overhead and the host time per expert at 100 x 0.3^2 = 9 us; the DP
        // exposure's logit takes steps of 1, the others 0.3.
        var start = new double[n];
        var steps = Enumerable.Repeat(0.3, n).ToArray();
        start[6] = 0.3;
        steps[5] = 1;
        if (launches) start[launch] = 0.3;
        var (best, value, _) = NelderMead.Minimize(Objective, start, steps, maxIterations: 3000, tolerance: 1e-10);
        // Nelder-Mead stalls on the kinks of an absolute-error objective: restarted from its best point with a fresh simplex
        // until a restart gains nothing (at most four), the fit no longer depends on where the first simplex collapsed.
        for (var restart = 0; restart < MaxRestarts; restart++)
        {
            var (x, v, _) = NelderMead.Minimize(Objective, best, steps, maxIterations: 3000, tolerance: 1e-10);
            if (v >= value - 1e-7) break;
            (best, value) = (x, v);
        }
        return Of(best);
    }

    private static ModernAblationRung Rung(string name, string what, IReadOnlyList<ModernRowModel> rows, Func<ModernRowModel, double> seconds, string? status = null)
    {
        var errors = rows.Select(r => (r.Run.TargetGroup, Err: 100 * (r.Metric(seconds(r)) - r.MeasuredMetric) / r.MeasuredMetric)).ToArray();
        return new ModernAblationRung(name, what, errors.Length == 0 ? null : Mape(errors.Select(e => e.Err)),
            errors.GroupBy(e => e.TargetGroup).ToDictionary(g => g.Key, g => Mape(g.Select(e => e.Err))), status);
    }

    private static double Mape(IEnumerable<double> e) => ModernSuiteResult.Mape(e);

    public static IReadOnlyList<ModernAblationRung> Ablation(IReadOnlyList<ModernRowModel> rows, IReadOnlyDictionary<string, GenerationFit> fits, IReadOnlyList<ModernRowResult> results)
    {
        var u = GenerationFit.Unfitted("none");
        var lomo = results.Select(r => (r.Row.Run.TargetGroup, r.LomoErrorPct)).ToArray();
        return
        [
            Rung("naive", "the row's columns as the founding model description writes them: MHA with head dim hidden/heads, two-matrix FFN at the expert width, every layer MoE, no causal mask, bf16 everywhere; plain 1F1B, no DP sync; NVLink domains of at most 8 GPUs; tile-wave GEMMs, the main branch's collectives", rows, r => r.Seconds(u, ModernRung.Naive)),
            Rung("+ architecture", "the model preset's blocks in the DAG (issue 11): GQA/MLA projections, SwiGLU, shared experts, router and token permutation passes, causal and sliding-window attention; dense first layers and MTP by FLOP ratios (the slice is all MoE layers); MPT: causal attention", rows, r => r.Seconds(u, ModernRung.Architecture)),
            Rung("+ precision recipe", "the precision recipe in the DAG (issue 11): linear-layer GEMMs at the recipe's peak with their quantize passes; attention, norms, logits and communication stay bf16", rows, r => r.Seconds(u, ModernRung.Precision)),
            Rung("+ Megatron-Core layout", "interleaved virtual stages in the pipeline law, distributed-optimizer reduce-scatter/all-gather over DP (and DP/EP for experts), all exposed; fully sharded runs (MPT FSDP, Megatron-FSDP) as ZeRO-3 in the slice's DAG, per-layer gathers with one-layer prefetch (context parallelism is in the slice's DAG; expert-tensor folding, all-to-all overlap and DualPipe are not priced yet)", rows, r => r.Seconds(u, ModernRung.Layout)),
            Rung("+ topology", "the preset's NVLink domain (72 GPUs on NVL72 racks) for the all-to-all, pipeline and DP groups, and its NIC's measured point-to-point fraction for NCCL's sends and all-to-alls (the presets' interNode.pointToPointEfficiency; the rungs before price links at line rate); the collectives' algorithms are the same in every rung", rows, r => r.Seconds(u, ModernRung.Topology)),
            Rung("+ launch settings", "each Megatron-Bridge row as launched (data/validation/megatron-bridge-launches.json, NVIDIA's published performance configs): Megatron-Core's 1F1B all-to-all overlap where moe_a2a_overlap is set, DeepEP/HybridEP dispatchers as DeepEP normal all-to-alls (each token sent once per distinct destination node over RDMA and once per distinct rank over NVLink); rows without published settings stay plain; a full-iteration CUDA graph takes away the experts' host launches and the per-layer framework overhead (both priced by the fitted rungs only); the launch's selective recompute (recompute_modules) reruns those modules inside the backward; scoped CUDA graphs are not priced", rows, r => r.Seconds(u, ModernRung.Launch)),
            Rung("+ fitted efficiencies", "one fit per GPU generation (in-sample)", rows, r => r.Seconds(fits[r.Run.Generation])),
            new ModernAblationRung("+ fitted, leave-one-model-out", "the same fit without the predicted model's rows", lomo.Length == 0 ? null : Mape(lomo.Select(e => e.LomoErrorPct)),
                lomo.GroupBy(e => e.TargetGroup).ToDictionary(g => g.Key, g => Mape(g.Select(e => e.LomoErrorPct)))),
        ];
    }

    /// <summary>The suite as validation suites: one per target group (LOMO predictions, target on them), notes with the tables.</summary>
    public static IReadOnlyList<ValidationSuite> Suites(ModernSuiteResult r)
    {
        string F(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
        var suites = new List<ValidationSuite>();
        foreach (var (group, unit, what) in new[] { ("moe", "model TFLOP/s per GPU", "Megatron-Bridge MoE runs"), ("dense", "model TFLOP/s per GPU", "Megatron-Bridge dense runs"), ("mpt", "MFU %", "MosaicML MPT runs (FSDP, A100-40GB)"),
            ("hybrid", "model TFLOP/s per GPU", "Megatron-Bridge hybrid Mamba MoE runs (Nemotron-3; the MoE target applies; the Mamba SSD factor fitted on them, the shared factors on the other rows)"),
            ("megatron-fsdp", "model TFLOP/s per GPU", "Megatron-Bridge dense runs with Megatron-FSDP (per-layer ZeRO-3 in the slice's DAG; the dense target applies; apart from the dense group and out of the fit: their launches' CPU activation offloading priced over the host link, a one-sided residual left)") })
        {
            var rows = r.Rows.Where(x => x.Row.Run.TargetGroup == group).ToArray();
            var cases = rows.Select(x => new ValidationCase($"{x.Row.Run.Id} {x.Row.Run.Family} {x.Row.Run.System} {x.Row.Run.PrecisionName}", x.Measured, x.LeaveOneModelOut)).ToArray();
            var notes = new List<string>
            {
                $"predicted = leave-one-model-out (the generation's factors fitted without this model's rows); in-sample MAPE {F(Mape(rows.Select(x => x.InSampleErrorPct)))} %",
            };
            if (r.Verdicts().FirstOrDefault(v => v.Group == group) is { } verdict && r.ErrorShares(group) is [var top, ..])
                notes.Add($"target {F(verdict.TargetPct)} %: {verdict.Text}; the largest share of the error: {top.Family} ({top.Rows} of {verdict.Rows} rows, {F(top.SharePct)} % of the summed absolute error" +
                    (double.IsFinite(top.GroupLomoWithoutPct) ? $"; the group without it {F(top.GroupLomoWithoutPct)} %)" : ")"));
            if (!MegatronFsdpRowsInFit && rows.Any(x => x.Row.Run.IsMegatronFsdp))
                notes.Add($"held out of the fit: the Megatron-FSDP rows are predicted with the fit of the other rows (their launch configs offload 20-92 layers' activations to the CPU, cpu_offloading_num_layers, priced over the host link; {rows.Count(x => x.Row.Run.IsMegatronFsdp && x.LomoErrorPct > 0)} of {rows.Count(x => x.Row.Run.IsMegatronFsdp)} still too fast, see ModernSuite.MegatronFsdpRowsInFit)");
            if (!HybridRowsInFit && rows.Any(x => x.Row.Scenario.Architecture.Hybrid is not null))
                notes.Add($"held out of the fit: the hybrid Mamba rows ({string.Join(", ", rows.Where(x => !InFit(x.Row)).Select(x => x.Row.Run.Family).Distinct())}) are predicted with the fit of the other rows (added after the fit was settled; refit pending)");
            notes.AddRange(r.Fits.Values.Where(f => rows.Any(x => x.Row.Run.Generation == f.Generation)).Select(f => $"fit: {f}"));
            // The group's own rows: a family, system or precision with rows in several groups (Llama-3-70B in dense and
            // megatron-fsdp, DGX-B200 in most) is reported per group.
            foreach (var (label, key) in new (string, Func<ModernRowResult, string>)[] { ("family", x => x.Row.Run.Family), ("hardware", x => x.Row.Run.System), ("precision", x => x.Row.Run.PrecisionName) })
                foreach (var g in ModernSuiteResult.By(rows, key))
                    notes.Add($"{label} {g.Key}: {g.Rows} rows, MAPE in-sample {F(g.InSample)} %, LOMO {F(g.Lomo)} %");
            if (group != "mpt")
            {
                var launched = rows.Count(x => x.Row.Scenario.Launch is not null);
                notes.Add($"launch settings (data/{BridgeLaunchCatalog.ResourceName}): {launched} of {rows.Length} rows as published, {rows.Length - launched} plain");
                foreach (var x in rows)
                    notes.Add($"launch {x.Row.Run.Id}: " + (x.Row.Scenario.Launch is { } l
                        ? (ChangesPricing(x.Row.Scenario) ? "" : "(prices as plain) ") + l.Describe()
                        : $"plain ({x.Row.Scenario.LaunchNote})")
                        + (x.Row.Scenario.SequenceParallel ? $"; Llama recipe: sequence parallel, TE userbuffers TP overlap {(x.Row.Scenario.TpCommOverlap ? "on (1/16 of the TP collectives exposed)" : "off (NVFP4)")}" : ""));
            }
            var skipped = r.Unexpressed.Where(u => u.Run.TargetGroup == group).ToArray();
            foreach (var g in skipped.GroupBy(u => u.Reason)) notes.Add($"not expressed ({g.Count()} rows): {g.Key} -- {string.Join(", ", g.Select(u => u.Run.Family).Distinct())}");
            suites.Add(new ValidationSuite($"{Name} {group}",
                $"{what}: {unit} in the row's own FLOP convention, predicted from a pipeline slice of the DAG and the pipeline law, one calibrated description per GPU generation; {rows.Length} rows predicted, {skipped.Length} not expressed",
                unit, TargetsPct[group], cases, notes, rows.Length == 0 ? "waiting: no row expressible yet" : "ok"));
        }
        return suites;
    }

    /// <summary>The ablation as suites (one per rung, MAPE in the notes; cases empty) for <c>moe validate --ablation modern</c>.</summary>
    public static ValidationReport AblationReport(PublicData data)
    {
        var r = Run(data);
        string F(double? v) => v is { } x && double.IsFinite(x) ? x.ToString("F1", CultureInfo.InvariantCulture) : "-";
        return new ValidationReport(data.Directory, r.Ablation.Select(a => new ValidationSuite($"{Name} {a.Name}", a.What, "%", null,
            r.Rows.Select(x => new ValidationCase(x.Row.Run.Id, x.Measured, x.Row.Metric(RungSeconds(a.Name, x, r)))).ToArray(),
            [$"MAPE {F(a.MapePct)} %; " + string.Join(", ", a.MapeByGroup.OrderBy(k => k.Key).Select(k => $"{k.Key} {F(k.Value)} %"))], a.Status ?? "ok")).ToArray());
    }

    /// <summary>Predicted step seconds of a row under a named rung.</summary>
    public static double RungSeconds(string rung, ModernRowResult x, ModernSuiteResult r)
    {
        var u = GenerationFit.Unfitted("none");
        var m = x.Row;
        return rung switch
        {
            "naive" => m.Seconds(u, ModernRung.Naive),
            "+ architecture" => m.Seconds(u, ModernRung.Architecture),
            "+ precision recipe" => m.Seconds(u, ModernRung.Precision),
            "+ Megatron-Core layout" => m.Seconds(u, ModernRung.Layout),
            "+ topology" => m.Seconds(u, ModernRung.Topology),
            "+ launch settings" => m.Seconds(u, ModernRung.Launch),
            "+ fitted efficiencies" => m.Seconds(r.Fits[m.Run.Generation]),
            _ => x.Row.Run.MeasuredIterationSeconds * x.Measured / x.LeaveOneModelOut,
        };
    }
}

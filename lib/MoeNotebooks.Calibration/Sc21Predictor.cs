using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration;

/// <summary>What the end-to-end predictor computed for one SC21 case.</summary>
/// <param name="Settings">How the run was launched (micro-batch, interleaving, DDP).</param>
/// <param name="PipelineSeconds">The training step of one data-parallel replica (forward, recompute, backward, optimizer).</param>
/// <param name="DataParallelSeconds">Gradient all-reduce time over the data-parallel group not hidden behind the backward.</param>
/// <param name="MicrobatchSeconds">Steady-state time per microbatch (slope of the simulated slice).</param>
/// <param name="SimulatedOperations">Operations in the DAGs that were priced and scheduled.</param>
public sealed record TrainingPrediction(TrainingCase Case, Sc21RunSettings Settings, int Microbatches, int VirtualStages, double PipelineSeconds, double DataParallelSeconds, double MicrobatchSeconds, long SimulatedOperations)
{
    public double IterationSeconds => PipelineSeconds + DataParallelSeconds;
    public double TflopsPerGpu => Case.TflopsPerGpu(IterationSeconds);
}

/// <summary>
/// Predicts SC21 Table 1 iterations with the core's training DAG (dense GPT with a 51,200-word vocabulary, forward +
/// backward + full activation recompute; <see cref="DagFactory"/>), the critical-path scheduler and one cost model
/// for every case: the calibrated model fitted to all A100-80GB fp16 GEMM measurements and to the DGX A100
/// single-node collective measurements (the two-node A100 runs are another, slower cluster than Selene's HDR InfiniBand,
/// so cross-node traffic uses the DGX-A100 datasheet links), on the DGX-A100 preset.
/// <para>Each run as launched (<see cref="Sc21RunCatalog"/>, from Megatron-LM's published script): its micro-batch
/// size, plain or interleaved 1F1B, torch DDP (gradients all-reduced bucket by bucket during the last backward) or
/// Megatron's local DDP (one all-reduce after the flush); and how Megatron-LM executed in 2021 (<see cref="Sc21Execution"/>):
/// scores materialized in HBM with softmax and dropout over them, tensor-parallel all-reduces and pipeline sends
/// blocking the compute stream, activations sent in 1/TP slices and all-gathered on the receiving stage.</para>
/// <para>Size reduction: a DP=1 replica only. With PP = 1 its whole step is simulated. With PP &gt; 1 a two-stage slice
/// (2 x layers-per-stage layers over 2 x virtual-stages chunks, same widths and vocabulary, so its last stage carries
/// the logits like the real last stage) is simulated at 4 and 8 microbatches; the difference gives the steady-state
/// time per microbatch t, and the pipeline law T(m, p) = (m + (p - 1) / v) t, written from the slice as
/// T(m1, 2) + (m - m1) t + (p - 2) t / v, extends it to p stages and m microbatches.</para>
/// </summary>
public sealed class Sc21Predictor
{
    private const int SliceMicrobatches1 = 4, SliceMicrobatches2 = 8;

    public Sc21Predictor(CostModel cost, HardwareSpec hardware, Sc21RunCatalog? runs = null)
    {
        Cost = cost;
        Hardware = hardware;
        Runs = runs ?? Sc21RunCatalog.Published;
    }

    public CostModel Cost { get; }
    public HardwareSpec Hardware { get; }
    public Sc21RunCatalog Runs { get; }

    /// <summary>The calibrated model on the shared data: A100-80GB GEMMs, DGX A100 single-node collectives.</summary>
    public static Sc21Predictor Calibrated(PublicData data)
    {
        var hardware = HardwareCatalog.Get("DGX-A100").WithGpus(4096);
        var gemm = data.Gemm().Where(g => string.Equals(g.Gpu, "A100-80GB", StringComparison.OrdinalIgnoreCase)).ToArray();
        var comm = data.Collectives().Where(c => c.System == "DGX A100 (vidur a100_dgx)" && c.Nodes == 1).ToArray();
        var compute = new CalibratedCompute(hardware.Gpu, TileWaveTable.For(hardware.Gpu), gemm, source: $"{PublicData.GemmFile} [A100-80GB]");
        var communication = CalibratedCommunication.FromMeasurements(hardware, comm, $"{PublicData.CommFile} [DGX A100, 1 node]");
        return new Sc21Predictor(new CostModel("calibrated(A100-80GB, DGX A100)", compute, communication), hardware);
    }

    public static ModelSpec ModelOf(TrainingCase c, int layers, long batch) =>
        new ModelSpec(c.Model, layers, c.Hidden, c.Heads, c.FfnHidden, Experts: 0, TopK: 1, batch, c.SequenceLength, ElementBytes: 2, Dtype: "fp16")
        { Vocabulary = c.Vocabulary }.Validated();

    /// <summary>The strategy one replica runs: TP, pp stages, the run's schedule and the catalog's execution (attention kernel, blocking communication, scatter/gather).</summary>
    public StrategySpec StrategyOf(TrainingCase c, int pp, int microbatches, int virtualStages) =>
        new StrategySpec(1, c.TP, pp, 1, Derivation.Corrected, microbatches)
        {
            Mode = WorkloadMode.Training,
            Recompute = true,
            Schedule = virtualStages > 1 ? PipelineSchedule.Interleaved : PipelineSchedule.OneFOneB,
            VirtualStages = virtualStages,
            AttentionKernel = Runs.Execution.AttentionKernel,
            OverlapCommunication = Runs.Execution.OverlapCommunication,
            ScatterGather = Runs.Execution.ScatterGather,
        }.Validated();

    public TrainingPrediction Predict(TrainingCase c) => Predict(c, Runs.For(c));

    public TrainingPrediction Predict(TrainingCase c, Sc21RunSettings settings)
    {
        string I(long v) => v.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (c.Layers % c.PP != 0) throw new ConfigException("layers", I(c.Layers), $"must divide evenly over PP = {c.PP} for this predictor");
        var sequencesPerMicrobatch = (long)c.DP * settings.MicroBatch;
        if (c.GlobalBatch % sequencesPerMicrobatch != 0)
            throw new ConfigException("global_batch_seqs", I(c.GlobalBatch), $"must divide over DP x micro-batch = {c.DP} x {settings.MicroBatch}");
        var microbatches = checked((int)(c.GlobalBatch / sequencesPerMicrobatch));
        var v = settings.VirtualStages(c);
        var model = ModelOf(c, c.Layers, c.GlobalBatch);
        var real = StrategyOf(c, c.PP, microbatches, v) with { DP = c.DP };
        var ranks = Enumerable.Range(0, c.DP).Select(dp => real.Rank(dp, 0, 0, 0)).ToArray();
        double AllReduce(double bytes) => c.DP > 1 ? Cost.Communication.Seconds(CollectivePattern.AllReduce, bytes, ranks) : 0;

        if (c.PP == 1)
        {
            var run = StrategyOf(c, 1, microbatches, 1).BuildDag(ModelOf(c, c.Layers, microbatches * (long)settings.MicroBatch)).CriticalPath(Cost);
            var dp = settings.Ddp == DdpImplementation.Torch
                ? ExposedOverlappedSync(run, model, real, microbatches - 1, AllReduce)
                : AllReduce(ParameterCounts.OnStage(model, real, 0).Total * (double)model.ElementBytes);
            return new TrainingPrediction(c, settings, microbatches, v, run.TotalSeconds, dp, run.TotalSeconds / microbatches, run.Dag.Count);
        }
        if (settings.Ddp == DdpImplementation.Torch)
            throw new ConfigException("ddp", "torch", $"is modelled for PP = 1 only (case {c.Id} has PP = {c.PP}); Megatron-LM ran pipelines with local DDP");
        var slice = ModelOf(c, 2 * (c.Layers / c.PP), SliceMicrobatches1 * (long)settings.MicroBatch);
        var dag1 = StrategyOf(c, 2, SliceMicrobatches1, v).BuildDag(slice);
        var dag2 = StrategyOf(c, 2, SliceMicrobatches2, v).BuildDag(slice with { Batch = SliceMicrobatches2 * (long)settings.MicroBatch });
        var t1 = dag1.CriticalPath(Cost).TotalSeconds;
        var t2 = dag2.CriticalPath(Cost).TotalSeconds;
        var perMicrobatch = (t2 - t1) / (SliceMicrobatches2 - SliceMicrobatches1);
        var pipeline = t1 + (microbatches - SliceMicrobatches1) * perMicrobatch + (c.PP - 2) * perMicrobatch / v;
        // Local DDP: the largest stage's fp16 gradients all-reduced over the DP group after the flush (ranks placed
        // tp-pp-dp as in Megatron, so DP peers sit on other nodes).
        var bytes = Enumerable.Range(0, c.PP).Max(s => ParameterCounts.OnStage(model, real, s).Total) * (double)model.ElementBytes;
        return new TrainingPrediction(c, settings, microbatches, v, pipeline, AllReduce(bytes), perMicrobatch, dag1.Count + dag2.Count);
    }

    /// <summary>
    /// Torch DDP: each layer's gradients are all-reduced (one after another, on their own stream) as soon as the last
    /// microbatch's backward of that layer is done on the replica; the embedding's come last. Returns how long the
    /// all-reduces run past the end of the backward.
    /// </summary>
    private static double ExposedOverlappedSync(CriticalPathResult run, ModelSpec model, StrategySpec real, int lastMicrobatch, Func<double, double> allReduce)
    {
        var dag = run.Dag;
        var layerDone = new Dictionary<int, double>();
        var backwardEnd = 0.0;
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Gpu(op) != 0 || dag.Microbatch(op) != lastMicrobatch || dag.Phase(op) is not (OpPhase.BackwardData or OpPhase.BackwardWeight)) continue;
            var finish = run.FinishSeconds(op);
            backwardEnd = Math.Max(backwardEnd, finish);
            if (dag.Layer(op) >= 0) layerDone[dag.Layer(op)] = Math.Max(layerDone.GetValueOrDefault(dag.Layer(op)), finish);
        }
        var layerBytes = ParameterCounts.PerLayer(model, real).Total * (double)model.ElementBytes;
        var free = 0.0;
        foreach (var done in layerDone.Values.Order()) free = Math.Max(free, done) + allReduce(layerBytes);
        var embeddingBytes = model.Vocabulary * model.HiddenSize / real.TP * (double)model.ElementBytes;
        free = Math.Max(free, backwardEnd) + allReduce(embeddingBytes);
        return Math.Max(0, free - backwardEnd);
    }
}

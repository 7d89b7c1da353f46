using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Calibration;

/// <summary>What the end-to-end predictor computed for one SC21 case.</summary>
/// <param name="PipelineSeconds">The 1F1B training step of one data-parallel replica (forward, recompute, backward, optimizer).</param>
/// <param name="DataParallelSeconds">The gradient all-reduce over the data-parallel group, after the pipeline flush.</param>
/// <param name="MicrobatchSeconds">Steady-state time per microbatch (slope of the simulated slice).</param>
/// <param name="SimulatedOperations">Operations in the DAGs that were priced and scheduled.</param>
public sealed record TrainingPrediction(TrainingCase Case, int Microbatches, double PipelineSeconds, double DataParallelSeconds, double MicrobatchSeconds, long SimulatedOperations)
{
    public double IterationSeconds => PipelineSeconds + DataParallelSeconds;
    public double TflopsPerGpu => Case.TflopsPerGpu(IterationSeconds);
}

/// <summary>
/// Predicts SC21 Table 1 iterations with the core's training DAG (dense GPT with a 51,200-word vocabulary, forward +
/// backward + full activation recompute, 1F1B; <see cref="DagFactory"/>), the critical-path scheduler and one cost model
/// for every case: the calibrated model fitted to all A100-80GB fp16 GEMM measurements and to the DGX A100
/// single-node collective measurements (the two-node A100 runs are another, slower cluster than Selene's HDR InfiniBand,
/// so cross-node traffic uses the DGX-A100 datasheet links), on the DGX-A100 preset.
/// <para>Assumptions, the same for every case (the table gives neither): micro-batch size 1 sequence; plain 1F1B
/// (not interleaved); gradients all-reduced in fp16 after the pipeline flush, not overlapped (Megatron-LM as of SC21).</para>
/// <para>Size reduction: a DP=1 replica only. With PP = 1 its whole step is simulated. With PP &gt; 1 a two-stage slice
/// (2 x layers-per-stage layers, same widths and vocabulary, so its last stage carries the logits like the real last
/// stage) is simulated at 4 and 8 microbatches; the difference gives the steady-state time per microbatch t, and the
/// 1F1B law T(m, p) = T(m1, 2) + (m - m1 + p - 2) t extends it to p stages and m microbatches.</para>
/// </summary>
public sealed class Sc21Predictor
{
    public const int MicrobatchSequences = 1;
    private const int SliceMicrobatches1 = 4, SliceMicrobatches2 = 8;

    public Sc21Predictor(CostModel cost, HardwareSpec hardware)
    {
        Cost = cost;
        Hardware = hardware;
    }

    public CostModel Cost { get; }
    public HardwareSpec Hardware { get; }

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

    private static StrategySpec StrategyOf(TrainingCase c, int pp, int microbatches) =>
        new StrategySpec(1, c.TP, pp, 1, Derivation.Corrected, microbatches)
        { Mode = WorkloadMode.Training, Recompute = true, Schedule = PipelineSchedule.OneFOneB }.Validated();

    private (double Seconds, long Ops) Simulate(ModelSpec model, StrategySpec st)
    {
        var dag = st.BuildDag(model);
        return (dag.CriticalPath(Cost).TotalSeconds, dag.Count);
    }

    public TrainingPrediction Predict(TrainingCase c)
    {
        if (c.Layers % c.PP != 0) throw new ConfigException("layers", c.Layers.ToString(System.Globalization.CultureInfo.InvariantCulture), $"must divide evenly over PP = {c.PP} for this predictor");
        if (c.GlobalBatch % ((long)c.DP * MicrobatchSequences) != 0) throw new ConfigException("global_batch_seqs", c.GlobalBatch.ToString(System.Globalization.CultureInfo.InvariantCulture), $"must divide over DP = {c.DP}");
        var microbatches = checked((int)(c.GlobalBatch / c.DP / MicrobatchSequences));
        double pipeline, perMicrobatch;
        long ops;
        if (c.PP == 1)
        {
            (pipeline, ops) = Simulate(ModelOf(c, c.Layers, (long)microbatches * MicrobatchSequences), StrategyOf(c, 1, microbatches));
            perMicrobatch = pipeline / microbatches;
        }
        else
        {
            var slice = ModelOf(c, 2 * (c.Layers / c.PP), SliceMicrobatches1 * MicrobatchSequences);
            var (t1, o1) = Simulate(slice, StrategyOf(c, 2, SliceMicrobatches1));
            var (t2, o2) = Simulate(slice with { Batch = SliceMicrobatches2 * MicrobatchSequences }, StrategyOf(c, 2, SliceMicrobatches2));
            perMicrobatch = (t2 - t1) / (SliceMicrobatches2 - SliceMicrobatches1);
            pipeline = t1 + (microbatches - SliceMicrobatches1 + c.PP - 2) * perMicrobatch;
            ops = o1 + o2;
        }
        // Gradient all-reduce over the DP group of the largest stage (ranks placed tp-pp-dp as in Megatron).
        var real = StrategyOf(c, c.PP, microbatches) with { DP = c.DP };
        var model = ModelOf(c, c.Layers, c.GlobalBatch);
        var bytes = Enumerable.Range(0, c.PP).Max(s => ParameterCounts.OnStage(model, real, s).Total) * (double)model.ElementBytes;
        var ranks = Enumerable.Range(0, c.DP).Select(dp => real.Rank(dp, 0, 0, 0)).ToArray();
        var dpSeconds = c.DP > 1 ? Cost.Communication.Seconds(CollectivePattern.AllReduce, bytes, ranks) : 0;
        return new TrainingPrediction(c, microbatches, pipeline, dpSeconds, perMicrobatch, ops);
    }
}

using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>One end-to-end training run of Megatron-LM SC21 Table 1 (Narayanan et al., GPT 1.7B to 1T on A100-80GB, Selene).</summary>
public sealed record TrainingCase(
    string Id,
    string Model,
    int Layers,
    long Hidden,
    int Heads,
    long FfnHidden,
    long SequenceLength,
    long Vocabulary,
    int Gpus,
    long GlobalBatch,
    int TP,
    int PP,
    int DP,
    double MeasuredTflopsPerGpu,
    int Line)
{
    /// <summary>
    /// The paper's FLOPs per iteration, F = 96 B s l h² (1 + s / (6h) + V / (16 l h)): forward, backward and the
    /// activation-recompute forward pass (so "achieved TFLOP/s" counts the recompute).
    /// </summary>
    public double FlopsPerIteration =>
        96.0 * GlobalBatch * SequenceLength * Layers * Hidden * (double)Hidden
        * (1 + SequenceLength / (6.0 * Hidden) + Vocabulary / (16.0 * Layers * Hidden));

    /// <summary>The iteration time the measured throughput implies: F / (GPUs x TFLOP/s per GPU).</summary>
    public double MeasuredIterationSeconds => FlopsPerIteration / (Gpus * MeasuredTflopsPerGpu * 1e12);

    /// <summary>TFLOP/s per GPU for a predicted iteration time, by the paper's FLOP count.</summary>
    public double TflopsPerGpu(double iterationSeconds) => FlopsPerIteration / (Gpus * iterationSeconds) / 1e12;

    public static IReadOnlyList<TrainingCase> Read(string path)
    {
        if (!File.Exists(path)) throw new ConfigException("file", $"\"{path}\"", "not found (training measurements CSV)");
        using var reader = new StreamReader(path);
        var table = CsvTable.Read(reader, path);
        table.Require("case_id", "model", "layers", "hidden", "ffn_hidden", "heads", "seq_len", "vocab", "num_gpus", "global_batch_seqs", "TP", "PP", "DP", "tflops_per_gpu");
        int I(CsvRow r, string c) => checked((int)r.PositiveLong(c));
        return table.Rows.Select(r => new TrainingCase(
            r.String("case_id"), r.String("model"), I(r, "layers"), r.PositiveLong("hidden"), I(r, "heads"), r.PositiveLong("ffn_hidden"),
            r.PositiveLong("seq_len"), r.PositiveLong("vocab"), I(r, "num_gpus"), r.PositiveLong("global_batch_seqs"),
            I(r, "TP"), I(r, "PP"), I(r, "DP"), r.PositiveDouble("tflops_per_gpu"), r.Line)).ToArray();
    }
}

/// <summary>
/// End-to-end training throughput (SC21 Table 1, TFLOP/s per GPU) predicted from the critical path of a full training step
/// (dense GPT, vocabulary, forward + backward + recompute, plain or interleaved 1F1B) of each run as published, all on one
/// hardware description (DGX-A100 preset) and one cost model (<see cref="Sc21Predictor"/>).
/// </summary>
public static class TrainingSuite
{
    public const string Name = "training-sc21";

    public static ValidationSuite Run(IReadOnlyList<TrainingCase> cases, Sc21Predictor predictor) =>
        Run(cases.Select(predictor.Predict).ToArray(), predictor.Runs);

    /// <summary>The suite of predictions already made under <paramref name="runs"/> (named in the notes).</summary>
    public static ValidationSuite Run(IReadOnlyList<TrainingPrediction> predictions, Sc21RunCatalog runs)
    {
        var results = predictions.Select(p => new ValidationCase(Id(p.Case), p.Case.MeasuredTflopsPerGpu, p.TflopsPerGpu)).ToArray();
        var x = runs.Execution;
        var notes = new List<string>
        {
            $"runs as launched: {runs.Source}",
            $"execution: attention {JsonObjectReader.Kebab(x.AttentionKernel.ToString())}, communication {(x.OverlapCommunication ? "overlapping compute" : "blocking")}, scatter/gather {(x.ScatterGather ? "on" : "off")} ({x.Source})",
        };
        notes.AddRange(predictions.Select(p => string.Create(CultureInfo.InvariantCulture,
            $"{p.Case.Model}: micro-batch {p.Settings.MicroBatch}, {p.Microbatches} microbatch{(p.Microbatches == 1 ? "" : "es")}, {(p.VirtualStages > 1 ? $"interleaved x{p.VirtualStages}" : "1F1B")}, {p.Settings.DdpName} DDP; pipeline {p.PipelineSeconds:F2} s + exposed DP all-reduce {p.DataParallelSeconds:F3} s")));
        return new ValidationSuite(Name,
            "Megatron-LM SC21 Table 1 (GPT 1.7B-1T, A100-80GB Selene): achieved TFLOP/s per GPU by the paper's FLOP count (includes the recompute forward), predicted = F / (GPUs x predicted iteration time), each run as published and executed",
            "TFLOP/s per GPU", 5, results, notes);
    }

    private static string Id(TrainingCase c) =>
        string.Create(CultureInfo.InvariantCulture, $"{c.Id} {c.Model} {c.Gpus} GPUs TP{c.TP} PP{c.PP} DP{c.DP} B={c.GlobalBatch}");
}

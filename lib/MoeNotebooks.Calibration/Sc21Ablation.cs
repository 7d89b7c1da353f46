using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration;

/// <summary>One rung of the ablation: the run settings and execution the predictor assumes, and why.</summary>
public sealed record Sc21AblationStep(string Name, string What, Sc21RunCatalog Catalog);

/// <summary>The SC21 suite predicted under one rung's assumptions, and the predictions behind it (one per case, in order).</summary>
public sealed record Sc21AblationResult(Sc21AblationStep Step, ValidationSuite Suite, IReadOnlyList<TrainingPrediction> Predictions);

/// <summary>
/// What each modelling choice of the SC21 predictor is worth: the suite is predicted from a naive start (one sequence
/// per microbatch, plain 1F1B, gradients after the flush, flash-style attention, communication overlapping compute)
/// adding one published fact at a time, with the same calibrated cost model throughout.
/// </summary>
public static class Sc21Ablation
{
    public static IReadOnlyList<Sc21AblationStep> Steps(Sc21RunCatalog published)
    {
        var naiveExecution = new Sc21Execution(AttentionKernel.Fused, OverlapCommunication: true, ScatterGather: false, "assumed");
        var noRuns = new Dictionary<string, Sc21RunSettings>();
        var naive = published with { Runs = noRuns, Execution = naiveExecution };
        var runs = naive with { Runs = published.Runs };
        var attention = runs with { Execution = naiveExecution with { AttentionKernel = published.Execution.AttentionKernel } };
        var blocking = attention with { Execution = attention.Execution with { OverlapCommunication = published.Execution.OverlapCommunication } };
        return
        [
            new("assumed", "micro-batch 1, plain 1F1B, gradients all-reduced after the flush; flash-style attention, communication overlapping compute", naive),
            new("+ published runs", "micro-batch, interleaving and DDP of each run from Megatron-LM's run_table_1.sh", runs),
            new("+ materialized attention", "scores in HBM: softmax and dropout passes over [b, heads, s, s] (no FlashAttention in 2021)", attention),
            new("+ blocking communication", "tensor-parallel all-reduces and pipeline sends hold the compute stream", blocking),
            new("+ scatter/gather", "pipeline sends in 1/TP slices, all-gathered on the receiving node (= the published model)", published),
        ];
    }

    /// <summary>The ablation on the shared data, as a report with one suite per rung ("training-sc21 &lt;rung&gt;").</summary>
    public static ValidationReport Report(PublicData data)
    {
        var results = Run(Sc21Predictor.Calibrated(data), TrainingCase.Read(data.PathOf(PublicData.TrainingFile)));
        return new ValidationReport(data.Directory, results.Select(r => r.Suite with
        {
            Name = $"{TrainingSuite.Name} {r.Step.Name}",
            Description = r.Step.What,
            Notes = r.Suite.Notes.Skip(2).ToArray(),   // the per-run lines; the execution lines are the rung's description
        }).ToArray());
    }

    /// <summary>Predicts every case under every step with <paramref name="calibrated"/>'s cost model and hardware.</summary>
    public static IReadOnlyList<Sc21AblationResult> Run(Sc21Predictor calibrated, IReadOnlyList<TrainingCase> cases) =>
        Steps(calibrated.Runs).Select(step =>
        {
            var predictor = new Sc21Predictor(calibrated.Cost, calibrated.Hardware, step.Catalog);
            var predictions = cases.Select(predictor.Predict).ToArray();
            return new Sc21AblationResult(step, TrainingSuite.Run(predictions, step.Catalog), predictions);
        }).ToArray();
}

using MoeNotebooks.Calibration;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Cli;

/// <summary>
/// What <c>moe evaluate</c> warns about: the cost model's own warnings (extrapolated shapes, datasheet fallbacks) and,
/// for a training step, whether it lies outside the range the training-modern validation covers
/// (<see cref="CalibratedRange"/>: GPU generation, precision, GPU count, sequence length, MoE).
/// </summary>
public static class EvaluationWarnings
{
    public static IReadOnlyList<string> Of(Evaluation e) =>
        e.Cost.Warnings().Concat(CalibratedRange.Warnings(e.Scenario.Model, e.Scenario.Strategy, e.Scenario.Hardware, e.Dag.Dtype)).Distinct().ToArray();
}

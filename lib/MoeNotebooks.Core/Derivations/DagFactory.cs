using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>Builds the operator DAG of a model under a strategy with the strategy's derivation.</summary>
public static class DagFactory
{
    /// <summary>
    /// Largest DAG built (operations). About 60 bytes per operation plus edges: 50 million operations is a few GB and
    /// tens of seconds. A bigger configuration is rejected up front rather than left to run for minutes.
    /// </summary>
    public const long MaxOperations = 50_000_000;

    /// <summary>
    /// Builds the DAG; the GPU count is the strategy's (EP x TP x PP x DP). <paramref name="folding"/>
    /// <see cref="DagFolding.Symmetric"/> builds one representative per symmetry class (see <see cref="OperatorDag.IsFolded"/>;
    /// the corrected derivation folds data-parallel replicas): the same total, critical path and breakdowns as the whole
    /// DAG, which <see cref="DagFolding.None"/> (the default, the oracle) builds.
    /// </summary>
    public static OperatorDag BuildDag(this StrategySpec strategy, ModelSpec model, DagFolding folding = DagFolding.None)
    {
        strategy.CheckFits(model, strategy.GpuCount);
        if (strategy.Derivation == Derivation.Corrected)
            model.CheckTensorParallel(strategy.TP, strategy.Attention == AttentionPlacement.DataParallel ? strategy.TP : strategy.TP * strategy.EP);
        if (strategy.Derivation == Derivation.Seed) folding = DagFolding.None;
        var estimate = EstimateOperations(model, strategy, folding);
        if (estimate > MaxOperations)
            throw new ConfigException("strategy", strategy.ToString(),
                string.Create(CultureInfo.InvariantCulture,
                    $"would build about {estimate:E2} operations ({model.Layers} layers x {strategy.GpuCount} GPUs x {strategy.Microbatches} microbatches); the limit is {MaxOperations:E0}: use fewer GPUs, layers or microbatches"));
        return strategy.Derivation switch
        {
            Derivation.Seed => SeedDerivation.Build(model, strategy, estimate),
            _ => CorrectedDerivation.Build(model, strategy, estimate, folding),
        };
    }

    /// <summary>
    /// An upper estimate of the operations the derivation builds: per GPU and layer, the projections, norms,
    /// collectives, two products per local head and per local expert; times microbatches; times four for a
    /// training step with recomputation (forward, recompute, dX, dW).
    /// </summary>
    public static double EstimateOperations(ModelSpec model, StrategySpec st, DagFolding folding = DagFolding.None)
    {
        if (folding == DagFolding.Symmetric && st.Derivation != Derivation.Seed && st.DP > 1)
            return EstimateOperations(model, st with { DP = 1 }) + (double)model.Layers * st.GpuCount / st.DP * 2;
        double heads = Math.Max(1, model.AttentionHeads / st.TP);
        double experts = model.IsDense ? 2 : Math.Max(1, model.Experts / Math.Max(1, st.EP)) * Math.Max(1, st.AllToAllChunks);
        var perLayerPerGpu = 16 + 2 * heads + 2 * experts + 4 * st.AllToAllChunks;
        var passes = st.Mode == WorkloadMode.Training ? (st.Recompute ? 4.0 : 3.0) : 1.0;
        var layerInstances = (double)model.Layers / st.PP * st.GpuCount * st.Microbatches;
        return layerInstances * perLayerPerGpu * passes;
    }
}

/// <summary>How much of a DAG is built: every GPU, or one representative per class of identical GPUs.</summary>
public enum DagFolding
{
    /// <summary>Every GPU's operations (the oracle for folded DAGs).</summary>
    None,

    /// <summary>
    /// One representative per symmetry class: data-parallel replica 0 stands for every replica (identical by
    /// construction); collectives keep their whole groups. Exact: same total, critical path and breakdowns.
    /// </summary>
    Symmetric,
}

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
    /// Seconds one estimated operation costs end to end (build, price, schedule, fold the formula, print): measured on
    /// the project's 2-core machine with a 10^5-microbatch 1F1B pipeline (4.3e7 estimated operations, 70 s, issue 17).
    /// </summary>
    public const double SecondsPerEstimatedOperation = 1.6e-6;

    /// <summary>Longest evaluation accepted (estimated): a bigger one is refused at once instead of running for minutes.</summary>
    public const double MaxEstimatedSeconds = 30;

    /// <summary>
    /// Builds the DAG; the GPU count is the strategy's (EP x TP x PP x DP). <paramref name="folding"/>
    /// <see cref="DagFolding.Symmetric"/> builds one representative per symmetry class (see <see cref="OperatorDag.IsFolded"/>;
    /// the corrected derivation folds data-parallel replicas): the same total, critical path and breakdowns as the whole
    /// DAG, which <see cref="DagFolding.None"/> (the default, the oracle) builds.
    /// </summary>
    public static OperatorDag BuildDag(this StrategySpec strategy, ModelSpec model, DagFolding folding = DagFolding.None) =>
        Build(strategy, model, folding, productsApart: false);

    /// <summary>
    /// <see cref="BuildDag"/> one head and one expert at a time (<see cref="LayerContext.ProductsApart"/>): the corrected
    /// derivation's oracle for its repeated products (<see cref="Dag.DagBuilder.AddRepeatedMatmul"/>); the seed derivation
    /// builds one product at a time already.
    /// </summary>
    internal static OperatorDag BuildDagProductsApart(this StrategySpec strategy, ModelSpec model, DagFolding folding = DagFolding.None) =>
        Build(strategy, model, folding, productsApart: true);

    private static OperatorDag Build(StrategySpec strategy, ModelSpec model, DagFolding folding, bool productsApart)
    {
        strategy.CheckFits(model, strategy.GpuCount);
        if (strategy.Derivation == Derivation.Corrected)
            model.CheckTensorParallel(strategy.TP, strategy.Attention == AttentionPlacement.DataParallel ? strategy.TP : strategy.TP * strategy.EP);
        if (folding == DagFolding.Periodic) folding = DagFolding.Symmetric;
        if (strategy.Derivation == Derivation.Seed) folding = DagFolding.None;
        var estimate = CheckSize(model, strategy, folding);
        return strategy.Derivation switch
        {
            Derivation.Seed => SeedDerivation.Build(model, strategy, estimate),
            _ => CorrectedDerivation.Build(model, strategy, estimate, folding, productsApart),
        };
    }

    /// <summary>
    /// The size guard: refuses (one line naming the scenario fields that drive the size) a configuration whose DAG
    /// would exceed <see cref="MaxOperations"/> or whose evaluation would take more than <see cref="MaxEstimatedSeconds"/>;
    /// returns the operation estimate. Costs nothing: no DAG is built.
    /// </summary>
    public static double CheckSize(ModelSpec model, StrategySpec strategy, DagFolding folding = DagFolding.None)
    {
        var estimate = EstimateOperations(model, strategy, folding);
        var seconds = estimate * SecondsPerEstimatedOperation;
        if (estimate > MaxOperations || seconds > MaxEstimatedSeconds)
            throw new ConfigException("strategy", strategy.ToString(),
                string.Create(CultureInfo.InvariantCulture,
                    $"would build about {estimate:E2} operations (model.layers {model.Layers} x {strategy.GpuCount} GPUs x strategy.microbatches {strategy.Microbatches}, {Math.Max(1, model.AttentionHeads / strategy.TP)} heads and {(model.IsDense ? 0 : Math.Max(1, model.Experts / strategy.EP))} experts per GPU) and take about {seconds:G2} s; the limits are {MaxOperations:E0} operations and about {MaxEstimatedSeconds:F0} s: use fewer GPUs, layers, microbatches, heads or experts"));
        return estimate;
    }

    /// <summary>
    /// An upper estimate of the operations the derivation builds: per GPU and layer, the projections, norms,
    /// collectives, the experts' GEMMs (per local expert, or per run of experts with equal tokens under uniform routing)
    /// and the attention products (two per local head in the seed derivation and per context-parallel ring step, else two
    /// repeated products); times microbatches; times four for a
    /// training step with recomputation (forward, recompute, dX, dW).
    /// </summary>
    public static double EstimateOperations(ModelSpec model, StrategySpec st, DagFolding folding = DagFolding.None)
    {
        // Folded: one unit of each stage is built (one replica with ETP = TP, where this is the estimate at DP = 1), or the
        // units one context-parallel ring spans.
        var built = Math.Max(1, st.ContextParallelUnits);
        // Ranks folded within a unit (RankSymmetry): 1 / (TP x EP) of the unit's operations, collectives counted whole.
        var ranks = folding is DagFolding.None or DagFolding.Replicas || st.Derivation == Derivation.Seed ? 1 : RankSymmetry.FactorOf(model, st);
        if (folding != DagFolding.None && st.Derivation != Derivation.Seed && (st.FoldUnits > built || ranks > 1))
            return EstimateOperations(model, st) / st.FoldUnits * built / ranks + (double)model.Layers * st.GpuCount / st.FoldUnits * built * 2;
        // Context parallelism: two products per head and a send and a merge per ring step; otherwise the corrected
        // derivation emits a rank's heads as one repeated product each (DagBuilder.AddRepeatedMatmul), the seed one per head.
        double heads = st.CP > 1 ? Math.Max(1, model.AttentionHeads / st.TP) * st.CP + st.CP
            : st.Derivation == Derivation.Seed ? Math.Max(1, model.AttentionHeads / st.TP) : 1;
        // Routed experts: per local expert; the corrected derivation emits a run of experts with equal tokens as one
        // repeated product, and uniform routing gives a rank's experts at most two token counts (the remainder's +1).
        var localExperts = Math.Max(1, model.Experts / Math.Max(1, st.EP));
        if (st.Derivation != Derivation.Seed && model.Routing.Distribution == RoutingDistribution.Uniform) localExperts = Math.Min(localExperts, 2);
        double experts = model.IsDense ? 2 : localExperts * Math.Max(1, st.AllToAllChunks);
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
    /// construction), and within it TP rank 0 for its TP group and, under uniform routing, EP rank 0 for its EP group
    /// (<see cref="RankSymmetry"/>, checked operation by operation as it is built); collectives keep their whole
    /// groups. Exact: same total, critical path and breakdowns.
    /// </summary>
    Symmetric,

    /// <summary>
    /// Data-parallel replicas only (replica 0 stands for every replica), ranks within a replica built whole: the fold
    /// <see cref="Symmetric"/> falls back to when a rank fold is not exact (a cost model pricing the images differently,
    /// links shared between ranks' images).
    /// </summary>
    Replicas,

    /// <summary>
    /// <see cref="Symmetric"/>, and for an evaluation (<see cref="Config.Scenario.Evaluate"/>) of many identical
    /// microbatches, only enough microbatches built to see the schedule repeat, the rest extrapolated exactly
    /// (<see cref="Analysis.MicrobatchPeriodicity"/>). A DAG built with it is the <see cref="Symmetric"/> one.
    /// </summary>
    Periodic,
}

using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>Builds the operator DAG of a model under a strategy with the strategy's derivation.</summary>
public static class DagFactory
{
    /// <summary>Builds the DAG; the GPU count is the strategy's (EP x TP x PP x DP).</summary>
    public static OperatorDag BuildDag(this StrategySpec strategy, ModelSpec model)
    {
        strategy.CheckFits(model, strategy.GpuCount);
        if (strategy.Derivation == Derivation.Seed && model.Experts % strategy.EP != 0)
            throw new ConfigException("model.experts", model.Experts.ToString(System.Globalization.CultureInfo.InvariantCulture),
                $"must be divisible by strategy.ep = {strategy.EP}");
        return strategy.Derivation switch
        {
            Derivation.Seed => SeedDerivation.Build(model, strategy),
            _ => CorrectedDerivation.Build(model, strategy),
        };
    }
}

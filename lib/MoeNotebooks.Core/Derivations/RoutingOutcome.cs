using System.Globalization;
using MoeNotebooks.Config;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Where one EP group's routed tokens go in one layer and microbatch (corrected derivation): tokens each expert
/// processes after the capacity limit, and how many the limit dropped. Experts sit contiguously on EP ranks.
/// </summary>
public sealed record RoutingOutcome(IReadOnlyList<long> TokensPerExpert, long RoutedTokens, long DroppedTokens, int ExpertsPerRank)
{
    public double DroppedShare => RoutedTokens == 0 ? 0 : (double)DroppedTokens / RoutedTokens;

    /// <summary>Tokens the experts of each EP rank process.</summary>
    public IReadOnlyList<long> TokensPerRank
    {
        get
        {
            // One pass (Skip/Take per rank was quadratic in the expert count: a million experts on a million ranks hung).
            var ranks = new long[TokensPerExpert.Count / ExpertsPerRank];
            for (var i = 0; i < ranks.Length * ExpertsPerRank; i++) ranks[i / ExpertsPerRank] += TokensPerExpert[i];
            return ranks;
        }
    }

    /// <summary>Busiest EP rank's expert tokens over the mean (1 = balanced).</summary>
    public double RankImbalance
    {
        get
        {
            var perRank = TokensPerRank;
            var mean = perRank.Average();
            return mean == 0 ? 1 : perRank.Max() / mean;
        }
    }

    /// <summary>
    /// Tokens of one attention rank per microbatch: batch / (DP x attention-parallel EP x microbatches) sequences; with
    /// context parallelism the CP group shares batch / (attention DP x microbatches) sequences and each rank holds
    /// sequenceLength / CP tokens of each (the same count: CP ranks are carved out of the data-parallel ranks).
    /// </summary>
    public static long AttentionTokensPerRank(ModelSpec model, StrategySpec st) => st.CP > 1
        ? ContextParallelSequences(model, st) * (model.SequenceLength / st.CP)
        : model.Batch / ((long)st.DP * (st.Attention == AttentionPlacement.DataParallel ? st.EP : 1) * st.Microbatches) * model.SequenceLength;

    /// <summary>Sequences a context-parallel group holds per microbatch: batch / (attention DP x microbatches), attention DP = DP x EP / CP.</summary>
    public static long ContextParallelSequences(ModelSpec model, StrategySpec st) =>
        model.Batch / ((long)st.DP * st.EP / st.CP * st.Microbatches);

    /// <summary>The routing of a scenario's MoE layers, or null for a dense model.</summary>
    public static RoutingOutcome? Of(ModelSpec model, StrategySpec st)
    {
        if (model.IsDense) return null;
        var perRank = AttentionTokensPerRank(model, st);
        var groupTokens = st.Attention == AttentionPlacement.DataParallel ? perRank * st.EP : perRank;
        var routed = groupTokens * model.TopK;
        var (processed, dropped) = model.Routing.Assign(routed, model.Experts);
        return new RoutingOutcome(processed, routed, dropped, model.Experts / st.EP);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{RoutedTokens:N0} routed tokens per layer and EP group, busiest rank {RankImbalance:F2}x the mean, {DroppedTokens:N0} dropped ({DroppedShare:P1})");
}

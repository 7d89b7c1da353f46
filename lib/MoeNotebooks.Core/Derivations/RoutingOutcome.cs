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
    /// Tokens of one attention rank per microbatch: batch / (attention data-parallel size x microbatches) sequences; the
    /// attention data-parallel size is EP x DP with ETP = TP (EP x ETP x DP / TP under MoE parallel folding), DP under
    /// tensor-parallel attention.
    /// </summary>
    public static long AttentionTokensPerRank(ModelSpec model, StrategySpec st) =>
        model.Batch / ((long)(st.Attention == AttentionPlacement.DataParallel ? st.AttentionDataParallelSize : st.DP) * st.Microbatches) * model.SequenceLength;

    /// <summary>
    /// Tokens routed over one expert replica (the EP x ETP ranks holding every expert once), per microbatch: the tokens of
    /// its ranks' attention, EP x ETP / TP attention ranks' worth (EP of them with ETP = TP: today's EP group), or the
    /// attention group's under tensor-parallel attention.
    /// </summary>
    public static long ExpertReplicaTokens(ModelSpec model, StrategySpec st)
    {
        var perRank = AttentionTokensPerRank(model, st);
        if (st.Attention != AttentionPlacement.DataParallel) return perRank;
        return st.ETP == st.TP ? perRank * st.EP : perRank * st.EP * st.ETP / st.TP;
    }

    /// <summary>The routing of a scenario's MoE layers, or null for a dense model.</summary>
    public static RoutingOutcome? Of(ModelSpec model, StrategySpec st)
    {
        if (model.IsDense) return null;
        var groupTokens = ExpertReplicaTokens(model, st);
        var routed = groupTokens * model.TopK;
        var (processed, dropped) = model.Routing.Assign(routed, model.Experts);
        return new RoutingOutcome(processed, routed, dropped, model.Experts / st.EP);
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{RoutedTokens:N0} routed tokens per layer and EP group, busiest rank {RankImbalance:F2}x the mean, {DroppedTokens:N0} dropped ({DroppedShare:P1})");
}

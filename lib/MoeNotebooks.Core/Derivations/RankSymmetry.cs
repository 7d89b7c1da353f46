using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Exact folding of symmetric ranks (issue 15 item 1), on top of the data-parallel fold: within a stage's folding unit
/// the TP ranks of a group run the same operations (heads, FFN columns and vocabulary are split evenly; every TP
/// collective spans the group), and under uniform routing so do the EP ranks (each holds ExpertsPerRank experts with
/// the same token counts; every all-to-all spans the EP group). The derivation then emits one representative per class
/// (TP rank 0, EP rank 0 when folded, data-parallel replica 0): the builder checks every other rank's operations against
/// their representative's (<see cref="DagBuilder.FoldRanksOnto"/>) and collectives keep their whole groups, so cost
/// models price them for the full group. The symmetries are the translations (replica + du, EP rank + de, TP rank + dt)
/// of every stage; a cost model keeps them when it prices every image of a collective alike and, with link contention,
/// when the images of rank-local traffic occupy no link the representatives' traffic occupies
/// (<see cref="Costs.CostModel.PricesFoldSymmetrically"/>); otherwise the DAG is built with replicas folded only.
/// <para>Whitelist (what the exactness property covers): the corrected derivation with ETP = TP and no context
/// parallelism. TP is folded when TP &gt; 1; EP when EP &gt; 1, the model has experts and every EP rank's experts
/// receive the same tokens as EP rank 0's, expert by expert (uniform or force-balanced routing; skewed routing keeps
/// the EP ranks apart and folds TP only).</para>
/// </summary>
internal sealed class RankSymmetry
{
    /// <summary>TP ranks folded onto one (1: none).</summary>
    public int Tp { get; }

    /// <summary>EP ranks folded onto one (1: none).</summary>
    public int Ep { get; }

    /// <summary>Why EP ranks are not folded (null when they are, or EP = 1).</summary>
    public string? EpKeptBecause { get; }

    private RankSymmetry(int tp, int ep, string? epKept) { Tp = tp; Ep = ep; EpKeptBecause = epKept; }

    /// <summary>Ranks of one unit folded onto one representative.</summary>
    public int Factor => Tp * Ep;

    /// <summary>The rank fold of a layout, or null when nothing within a unit folds (or the layout is outside the whitelist).</summary>
    public static RankSymmetry? Of(ModelSpec model, StrategySpec st)
    {
        if (st.Derivation != Derivation.Corrected || st.ETP != st.TP || st.CP != 1) return null;
        var ep = 1;
        string? kept = null;
        if (st.EP > 1)
        {
            if (model.IsDense) kept = "dense model";
            // An invalid layout estimated before validation (searches): fewer experts than EP ranks, or not divisible.
            else if (model.Experts % st.EP != 0) kept = "experts not divisible by EP";
            else if (RoutingOutcome.Of(model, st) is not { } routing) kept = "no routing";
            else
            {
                var perRank = model.Experts / st.EP;
                var tokens = routing.TokensPerExpert;
                var uniform = true;
                for (var e = perRank; e < tokens.Count && uniform; e++) uniform = tokens[e] == tokens[e % perRank];
                if (uniform) ep = st.EP;
                else kept = "skewed routing";
            }
        }
        if (st.TP == 1 && ep == 1) return null;
        return new RankSymmetry(st.TP, ep, kept);
    }

    /// <summary>Operations the rank fold leaves of a unit's: 1 / <see cref="Factor"/> (1 when nothing folds).</summary>
    public static int FactorOf(ModelSpec model, StrategySpec st) => Of(model, st)?.Factor ?? 1;

    /// <summary>
    /// Declares the fold on the builder: each built GPU's representative (TP rank 0, EP rank 0 when folded, same unit
    /// and stage) and the symmetries (translations of replicas by du &lt; <paramref name="units"/>, EP ranks by de, TP
    /// ranks by dt, on every stage at once), the identity first.
    /// </summary>
    public void Declare(DagBuilder b, StrategySpec st, int units, string replicasNote)
    {
        var gpus = st.GpuCount;
        var (tp, ep) = (st.TP, st.EP);
        var rep = new int[gpus];
        var unitGpus = st.FoldUnitGpus;
        var coordinates = new (int Unit, int Stage, int Li)[gpus];
        for (var u = 0; u < st.FoldUnits; u++)
        for (var p = 0; p < st.PP; p++)
        for (var li = 0; li < unitGpus; li++)
        {
            var g = st.UnitRank(u, p, li);
            coordinates[g] = (u, p, li);
            int er = li / tp, tr = li % tp;
            rep[g] = st.UnitRank(u, p, (Ep > 1 ? 0 : er) * tp + (Tp > 1 ? 0 : tr));
        }
        var symmetries = new List<Symmetry>();
        for (var du = 0; du < units; du++)
        for (var de = 0; de < Ep; de++)
        for (var dt = 0; dt < Tp; dt++)
        {
            var perm = new int[gpus];
            for (var g = 0; g < gpus; g++)
            {
                var (u, p, li) = coordinates[g];
                int er = li / tp, tr = li % tp;
                perm[g] = st.UnitRank((u + du) % st.FoldUnits, p, (er + de) % ep * tp + (tr + dt) % tp);
            }
            symmetries.Add(new Symmetry(perm, de != 0 || dt != 0));
        }
        b.FoldRanksOnto(rep, symmetries.Select(s => s.Permutation).ToArray(), symmetries.Select(s => s.MovesRanks).ToArray());
        var parts = new List<string>();
        if (Tp > 1) parts.Add($"{Tp} TP ranks");
        if (Ep > 1) parts.Add($"{Ep} EP ranks");
        if (units > 1) parts.Add($"{units} DP replicas");
        b.FoldDescription = $"{string.Join(" x ", parts)} -> 1 representative per stage{(EpKeptBecause is null ? "" : $" (EP ranks kept apart: {EpKeptBecause})")}{replicasNote}";
    }

    private readonly record struct Symmetry(int[] Permutation, bool MovesRanks);
}

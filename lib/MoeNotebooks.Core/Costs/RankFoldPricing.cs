using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// Whether a cost model keeps a rank-folded DAG's symmetries (<see cref="OperatorDag.Symmetries"/>,
/// <see cref="Derivations.RankSymmetry"/>): the folded schedule is the whole one only if every image of a collective or
/// send under every symmetry costs exactly what the built one costs, and if link contention cannot tell the images
/// apart. For contention: in the whole DAG the images of a rank-local collective (say TP rank 1's gradient all-reduce,
/// the image of TP rank 0's) run at the same times as the built one; if they shared a link (two TP ranks behind one NIC)
/// the scheduler would delay the later-issued one, the ranks would no longer be identical, and the fold would miss
/// that work on the link. So every image under a symmetry that moves ranks within a unit must occupy no link that any
/// built collective or send occupies. Images under data-parallel translations keep the replica fold's argument
/// (<see cref="CostModel.PricesFoldSymmetrically"/>).
/// </summary>
internal static class RankFoldPricing
{
    public static bool Keeps(CostModel cost, OperatorDag dag)
    {
        var symmetries = dag.Symmetries!;
        var moves = dag.SymmetryMovesRanks!;
        var table = dag._classTable;
        var image = Array.Empty<int>();
        // Prices: every communication class's group under every symmetry.
        for (var c = 0; c < table.Length; c++)
        {
            var pc = table[c];
            if (pc.Kind != PriceKind.Communication) continue;
            var members = dag._groupMembers[pc.Group];
            var baseline = cost.CommunicationSeconds(dag, pc.Pattern, pc.Bytes, members);
            if (image.Length != members.Length) image = new int[members.Length];
            for (var s = 1; s < symmetries.Length; s++)
            {
                if (!Image(symmetries[s], members, image)) continue;
                // Bitwise: the scheduler's equality across images is exact, so the prices must be too.
                if (cost.CommunicationSeconds(dag, pc.Pattern, pc.Bytes, image) != baseline) return Why($"price of {pc.Pattern} over [{string.Join(",", members)}] differs on [{string.Join(",", image)}]");
            }
        }
        if (cost.Communication is not ILinkTopology links) return true;
        // NVLink ports (opt-in) are mapped to each class's representative (CostModel.Footprints), which is exact when
        // an operation and its images under a symmetry never share a GPU: otherwise the whole DAG would have the
        // operation and its image on one port at once, which the folded schedule cannot see.
        if (cost.Communication is INvlinkPortTopology { ContendsNvlinkPorts: true })
            for (var c = 0; c < table.Length; c++)
            {
                if (table[c].Kind != PriceKind.Communication) continue;
                var members = dag._groupMembers[table[c].Group];
                if (image.Length != members.Length) image = new int[members.Length];
                for (var s = 1; s < symmetries.Length; s++)
                {
                    if (!Image(symmetries[s], members, image)) continue;
                    if (image.Intersect(members).Any())
                        return Why($"the image [{string.Join(",", image)}] of [{string.Join(",", members)}] shares a GPU with it (NVLink ports)");
                }
            }
        // Links of the built communication (collectives by pattern, sends as SendRecv, as CostModel.Footprints takes them).
        var used = new HashSet<int>();
        var scratch = new List<int>();
        var groups = new HashSet<(int Group, CollectivePattern Pattern)>();
        for (var c = 0; c < table.Length; c++)
            if (table[c].Kind == PriceKind.Communication) groups.Add((table[c].Group, table[c].Pattern));
        foreach (var (g, pattern) in groups)
        {
            links.Links(pattern, dag._groupMembers[g], scratch);
            used.UnionWith(scratch);
        }
        if (used.Count == 0) return true;
        foreach (var (g, pattern) in groups)
        {
            var members = dag._groupMembers[g];
            if (image.Length != members.Length) image = new int[members.Length];
            for (var s = 1; s < symmetries.Length; s++)
            {
                if (!moves[s] || !Image(symmetries[s], members, image)) continue;
                links.Links(pattern, image, scratch);
                foreach (var l in scratch) if (used.Contains(l)) return Why($"link {l} of the image [{string.Join(",", image)}] of [{string.Join(",", members)}] is used by built communication");
            }
        }
        return true;
    }

    private static bool Why(string why)
    {
        if (Environment.GetEnvironmentVariable("MOE_DEBUG_FOLD") is not null) Console.Error.WriteLine("rank fold priced apart: " + why);
        return false;
    }

    /// <summary>Writes the sorted image of <paramref name="members"/> (ascending); false when it is the group itself.</summary>
    private static bool Image(int[] permutation, int[] members, int[] image)
    {
        for (var j = 0; j < members.Length; j++) image[j] = permutation[members[j]];
        Array.Sort(image);
        return !image.AsSpan().SequenceEqual(members);
    }
}

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
        return LinkFoldOf(cost, dag, links) != LinkFold.Refused;
    }

    /// <summary>How a rank-folded DAG's links are scheduled (<see cref="CostModel.Footprints"/>).</summary>
    internal enum LinkFold
    {
        /// <summary>No image of rank-local traffic meets built traffic on a link: the footprints as they are.</summary>
        Disjoint,
        /// <summary>Every link carries one GPU's traffic and the footprints are equivariant: links folded with their GPUs.</summary>
        Projected,
        /// <summary>Neither: the fold is not exact under contention.</summary>
        Refused,
    }

    /// <summary>
    /// Decides how the links of a rank-folded DAG are scheduled, cached on the DAG per communication model.
    /// <para><b>Disjoint</b> (checked first, as before): every image of a built collective or send under a symmetry that
    /// moves ranks occupies no link that built communication occupies, so folded ranks never meet the built ones on a link.</para>
    /// <para><b>Projected</b> (links folded with the ranks): when the representatives' traffic does share links with
    /// their images (DeepSeek-V3's placement: the EP all-to-all spans the NICs of all 64 EP ranks, and each EP rank's own
    /// pipeline sends and data-parallel all-reduces use its own NIC), the fold is still exact if (1) every link carries one
    /// GPU's traffic (one NIC per GPU, <see cref="ILinkOwners"/>), (2) footprints are equivariant: every image of a
    /// built collective or send under every symmetry occupies the links of the same representatives (compared after
    /// mapping each link to its owner's representative's same link), and (3) a built operation occupying a link of a
    /// folded GPU o is invariant under a symmetry taking o's representative to o. Then the whole DAG's operations on
    /// o's link are the σ-images, in the same order, of those on its representative's link (they all lie in o's
    /// operation sequence, which the builder checked position by position against its representative's), so by
    /// induction in id order every link of a class holds the same committed span whenever a class's operation is
    /// scheduled, and the scheduler's contention (a max over the operation's links of the delay each link's span
    /// imposes) gives every member the representative's times. The folded DAG is therefore scheduled with each link
    /// replaced by its owner's representative's same link (<see cref="CostModel.Footprints"/>): that link sees exactly
    /// the operations, in the same order, that every link of its class sees in the whole DAG.</para>
    /// </summary>
    internal static LinkFold LinkFoldOf(CostModel cost, OperatorDag dag, ILinkTopology links)
    {
        if (dag._linkFold is { } cached && ReferenceEquals(cached.Communication, cost.Communication)) return cached.Fold;
        var fold = Disjoint(dag, links) ? LinkFold.Disjoint
            : cost.Communication is ILinkOwners owners && Projects(dag, links, owners) ? LinkFold.Projected : LinkFold.Refused;
        dag._linkFold = new OperatorDag.LinkFoldCache(cost.Communication, fold);
        return fold;
    }

    /// <summary>The communication classes of the built DAG: (group, pattern) pairs, sends as SendRecv.</summary>
    private static HashSet<(int Group, CollectivePattern Pattern)> CommunicationGroups(OperatorDag dag)
    {
        var groups = new HashSet<(int Group, CollectivePattern Pattern)>();
        var table = dag._classTable;
        for (var c = 0; c < table.Length; c++)
            if (table[c].Kind == PriceKind.Communication) groups.Add((table[c].Group, table[c].Pattern));
        return groups;
    }

    private static bool Disjoint(OperatorDag dag, ILinkTopology links)
    {
        var symmetries = dag.Symmetries!;
        var moves = dag.SymmetryMovesRanks!;
        var image = Array.Empty<int>();
        // Links of the built communication (collectives by pattern, sends as SendRecv, as CostModel.Footprints takes them),
        // by link id (ids are below LinkCount).
        var used = new bool[links.LinkCount];
        var any = false;
        var scratch = new List<int>();
        var groups = CommunicationGroups(dag);
        foreach (var (g, pattern) in groups)
        {
            links.Links(pattern, dag._groupMembers[g], scratch);
            foreach (var l in scratch) used[l] = true;
            any |= scratch.Count > 0;
        }
        if (!any) return true;
        foreach (var (g, pattern) in groups)
        {
            var members = dag._groupMembers[g];
            if (image.Length != members.Length) image = new int[members.Length];
            for (var s = 1; s < symmetries.Length; s++)
            {
                if (!moves[s] || !Image(symmetries[s], members, image)) continue;
                links.Links(pattern, image, scratch);
                foreach (var l in scratch) if (used[l]) return Why($"link {l} of the image [{string.Join(",", image)}] of [{string.Join(",", members)}] is used by built communication");
            }
        }
        return true;
    }

    /// <summary>Conditions (1)-(3) of <see cref="LinkFoldOf"/>'s projected fold.</summary>
    private static bool Projects(OperatorDag dag, ILinkTopology links, ILinkOwners owners)
    {
        var symmetries = dag.Symmetries!;
        var scratch = new List<int>();
        var invariant = new bool[symmetries.Length];
        foreach (var (g, pattern) in CommunicationGroups(dag))
        {
            var members = dag._groupMembers[g];
            var image = new int[members.Length];
            for (var s = 0; s < symmetries.Length; s++)
            {
                for (var j = 0; j < members.Length; j++) image[j] = symmetries[s][members[j]];
                Array.Sort(image);
                invariant[s] = image.AsSpan().SequenceEqual(members);
            }
            // A send is directional: both directions (as CostModel.Footprints books them); a collective's links do not
            // depend on the order of its members.
            var orders = pattern == CollectivePattern.SendRecv ? new[] { members, members.Reverse().ToArray() } : new[] { members };
            foreach (var order in orders)
            {
                links.Links(pattern, order, scratch);
                // (1) and (3): each link has one owner, and the operation maps onto itself under a symmetry taking the
                // owner's representative to the owner.
                foreach (var l in scratch)
                {
                    var o = owners.OwnerOf(l);
                    if (o < 0) return Why($"link {l} of [{string.Join(",", members)}] carries several GPUs' traffic");
                    var r = dag.Representative(o);
                    if (r == o) continue;
                    var found = false;
                    for (var s = 0; s < symmetries.Length && !found; s++) found = invariant[s] && symmetries[s][r] == o;
                    if (!found) return Why($"[{string.Join(",", members)}] occupies link {l} of folded GPU {o} but is not its own image under a symmetry taking {r} to {o}");
                }
                // (2): every image occupies the same representatives' links.
                var baseline = Projected(scratch, owners, dag);
                var mapped = new int[order.Length];
                for (var s = 1; s < symmetries.Length; s++)
                {
                    if (invariant[s]) continue;
                    for (var j = 0; j < order.Length; j++) mapped[j] = symmetries[s][order[j]];
                    if (pattern != CollectivePattern.SendRecv) Array.Sort(mapped);
                    links.Links(pattern, mapped, scratch);
                    foreach (var l in scratch) if (owners.OwnerOf(l) < 0) return Why($"link {l} of the image [{string.Join(",", mapped)}] carries several GPUs' traffic");
                    if (!Projected(scratch, owners, dag).AsSpan().SequenceEqual(baseline))
                        return Why($"the image [{string.Join(",", mapped)}] of [{string.Join(",", order)}] occupies other representatives' links");
                }
            }
        }
        return true;
    }

    /// <summary>Each link replaced by its owner's representative's same link, distinct and ascending.</summary>
    private static int[] Projected(List<int> links, ILinkOwners owners, OperatorDag dag)
    {
        var set = new SortedSet<int>();
        foreach (var l in links) set.Add(owners.SameLinkOf(l, dag.Representative(owners.OwnerOf(l))));
        return set.ToArray();
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

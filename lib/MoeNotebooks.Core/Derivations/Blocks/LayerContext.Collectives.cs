using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>The collectives blocks emit over a stage's EP x TP ranks.</summary>
internal sealed partial class LayerContext
{
    /// <summary>All-reduce over the ranks sharing attention heads: the TP group (data-parallel attention) or the whole EP x TP stage group.</summary>
    public void AllReduceAttentionGroups(int[] gpus, OpKind kind, long bytes, int layer, int mb, int[] last, int index = -1)
    {
        if (AttentionDp) TensorGroupCollective(gpus, kind, bytes, layer, mb, last, index);
        else if (gpus.Length > 1)
        {
            var op = B.AddCommunication(kind, B.Group(gpus), bytes, layer, DistinctWaits(last), index, mb);
            Array.Fill(last, op);
        }
    }

    /// <summary>A collective of <paramref name="kind"/> over each tensor-parallel group of the stage (nothing with TP = 1).</summary>
    public void TensorGroupCollective(int[] gpus, OpKind kind, long bytes, int layer, int mb, int[] last, int index = -1)
    {
        if (St.TP == 1) return;
        // The unit's attention TP groups: TP consecutive local ranks each (EP of them with ETP = TP).
        for (var er = 0; er < gpus.Length / St.TP; er++)
        {
            var members = gpus.AsSpan(er * St.TP, St.TP);
            var op = B.AddCommunication(kind, B.Group(members), bytes, layer, DistinctWaits(last.AsSpan(er * St.TP, St.TP)), index, mb);
            for (var tr = 0; tr < St.TP; tr++) last[er * St.TP + tr] = op;
        }
    }

    /// <summary>
    /// Local rank of expert coordinates (etp, ep) in expert replica <paramref name="replica"/> of a folding unit:
    /// etp + ETP (ep + EP replica) (Megatron's "etp-ep-edp" nesting; with ETP = TP, ep x TP + tp as attention's).
    /// </summary>
    public int ExpertLocalRank(int replica, int ep, int etp) => etp + St.ETP * (ep + St.EP * replica);

    // Scratch for the collectives: a group's members, its members' last operations and the distinct ones among them.
    private int[] _members = [], _waits = [], _distinct = [];

    /// <summary>An all-to-all over each EP group (the ranks of equal ETP rank in one expert replica) of the stage.</summary>
    public void AllToAll(int[] gpus, OpKind kind, long bytesPerGpu, int layer, int mb, int[] last, int index)
    {
        var replicas = gpus.Length / (St.EP * St.ETP);
        for (var x = 0; x < replicas; x++)
        for (var tr = 0; tr < St.ETP; tr++)
            StridedCollective(gpus, kind, bytesPerGpu, layer, mb, last, index, St.EP, ExpertLocalRank(x, 0, tr), St.ETP);   // ranks (x, 0..EP-1, tr)
    }

    /// <summary>A collective of <paramref name="kind"/> over each expert-tensor-parallel group (ETP ranks holding one expert's shards); nothing with ETP = 1.</summary>
    public void ExpertTensorCollective(int[] gpus, OpKind kind, long bytes, int layer, int mb, int[] last, int index = -1)
    {
        if (St.ETP == 1) return;
        var replicas = gpus.Length / (St.EP * St.ETP);
        for (var x = 0; x < replicas; x++)
        for (var er = 0; er < St.EP; er++)
            StridedCollective(gpus, kind, bytes, layer, mb, last, index, St.ETP, ExpertLocalRank(x, er, 0), 1);   // ranks (x, er, 0..ETP-1)
    }

    /// <summary>
    /// One collective over the <paramref name="count"/> local ranks first, first + step, ... of a site, waiting for their
    /// last operations; each of them then ends with it.
    /// </summary>
    private void StridedCollective(int[] gpus, OpKind kind, long bytes, int layer, int mb, int[] last, int index, int count, int first, int step)
    {
        if (_members.Length < count) (_members, _waits) = (new int[count], new int[count]);
        for (var i = 0; i < count; i++)
        {
            var li = first + i * step;
            _members[i] = gpus[li];
            _waits[i] = last[li];
        }
        var op = B.AddCommunication(kind, B.Group(_members.AsSpan(0, count)), bytes, layer, DistinctWaits(_waits.AsSpan(0, count)), index, mb);
        for (var i = 0; i < count; i++) last[first + i * step] = op;
    }

    /// <summary>
    /// The operations in <paramref name="last"/> a collective waits for: each non-negative one once, in first-seen order
    /// (what <c>Where(x => x &gt;= 0).Distinct()</c> gives), in a reused buffer the builder copies (the members of a folded
    /// group mostly share one operation).
    /// </summary>
    private ReadOnlySpan<int> DistinctWaits(ReadOnlySpan<int> last)
    {
        if (_distinct.Length < last.Length) _distinct = new int[last.Length];
        var n = 0;
        // A linear scan of what was kept (a folded group's members mostly share a few operations); a set past 64 members,
        // where an unfolded group can wait for as many distinct operations (the scan would be quadratic).
        var seen = last.Length > 64 ? new HashSet<int>() : null;
        foreach (var d in last)
            if (d >= 0 && (seen?.Add(d) ?? _distinct.AsSpan(0, n).IndexOf(d) < 0)) _distinct[n++] = d;
        return _distinct.AsSpan(0, n);
    }
}

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
            var op = B.AddCommunication(kind, B.Group(gpus), bytes, layer, last.Where(x => x >= 0).Distinct().ToArray(), index, mb);
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
            var deps = last.AsSpan(er * St.TP, St.TP).ToArray().Where(x => x >= 0).Distinct().ToArray();
            var op = B.AddCommunication(kind, B.Group(members), bytes, layer, deps, index, mb);
            for (var tr = 0; tr < St.TP; tr++) last[er * St.TP + tr] = op;
        }
    }

    /// <summary>
    /// Local rank of expert coordinates (etp, ep) in expert replica <paramref name="replica"/> of a folding unit:
    /// etp + ETP (ep + EP replica) (Megatron's "etp-ep-edp" nesting; with ETP = TP, ep x TP + tp as attention's).
    /// </summary>
    public int ExpertLocalRank(int replica, int ep, int etp) => etp + St.ETP * (ep + St.EP * replica);

    // Scratch for AllToAll: an EP group's members and its distinct waits.
    private int[] _members = [], _deps = [];

    /// <summary>An all-to-all over each EP group (the ranks of equal ETP rank in one expert replica) of the stage.</summary>
    public void AllToAll(int[] gpus, OpKind kind, long bytesPerGpu, int layer, int mb, int[] last, int index)
    {
        var replicas = gpus.Length / (St.EP * St.ETP);
        if (_members.Length < St.EP) (_members, _deps) = (new int[St.EP], new int[St.EP]);
        for (var x = 0; x < replicas; x++)
        for (var tr = 0; tr < St.ETP; tr++)
        {
            // The group and its members' last operations, each once in first-seen order (a folded EP group's members
            // mostly share their representative's), in reused buffers: the group is interned and the waits copied.
            var distinct = 0;
            for (var er = 0; er < St.EP; er++)
            {
                var li = ExpertLocalRank(x, er, tr);
                _members[er] = gpus[li];
                var d = last[li];
                if (d >= 0 && Array.IndexOf(_deps, d, 0, distinct) < 0) _deps[distinct++] = d;
            }
            var op = B.AddCommunication(kind, B.Group(_members.AsSpan(0, St.EP)), bytesPerGpu, layer, _deps.AsSpan(0, distinct), index, mb);
            for (var er = 0; er < St.EP; er++) last[ExpertLocalRank(x, er, tr)] = op;
        }
    }

    /// <summary>A collective of <paramref name="kind"/> over each expert-tensor-parallel group (ETP ranks holding one expert's shards); nothing with ETP = 1.</summary>
    public void ExpertTensorCollective(int[] gpus, OpKind kind, long bytes, int layer, int mb, int[] last, int index = -1)
    {
        if (St.ETP == 1) return;
        var replicas = gpus.Length / (St.EP * St.ETP);
        for (var x = 0; x < replicas; x++)
        for (var er = 0; er < St.EP; er++)
        {
            var members = new int[St.ETP];
            var deps = new List<int>();
            for (var tr = 0; tr < St.ETP; tr++)
            {
                var li = ExpertLocalRank(x, er, tr);
                members[tr] = gpus[li];
                if (last[li] >= 0) deps.Add(last[li]);
            }
            var op = B.AddCommunication(kind, B.Group(members), bytes, layer, deps.Distinct().ToArray(), index, mb);
            for (var tr = 0; tr < St.ETP; tr++) last[ExpertLocalRank(x, er, tr)] = op;
        }
    }
}

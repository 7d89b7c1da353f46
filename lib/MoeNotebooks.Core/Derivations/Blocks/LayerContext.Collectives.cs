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
        for (var er = 0; er < St.EP; er++)
        {
            var members = gpus.AsSpan(er * St.TP, St.TP);
            var deps = last.AsSpan(er * St.TP, St.TP).ToArray().Where(x => x >= 0).Distinct().ToArray();
            var op = B.AddCommunication(kind, B.Group(members), bytes, layer, deps, index, mb);
            for (var tr = 0; tr < St.TP; tr++) last[er * St.TP + tr] = op;
        }
    }

    /// <summary>An all-to-all over each EP group (the ranks of equal TP rank) of the stage.</summary>
    public void AllToAll(int[] gpus, OpKind kind, long bytesPerGpu, int layer, int mb, int[] last, int index)
    {
        for (var tr = 0; tr < St.TP; tr++)
        {
            var members = new int[St.EP];
            var deps = new List<int>();
            for (var er = 0; er < St.EP; er++)
            {
                members[er] = gpus[er * St.TP + tr];
                if (last[er * St.TP + tr] >= 0) deps.Add(last[er * St.TP + tr]);
            }
            var op = B.AddCommunication(kind, B.Group(members), bytesPerGpu, layer, deps.Distinct().ToArray(), index, mb);
            for (var er = 0; er < St.EP; er++) last[er * St.TP + tr] = op;
        }
    }
}

using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Dense FFN with its residual: column-parallel up [T, H] x [H, F/TP], activation, row-parallel down
/// [T, F/TP] x [F/TP, H], the TP all-reduce, residual add.
/// </summary>
internal sealed class DenseFfnBlock : ILayerBlock
{
    public static DenseFfnBlock Instance { get; } = new();

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var t = c.TokensPerRank;
        var f = c.F / c.St.TP;
        if (pass == BlockPass.Backward)
        {
            b.Phase = OpPhase.BackwardData;
            c.Elementwise(site, 3 * c.ActivationBytes, 2, last);
        }
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            if (pass != BlockPass.Backward)
            {
                b.Phase = pass.ForwardPhase();
                var up = b.AddMatmul(OpKind.DenseUp, g, new(t, c.H, f), layer, [last[li]], microbatch: mb);
                var act = b.AddElementwise(g, 2 * t * f * c.E, layer, [up], index: 7, microbatch: mb);
                last[li] = b.AddMatmul(OpKind.DenseDown, g, new(t, f, c.H), layer, [act], microbatch: mb);
            }
            else
            {
                var down = c.Backward(OpKind.DenseDown, g, new(t, f, c.H), layer, [last[li]], -1, mb);
                var act = b.AddElementwise(g, 3 * t * f * c.E, layer, [down], index: 7, microbatch: mb);
                last[li] = c.Backward(OpKind.DenseUp, g, new(t, c.H, f), layer, [act], -1, mb);
            }
        }
        if (c.St.TP > 1) c.TensorGroupCollective(gpus, OpKind.ExpertAllReduce, c.ActivationBytes, layer, mb, last);
        if (pass != BlockPass.Backward) c.Elementwise(site, 3 * c.ActivationBytes, 2, last);   // residual add
    }
}

using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The routed experts of each EP rank: per local expert with tokens, up [m, H] x [H, F/TP] and down
/// [m, F/TP] x [F/TP, H] (m = the tokens routed to that expert in this chunk); their outputs summed.
/// </summary>
internal static class RoutedExperts
{
    public static void Emit(LayerContext c, BlockPass pass, LayerSite site, long[] tokens, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var f = c.F / c.St.TP;
        for (var li = 0; li < gpus.Length; li++)
        {
            var g = gpus[li];
            var er = li / c.St.TP;
            var outs = new List<int>();
            for (var j = 0; j < c.ExpertsPerRank; j++)
            {
                var expert = er * c.ExpertsPerRank + j;
                var m = tokens[expert];
                if (m == 0) continue;
                if (pass != BlockPass.Backward)
                {
                    b.Phase = pass.ForwardPhase();
                    var up = b.AddMatmul(OpKind.ExpertUp, g, new(m, c.H, f), layer, LayerContext.Deps(last[li]), expert, mb);
                    outs.Add(b.AddMatmul(OpKind.ExpertDown, g, new(m, f, c.H), layer, [up], expert, mb));
                }
                else
                {
                    var down = c.Backward(OpKind.ExpertDown, g, new(m, f, c.H), layer, LayerContext.Deps(last[li]), expert, mb);
                    outs.Add(c.Backward(OpKind.ExpertUp, g, new(m, c.H, f), layer, [down], expert, mb));
                }
            }
            last[li] = outs.Count switch
            {
                0 => last[li],
                1 => outs[0],
                _ => b.AddElementwise(g, 0, layer, outs.ToArray(), index: 3, microbatch: mb),
            };
        }
    }
}

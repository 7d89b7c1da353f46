using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The routed experts of each EP rank: per local expert with tokens, up [m, H] x [H, F/TP] (gated: [H, 2F/TP]) and
/// down [m, F/TP] x [F/TP, H] with F the expert width (F/ETP under MoE parallel folding; H is the latent size under a latent MoE) (m = the tokens routed to that expert in this chunk); their
/// outputs summed.
/// </summary>
internal static class RoutedExperts
{
    public static void Emit(LayerContext c, BlockPass pass, LayerSite site, long[] tokens, int[] last)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        // Expert fc1 column-split and fc2 row-split over the ETP ranks (ETP = TP unless folded).
        var f = c.M.ExpertFfnHiddenSize / c.St.ETP;
        var activation = c.M.MoeMemoryBoundOps;
        // Selective recomputation of the experts' activation (moe_act), unless the whole MoE layer was rerun.
        var recomputeActivation = c.Recomputes(Config.RecomputeModules.MoeAct) && !c.Recomputes(Config.RecomputeModules.Moe);
        for (var li = 0; li < gpus.Length; li++)
        {
            // A folded rank's experts receive its representative's tokens (RankSymmetry folds EP ranks only then).
            if (c.SkipFoldedRank(gpus, li, last)) continue;
            var g = gpus[li];
            var er = li / c.St.ETP % c.St.EP;
            var outs = new List<int>();
            for (var j = 0; j < c.ExpertsPerRank; j++)
            {
                var expert = er * c.ExpertsPerRank + j;
                var m = tokens[expert];
                if (m == 0) continue;
                if (pass != BlockPass.Backward)
                {
                    b.Phase = pass.ForwardPhase();
                    outs.Add(FfnGemms.Forward(c, pass, g, OpKind.ExpertUp, OpKind.ExpertDown, m, f, layer, last[li], expert, mb, activation, c.ExpertWidth));
                }
                else outs.Add(FfnGemms.Backward(c, g, OpKind.ExpertUp, OpKind.ExpertDown, m, f, layer, last[li], expert, mb, activation, c.ExpertWidth, recomputeActivation));
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

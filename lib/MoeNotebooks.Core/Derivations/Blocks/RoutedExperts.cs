using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// The routed experts of each EP rank (consecutive experts with equal tokens as one repeated operation per GEMM and pass,
/// <see cref="Dag.DagBuilder.AddRepeatedMatmul"/>): per local expert with tokens, up [m, H] x [H, F/TP] (gated: [H, 2F/TP]) and
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
            var experts = 0;
            for (var j = 0; j < c.ExpertsPerRank;)
            {
                var expert = er * c.ExpertsPerRank + j;
                var m = tokens[expert];
                // A run of consecutive experts with the same tokens: one repeated GEMM or pass each (they run one expert
                // after another on the rank's stream, DagBuilder.AddRepeatedMatmul); with ProductsApart one expert at a time.
                var run = 1;
                while (!c.ProductsApart && j + run < c.ExpertsPerRank && tokens[expert + run] == m) run++;
                j += run;
                if (m == 0) continue;
                experts += run;
                if (pass != BlockPass.Backward)
                {
                    b.Phase = pass.ForwardPhase();
                    outs.Add(FfnGemms.Forward(c, pass, g, OpKind.ExpertUp, OpKind.ExpertDown, m, f, layer, last[li], expert, mb, activation, c.ExpertWidth, run));
                }
                else outs.Add(FfnGemms.Backward(c, g, OpKind.ExpertUp, OpKind.ExpertDown, m, f, layer, last[li], expert, mb, activation, c.ExpertWidth, recomputeActivation, run));
            }
            // Several experts' outputs are joined by a (zero-byte) sum on the rank's stream, repeated or not: the join waits
            // for the stream, so what follows it (the TP all-reduce, the combine) waits for the last expert's weight gradient
            // too, as it does one expert at a time.
            last[li] = experts switch
            {
                0 => last[li],
                1 => outs[0],
                _ => b.AddElementwise(g, 0, layer, outs.ToArray(), index: 3, microbatch: mb),
            };
        }
    }
}

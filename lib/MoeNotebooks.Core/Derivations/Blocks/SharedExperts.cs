using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Shared experts (DeepSeekMoE, arXiv:2401.06066; Megatron-Core SharedExpertMLP): every token of the rank goes
/// through sharedExperts x width of always-active FFN, tensor-parallel like a dense FFN and all-reduced over TP.
/// They read the MoE block's input and do not wait for the dispatch, so they can run while it is in flight
/// (Megatron's --moe-shared-expert-overlap).
/// </summary>
internal static class SharedExperts
{
    /// <summary>Emits the shared experts from <paramref name="input"/>; returns each rank's output op, or null when the model has none.</summary>
    public static int[]? Emit(LayerContext c, BlockPass pass, LayerSite site, int[] input)
    {
        if (c.M.SharedExperts == 0) return null;
        var (gpus, layer, mb) = site;
        var f = c.M.SharedExperts * c.M.SharedExpertWidth / c.St.TP;
        var t = c.TokensPerRank;
        var outs = (int[])input.Clone();
        // Sequence parallelism: the shared experts are a TP-sharded dense MLP (Megatron-Core SharedExpertMLP): all-gather
        // the sequence-sharded tokens before fc1 and reduce-scatter after fc2 (the conjugates in backward).
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, outs);
        for (var li = 0; li < gpus.Length; li++)
        {
            if (c.SkipFoldedRank(gpus, li, outs)) continue;
            if (pass != BlockPass.Backward)
            {
                c.B.Phase = pass.ForwardPhase();
                outs[li] = FfnGemms.Forward(c, pass, gpus[li], OpKind.SharedExpertUp, OpKind.SharedExpertDown, t, f, layer, outs[li], -1, mb);
            }
            else
            {
                // Selective recomputation (shared_experts, unless the whole MoE layer was rerun): the forward again first.
                if (c.Recomputes(Config.RecomputeModules.SharedExperts) && !c.Recomputes(Config.RecomputeModules.Moe))
                {
                    var g = gpus[li];
                    var dep = outs[li];
                    outs[li] = c.InRecompute(() => FfnGemms.Forward(c, BlockPass.Recompute, g, OpKind.SharedExpertUp, OpKind.SharedExpertDown, t, f, layer, dep, -1, mb));
                }
                outs[li] = FfnGemms.Backward(c, gpus[li], OpKind.SharedExpertUp, OpKind.SharedExpertDown, t, f, layer, outs[li], -1, mb);
            }
        }
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, c.ActivationBytes, layer, mb, outs);
        else if (c.St.TP > 1) c.TensorGroupCollective(gpus, OpKind.ExpertAllReduce, c.ActivationBytes, layer, mb, outs);
        return outs;
    }
}

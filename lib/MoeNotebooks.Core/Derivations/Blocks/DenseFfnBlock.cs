using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>
/// Dense FFN with its residual: column-parallel up [T, H] x [H, F/TP] (gated: gate and up fused as Megatron's
/// linear_fc1, [H, 2F/TP]), activation, row-parallel down [T, F/TP] x [F/TP, H], the TP all-reduce, residual add.
/// </summary>
internal sealed class DenseFfnBlock : ILayerBlock
{
    public static DenseFfnBlock Instance { get; } = new();

    public void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last) => Emit(c, pass, site, last, residual: true);

    /// <param name="residual">Emit the forward's residual add (false: the MLP alone, as <c>mlp</c> recomputation reruns it).</param>
    private static void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last, bool residual)
    {
        var b = c.B;
        var (gpus, layer, mb) = site;
        var t = c.TokensPerRank;
        var f = c.M.FfnHiddenSize / c.St.TP;
        if (pass == BlockPass.Backward)
        {
            b.Phase = OpPhase.BackwardData;
            c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 2, last);
            // Selective recomputation: the pre-MLP norm (layernorm) and the MLP's forward (mlp) again, then its backward.
            c.RecomputeNorm(site, last);
            if (c.Recomputes(Config.RecomputeModules.Mlp)) c.InRecompute(() => Emit(c, BlockPass.Recompute, site, last, residual: false));
        }
        // Sequence parallelism: all-gather the tokens before the column-parallel up projection (forward) or the
        // row-parallel down projection's backward (the conjugate of the forward reduce-scatter).
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceAllGather, c.ActivationBytes, layer, mb, last);
        for (var li = 0; li < gpus.Length; li++)
        {
            if (c.SkipFoldedRank(gpus, li, last)) continue;
            var g = gpus[li];
            if (pass != BlockPass.Backward)
            {
                b.Phase = pass.ForwardPhase();
                last[li] = FfnGemms.Forward(c, pass, g, OpKind.DenseUp, OpKind.DenseDown, t, f, layer, last[li], -1, mb);
            }
            else last[li] = FfnGemms.Backward(c, g, OpKind.DenseUp, OpKind.DenseDown, t, f, layer, last[li], -1, mb);
        }
        if (c.SequenceParallel) c.TensorGroupCollective(gpus, OpKind.SequenceReduceScatter, c.ActivationBytes, layer, mb, last);
        else if (c.St.TP > 1) c.TensorGroupCollective(gpus, OpKind.ExpertAllReduce, c.ActivationBytes, layer, mb, last);
        if (pass != BlockPass.Backward && residual) c.Elementwise(site, c.SequenceShard(3 * c.ActivationBytes), 2, last);   // residual add
    }
}

/// <summary>One FFN's GEMM chain (dense, routed expert or shared expert): up (x2 when gated), activation, down.</summary>
internal static class FfnGemms
{
    /// <summary>Up-projection shape: [m, H] x [H, f] or, gated, [H, 2f] (gate and up fused).</summary>
    /// <param name="width">The FFN's input and output width: H, or a latent MoE's latent size for routed experts.</param>
    public static MatmulShape Up(LayerContext c, long m, long f, long? width = null) => new(m, width ?? c.H, c.M.GatedFfn ? 2 * f : f);

    public static MatmulShape Down(LayerContext c, long m, long f, long? width = null) => new(m, f, width ?? c.H);

    /// <summary>Activation HBM bytes: plain reads and writes [m, f] (2); gated reads [m, 2f] and writes [m, f] (3). Backward: plain 3, gated 5.</summary>
    public static long ActivationBytes(LayerContext c, long m, long f, bool backward) =>
        (c.M.GatedFfn ? (backward ? 5 : 3) : (backward ? 3 : 2)) * m * f * c.E;

    /// <summary>
    /// HBM bytes of the unfused clamp ahead of a gated activation (<see cref="Config.ModelSpec.ActivationClampValue"/>),
    /// as Megatron-Core runs it (megatron/core/fusions/fused_bias_geglu.py, <c>weighted_bias_quick_geglu_impl</c>:
    /// <c>x_glu, x_linear = input.chunk(2, -1)</c>, <c>x_glu.clamp(max=c)</c>, <c>x_linear.clamp(-c, c)</c>, then
    /// <c>torch.cat</c> of the two into the fused kernel's input). Forward: each clamp reads and writes its [m, f] half
    /// (4 m f), the cat reads and writes [m, 2f] (4 m f): 8 m f elements. Backward (autograd): the cat's backward is two
    /// views (no copy); each clamp's backward reads its gradient and saved input and writes the masked gradient (2 x 3 m f);
    /// the chunk's backward writes the two halves into one [m, 2f] gradient (reads and writes 2 m f each: 4 m f): 10 m f.
    /// 0 without a clamp, without a gated FFN, or for routed experts (<paramref name="upKind"/> ExpertUp) under
    /// <see cref="Config.StrategySpec.CutedslFusedGroupedMlp"/>, whose fused grouped MLP clamps inside its kernels.
    /// </summary>
    public static long ActivationClampBytes(LayerContext c, OpKind upKind, long m, long f, bool backward) =>
        c.M.ActivationClampValue is null || !c.M.GatedFfn || (upKind == OpKind.ExpertUp && c.St.CutedslFusedGroupedMlp) ? 0 : (backward ? 10 : 8) * m * f * c.E;

    /// <param name="activation">Emit the activation pass (routed experts of the founding model's derivation have none).</param>
    /// <param name="repeat">Experts with these tokens run one after another (<see cref="DagBuilder.AddRepeatedMatmul"/>): every GEMM and pass that many times.</param>
    public static int Forward(LayerContext c, BlockPass pass, int g, OpKind upKind, OpKind downKind, long m, long f, int layer, int dep, int index, int mb, bool activation = true, long? width = null, int repeat = 1)
    {
        var b = c.B;
        var input = c.QuantizeInput(g, m * (width ?? c.H), layer, dep, mb, repeat);
        var up = c.LinearForward(upKind, g, Up(c, m, f, width), layer, LayerContext.Deps(input), index, mb, pass, repeat);
        var clampBytes = activation ? ActivationClampBytes(c, upKind, m, f, false) : 0;
        var clamped = clampBytes > 0 ? b.AddElementwise(g, clampBytes, layer, [up], index: OpKindExtensions.ActivationClampRole, microbatch: mb, repeat: repeat) : up;
        var act = activation ? b.AddElementwise(g, ActivationBytes(c, m, f, false), layer, [clamped], index: 7, microbatch: mb, repeat: repeat) : up;
        return c.LinearForward(downKind, g, Down(c, m, f, width), layer, [c.QuantizeInput(g, m * f, layer, act, mb, repeat)], index, mb, pass, repeat);
    }

    /// <param name="recomputeActivation">Selective recomputation of the activation (<c>moe_act</c>): its forward (and the
    /// clamp's) runs again before the down projection's backward, whose weight gradient needs the activation output.</param>
    /// <param name="repeat">As in <see cref="Forward"/>.</param>
    public static int Backward(LayerContext c, int g, OpKind upKind, OpKind downKind, long m, long f, int layer, int dep, int index, int mb, bool activation = true, long? width = null, bool recomputeActivation = false, int repeat = 1)
    {
        if (activation && recomputeActivation)
            dep = c.InRecompute(() =>
            {
                var clampBytes = ActivationClampBytes(c, upKind, m, f, false);
                var clamped = clampBytes > 0 ? c.B.AddElementwise(g, clampBytes, layer, LayerContext.Deps(dep), index: OpKindExtensions.ActivationClampRole, microbatch: mb, repeat: repeat) : dep;
                return c.B.AddElementwise(g, ActivationBytes(c, m, f, false), layer, LayerContext.Deps(clamped), index: 7, microbatch: mb, repeat: repeat);
            });
        var down = c.LinearBackward(downKind, g, Down(c, m, f, width), layer, LayerContext.Deps(dep), index, mb, repeat);
        var act = activation ? c.B.AddElementwise(g, ActivationBytes(c, m, f, true), layer, [down], index: 7, microbatch: mb, repeat: repeat) : down;
        var clampBytes = activation ? ActivationClampBytes(c, upKind, m, f, true) : 0;
        if (clampBytes > 0) act = c.B.AddElementwise(g, clampBytes, layer, [act], index: OpKindExtensions.ActivationClampRole, microbatch: mb, repeat: repeat);
        return c.LinearBackward(upKind, g, Up(c, m, f, width), layer, [act], index, mb, repeat);
    }
}

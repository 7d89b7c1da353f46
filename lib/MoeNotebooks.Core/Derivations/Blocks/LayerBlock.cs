using MoeNotebooks.Dag;

namespace MoeNotebooks.Derivations;

/// <summary>Which pass a block emits.</summary>
internal enum BlockPass
{
    Forward,
    /// <summary>The forward run again just before the backward (full activation recomputation).</summary>
    Recompute,
    /// <summary>Activation gradients (dX) and weight gradients (dW).</summary>
    Backward,
}

/// <summary>
/// Where a block emits: one replica's pipeline stage (its EP x TP GPUs, local rank li = er * TP + tr), a layer and
/// a microbatch. <c>last[li]</c> holds, per local rank, the operation the block's first operation waits for
/// (-1: nothing) and is updated to the block's last operation.
/// </summary>
internal readonly record struct LayerSite(int[] Gpus, int Layer, int Microbatch);

/// <summary>
/// A piece of a transformer layer (attention, dense FFN, MoE, ...) that emits its forward, recompute and backward
/// operations for the layout held by a <see cref="LayerContext"/>. A layer is a sequence of blocks
/// (<see cref="LayerPattern"/>); backward runs them in reverse.
/// </summary>
internal interface ILayerBlock
{
    void Emit(LayerContext c, BlockPass pass, LayerSite site, int[] last);
}

internal static class BlockPassExtensions
{
    /// <summary>Phase of forward-pass operations: Forward, or Recompute when the forward is rerun.</summary>
    public static OpPhase ForwardPhase(this BlockPass pass) => pass == BlockPass.Recompute ? OpPhase.Recompute : OpPhase.Forward;
}

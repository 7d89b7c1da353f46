namespace MoeNotebooks.Dag;

/// <summary>What an operation is. The category (and so how it is priced) follows from the kind.</summary>
public enum OpKind : byte
{
    QProjection,
    KProjection,
    VProjection,
    /// <summary>Q x K^T for one head (batched over sequences).</summary>
    AttentionScore,
    /// <summary>softmax(scores) x V for one head (batched over sequences).</summary>
    AttentionValue,
    OutputProjection,
    Gate,
    ExpertUp,
    ExpertDown,
    /// <summary>Dense FFN up projection (models without experts).</summary>
    DenseUp,
    /// <summary>Dense FFN down projection.</summary>
    DenseDown,
    /// <summary>Output layer: hidden states x embedding^T -> logits (column-parallel over TP).</summary>
    Logits,
    /// <summary>Layer norm / residual add / activation: memory-bound, priced by bytes moved.</summary>
    Elementwise,
    /// <summary>Tensor-parallel all-reduce after the attention block.</summary>
    AttentionAllReduce,
    /// <summary>Tensor-parallel all-reduce after the expert block.</summary>
    ExpertAllReduce,
    /// <summary>All-to-all that sends tokens to the ranks holding their experts.</summary>
    AllToAllDispatch,
    /// <summary>All-to-all that returns expert outputs to the tokens' ranks.</summary>
    AllToAllCombine,
    /// <summary>Point-to-point activation send between pipeline stages.</summary>
    PipelineSend,
    /// <summary>Data-parallel gradient all-reduce (ZeRO 0-1).</summary>
    GradientAllReduce,
    /// <summary>Data-parallel gradient reduce-scatter (ZeRO 2-3).</summary>
    GradientReduceScatter,
    /// <summary>All-gather of (updated or partitioned) parameters (ZeRO 2-3).</summary>
    ParameterAllGather,
    /// <summary>All-gather over the receiving stage's TP group of an activation sent in 1/TP slices (scatter/gather).</summary>
    PipelineAllGather,
    /// <summary>MLA query down-projection [T, H] x [H, qLoraRank] (replicated over TP).</summary>
    QDownProjection,
    /// <summary>MLA query up-projection [T, qLoraRank] x [qLoraRank, heads/TP x (qkNope + qkRope)].</summary>
    QUpProjection,
    /// <summary>MLA joint key/value down-projection [T, H] x [H, kvLoraRank + qkRope] (replicated over TP).</summary>
    KvDownProjection,
    /// <summary>MLA key/value up-projection [T, kvLoraRank] x [kvLoraRank, heads/TP x (qkNope + vHead)].</summary>
    KvUpProjection,
    /// <summary>Shared expert up (and gate) projection: every token, always active.</summary>
    SharedExpertUp,
    /// <summary>Shared expert down projection.</summary>
    SharedExpertDown,
    /// <summary>Cast of a GEMM input to the precision recipe's low-precision format (memory-bound: read BF16, write the copy and scales).</summary>
    Quantize,
    /// <summary>MoE router softmax and top-k over the gate logits (memory-bound).</summary>
    RouterTopK,
    /// <summary>Token permutation: gathers each token's copies into expert order before the dispatch (memory-bound).</summary>
    Permute,
    /// <summary>Token unpermutation: weighted sum of each token's expert outputs back into token order (memory-bound).</summary>
    Unpermute,
    /// <summary>Sequence parallelism (Korthikanti et al. 2022 §4.2.2): reduce-scatter over the TP group to 1/TP of the tokens, replacing a TP all-reduce (forward after the row-parallel output/down projection; backward before the column-parallel input).</summary>
    SequenceReduceScatter,
    /// <summary>Sequence parallelism: all-gather over the TP group restoring all tokens before a column-parallel GEMM (forward) or a row-parallel GEMM's backward.</summary>
    SequenceAllGather,
    /// <summary>A multi-token-prediction depth's projection of [norm(h); norm(emb)] : [T, 2H] x [2H, H].</summary>
    MtpProjection,
    /// <summary>MoE parallel folding / sequence parallelism: all-gather of the dispatched tokens over the expert-tensor-parallel group before the ETP-sharded experts (Megatron-Core MoEAlltoAllTokenDispatcher, gather_from_sequence_parallel_region over the ETP group; in backward the conjugate of the combine's reduce-scatter).</summary>
    ExpertTensorAllGather,
    /// <summary>The experts' row-parallel partial outputs reduce-scattered over the ETP group back to each rank's dispatched tokens (reduce_scatter_to_sequence_parallel_region), before the combine all-to-all.</summary>
    ExpertTensorReduceScatter,
    /// <summary>Mamba-2 in-projection [T, H] x [H, (2 d_inner + 2 G N + heads)/TP] (z, x, B, C, dt; column-parallel).</summary>
    MambaInProjection,
    /// <summary>Mamba-2 out-projection [T, d_inner/TP] x [d_inner/TP, H] (row-parallel).</summary>
    MambaOutProjection,
    /// <summary>Mamba-2 causal depthwise conv1d over x, B, C with SiLU (memory-bound).</summary>
    MambaConv,
    /// <summary>One batched product of the SSD chunked scan (Dao and Gu 2024, arXiv:2405.21060 §6): C B^T, (L o C B^T) X, B^T X or C h per chunk.</summary>
    MambaChunkScan,
    /// <summary>SSD inter-chunk state passing and the dt/decay cumulative sums (memory-bound recurrence over chunks).</summary>
    MambaStatePassing,
    /// <summary>Mamba-2 gated RMSNorm: norm(y) x SiLU(z) over d_inner/TP (memory-bound).</summary>
    MambaGatedNorm,
    /// <summary>Latent MoE down-projection [T, H] x [H, latent] before the dispatch (Megatron --moe-latent-size).</summary>
    MoeLatentDown,
    /// <summary>Latent MoE up-projection [T, latent] x [latent, H] after the combine.</summary>
    MoeLatentUp,
    /// <summary>
    /// Context parallelism (Transformer Engine AttnFuncWithCPAndKVP2P, cp_comm_type "p2p"): a point-to-point send of a
    /// K/V block (forward) or of a K/V block and/or its gradient (backward) to the next rank of the CP ring.
    /// </summary>
    ContextParallelSend,
}

/// <summary>Which pass of a training step an operation belongs to.</summary>
public enum OpPhase : byte
{
    Forward,
    /// <summary>Forward run again just before the backward (activation recomputation).</summary>
    Recompute,
    /// <summary>Backward: gradient with respect to the operation's input (dX = dY W^T).</summary>
    BackwardData,
    /// <summary>Backward: gradient with respect to its weight (dW = X^T dY), or the second operand for attention.</summary>
    BackwardWeight,
    /// <summary>Gradient synchronisation and optimizer step.</summary>
    Update,
}

/// <summary>Coarse classes for breakdowns and pricing.</summary>
public enum OpCategory : byte
{
    Matmul,
    Attention,
    Elementwise,
    Communication,
}

/// <summary>The collective pattern a communication operation follows.</summary>
public enum CollectivePattern : byte
{
    None,
    AllReduce,
    AllToAll,
    SendRecv,
    ReduceScatter,
    AllGather,
}

public static class OpKindExtensions
{
    public static OpCategory Category(this OpKind kind) => kind switch
    {
        // The SSD scan's batched products run in one fused kernel beside the sequence mixing, as flash attention does:
        // priced by shape like every product, attributed to the sequence-mixing (attention) part.
        OpKind.AttentionScore or OpKind.AttentionValue or OpKind.MambaChunkScan => OpCategory.Attention,
        OpKind.Elementwise or OpKind.Quantize or OpKind.RouterTopK or OpKind.Permute or OpKind.Unpermute
            or OpKind.MambaConv or OpKind.MambaStatePassing or OpKind.MambaGatedNorm => OpCategory.Elementwise,
        OpKind.AttentionAllReduce or OpKind.ExpertAllReduce or OpKind.AllToAllDispatch or OpKind.AllToAllCombine or OpKind.PipelineSend
            or OpKind.GradientAllReduce or OpKind.GradientReduceScatter or OpKind.ParameterAllGather or OpKind.PipelineAllGather
            or OpKind.SequenceReduceScatter or OpKind.SequenceAllGather
            or OpKind.ExpertTensorAllGather or OpKind.ExpertTensorReduceScatter or OpKind.ContextParallelSend => OpCategory.Communication,
        _ => OpCategory.Matmul,
    };

    /// <summary>Point-to-point sends (pipeline activations, context-parallel K/V blocks): directed, on their own link, not on the collective stream.</summary>
    public static bool IsPointToPoint(this OpKind kind) => kind is OpKind.PipelineSend or OpKind.ContextParallelSend;

    public static bool IsMatmulShaped(this OpKind kind) => kind.Category() is OpCategory.Matmul or OpCategory.Attention;

    /// <summary>Linear-layer GEMMs: those a precision recipe runs in low precision (not attention products, router or logits).</summary>
    public static bool IsLinearLayer(this OpKind kind) => kind is OpKind.QProjection or OpKind.KProjection or OpKind.VProjection
        or OpKind.OutputProjection or OpKind.ExpertUp or OpKind.ExpertDown or OpKind.DenseUp or OpKind.DenseDown
        or OpKind.QDownProjection or OpKind.QUpProjection or OpKind.KvDownProjection or OpKind.KvUpProjection
        or OpKind.SharedExpertUp or OpKind.SharedExpertDown or OpKind.MtpProjection
        or OpKind.MambaInProjection or OpKind.MambaOutProjection or OpKind.MoeLatentDown or OpKind.MoeLatentUp;

    public static CollectivePattern Pattern(this OpKind kind) => kind switch
    {
        OpKind.AttentionAllReduce or OpKind.ExpertAllReduce or OpKind.GradientAllReduce => CollectivePattern.AllReduce,
        OpKind.AllToAllDispatch or OpKind.AllToAllCombine => CollectivePattern.AllToAll,
        OpKind.GradientReduceScatter or OpKind.SequenceReduceScatter or OpKind.ExpertTensorReduceScatter => CollectivePattern.ReduceScatter,
        OpKind.ParameterAllGather or OpKind.PipelineAllGather or OpKind.SequenceAllGather or OpKind.ExpertTensorAllGather => CollectivePattern.AllGather,
        OpKind.PipelineSend or OpKind.ContextParallelSend => CollectivePattern.SendRecv,
        _ => CollectivePattern.None,
    };

    /// <summary>What an elementwise operation does, by its index (as the derivations number them).</summary>
    public static string ElementwiseRole(int index) => index switch
    {
        0 => "LayerNorm",
        1 => "Residual_LayerNorm",
        2 => "Residual",
        3 => "Expert_Sum",
        4 => "Embedding",
        5 => "Loss",
        6 => "Optimizer_Step",
        7 => "Activation",
        AttentionSoftmaxRole => "Attention_Softmax",
        ContextParallelMergeRole => "ContextParallel_Merge",
        ActivationClampRole => "Activation_Clamp",
        _ => "Elementwise",
    };

    /// <summary>Elementwise role of the softmax (and dropout) pass over materialized attention scores.</summary>
    public const int AttentionSoftmaxRole = 8;

    /// <summary>Elementwise role of a context-parallel ring step's merge: the partial output (forward) or dQ/dKV (backward) added into the running result.</summary>
    public const int ContextParallelMergeRole = 9;

    /// <summary>Elementwise role of the unfused clamp of a gated FFN's fc1 output ahead of its activation (<see cref="Config.ModelSpec.ActivationClampValue"/>).</summary>
    public const int ActivationClampRole = 10;

    /// <summary>Short label used in tables and the formula.</summary>
    public static string Label(this OpKind kind) => kind switch
    {
        OpKind.QProjection => "Q projection",
        OpKind.KProjection => "K projection",
        OpKind.VProjection => "V projection",
        OpKind.AttentionScore => "Q x K^T",
        OpKind.AttentionValue => "Attention x V",
        OpKind.OutputProjection => "Output projection",
        OpKind.Gate => "Gate",
        OpKind.ExpertUp => "Expert up",
        OpKind.ExpertDown => "Expert down",
        OpKind.DenseUp => "FFN up",
        OpKind.DenseDown => "FFN down",
        OpKind.Logits => "Logits",
        OpKind.GradientAllReduce => "Gradient_AllReduce",
        OpKind.GradientReduceScatter => "Gradient_ReduceScatter",
        OpKind.ParameterAllGather => "Parameter_AllGather",
        OpKind.Elementwise => "Elementwise",
        OpKind.AttentionAllReduce => "Attention_AllReduce",
        OpKind.ExpertAllReduce => "Expert_AllReduce",
        OpKind.AllToAllDispatch => "AllToAll_Dispatch",
        OpKind.AllToAllCombine => "AllToAll_Combine",
        OpKind.PipelineSend => "Pipeline_Communication_Latency",
        OpKind.PipelineAllGather => "Pipeline_AllGather",
        OpKind.QDownProjection => "Q down projection",
        OpKind.QUpProjection => "Q up projection",
        OpKind.KvDownProjection => "KV down projection",
        OpKind.KvUpProjection => "KV up projection",
        OpKind.SharedExpertUp => "Shared expert up",
        OpKind.SharedExpertDown => "Shared expert down",
        OpKind.Quantize => "Quantize",
        OpKind.RouterTopK => "Router softmax/top-k",
        OpKind.Permute => "Permute",
        OpKind.Unpermute => "Unpermute",
        OpKind.SequenceReduceScatter => "Sequence_ReduceScatter",
        OpKind.SequenceAllGather => "Sequence_AllGather",
        OpKind.MtpProjection => "MTP projection",
        OpKind.ExpertTensorAllGather => "ExpertTensor_AllGather",
        OpKind.ExpertTensorReduceScatter => "ExpertTensor_ReduceScatter",
        OpKind.MambaInProjection => "Mamba in projection",
        OpKind.MambaOutProjection => "Mamba out projection",
        OpKind.MambaConv => "Mamba conv1d",
        OpKind.MambaChunkScan => "SSD chunk scan",
        OpKind.MambaStatePassing => "SSD state passing",
        OpKind.MambaGatedNorm => "Mamba gated norm",
        OpKind.MoeLatentDown => "Latent down projection",
        OpKind.MoeLatentUp => "Latent up projection",
        OpKind.ContextParallelSend => "ContextParallel_KV_Send",
        _ => kind.ToString(),
    };
}

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
}

public static class OpKindExtensions
{
    public static OpCategory Category(this OpKind kind) => kind switch
    {
        OpKind.AttentionScore or OpKind.AttentionValue => OpCategory.Attention,
        OpKind.Elementwise => OpCategory.Elementwise,
        OpKind.AttentionAllReduce or OpKind.ExpertAllReduce or OpKind.AllToAllDispatch or OpKind.AllToAllCombine or OpKind.PipelineSend => OpCategory.Communication,
        _ => OpCategory.Matmul,
    };

    public static bool IsMatmulShaped(this OpKind kind) => kind.Category() is OpCategory.Matmul or OpCategory.Attention;

    public static CollectivePattern Pattern(this OpKind kind) => kind switch
    {
        OpKind.AttentionAllReduce or OpKind.ExpertAllReduce => CollectivePattern.AllReduce,
        OpKind.AllToAllDispatch or OpKind.AllToAllCombine => CollectivePattern.AllToAll,
        OpKind.PipelineSend => CollectivePattern.SendRecv,
        _ => CollectivePattern.None,
    };

    /// <summary>What an elementwise operation does, by its index (as the derivations number them).</summary>
    public static string ElementwiseRole(int index) => index switch
    {
        0 => "LayerNorm",
        1 => "Residual_LayerNorm",
        2 => "Residual",
        _ => "Expert_Sum",
    };

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
        OpKind.Elementwise => "Elementwise",
        OpKind.AttentionAllReduce => "Attention_AllReduce",
        OpKind.ExpertAllReduce => "Expert_AllReduce",
        OpKind.AllToAllDispatch => "AllToAll_Dispatch",
        OpKind.AllToAllCombine => "AllToAll_Combine",
        OpKind.PipelineSend => "Pipeline_Communication_Latency",
        _ => kind.ToString(),
    };
}

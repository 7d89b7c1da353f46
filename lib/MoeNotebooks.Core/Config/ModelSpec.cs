using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>
/// A Mixture-of-Experts (or dense) transformer: what is computed, independent of hardware and strategy.
/// Every layer is attention (MHA, GQA or MLA; full or sliding-window; causal or not) followed by an FFN: routed
/// experts (top-k of <see cref="Experts"/>, plus shared experts) or, for the first <see cref="DenseLayers"/> layers
/// and models without experts, a dense FFN. Presets of published models live in data/models (<see cref="ModelPresets"/>).
/// </summary>
/// <param name="Name">Label used in reports.</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="HiddenSize">Model width H.</param>
/// <param name="AttentionHeads">Query heads; head dimension is H / heads unless <see cref="HeadDim"/> is given.</param>
/// <param name="FfnHiddenSize">FFN inner width F of dense layers, and of experts unless <see cref="MoeFfnHiddenSize"/> is given (4H in the founding document).</param>
/// <param name="Experts">Routed experts per MoE layer; 0 makes every FFN dense (a dense transformer).</param>
/// <param name="TopK">Experts each token is sent to.</param>
/// <param name="Batch">Sequences per step (global batch).</param>
/// <param name="SequenceLength">Tokens per sequence.</param>
/// <param name="ElementBytes">Bytes per activation/weight element (2 for bf16/fp16).</param>
/// <param name="Dtype">Datatype of everything (peak FLOP/s and bytes: "bf16", "fp16", "fp8", "fp32"); with a <see cref="Precision"/> recipe, of everything but the linear-layer GEMMs.</param>
public sealed record ModelSpec(
    string Name,
    int Layers,
    long HiddenSize,
    int AttentionHeads,
    long FfnHiddenSize,
    int Experts,
    int TopK,
    long Batch,
    long SequenceLength,
    int ElementBytes = 2,
    string Dtype = "bf16")
{
    /// <summary>How tokens spread over experts (uniform unless set).</summary>
    public RoutingSpec Routing { get; init; } = RoutingSpec.Uniform;

    /// <summary>Vocabulary size; 0 leaves out the embedding and the output (logits) layer.</summary>
    public long Vocabulary { get; init; }

    /// <summary>Input embedding and output layer share one matrix (Megatron's default; false = --untie-embeddings-and-output-weights).</summary>
    public bool TieEmbeddings { get; init; } = true;

    /// <summary>Key/value heads (grouped-query attention, Megatron --num-query-groups); null = as many as query heads.</summary>
    public int? KvHeads { get; init; }

    /// <summary>Key/value heads in effect.</summary>
    public int KeyValueHeads => KvHeads ?? AttentionHeads;

    private readonly long? _headDim;

    /// <summary>Head dimension: explicit (Qwen3, GPT-OSS: heads x headDim != hidden) or H / heads.</summary>
    public long HeadDim { get => _headDim ?? HiddenSize / AttentionHeads; init => _headDim = value; }

    /// <summary>True when <see cref="HeadDim"/> was given rather than derived.</summary>
    public bool HeadDimGiven => _headDim is not null;

    /// <summary>
    /// Causal (decoder) masking. Kernel model: FlashAttention-2 skips the tiles above the diagonal and so does about
    /// half the score and value work (Dao 2023, arXiv:2307.08691 §3.1: "about half" of the blocks need not be
    /// computed, 1.7-1.8x speedup); the DAG carries each query's mean number of attended keys as the product's N.
    /// </summary>
    public bool Causal { get; init; }

    /// <summary>Window (tokens) of sliding-window layers; null = none.</summary>
    public long? SlidingWindow { get; init; }

    /// <summary>Per-layer attention span, repeated over the layers (its length divides <see cref="Layers"/>); null = all full.</summary>
    public IReadOnlyList<AttentionLayerKind>? AttentionPattern { get; init; }

    /// <summary>Multi-head latent attention; null = MHA/GQA.</summary>
    public MlaSpec? Mla { get; init; }

    public FfnActivation FfnActivation { get; init; } = FfnActivation.Gelu;

    /// <summary>
    /// Clamp of the gated FFN's fc1 output before the activation (Megatron-Core <c>activation_func_clamp_value</c>;
    /// GPT-OSS: 7.0, Megatron-Bridge GPTOSSProvider): the gate half clamped above at the value, the linear half to
    /// [-value, value]. Megatron-Core runs it unfused ahead of the fused GLU kernel (megatron/core/fusions/
    /// fused_bias_geglu.py <c>weighted_bias_quick_geglu_impl</c>: chunk, two <c>clamp</c>s and a <c>torch.cat</c>), so it
    /// costs memory-bound passes of its own (the FFN chain of the derivation prices them); null = no clamp.
    /// </summary>
    public double? ActivationClampValue { get; init; }

    /// <summary>Gated linear unit FFN (three matrices; Megatron fuses gate and up into one [H, 2F] GEMM).</summary>
    public bool GatedFfn => FfnActivation is FfnActivation.Swiglu or FfnActivation.Geglu;

    /// <summary>Routed experts' FFN width (fine-grained experts, Megatron --moe-ffn-hidden-size); null = <see cref="FfnHiddenSize"/>.</summary>
    public long? MoeFfnHiddenSize { get; init; }

    /// <summary>Width of one routed expert.</summary>
    public long ExpertFfnHiddenSize => MoeFfnHiddenSize ?? FfnHiddenSize;

    /// <summary>Shared experts per MoE layer, always active.</summary>
    public int SharedExperts { get; init; }

    /// <summary>Width of one shared expert; null = <see cref="ExpertFfnHiddenSize"/>.</summary>
    public long? SharedExpertFfnHiddenSize { get; init; }

    public long SharedExpertWidth => SharedExpertFfnHiddenSize ?? ExpertFfnHiddenSize;

    /// <summary>The first layers use a dense FFN of <see cref="FfnHiddenSize"/> (DeepSeek first_k_dense_replace, Megatron --moe-layer-freq pattern).</summary>
    public int DenseLayers { get; init; }

    /// <summary>
    /// Multi-token-prediction depths (DeepSeek-V3 technical report §2.2, Megatron-LM --mtp-num-layers): each depth k
    /// shares the embedding and output head, and has two RMSNorms, a [2H -> H] projection and one transformer layer
    /// (of the last layer's kind) of its own; trained on the last pipeline stage after the main layers. 0 = none.
    /// </summary>
    public int MtpLayers { get; init; }

    /// <summary>
    /// Emit the MoE block's memory-bound passes: the router's softmax/top-k, the token permutation / unpermutation around
    /// the all-to-all (Megatron-Core's alltoall token dispatcher) and the experts' activation. The founding model's
    /// derivation leaves them out (its DAG is kept as it was); presets include them.
    /// </summary>
    public bool MoeMemoryBoundOps { get; init; }

    /// <summary>
    /// Hybrid layer pattern, one character per layer as Megatron-LM's <c>--hybrid-override-pattern</c>
    /// (megatron/core/ssm/mamba_hybrid_layer_allocation.py): <c>M</c> a Mamba-2 mixer, <c>*</c> self-attention,
    /// <c>-</c> a dense MLP, <c>E</c> an MoE FFN; each layer is one such block with its pre-norm and residual
    /// (Nemotron-H, Nemotron-3). Its length is <see cref="Layers"/>. Null: every layer is attention followed by an FFN.
    /// </summary>
    public string? HybridOverridePattern { get; init; }

    /// <summary>Mamba-2 SSM state size N per group (Megatron --mamba-state-dim, default 128).</summary>
    public long MambaStateDim { get; init; } = 128;

    /// <summary>Mamba-2 head dimension P (Megatron --mamba-head-dim, default 64).</summary>
    public long MambaHeadDim { get; init; } = 64;

    /// <summary>Mamba-2 B/C groups G (Megatron --mamba-num-groups, default 8): heads share B and C within a group.</summary>
    public int MambaNumGroups { get; init; } = 8;

    /// <summary>Mamba-2 heads (Megatron --mamba-num-heads); null: d_inner = expand x H with expand 2, heads = d_inner / head dim (MambaMixer).</summary>
    public int? MambaNumHeads { get; init; }

    /// <summary>Taps of the Mamba mixer's causal depthwise convolution (MambaMixer d_conv, default 4).</summary>
    public int MambaConvKernel { get; init; } = 4;

    /// <summary>Chunk length Q of the SSD chunked scan (MambaMixer chunk_size, Megatron-Core default 128; the Mamba-2 paper, arXiv:2405.21060 §6, uses 256).</summary>
    public long MambaChunkSize { get; init; } = 128;

    /// <summary>
    /// Latent MoE (Nemotron-3 Super/Ultra, Megatron --moe-latent-size): routed experts work in a latent width; a
    /// [H -> latent] projection before the dispatch and [latent -> H] after the combine; null = experts on H.
    /// </summary>
    public long? MoeLatentSize { get; init; }

    /// <summary>True when the model is a hybrid (<see cref="HybridOverridePattern"/> given).</summary>
    public bool IsHybrid => HybridOverridePattern is not null;

    /// <summary>What layer <paramref name="layer"/> is: in a hybrid model its pattern symbol; otherwise attention + FFN.</summary>
    public HybridLayerKind LayerKindOf(int layer) => HybridOverridePattern is { } p
        ? HybridLayerKinds.Of(p[layer % p.Length])
        : HybridLayerKind.AttentionAndFfn;

    /// <summary>Whether layer <paramref name="layer"/> has self-attention.</summary>
    public bool HasAttention(int layer) => LayerKindOf(layer) is HybridLayerKind.Attention or HybridLayerKind.AttentionAndFfn;

    /// <summary>Layers of a kind in the hybrid pattern (0 for a model without one).</summary>
    public int CountLayers(HybridLayerKind kind) => HybridOverridePattern?.Count(ch => HybridLayerKinds.Of(ch) == kind) ?? 0;

    /// <summary>Mamba-2 heads in effect: <see cref="MambaNumHeads"/>, or 2H / head dimension.</summary>
    public int MambaHeads => MambaNumHeads ?? (int)(2 * HiddenSize / MambaHeadDim);

    /// <summary>Mamba-2 inner width d_inner = heads x head dimension.</summary>
    public long MambaInner => (long)MambaHeads * MambaHeadDim;

    /// <summary>Channels of the causal convolution: x, B and C, d_inner + 2 G N.</summary>
    public long MambaConvDim => MambaInner + 2L * MambaNumGroups * MambaStateDim;

    /// <summary>Output width of the in-projection [z, x, B, C, dt]: 2 d_inner + 2 G N + heads.</summary>
    public long MambaInProjWidth => 2 * MambaInner + 2L * MambaNumGroups * MambaStateDim + MambaHeads;

    /// <summary>Width of the tokens the routed experts see and the all-to-all moves: the latent size, or H.</summary>
    public long ExpertInputWidth => MoeLatentSize ?? HiddenSize;

    /// <summary>Mixed-precision recipe; null = everything in <see cref="Dtype"/> (the founding behaviour).</summary>
    public PrecisionRecipe? Precision { get; init; }

    /// <summary>True when the FFNs are dense (no experts).</summary>
    public bool IsDense => Experts == 0;

    /// <summary>Whether layer <paramref name="layer"/> has routed experts.</summary>
    public bool IsMoeLayer(int layer) => !IsDense && (IsHybrid ? LayerKindOf(layer) == HybridLayerKind.Moe : layer >= DenseLayers);

    /// <summary>Attention span of a layer.</summary>
    public AttentionLayerKind AttentionKindOf(int layer) =>
        AttentionPattern is { Count: > 0 } p ? p[layer % p.Count] : AttentionLayerKind.Full;

    /// <summary>Keys each query of a sequence attends to on average in a layer (causal and sliding-window masks), as the score product's N.</summary>
    public long AttendedKeys(int layer)
    {
        var s = SequenceLength;
        var window = AttentionKindOf(layer) == AttentionLayerKind.Sliding && SlidingWindow is { } w && w < s ? w : s;
        if (!Causal) return window;
        // Query i (1-based) sees min(i, window) keys: sum = w(w+1)/2 + (s - w) w.
        var sum = window * (window + 1) / 2 + (s - window) * window;
        return (sum + s - 1) / s;
    }

    /// <summary>The GEMM datatype of the linear layers.</summary>
    public string GemmDtype => Precision?.GemmDtype ?? Dtype;

    /// <summary>Tokens per step: batch x sequence length.</summary>
    public long Tokens => Batch * SequenceLength;

    /// <summary>
    /// An upper bound on all parameters, in doubles (it can pass 2^63 before the bound refuses it): layers x (attention
    /// 4 x H x max(H, heads x head dimension) + router H x E + gated (3-matrix) experts, shared experts and a dense FFN)
    /// + embedding and logits 2VH. Bounded by <see cref="Bounds.Parameters"/> so every exact count fits 64 bits.
    /// </summary>
    public double TotalParameters
    {
        get
        {
            double h = HiddenSize, e = Experts;
            var attention = 4 * h * Math.Max(h, (double)AttentionHeads * Math.Max(QkHeadDim, VHeadDim));
            var ffn = 3 * h * FfnHiddenSize + (IsDense ? 0 : e * (h + 3 * h * ExpertFfnHiddenSize) + (double)SharedExperts * 3 * h * SharedExpertWidth);
            if (IsHybrid)
            {
                // Hybrid layers are one block each; bound every layer by the largest (Mamba: in- and out-projection; latent MoE: its two projections).
                var mamba = h * MambaInProjWidth + (double)MambaInner * h + (double)MambaConvDim * MambaConvKernel;
                var latent = MoeLatentSize is { } ls ? 2 * h * ls + e * (h + 3.0 * ls * ExpertFfnHiddenSize) + (double)SharedExperts * 3 * h * SharedExpertWidth : 0;
                var largest = Math.Max(Math.Max(attention, ffn), Math.Max(mamba, latent));
                return Layers * largest + MtpLayers * (attention + Math.Max(ffn, latent) + 2 * h * h) + 2.0 * Vocabulary * h;
            }
            return Layers * (attention + ffn) + MtpLayers * (attention + ffn + 2 * h * h) + 2.0 * Vocabulary * h;   // MTP depths: a layer + a [2H -> H] projection each
        }
    }

    /// <summary>Query-head dimension of the score product (MLA: qkNope + qkRope).</summary>
    public long QkHeadDim => Mla?.QkHeadDim ?? HeadDim;

    /// <summary>Value-head dimension (MLA: vHeadDim).</summary>
    public long VHeadDim => Mla?.VHeadDim ?? HeadDim;

    /// <summary>The founding document's model: 4 layers, H = 8192, 16 heads, F = 4H, 16 experts, top-1, 1024 x 10000 tokens.</summary>
    public static ModelSpec Seed { get; } = new("seed-moe", 4, 8192, 16, 32768, 16, 1, 1024, 10000);

    public static readonly IReadOnlyDictionary<string, int> DtypeBytes = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase)
    {
        ["fp32"] = 4, ["tf32"] = 4, ["bf16"] = 2, ["fp16"] = 2, ["fp8"] = 1,
        // FP4 operands are half a byte (plus scales); cost models that take whole bytes per element see 1. A GEMM
        // dtype only (precision "nvfp4"); a model's "dtype" cannot be fp4.
        ["fp4"] = 1,
    };

    /// <summary>Throws <see cref="ConfigException"/> naming the first invalid field.</summary>
    public ModelSpec Validated(string path = "model", string? source = null)
    {
        if (ValidatedOnce.Has(this)) return this;
        string F(string f) => $"{path}.{f}";
        string Show(long v) => v.ToString(CultureInfo.InvariantCulture);
        Validate.NotEmpty(F("name"), Name);
        Validate.Positive(F("layers"), Layers);
        Validate.Positive(F("hiddenSize"), HiddenSize);
        Validate.Positive(F("attentionHeads"), AttentionHeads);
        Validate.Positive(F("ffnHiddenSize"), FfnHiddenSize);
        if (Experts < 0) throw new ConfigException(F("experts"), Experts.ToString(CultureInfo.InvariantCulture), "must be >= 0 (0 = dense FFN)", source);
        Validate.Positive(F("topK"), TopK);
        if (Vocabulary < 0) throw new ConfigException(F("vocabulary"), Vocabulary.ToString(CultureInfo.InvariantCulture), "must be >= 0 (0 = no embedding/logits layer)", source);
        Validate.Positive(F("batch"), Batch);
        Validate.Positive(F("sequenceLength"), SequenceLength);
        Validate.Positive(F("elementBytes"), ElementBytes);
        if (_headDim is { } hd && hd <= 0)
            throw new ConfigException(F("headDim"), Show(hd), "must be a positive integer (the dimension of one attention head, e.g. 128)", source);
        if (_headDim is null && Mla is null && HiddenSize % AttentionHeads != 0)
            throw new ConfigException(F("attentionHeads"), AttentionHeads.ToString(CultureInfo.InvariantCulture),
                $"must divide hiddenSize = {HiddenSize} (head dimension = hiddenSize / attentionHeads), or give headDim", source);
        if (KvHeads is { } kv)
        {
            if (kv <= 0 || AttentionHeads % kv != 0)
                throw new ConfigException(F("kvHeads"), kv.ToString(CultureInfo.InvariantCulture),
                    $"must be a positive divisor of attentionHeads = {AttentionHeads} (each key/value head serves attentionHeads / kvHeads query heads)", source);
            if (Mla is not null)
                throw new ConfigException(F("kvHeads"), kv.ToString(CultureInfo.InvariantCulture), "does not apply to multi-head latent attention (model.mla): its keys and values come from the shared latent", source);
        }
        Mla?.Validated(F("mla"), source);
        if (SlidingWindow is { } w && w <= 0)
            throw new ConfigException(F("slidingWindow"), Show(w), "must be a positive number of tokens (e.g. 128)", source);
        if (AttentionPattern is { } pattern)
        {
            if (pattern.Count == 0 || Layers % pattern.Count != 0)
                throw new ConfigException(F("attentionPattern"), $"[{pattern.Count} entries]",
                    $"must have layers = {Layers} entries or a number that divides it (the pattern repeats over the layers)", source);
            if (pattern.Contains(AttentionLayerKind.Sliding) && SlidingWindow is null)
                throw new ConfigException(F("slidingWindow"), null, "is required when attentionPattern has \"sliding\" layers", source);
        }
        else if (SlidingWindow is not null)
            throw new ConfigException(F("attentionPattern"), null, "is required with slidingWindow: say which layers slide, e.g. [\"sliding\", \"full\"] to alternate, or [\"sliding\"] for all", source);
        if (ActivationClampValue is { } clamp)
        {
            if (!double.IsFinite(clamp) || clamp <= 0)
                throw new ConfigException(F("activationClampValue"), Validate.Show(clamp), "must be a positive finite number (Megatron-Core activation_func_clamp_value, e.g. 7.0 for GPT-OSS)", source);
            if (!GatedFfn)
                throw new ConfigException(F("activationClampValue"), Validate.Show(clamp), $"applies only to gated FFNs (ffnActivation \"swiglu\" or \"geglu\"; this model's is \"{JsonObjectReader.Kebab(FfnActivation.ToString())}\"): Megatron-Core clamps the gate and linear halves of fc1", source);
        }
        if (MoeFfnHiddenSize is { } mf) Validate.Positive(F("moeFfnHiddenSize"), mf);
        if (SharedExpertFfnHiddenSize is { } sf) Validate.Positive(F("sharedExpertFfnHiddenSize"), sf);
        Validate.Within(F("mtpLayers"), MtpLayers, Bounds.MtpLayers, source);
        if (MtpLayers > 0 && Vocabulary == 0)
            throw new ConfigException(F("mtpLayers"), MtpLayers.ToString(CultureInfo.InvariantCulture), "needs a vocabulary (model.vocabulary > 0): each depth's loss runs through the shared output head", source);
        if (SharedExperts < 0) throw new ConfigException(F("sharedExperts"), SharedExperts.ToString(CultureInfo.InvariantCulture), "must be >= 0", source);
        if (DenseLayers < 0 || (DenseLayers > 0 && DenseLayers >= Layers))
            throw new ConfigException(F("denseLayers"), DenseLayers.ToString(CultureInfo.InvariantCulture), $"must be >= 0 and < layers = {Layers} (the first denseLayers layers use a dense FFN)", source);
        if (IsDense && (SharedExperts > 0 || DenseLayers > 0 || MoeFfnHiddenSize is not null || MoeMemoryBoundOps))
            throw new ConfigException(F("experts"), "0", "sharedExperts, denseLayers, moeFfnHiddenSize and moeMemoryBoundOps need a model with experts (experts > 0)", source);
        if (IsDense && TopK != 1)
            throw new ConfigException(F("topK"), TopK.ToString(CultureInfo.InvariantCulture), "applies only to models with experts (model.experts > 0); leave it out (or 1) for a dense model", source);
        if (!IsDense && TopK > Experts)
            throw new ConfigException(F("topK"), TopK.ToString(CultureInfo.InvariantCulture), $"must be <= experts = {Experts}", source);
        if (!DtypeBytes.TryGetValue(Dtype, out var bytes) || Dtype.Equals("fp4", StringComparison.OrdinalIgnoreCase))
            throw new ConfigException(F("dtype"), $"\"{Dtype}\"", $"must be one of {string.Join(", ", DtypeBytes.Keys.Where(k => k != "fp4").Select(k => $"\"{k}\""))} (FP4 is a GEMM precision: use \"precision\": \"nvfp4\")", source);
        if (bytes != ElementBytes)
            throw new ConfigException(F("elementBytes"), ElementBytes.ToString(CultureInfo.InvariantCulture), $"must be {bytes} for dtype \"{Dtype}\"", source);
        if (Precision is not null && ElementBytes != 2)
            throw new ConfigException(F("dtype"), $"\"{Dtype}\"", $"must be \"bf16\" or \"fp16\" with a precision recipe (\"{Precision.Name}\" keeps activations, norms and attention in 16 bits)", source);
        // The largest products the derivations form: tokens x hidden x ffn (FLOPs of an expert GEMM x k)
        // and batch x seq x seq (attention scores). Fail here rather than wrap around later.
        var tokens = Validate.Product($"{F("batch")} x {F("sequenceLength")}", Batch, SequenceLength);
        Validate.Product($"{F("batch")} x {F("sequenceLength")} x {F("hiddenSize")} x {F("ffnHiddenSize")} x 2 x topK",
            tokens, HiddenSize, Math.Max(FfnHiddenSize, ExpertFfnHiddenSize), 2, TopK + SharedExperts);
        Validate.Product($"{F("batch")} x {F("sequenceLength")} x {F("sequenceLength")} x {F("hiddenSize")} x 2",
            tokens, SequenceLength, Math.Max(HiddenSize, AttentionHeads * Math.Max(QkHeadDim, VHeadDim)), 2);
        // Logits: tokens x vocabulary in fp32 (4 bytes), and the embedding/logits GEMMs tokens x vocabulary x hidden x 2.
        if (Vocabulary > 0)
            Validate.Product($"{F("batch")} x {F("sequenceLength")} x {F("vocabulary")} x {F("hiddenSize")} x 4 (logits bytes and FLOPs)",
                tokens, Vocabulary, HiddenSize, 4);
        // Physical ranges (after the products, so an overflowing product is reported in the fields that multiply).
        Validate.Within(F("layers"), Layers, Bounds.Layers, source);
        Validate.Within(F("hiddenSize"), HiddenSize, Bounds.HiddenSize, source);
        Validate.Within(F("attentionHeads"), AttentionHeads, Bounds.AttentionHeads, source);
        Validate.Within(F("ffnHiddenSize"), FfnHiddenSize, Bounds.FfnHiddenSize, source);
        Validate.Within(F("experts"), Experts, Bounds.Experts, source);
        Validate.Within(F("topK"), TopK, Bounds.TopK, source);
        Validate.Within(F("vocabulary"), Vocabulary, Bounds.Vocabulary, source);
        Validate.Within(F("batch"), Batch, Bounds.Batch, source);
        Validate.Within(F("sequenceLength"), SequenceLength, Bounds.SequenceLength, source);
        if (_headDim is { } headDim) Validate.Within(F("headDim"), headDim, Bounds.HeadDim, source);
        if (KvHeads is { } kvHeads) Validate.Within(F("kvHeads"), kvHeads, Bounds.AttentionHeads, source);
        if (SlidingWindow is { } window) Validate.Within(F("slidingWindow"), window, Bounds.SequenceLength, source);
        if (MoeFfnHiddenSize is { } moeFfn) Validate.Within(F("moeFfnHiddenSize"), moeFfn, Bounds.FfnHiddenSize, source);
        if (SharedExpertFfnHiddenSize is { } sharedFfn) Validate.Within(F("sharedExpertFfnHiddenSize"), sharedFfn, Bounds.FfnHiddenSize, source);
        Validate.Within(F("sharedExperts"), SharedExperts, Bounds.SharedExperts, source);
        ValidateHybrid(F, source);
        // Parameters (in doubles: the product can pass 2^63 before the bound refuses it): every count derived from
        // them (per GPU, per stage, bytes x 16 for training) then fits 64 bits and doubles exactly enough.
        var parameters = TotalParameters;
        if (!(parameters <= Bounds.Parameters.Max))
            throw new ConfigException($"parameters: {F("layers")} x (attention ~4 {F("hiddenSize")}^2 + {F("experts")} x 3 hiddenSize x expert width + FFN) + 2 {F("vocabulary")} x hiddenSize",
                Validate.Show(parameters), Bounds.Parameters.Requirement, source);
        if (!IsDense) Routing.Validated(Experts, F("routing"), source);
        else if (Routing != RoutingSpec.Uniform)
            throw new ConfigException(F("routing"), Routing.ToString(), "applies only to models with experts (model.experts > 0)", source);
        ValidatedOnce.Remember(this);
        return this;
    }

    private void ValidateHybrid(Func<string, string> F, string? source)
    {
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        Validate.Within(F("mambaStateDim"), MambaStateDim, Bounds.MambaStateDim, source);
        Validate.Within(F("mambaHeadDim"), MambaHeadDim, Bounds.MambaHeadDim, source);
        Validate.Within(F("mambaNumGroups"), MambaNumGroups, Bounds.MambaGroups, source);
        if (MambaNumHeads is { } mh) Validate.Within(F("mambaNumHeads"), mh, Bounds.MambaHeads, source);
        Validate.Within(F("mambaConvKernel"), MambaConvKernel, Bounds.MambaConvKernel, source);
        Validate.Within(F("mambaChunkSize"), MambaChunkSize, Bounds.MambaChunkSize, source);
        if (MoeLatentSize is { } latent)
        {
            Validate.Within(F("moeLatentSize"), latent, Bounds.HiddenSize, source);
            if (IsDense) throw new ConfigException(F("moeLatentSize"), I(latent), "needs a model with experts (model.experts > 0): it is the width the routed experts work in", source);
        }
        if (HybridOverridePattern is not { } pattern) return;
        if (pattern.Length != Layers)
            throw new ConfigException(F("hybridOverridePattern"), $"\"{pattern}\" ({pattern.Length} symbols)",
                $"must have one symbol per layer: layers = {Layers}", source);
        for (var i = 0; i < pattern.Length; i++)
            if (!HybridLayerKinds.IsSymbol(pattern[i]))
                throw new ConfigException($"{F("hybridOverridePattern")}[{i}]", $"'{pattern[i].ToString()}'",
                    "must be one of 'M' (Mamba-2), '*' (attention), '-' (dense MLP), 'E' (MoE), as Megatron-LM's --hybrid-override-pattern", source);
        if (pattern.Contains('E') && IsDense)
            throw new ConfigException(F("hybridOverridePattern"), $"\"{pattern}\"", "has MoE layers ('E') but model.experts = 0: give experts and topK", source);
        if (!IsDense && !pattern.Contains('E'))
            throw new ConfigException(F("experts"), I(Experts), "must be 0 when hybridOverridePattern has no MoE layer ('E')", source);
        if (DenseLayers > 0)
            throw new ConfigException(F("denseLayers"), I(DenseLayers), "does not apply with hybridOverridePattern (its '-' symbols are the dense layers)", source);
        if (AttentionPattern is not null || SlidingWindow is not null)
            throw new ConfigException(F("attentionPattern"), null, "sliding-window attention is not modelled in hybrid models (hybridOverridePattern): leave attentionPattern and slidingWindow out", source);
        if (!pattern.Contains('M')) return;
        if (MambaNumHeads is null && 2 * HiddenSize % MambaHeadDim != 0)
            throw new ConfigException(F("mambaHeadDim"), I(MambaHeadDim), $"must divide d_inner = 2 x hiddenSize = {2 * HiddenSize} (or give mambaNumHeads)", source);
        if (MambaHeads % MambaNumGroups != 0)
            throw new ConfigException(F("mambaNumGroups"), I(MambaNumGroups), $"must divide the Mamba heads ({MambaHeads}): heads share B and C within a group (Megatron-Core MambaMixer)", source);
        Validate.Product($"{F("batch")} x {F("sequenceLength")} x {F("hiddenSize")} x Mamba in-projection width x 2",
            Batch * SequenceLength, HiddenSize, MambaInProjWidth, 2);
    }

    /// <summary>
    /// Checks the model's sizes against a layout's tensor parallelism (<paramref name="tp"/> for FFNs, experts and
    /// vocabulary; <paramref name="attentionTp"/> for heads, TP or TP x EP). Key/value heads are split over the
    /// attention TP ranks when it divides them, and replicated when kvHeads divides it (each rank then holds one KV
    /// head of its query group, as vLLM does; Megatron-Core itself requires num_query_groups % TP == 0); anything else
    /// is rejected.
    /// </summary>
    public void CheckTensorParallel(int tp, int attentionTp, string? source = null)
    {
        string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        var kv = KeyValueHeads;
        if (Mla is null && kv % attentionTp != 0 && attentionTp % kv != 0)
            throw new ConfigException("model.kvHeads", I(kv),
                $"must be divisible by the attention tensor-parallel size {attentionTp} (KV heads split over TP) or divide it (KV heads replicated, one per rank); valid kvHeads: multiples or divisors of {attentionTp}", source);
        if (!IsDense && ExpertFfnHiddenSize % tp != 0)
            throw new ConfigException("model.moeFfnHiddenSize", I(ExpertFfnHiddenSize), $"must be divisible by strategy.tp = {tp} (experts are tensor-parallel)", source);
        if (IsHybrid && HybridOverridePattern!.Contains('M'))
        {
            // Megatron-Core MambaMixer: "nheads must be evenly divisble by tp_size", "ngroups must be evenly divisible by tp_size".
            // The mixer is split over the attention TP group (TP, or TP x EP for tensor-parallel attention).
            var ranks = attentionTp == tp ? $"strategy.tp = {tp}" : $"the attention tensor-parallel size {attentionTp}";
            if (MambaHeads % attentionTp != 0)
                throw new ConfigException("model.mambaNumHeads", I(MambaHeads), $"must be divisible by {ranks} (Mamba heads are split over TP)", source);
            if (MambaNumGroups % attentionTp != 0)
                throw new ConfigException("model.mambaNumGroups", I(MambaNumGroups), $"must be divisible by {ranks} (each TP rank holds whole B/C groups)", source);
        }
        if (SharedExperts > 0 && SharedExperts * SharedExpertWidth % tp != 0)
            throw new ConfigException("model.sharedExpertFfnHiddenSize", I(SharedExpertWidth), $"x sharedExperts must be divisible by strategy.tp = {tp}", source);
    }

    /// <summary>
    /// Reads a model: a full description, or <c>{"preset": "qwen3-30b-a3b", "batch": 512, ...}</c>: a preset from
    /// data/models with any field overridden.
    /// </summary>
    public static ModelSpec Read(JsonObjectReader r)
    {
        if (r.OptionalString("preset") is { } preset) return ModelPresets.ReadWithOverrides(preset, r);
        var dtype = r.OptionalString("dtype") ?? "bf16";
        var elementBytes = r.OptionalInt("elementBytes") ?? (DtypeBytes.TryGetValue(dtype, out var b) ? b : 2);
        var m = new ModelSpec(
            r.OptionalString("name") ?? "model",
            r.Int("layers"),
            r.Long("hiddenSize"),
            r.Int("attentionHeads"),
            r.Long("ffnHiddenSize"),
            r.OptionalInt("experts") ?? 0,
            r.OptionalInt("topK") ?? 1,
            r.Long("batch"),
            r.Long("sequenceLength"),
            elementBytes,
            dtype)
        {
            Vocabulary = r.OptionalLong("vocabulary") ?? 0,
            TieEmbeddings = r.OptionalBool("tieEmbeddings") ?? true,
            Routing = r.Has("routing") ? RoutingSpec.Read(r.Object("routing")) : RoutingSpec.Uniform,
            KvHeads = r.OptionalInt("kvHeads"),
            Causal = r.OptionalBool("causal") ?? false,
            SlidingWindow = r.OptionalLong("slidingWindow"),
            AttentionPattern = r.Element("attentionPattern") is { } p ? ReadPattern(p, r.Child("attentionPattern"), r.Source) : null,
            Mla = r.Has("mla") ? MlaSpec.Read(r.Object("mla")) : null,
            FfnActivation = r.Enum("ffnActivation", FfnActivation.Gelu),
            ActivationClampValue = r.OptionalDouble("activationClampValue"),
            MoeFfnHiddenSize = r.OptionalLong("moeFfnHiddenSize"),
            SharedExperts = r.OptionalInt("sharedExperts") ?? 0,
            SharedExpertFfnHiddenSize = r.OptionalLong("sharedExpertFfnHiddenSize"),
            DenseLayers = r.OptionalInt("denseLayers") ?? 0,
            MtpLayers = r.OptionalInt("mtpLayers") ?? 0,
            MoeMemoryBoundOps = r.OptionalBool("moeMemoryBoundOps") ?? false,
            Precision = ReadPrecision(r),
            HybridOverridePattern = r.OptionalString("hybridOverridePattern"),
            MoeLatentSize = r.OptionalLong("moeLatentSize"),
        };
        var mambaFields = new[] { "mambaStateDim", "mambaHeadDim", "mambaNumGroups", "mambaNumHeads", "mambaConvKernel", "mambaChunkSize" };
        if (m.HybridOverridePattern is null && mambaFields.FirstOrDefault(r.Has) is { } stray)
            throw new ConfigException(r.Child(stray), JsonObjectReader.Raw(r.Element(stray)!.Value), "needs model.hybridOverridePattern with Mamba layers ('M')", r.Source);
        m = m with
        {
            MambaStateDim = r.OptionalLong("mambaStateDim") ?? m.MambaStateDim,
            MambaHeadDim = r.OptionalLong("mambaHeadDim") ?? m.MambaHeadDim,
            MambaNumGroups = r.OptionalInt("mambaNumGroups") ?? m.MambaNumGroups,
            MambaNumHeads = r.OptionalInt("mambaNumHeads"),
            MambaConvKernel = r.OptionalInt("mambaConvKernel") ?? m.MambaConvKernel,
            MambaChunkSize = r.OptionalLong("mambaChunkSize") ?? m.MambaChunkSize,
        };
        if (r.OptionalLong("headDim") is { } headDim) m = m with { HeadDim = headDim };
        // Documentation a preset file carries beside the numbers.
        r.Element("description"); r.Element("sources"); r.Element("published");
        r.Finish();
        return m.Validated(r.Path, r.Source);
    }

    private static PrecisionRecipe? ReadPrecision(JsonObjectReader r)
    {
        if (r.Element("precision") is not { } e) return null;
        if (e.ValueKind == System.Text.Json.JsonValueKind.String) return PrecisionRecipe.Get(e.GetString()!, r.Child("precision"), r.Source);
        var o = r.Object("precision");
        var recipe = PrecisionRecipe.Get(o.String("recipe"), o.Child("recipe"), r.Source) with { Fp8Dispatch = o.OptionalBool("fp8Dispatch") ?? false };
        o.Finish();
        return recipe;
    }

    private static AttentionLayerKind[] ReadPattern(System.Text.Json.JsonElement e, string field, string? source)
    {
        if (e.ValueKind != System.Text.Json.JsonValueKind.Array)
            throw new ConfigException(field, JsonObjectReader.Raw(e), "must be an array of \"full\" / \"sliding\", one per layer or a repeating pattern", source);
        var list = new List<AttentionLayerKind>();
        var i = 0;
        foreach (var item in e.EnumerateArray())
        {
            if (item.ValueKind != System.Text.Json.JsonValueKind.String)
                throw new ConfigException($"{field}[{i}]", JsonObjectReader.Raw(item), "must be \"full\" or \"sliding\"", source);
            list.Add(JsonObjectReader.ParseEnum<AttentionLayerKind>($"{field}[{i}]", item.GetString()!, source));
            i++;
        }
        return list.ToArray();
    }

    /// <summary>The model as a JSON object that <see cref="Read"/> reads back to an equal description (every field written).</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(stream, new System.Text.Json.JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("name", Name);
            w.WriteNumber("layers", Layers);
            w.WriteNumber("hiddenSize", HiddenSize);
            w.WriteNumber("attentionHeads", AttentionHeads);
            if (KvHeads is { } kv) w.WriteNumber("kvHeads", kv);
            if (_headDim is { } hd) w.WriteNumber("headDim", hd);
            w.WriteBoolean("causal", Causal);
            if (SlidingWindow is { } sw) w.WriteNumber("slidingWindow", sw);
            if (AttentionPattern is { } pattern)
            {
                w.WriteStartArray("attentionPattern");
                foreach (var k in pattern) w.WriteStringValue(JsonObjectReader.Kebab(k.ToString()));
                w.WriteEndArray();
            }
            if (Mla is { } mla)
            {
                w.WriteStartObject("mla");
                w.WriteNumber("qLoraRank", mla.QLoraRank);
                w.WriteNumber("kvLoraRank", mla.KvLoraRank);
                w.WriteNumber("qkNopeHeadDim", mla.QkNopeHeadDim);
                w.WriteNumber("qkRopeHeadDim", mla.QkRopeHeadDim);
                w.WriteNumber("vHeadDim", mla.VHeadDim);
                w.WriteEndObject();
            }
            w.WriteNumber("ffnHiddenSize", FfnHiddenSize);
            w.WriteString("ffnActivation", JsonObjectReader.Kebab(FfnActivation.ToString()));
            if (ActivationClampValue is { } clamp) w.WriteNumber("activationClampValue", clamp);
            w.WriteNumber("experts", Experts);
            w.WriteNumber("topK", TopK);
            if (MoeFfnHiddenSize is { } mf) w.WriteNumber("moeFfnHiddenSize", mf);
            w.WriteNumber("sharedExperts", SharedExperts);
            if (SharedExpertFfnHiddenSize is { } sf) w.WriteNumber("sharedExpertFfnHiddenSize", sf);
            w.WriteNumber("denseLayers", DenseLayers);
            if (MoeLatentSize is { } latent) w.WriteNumber("moeLatentSize", latent);
            if (HybridOverridePattern is { } hybrid)
            {
                w.WriteString("hybridOverridePattern", hybrid);
                w.WriteNumber("mambaStateDim", MambaStateDim);
                w.WriteNumber("mambaHeadDim", MambaHeadDim);
                w.WriteNumber("mambaNumGroups", MambaNumGroups);
                if (MambaNumHeads is { } mh) w.WriteNumber("mambaNumHeads", mh);
                w.WriteNumber("mambaConvKernel", MambaConvKernel);
                w.WriteNumber("mambaChunkSize", MambaChunkSize);
            }
            if (MtpLayers > 0) w.WriteNumber("mtpLayers", MtpLayers);
            w.WriteBoolean("moeMemoryBoundOps", MoeMemoryBoundOps);
            w.WriteNumber("vocabulary", Vocabulary);
            w.WriteBoolean("tieEmbeddings", TieEmbeddings);
            w.WriteNumber("batch", Batch);
            w.WriteNumber("sequenceLength", SequenceLength);
            w.WriteNumber("elementBytes", ElementBytes);
            w.WriteString("dtype", Dtype);
            if (Precision is { } p)
            {
                w.WriteStartObject("precision");
                w.WriteString("recipe", p.Name);
                w.WriteBoolean("fp8Dispatch", p.Fp8Dispatch);
                w.WriteEndObject();
            }
            if (!IsDense && Routing != RoutingSpec.Uniform)
            {
                w.WritePropertyName("routing");
                Routing.WriteJson(w);
            }
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }
}

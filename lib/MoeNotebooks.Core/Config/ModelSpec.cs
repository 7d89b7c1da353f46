using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>
/// A Mixture-of-Experts transformer: what is computed, independent of hardware and strategy.
/// Every transformer block is attention followed by a routed expert FFN (top-k of <see cref="Experts"/>).
/// </summary>
/// <param name="Name">Label used in reports.</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="HiddenSize">Model width H.</param>
/// <param name="AttentionHeads">Heads; head dimension is H / heads.</param>
/// <param name="FfnHiddenSize">Expert FFN inner width F (4H in the founding document).</param>
/// <param name="Experts">Routed experts per MoE layer; 0 makes every FFN dense (a dense transformer).</param>
/// <param name="TopK">Experts each token is sent to.</param>
/// <param name="Batch">Sequences per step (global batch).</param>
/// <param name="SequenceLength">Tokens per sequence.</param>
/// <param name="ElementBytes">Bytes per activation/weight element (2 for bf16/fp16).</param>
/// <param name="Dtype">Datatype whose peak FLOP/s applies ("bf16", "fp16", "fp8", "fp32").</param>
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

    /// <summary>True when the FFNs are dense (no experts).</summary>
    public bool IsDense => Experts == 0;

    /// <summary>Tokens per step: batch x sequence length.</summary>
    public long Tokens => Batch * SequenceLength;

    /// <summary>All parameters, in doubles: layers x (attention 4H^2 + router H x E + E expert FFNs 2HF, or one dense FFN) + embedding and logits 2VH.</summary>
    public double TotalParameters
    {
        get
        {
            double h = HiddenSize, f = FfnHiddenSize, e = Experts;
            var ffn = IsDense ? 2 * h * f : e * (h + 2 * h * f);
            return Layers * (4 * h * h + ffn) + 2.0 * Vocabulary * h;
        }
    }

    /// <summary>Head dimension H / heads.</summary>
    public long HeadDim => HiddenSize / AttentionHeads;

    /// <summary>The founding document's model: 4 layers, H = 8192, 16 heads, F = 4H, 16 experts, top-1, 1024 x 10000 tokens.</summary>
    public static ModelSpec Seed { get; } = new("seed-moe", 4, 8192, 16, 32768, 16, 1, 1024, 10000);

    public static readonly IReadOnlyDictionary<string, int> DtypeBytes = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase)
    {
        ["fp32"] = 4, ["tf32"] = 4, ["bf16"] = 2, ["fp16"] = 2, ["fp8"] = 1,
    };

    /// <summary>Throws <see cref="ConfigException"/> naming the first invalid field.</summary>
    public ModelSpec Validated(string path = "model", string? source = null)
    {
        string F(string f) => $"{path}.{f}";
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
        if (HiddenSize % AttentionHeads != 0)
            throw new ConfigException(F("attentionHeads"), AttentionHeads.ToString(CultureInfo.InvariantCulture),
                $"must divide hiddenSize = {HiddenSize} (head dimension = hiddenSize / attentionHeads)", source);
        if (IsDense && TopK != 1)
            throw new ConfigException(F("topK"), TopK.ToString(CultureInfo.InvariantCulture), "applies only to models with experts (model.experts > 0); leave it out (or 1) for a dense model", source);
        if (!IsDense && TopK > Experts)
            throw new ConfigException(F("topK"), TopK.ToString(CultureInfo.InvariantCulture), $"must be <= experts = {Experts}", source);
        if (!DtypeBytes.TryGetValue(Dtype, out var bytes))
            throw new ConfigException(F("dtype"), $"\"{Dtype}\"", $"must be one of {string.Join(", ", DtypeBytes.Keys.Select(k => $"\"{k}\""))}", source);
        if (bytes != ElementBytes)
            throw new ConfigException(F("elementBytes"), ElementBytes.ToString(CultureInfo.InvariantCulture), $"must be {bytes} for dtype \"{Dtype}\"", source);
        // The largest products the derivations form: tokens x hidden x ffn (FLOPs of an expert GEMM x k)
        // and batch x seq x seq (attention scores). Fail here rather than wrap around later.
        var tokens = Validate.Product($"{F("batch")} x {F("sequenceLength")}", Batch, SequenceLength);
        Validate.Product($"{F("batch")} x {F("sequenceLength")} x {F("hiddenSize")} x {F("ffnHiddenSize")} x 2 x topK",
            tokens, HiddenSize, FfnHiddenSize, 2, TopK);
        Validate.Product($"{F("batch")} x {F("sequenceLength")} x {F("sequenceLength")} x {F("hiddenSize")} x 2",
            tokens, SequenceLength, HiddenSize, 2);
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
        // Parameters (in doubles: the product can pass 2^63 before the bound refuses it): every count derived from
        // them (per GPU, per stage, bytes x 16 for training) then fits 64 bits and doubles exactly enough.
        var parameters = TotalParameters;
        if (!(parameters <= Bounds.Parameters.Max))
            throw new ConfigException($"{F("layers")} x (4 {F("hiddenSize")}^2 + {F("experts")} x 2 hiddenSize x ffnHiddenSize) + 2 {F("vocabulary")} x hiddenSize",
                Validate.Show(parameters), Bounds.Parameters.Requirement, source);
        if (!IsDense) Routing.Validated(Experts, F("routing"), source);
        else if (Routing != RoutingSpec.Uniform)
            throw new ConfigException(F("routing"), Routing.ToString(), "applies only to models with experts (model.experts > 0)", source);
        return this;
    }

    public static ModelSpec Read(JsonObjectReader r)
    {
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
            Routing = r.Has("routing") ? RoutingSpec.Read(r.Object("routing")) : RoutingSpec.Uniform,
        };
        r.Finish();
        return m.Validated(r.Path, r.Source);
    }
}

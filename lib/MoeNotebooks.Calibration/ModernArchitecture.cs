using System.Globalization;
using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration;

/// <summary>Multi-head latent attention dimensions (DeepSeek-V2/V3), as Megatron names them.</summary>
public sealed record MlaDims(long QLoraRank, long KvLoraRank, long QkHeadDim, long QkPosEmbHeadDim, long VHeadDim);

/// <summary>How a publisher counted a model's FLOPs in some releases, where it differs from the architecture.</summary>
public sealed record FlopConvention(string BeforeRelease, bool Swiglu, bool SlidingWindow);

/// <summary>
/// A model as Megatron-LM's <c>num_floating_point_operations</c> sees it: the family's model preset (data/models, every
/// number with its public config as source) and, in data/validation/modern-model-architectures.json, the publisher's
/// FLOP conventions where they differ from the architecture. Dense layers come first (<see cref="DenseLayers"/>), the rest are MoE
/// when <see cref="Experts"/> &gt; 0.
/// </summary>
public sealed record ModernArchitecture(
    string Family, int Layers, long HiddenSize, int AttentionHeads, int QueryGroups, long KvChannels, long FfnHiddenSize,
    long MoeFfnHiddenSize, int Experts, int TopK, long SharedExpertFfnHiddenSize, int DenseLayers, long Vocabulary, bool Swiglu,
    MlaDims? Mla, long SlidingWindow, int SlidingWindowEvery, int MtpLayers, FlopConvention? OlderConvention, string Source)
{
    public const string ResourceName = "validation/modern-model-architectures.json";

    public int MoeLayers => Hybrid is { } hy ? hy.MoeLayers : Experts > 0 ? Layers - DenseLayers : 0;

    /// <summary>A hybrid model's layer counts and Mamba sizes (Megatron's hybrid branch); null for a transformer.</summary>
    public HybridArchitecture? Hybrid { get; init; }

    /// <summary>Latent MoE width (--moe-latent-size); null when experts work on the hidden size.</summary>
    public long? MoeLatentSize { get; init; }

    /// <summary>
    /// Layers at the end of the stack whose linear-layer GEMMs the family's NVFP4 training recipe keeps in BF16
    /// (Megatron's <c>first_last_layers_bf16</c> with <c>num_layers_at_end_in_bf16</c>); 0 when its NVFP4 recipe
    /// quantizes every layer. From the data file's optional <c>nvfp4LayersAtEndInBf16</c> (with its source).
    /// </summary>
    public int Nvfp4LayersAtEndInBf16 { get; init; }

    private static readonly Lazy<IReadOnlyDictionary<string, ModernArchitecture>> Embedded = new(() =>
    {
        using var stream = typeof(ModernArchitecture).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource {ResourceName} is missing");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), "data/" + ResourceName);
    });

    public static IReadOnlyDictionary<string, ModernArchitecture> Catalog => Embedded.Value;

    /// <summary>
    /// The architecture of a family: its catalog entry (with its publisher's FLOP conventions), else the model preset the
    /// family names (case-insensitive, e.g. "mixtral-8x22b" or "Mixtral-8x22B"), counted as Megatron-LM counts it today;
    /// null when it is neither. A preset outside the catalog is a model the training-modern fits were not measured on
    /// (<see cref="IsMeasuredFamily"/>).
    /// </summary>
    public static ModernArchitecture? Of(string family)
    {
        if (Catalog.TryGetValue(family, out var a)) return a;
        var preset = PresetNamed(family);
        return preset is null ? null
            : FromModel(family, ModelPresets.Preset(preset).Model, null, "no publisher's FLOP convention recorded: Megatron-LM's count of the preset");
    }

    /// <summary>The model preset a family name is (case-insensitive), or null.</summary>
    public static string? PresetNamed(string family) => ModelPresets.Names.FirstOrDefault(n => string.Equals(n, family, StringComparison.OrdinalIgnoreCase));

    /// <summary>Whether the family is one of the catalog's, the models whose published runs the fits were measured on.</summary>
    public static bool IsMeasuredFamily(string family) => Catalog.ContainsKey(family);

    public static IReadOnlyDictionary<string, ModernArchitecture> Parse(string json, string source)
    {
        using var doc = JsonObjectReader.Parse(json, source);
        var root = new JsonObjectReader(doc.RootElement, "", source);
        root.String("source");
        if (root.Element("models") is not { ValueKind: JsonValueKind.Array } array)
            throw new ConfigException("models", root.Has("models") ? "not an array" : "(missing)", "must be an array of model families", source);
        var result = new Dictionary<string, ModernArchitecture>(StringComparer.OrdinalIgnoreCase);
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            var r = new JsonObjectReader(item, $"models[{i++}]", source);
            var family = r.String("family");
            var presetName = r.String("preset");
            if (!ModelPresets.Names.Contains(presetName, StringComparer.OrdinalIgnoreCase))
                throw new ConfigException($"{r.Path}.preset", $"\"{presetName}\"", $"must name a model preset in data/models; known: {string.Join(", ", ModelPresets.Names)}", source);
            FlopConvention? older = null;
            if (r.Has("flopConventionBeforeRelease"))
            {
                var c = r.Object("flopConventionBeforeRelease");
                older = new FlopConvention(c.String("release"), c.OptionalBool("swiglu") ?? true, c.OptionalBool("slidingWindow") ?? true);
                c.Finish();
            }
            var a = FromModel(family, ModelPresets.Preset(presetName).Model, older, r.String("source"), $"{r.Path}.preset", source);
            if (r.Has("nvfp4LayersAtEndInBf16"))
            {
                var t = r.Object("nvfp4LayersAtEndInBf16");
                var n = t.Int("layers");
                t.String("source");
                t.Finish();
                if (n < 0 || n >= a.Layers)
                    throw new ConfigException(t.Child("layers"), n.ToString(CultureInfo.InvariantCulture), $"must be within [0, {a.Layers}) (the model's {a.Layers} layers; at least one stays NVFP4)", source);
                a = a with { Nvfp4LayersAtEndInBf16 = n };
            }
            r.Finish();
            if (!result.TryAdd(a.Family, a)) throw new ConfigException($"{r.Path}.family", $"\"{a.Family}\"", "appears twice", source);
        }
        root.Finish();
        return result;
    }

    /// <summary>
    /// The architecture Megatron's count reads, from a model preset (the same public config the DAG is built from):
    /// Megatron's qk_head_dim is MLA's no-position part, shared experts count as one FFN of their summed width, and a
    /// sliding window applies to one layer in <see cref="SlidingWindowEvery"/> of the preset's attention pattern.
    /// </summary>
    public static ModernArchitecture FromModel(string family, ModelSpec m, FlopConvention? older, string source, string field = "preset", string? file = null)
    {
        var mla = m.Mla is { } x ? new MlaDims(x.QLoraRank, x.KvLoraRank, x.QkNopeHeadDim, x.QkRopeHeadDim, x.VHeadDim) : null;
        var every = 0;
        if (m.SlidingWindow is not null && m.AttentionPattern is { Count: > 0 } pattern)
        {
            var windowed = pattern.Count(k => k == AttentionLayerKind.Sliding);
            if (windowed == 0 || pattern.Count % windowed != 0)
                throw new ConfigException(field, $"\"{m.Name}\"", "needs an attention pattern with one sliding-window layer in every n for Megatron's FLOP count", file);
            every = pattern.Count / windowed;
        }
        HybridArchitecture? hybrid = m.IsHybrid
            ? new HybridArchitecture(m.CountLayers(HybridLayerKind.Attention), m.CountLayers(HybridLayerKind.Mamba), m.CountLayers(HybridLayerKind.Mlp),
                m.CountLayers(HybridLayerKind.Moe), m.MambaStateDim, m.MambaHeadDim, m.MambaNumGroups, m.MambaHeads, m.IsMoeLayer(m.Layers - 1))
            : null;
        return new ModernArchitecture(
            family, m.Layers, m.HiddenSize, m.AttentionHeads, m.KeyValueHeads, m.HeadDim, m.FfnHiddenSize,
            m.IsDense ? 0 : m.ExpertFfnHiddenSize, m.Experts, m.IsDense ? 0 : m.TopK, (long)m.SharedExperts * m.SharedExpertWidth,
            m.IsDense ? 0 : m.DenseLayers, m.Vocabulary, m.GatedFfn, mla, m.SlidingWindow ?? 0, every, m.MtpLayers, older,
            $"model preset \"{m.Name}\" (data/models); {source}") { Hybrid = hybrid, MoeLatentSize = m.MoeLatentSize };
    }
}

/// <summary>
/// What Megatron-LM's hybrid FLOP count reads of a hybrid model: its layers by kind (pattern symbols '*', 'M', '-', 'E')
/// and the Mamba sizes; <see cref="LastLayerIsMoe"/> says what each MTP depth adds (an attention layer and, as the last
/// layer, an MoE or dense layer: Megatron-Bridge's Nemotron-3 Super MTP pattern "*E").
/// </summary>
public sealed record HybridArchitecture(int AttentionLayers, int MambaLayers, int MlpLayers, int MoeLayers, long MambaStateDim, long MambaHeadDim, int MambaNumGroups, int MambaHeads, bool LastLayerIsMoe);

/// <summary>
/// Model FLOPs per sequence of one training step (forward + backward, no recompute), as Megatron-LM's
/// <c>num_floating_point_operations</c> (megatron/training/training.py, <c>transformer_flops</c>) counts them, split into the
/// parts a prediction prices differently. Every GEMM counts 3 x 2mnk (forward, dgrad, wgrad); core attention counts
/// half the score matrix (causal); SwiGLU FFNs three matrices; MLA its low-rank projections; MTP layers one more layer
/// (MoE when the last layer is) and one more logits GEMM.
/// </summary>
public sealed record MegatronFlops(double AttentionProjections, double AttentionCore, double DenseMlp, double RoutedExperts, double SharedExperts, double Logits, double MtpProjection)
{
    /// <summary>Mamba layers' in- and out-projections (hybrid models).</summary>
    public double MambaProjections { get; init; }

    /// <summary>Mamba layers' scan, as Megatron counts it (7 d_in N per token).</summary>
    public double MambaScan { get; init; }

    /// <summary>Latent MoE's [H -> latent] and [latent -> H] projections.</summary>
    public double LatentProjections { get; init; }

    public double Total => AttentionProjections + AttentionCore + DenseMlp + RoutedExperts + SharedExperts + Logits + MtpProjection + MambaProjections + MambaScan + LatentProjections;

    /// <summary>Non-expert GEMMs: attention projections, dense MLPs, shared experts, MTP projection, Mamba and latent projections (logits apart).</summary>
    public double DenseGemms => AttentionProjections + DenseMlp + SharedExperts + MtpProjection + MambaProjections + LatentProjections;

    /// <summary>Sequence mixing outside the GEMMs: core attention and the Mamba scan (the DAG's attention-category work).</summary>
    public double SequenceMixing => AttentionCore + MambaScan;

    /// <summary>The count for a model, sequence length and MTP layers; <paramref name="swiglu"/> / <paramref name="slidingWindow"/> let a publisher's convention differ from the architecture.</summary>
    public static MegatronFlops PerSequence(ModernArchitecture a, long seq, int mtpLayers, bool? swiglu = null, bool? slidingWindow = null)
    {
        const double fb = 3, fma = 2;
        double h = a.HiddenSize, s = seq;
        if (a.Hybrid is { } hy) return Hybrid(a, hy, s, mtpLayers, swiglu ?? a.Swiglu);
        var layers = a.Layers + mtpLayers;
        var lastIsMoe = a.Experts > 0 && a.MoeLayers > 0;
        var moeLayers = a.MoeLayers + (lastIsMoe ? mtpLayers : 0);
        var denseLayers = a.Layers - a.MoeLayers + (lastIsMoe ? 0 : mtpLayers);
        var ffnFactor = (swiglu ?? a.Swiglu) ? 3.0 : 2.0;
        double projections, core;
        if (a.Mla is { } m)
        {
            double n = a.AttentionHeads;
            var q = m.QLoraRank * (h + n * (m.QkHeadDim + m.QkPosEmbHeadDim) + 1);
            projections = fb * fma * (q + m.KvLoraRank * (h + n * (m.QkHeadDim + m.VHeadDim) + 1) + h * m.QkPosEmbHeadDim + n * m.VHeadDim * h);
            core = fb * fma * (s * n * (m.QkHeadDim + m.QkPosEmbHeadDim) / 2 + s * n * m.VHeadDim / 2);
            projections *= layers;
            core *= layers;
        }
        else
        {
            double qp = a.KvChannels * a.AttentionHeads, kvp = a.KvChannels * a.QueryGroups;
            projections = layers * fb * fma * (h * (qp + 2 * kvp) + qp * h);
            var full = fb * fma * qp * s / 2 * 2;
            if (a.SlidingWindow > 0 && a.SlidingWindowEvery > 0 && (slidingWindow ?? true))
            {
                // Windowed layers (one in slidingWindowEvery) score each query against the window, as Megatron-Bridge's
                // 26.06+ count does (the rows' published columns agree with it).
                var windowed = layers / a.SlidingWindowEvery;
                core = (layers - windowed) * full + windowed * fb * fma * qp * Math.Min(a.SlidingWindow, s) * 2;
            }
            else core = layers * full;
        }
        var dense = fb * fma * h * a.FfnHiddenSize * ffnFactor * denseLayers;
        var routed = fb * fma * h * a.MoeFfnHiddenSize * a.TopK * ffnFactor * moeLayers;
        var shared = fb * fma * h * a.SharedExpertFfnHiddenSize * ffnFactor * moeLayers;
        var mtp = fb * fma * mtpLayers * (3 * h + 2 * h * h);
        var logits = fb * fma * h * a.Vocabulary * (mtpLayers + 1);
        return new MegatronFlops(projections * s, core * s, dense * s, routed * s, shared * s, logits * s, mtp * s);
    }

    /// <summary>
    /// Megatron-LM's hybrid branch (training.py <c>hybrid_flops</c>; Megatron-Bridge's flop_utils.py counts the same,
    /// adding each MTP depth's pattern layers): per token and layer, forward, x3 for forward and backward —
    /// attention 4 h p (h + h g / n + s / 2) with p = kv_channels n / h; MLP 4 F h (x1.5 SwiGLU); MoE 4 h F k
    /// (latent: 4 L F k + 4 h L) + shared 4 h F_s; Mamba 2 h (2 d_in + 2 G N + heads) + 7 d_in N + 2 d_in h with
    /// Megatron's d_in = 2 h (not heads x head dimension); logits 2 h V (1 + MTP depths). MTP depths add an attention
    /// layer and the last layer's FFN kind each (no separate projection term in this branch).
    /// </summary>
    private static MegatronFlops Hybrid(ModernArchitecture a, HybridArchitecture hy, double s, int mtpLayers, bool swiglu)
    {
        double h = a.HiddenSize, n = a.AttentionHeads, g = a.QueryGroups, qp = (double)a.KvChannels * a.AttentionHeads;
        var scale = swiglu ? 1.5 : 1.0;
        var attention = hy.AttentionLayers + mtpLayers;
        var moe = hy.MoeLayers + (hy.LastLayerIsMoe ? mtpLayers : 0);
        var mlp = hy.MlpLayers + (hy.LastLayerIsMoe ? 0 : mtpLayers);
        var projections = attention * 4 * qp * (h + h * g / n);
        var core = attention * 4 * qp * s / 2;
        var dense = mlp * 4 * a.FfnHiddenSize * h * scale;
        double routed, latent = 0;
        if (a.MoeLatentSize is { } l)
        {
            routed = moe * 4 * l * a.MoeFfnHiddenSize * a.TopK * scale;
            latent = moe * 4 * h * l;
        }
        else routed = moe * 4 * h * a.MoeFfnHiddenSize * a.TopK * scale;
        var shared = moe * 4 * h * a.SharedExpertFfnHiddenSize * scale;
        var dIn = 2 * h;
        var mambaProjections = hy.MambaLayers * (2 * h * (2 * dIn + 2.0 * hy.MambaNumGroups * hy.MambaStateDim + hy.MambaHeads) + 2 * dIn * h);
        var scan = hy.MambaLayers * 7 * dIn * hy.MambaStateDim;
        var logits = 2 * h * a.Vocabulary * (1 + mtpLayers);
        const double fb = 3;
        return new MegatronFlops(fb * projections * s, fb * core * s, fb * dense * s, fb * routed * s, fb * shared * s, fb * logits * s, 0)
        {
            MambaProjections = fb * mambaProjections * s,
            MambaScan = fb * scan * s,
            LatentProjections = fb * latent * s,
        };
    }

    /// <summary>The count a row's publisher used: the architecture's, except where an older release counted otherwise.</summary>
    public static MegatronFlops AsPublished(ModernArchitecture a, ModernRun run, int mtpLayers)
    {
        if (a.OlderConvention is { } c && string.CompareOrdinal(run.Release, c.BeforeRelease) < 0)
            return PerSequence(a, run.SequenceLength, mtpLayers, c.Swiglu, c.SlidingWindow);
        return PerSequence(a, run.SequenceLength, mtpLayers);
    }
}

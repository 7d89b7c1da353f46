using System.Globalization;
using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration;

/// <summary>Multi-head latent attention dimensions (DeepSeek-V2/V3), as Megatron names them.</summary>
public sealed record MlaDims(long QLoraRank, long KvLoraRank, long QkHeadDim, long QkPosEmbHeadDim, long VHeadDim);

/// <summary>How a publisher counted a model's FLOPs in some releases, where it differs from the architecture.</summary>
public sealed record FlopConvention(string BeforeRelease, bool Swiglu, bool SlidingWindow);

/// <summary>
/// A model as Megatron-LM's <c>num_floating_point_operations</c> sees it (data/validation/modern-model-architectures.json,
/// every entry with its public config as source). Dense layers come first (<see cref="DenseLayers"/>), the rest are MoE
/// when <see cref="Experts"/> &gt; 0.
/// </summary>
public sealed record ModernArchitecture(
    string Family, int Layers, long HiddenSize, int AttentionHeads, int QueryGroups, long KvChannels, long FfnHiddenSize,
    long MoeFfnHiddenSize, int Experts, int TopK, long SharedExpertFfnHiddenSize, int DenseLayers, long Vocabulary, bool Swiglu,
    MlaDims? Mla, long SlidingWindow, int SlidingWindowEvery, int MtpLayers, FlopConvention? OlderConvention, string Source)
{
    public const string ResourceName = "validation/modern-model-architectures.json";

    public int MoeLayers => Experts > 0 ? Layers - DenseLayers : 0;

    private static readonly Lazy<IReadOnlyDictionary<string, ModernArchitecture>> Embedded = new(() =>
    {
        using var stream = typeof(ModernArchitecture).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource {ResourceName} is missing");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), "data/" + ResourceName);
    });

    public static IReadOnlyDictionary<string, ModernArchitecture> Catalog => Embedded.Value;

    public static IReadOnlyDictionary<string, ModernArchitecture> Parse(string json, string source)
    {
        using var doc = JsonObjectReader.Parse(json, source);
        var root = new JsonObjectReader(doc.RootElement, "", source);
        root.String("source");
        if (root.Element("models") is not { ValueKind: JsonValueKind.Array } array)
            throw new ConfigException("models", root.Has("models") ? "not an array" : "(missing)", "must be an array of model architectures", source);
        var result = new Dictionary<string, ModernArchitecture>(StringComparer.OrdinalIgnoreCase);
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            var r = new JsonObjectReader(item, $"models[{i++}]", source);
            var heads = r.Int("attentionHeads");
            var hidden = r.Long("hiddenSize");
            MlaDims? mla = null;
            if (r.Has("mla"))
            {
                var m = r.Object("mla");
                mla = new MlaDims(m.Long("qLoraRank"), m.Long("kvLoraRank"), m.Long("qkHeadDim"), m.Long("qkPosEmbHeadDim"), m.Long("vHeadDim"));
                m.Finish();
            }
            FlopConvention? older = null;
            if (r.Has("flopConventionBeforeRelease"))
            {
                var c = r.Object("flopConventionBeforeRelease");
                older = new FlopConvention(c.String("release"), c.OptionalBool("swiglu") ?? true, c.OptionalBool("slidingWindow") ?? true);
                c.Finish();
            }
            var a = new ModernArchitecture(
                r.String("family"), r.Int("layers"), hidden, heads, r.OptionalInt("queryGroups") ?? heads, r.OptionalLong("kvChannels") ?? hidden / heads,
                r.Long("ffnHiddenSize"), r.OptionalLong("moeFfnHiddenSize") ?? 0, r.OptionalInt("experts") ?? 0, r.OptionalInt("topK") ?? 0,
                r.OptionalLong("sharedExpertFfnHiddenSize") ?? 0, r.OptionalInt("denseLayers") ?? 0, r.Long("vocabulary"), r.OptionalBool("swiglu") ?? false,
                mla, r.OptionalLong("slidingWindow") ?? 0, r.OptionalInt("slidingWindowEvery") ?? 0, r.OptionalInt("mtpLayers") ?? 0, older, r.String("source"));
            r.Finish();
            string I(long v) => v.ToString(CultureInfo.InvariantCulture);
            if (a.Layers <= 0) throw new ConfigException($"{r.Path}.layers", I(a.Layers), "must be > 0", source);
            if (a.HiddenSize <= 0) throw new ConfigException($"{r.Path}.hiddenSize", I(a.HiddenSize), "must be > 0", source);
            if (a.AttentionHeads <= 0 || a.QueryGroups <= 0 || a.AttentionHeads % a.QueryGroups != 0)
                throw new ConfigException($"{r.Path}.queryGroups", I(a.QueryGroups), $"must be > 0 and divide attentionHeads = {a.AttentionHeads}", source);
            if (a.Experts > 0 && (a.TopK <= 0 || a.TopK > a.Experts || a.MoeFfnHiddenSize <= 0))
                throw new ConfigException($"{r.Path}.topK", I(a.TopK), $"must be in 1..experts = {a.Experts} with moeFfnHiddenSize > 0", source);
            if (a.DenseLayers < 0 || a.DenseLayers > a.Layers)
                throw new ConfigException($"{r.Path}.denseLayers", I(a.DenseLayers), $"must be in 0..layers = {a.Layers}", source);
            if (!result.TryAdd(a.Family, a)) throw new ConfigException($"{r.Path}.family", $"\"{a.Family}\"", "appears twice", source);
        }
        root.Finish();
        return result;
    }
}

/// <summary>
/// Model FLOPs per sequence of one training step (forward + backward, no recompute), as Megatron-LM's
/// <c>num_floating_point_operations</c> (megatron/training/training.py, <c>transformer_flops</c>) counts them, split into the
/// parts a prediction prices differently. Every GEMM counts 3 x 2mnk (forward, dgrad, wgrad); core attention counts
/// half the score matrix (causal); SwiGLU FFNs three matrices; MLA its low-rank projections; MTP layers one more layer
/// (MoE when the last layer is) and one more logits GEMM.
/// </summary>
public sealed record MegatronFlops(double AttentionProjections, double AttentionCore, double DenseMlp, double RoutedExperts, double SharedExperts, double Logits, double MtpProjection)
{
    public double Total => AttentionProjections + AttentionCore + DenseMlp + RoutedExperts + SharedExperts + Logits + MtpProjection;

    /// <summary>Non-expert GEMMs: attention projections, dense MLPs, shared experts, MTP projection (logits apart).</summary>
    public double DenseGemms => AttentionProjections + DenseMlp + SharedExperts + MtpProjection;

    /// <summary>The count for a model, sequence length and MTP layers; <paramref name="swiglu"/> / <paramref name="slidingWindow"/> let a publisher's convention differ from the architecture.</summary>
    public static MegatronFlops PerSequence(ModernArchitecture a, long seq, int mtpLayers, bool? swiglu = null, bool? slidingWindow = null)
    {
        const double fb = 3, fma = 2;
        double h = a.HiddenSize, s = seq;
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

    /// <summary>The count a row's publisher used: the architecture's, except where an older release counted otherwise.</summary>
    public static MegatronFlops AsPublished(ModernArchitecture a, ModernRun run, int mtpLayers)
    {
        if (a.OlderConvention is { } c && string.CompareOrdinal(run.Release, c.BeforeRelease) < 0)
            return PerSequence(a, run.SequenceLength, mtpLayers, c.Swiglu, c.SlidingWindow);
        return PerSequence(a, run.SequenceLength, mtpLayers);
    }
}

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
        return new ModernArchitecture(
            family, m.Layers, m.HiddenSize, m.AttentionHeads, m.KeyValueHeads, m.HeadDim, m.FfnHiddenSize,
            m.IsDense ? 0 : m.ExpertFfnHiddenSize, m.Experts, m.IsDense ? 0 : m.TopK, (long)m.SharedExperts * m.SharedExpertWidth,
            m.IsDense ? 0 : m.DenseLayers, m.Vocabulary, m.GatedFfn, mla, m.SlidingWindow ?? 0, every, m.MtpLayers, older,
            $"model preset \"{m.Name}\" (data/models); {source}");
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

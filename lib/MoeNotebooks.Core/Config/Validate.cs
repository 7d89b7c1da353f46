using System.Globalization;

namespace MoeNotebooks.Config;

/// <summary>Small guards shared by the description records. Each throws <see cref="ConfigException"/>.</summary>
internal static class Validate
{
    public static string Show(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    public static void Positive(string field, long value)
    {
        if (value <= 0) throw new ConfigException(field, value.ToString(CultureInfo.InvariantCulture), "must be a positive integer (>= 1)");
    }

    public static void Positive(string field, double value)
    {
        if (!double.IsFinite(value) || value <= 0)
            throw new ConfigException(field, Show(value), "must be a finite number > 0");
    }

    public static void NonNegative(string field, double value)
    {
        if (!double.IsFinite(value) || value < 0)
            throw new ConfigException(field, Show(value), "must be a finite number >= 0");
    }

    /// <summary>
    /// <paramref name="value"/> within <paramref name="bound"/> (inclusive), else one line naming the field, the value,
    /// the range with its unit and why the range is what it is. The reusable guard for every numeric description field.
    /// </summary>
    public static double Within(string field, double value, Bound bound, string? source = null)
    {
        if (!double.IsFinite(value) || value < bound.Min || value > bound.Max)
            throw new ConfigException(field, Show(value), bound.Requirement, source);
        return value;
    }

    /// <inheritdoc cref="Within(string, double, Bound, string?)"/>
    public static long Within(string field, long value, Bound bound, string? source = null)
    {
        if (value < bound.Min || value > bound.Max)
            throw new ConfigException(field, value.ToString(CultureInfo.InvariantCulture), bound.Requirement, source);
        return value;
    }

    public static void InRange(string field, double value, double min, double max)
    {
        if (!double.IsFinite(value) || value < min || value > max)
            throw new ConfigException(field, Show(value), $"must lie in [{Show(min)}, {Show(max)}]");
    }

    public static void Divides(string field, long value, string byField, long by)
    {
        if (by <= 0 || value % by != 0)
            throw new ConfigException(field, value.ToString(CultureInfo.InvariantCulture),
                $"must be divisible by {byField} = {by} (valid: a multiple of {by})");
    }

    public static void NotEmpty(string field, string? value)
    {
        if (string.IsNullOrWhiteSpace(value)) throw new ConfigException(field, value is null ? null : $"\"{value}\"", "must be a non-empty string");
    }

    /// <summary>Multiplies counts in doubles (FLOPs, bytes, parameters can pass 2^63); refuses a non-finite product.</summary>
    public static double FiniteProduct(string what, params double[] factors)
    {
        var p = 1.0;
        foreach (var f in factors) p *= f;
        if (!double.IsFinite(p))
            throw new ConfigException(what, string.Join(" x ", factors.Select(Show)), "is too large to represent; use smaller sizes");
        return p;
    }

    /// <summary>Multiplies sizes, failing with a clear message instead of wrapping around.</summary>
    public static long Product(string what, params long[] factors)
    {
        long p = 1;
        foreach (var f in factors)
        {
            try { p = checked(p * f); }
            catch (OverflowException)
            {
                throw new ConfigException(what, string.Join(" x ", factors.Select(x => x.ToString(CultureInfo.InvariantCulture))),
                    "overflows a 64-bit integer; use smaller sizes");
            }
        }
        return p;
    }
}

/// <summary>An inclusive range for a numeric description field, its unit and the reason for the range.</summary>
public sealed record Bound(double Min, double Max, string Unit, string Why)
{
    private static string Show(double v) =>
        Math.Abs(v) is >= 1e6 or (> 0 and < 1e-3) ? v.ToString("0.###e0", CultureInfo.InvariantCulture) : v.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>"must lie in [1, 4096] layers (...why...)".</summary>
    public string Requirement => $"must lie in [{Show(Min)}, {Show(Max)}]{(Unit.Length == 0 ? "" : " " + Unit)} ({Why})";
}

/// <summary>
/// Physically sensible ranges for every number a description holds. Wide enough for any machine or model built or
/// announced (with an order of magnitude to spare), narrow enough that every derived time, byte and FLOP count stays
/// finite in doubles and every derived count fits 64 bits. New fields add their range here.
/// </summary>
public static class Bounds
{
    public const int MaxExperts = 1 << 20;

    // Model (largest public: ~200 layers, H = 25,600, 128 heads, F = 4H, 1M experts (PEER, He 2024), 256k vocabulary, 10M context).
    public static readonly Bound Layers = new(1, 16_384, "layers", "published models have at most a few hundred");
    public static readonly Bound HiddenSize = new(1, 1 << 20, "", "published models are below 32,768");
    public static readonly Bound HeadDim = new(1, 1 << 16, "", "published head dimensions are 64-256");
    public static readonly Bound MtpLayers = new(0, 16, "depths", "DeepSeek-V3 trains with 1 multi-token-prediction depth");
    public static readonly Bound SharedExperts = new(0, 1024, "experts", "published models share at most a few");
    public static readonly Bound LatentRank = new(1, 1 << 20, "", "MLA latent ranks are a few hundred to a few thousand");
    public static readonly Bound AttentionHeads = new(1, 1 << 16, "heads", "published models have at most a few hundred");
    public static readonly Bound FfnHiddenSize = new(1, 1 << 22, "", "published models are below 131,072");
    public static readonly Bound Experts = new(0, MaxExperts, "experts", "0 = dense; the largest published MoE has about a million");
    public static readonly Bound TopK = new(1, 1024, "experts per token", "published routers send a token to at most a few dozen");
    public static readonly Bound Vocabulary = new(0, 1 << 24, "tokens", "0 = no embedding; published vocabularies are below 300,000");
    public static readonly Bound Batch = new(1, 1 << 24, "sequences", "global batches are at most tens of thousands of sequences");
    public static readonly Bound Parameters = new(1, 1e16, "parameters", "the largest published models have a few trillion");
    public static readonly Bound SequenceLength = new(1, 1 << 24, "tokens", "published contexts are at most ten million tokens");
    public static readonly Bound MambaStateDim = new(1, 1 << 16, "", "published Mamba-2 state sizes are 64-256");
    public static readonly Bound MambaHeadDim = new(1, 1 << 16, "", "published Mamba-2 head dimensions are 64-128");
    public static readonly Bound MambaGroups = new(1, 1 << 16, "groups", "published Mamba-2 models use 1-8 B/C groups");
    public static readonly Bound MambaHeads = new(1, 1 << 20, "heads", "published Mamba-2 models have at most a few hundred heads");
    public static readonly Bound MambaConvKernel = new(1, 1 << 10, "taps", "Mamba's causal convolution has 4 taps");
    public static readonly Bound MambaChunkSize = new(1, 1 << 16, "tokens", "the SSD kernels use chunks of 64-256 tokens");

    // Hardware (H100: 989e12 bf16 FLOP/s, 3.35e12 B/s, 80e9 B; NVLink 450e9 B/s; InfiniBand latency ~5e-6 s).
    public static readonly Bound PeakFlopsPerSecond = new(1e9, 1e18, "FLOP/s", "one GPU: 1 GFLOP/s to 1 EFLOP/s");
    public static readonly Bound HbmBytesPerSecond = new(1e9, 1e15, "B/s", "one GPU's memory: 1 GB/s to 1 PB/s");
    public static readonly Bound HbmCapacityBytes = new(1e6, 1e15, "bytes", "one GPU's memory: 1 MB to 1 PB");
    public static readonly Bound SmCount = new(1, 100_000, "SMs", "GPUs have at most a few hundred");
    public static readonly Bound Gpus = new(1, 1 << 24, "GPUs", "the largest clusters hold about a million");
    public static readonly Bound GpusPerNode = new(1, 1 << 16, "GPUs", "a node or NVLink domain holds at most a few hundred");
    public static readonly Bound LinkBytesPerSecond = new(1e6, 1e15, "B/s", "one link: 1 MB/s to 1 PB/s");
    public static readonly Bound LatencySeconds = new(0, 1, "s", "a collective's start-up latency is microseconds; 1 s is already absurd");
    public static readonly Bound NvlsEfficiency = new(0.01, 1, "of the ideal in-switch reduction bandwidth", "measured NVLS reaches about 0.6");

    // Strategy.
    public static readonly Bound ParallelSize = new(1, 1 << 24, "ranks", "at most the largest cluster");
    public static readonly Bound StageLayers = new(0, 16_384, "layers", "at most the model's layers");
    public static readonly Bound Microbatches = new(1, 1 << 20, "microbatches", "at most the sequences of a batch");
    public static readonly Bound VirtualStages = new(1, 1024, "chunks per GPU", "Megatron-LM uses a handful");
    public static readonly Bound AllToAllChunks = new(1, 4096, "chunks", "a handful overlap communication with compute");

    // Routing.
    public static readonly Bound ZipfExponent = new(0, 100, "", "0 = uniform; skew saturates long before 100");
    public static readonly Bound CapacityFactor = new(1e-3, 1e6, "", "published factors are 1.0-2.0");
    public static readonly Bound TokenCount = new(0, 1e15, "tokens", "a relative count per expert; 1e15 is far beyond any step");

    // Cost models and calibration tables.
    public static readonly Bound Efficiency = new(1e-6, 1, "of peak", "a fraction of the datasheet peak");
    public static readonly Bound Flops = new(0, 1e24, "FLOP", "one operation; 1e24 is a whole training run");
    public static readonly Bound Bytes = new(1, 1e18, "bytes", "one transfer: at least a byte; 1e18 is an exabyte");
    public static readonly Bound MeasuredSeconds = new(1e-9, 1e6, "s", "a measured kernel or collective: 1 ns to 11 days");
    public static readonly Bound MatrixDimension = new(1, 1L << 32, "", "one GEMM dimension");
    public static readonly Bound TileSide = new(1, 4096, "elements", "GEMM tiles are 64-256 on a side");
    public static readonly Bound Neighbors = new(0, 1024, "neighbours", "a handful of nearby measured shapes");
}

/// <summary>
/// The description records that have passed their <c>Validated()</c> checks, by reference. The records are immutable and
/// the checks read nothing but the record (the path and source only name fields in a message), so an instance that
/// passed once passes again: <c>Scenario.Validated</c> and <c>StrategySpec.CheckFits</c> re-validate their parts, which a
/// sweep assembles from shared, already-read sections for every point. A <c>with</c> copy is another instance and is
/// checked on its own; records compare by value, so nothing here enters their equality.
/// </summary>
internal static class ValidatedOnce
{
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<object, object> Passed = new();
    private static readonly object Yes = new();

    public static bool Has(object record) => Passed.TryGetValue(record, out _);

    public static void Remember(object record) => Passed.AddOrUpdate(record, Yes);
}

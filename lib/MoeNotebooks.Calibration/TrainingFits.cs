using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>One generation's fit as carried: the factors, the rows they were fitted on and those rows' frameworks and sources.</summary>
/// <param name="RowIds">Case ids of the rows of <c>training_modern_public.csv</c> in the fit (<see cref="ModernSuite.InFit"/>).</param>
/// <param name="Frameworks">Who published those rows (the framework-side terms of the fit are theirs).</param>
/// <param name="Sources">The distinct <c>source</c> column values of those rows.</param>
/// <param name="Range">What the generation's predicted rows span (systems, precisions, GPUs, sequence, MoE; <see cref="CalibratedRange"/>):
/// carried with the fit, so the range warnings of <c>moe evaluate</c> and <c>moe predict</c> need no data folder and read no CSV.</param>
public sealed record FittedGeneration(GenerationFit Fit, IReadOnlyList<string> RowIds, IReadOnlyList<ModernFramework> Frameworks, IReadOnlyList<string> Sources, GenerationRange Range);

/// <summary>The fit a prediction uses, where its factors came from, and the warning it earns when they were transferred.</summary>
/// <param name="KernelGeneration">The generation whose kernel-efficiency factors it carries.</param>
/// <param name="FrameworkGeneration">The generation whose framework-side terms it carries.</param>
/// <param name="Warning">Null when the fit is the run's own generation's, fitted on rows of the run's framework.</param>
public sealed record FitChoice(GenerationFit Fit, string KernelGeneration, string FrameworkGeneration, string? Warning);

/// <summary>
/// The per-generation fits of the training-modern suite as data (<c>data/calibration/training-fits.json</c>, embedded):
/// written by <c>moe validate --write-fits</c> from the carried public table, checked against the live fit by the
/// calibration tests, and read by <c>moe predict</c>. <see cref="GenerationFit"/> is written generically (every public
/// property, by name), so a fit that gains a term gains a field; a carried file that lacks one is refused with how to
/// regenerate it.
/// <para>Transfer rule (<see cref="For"/>), for a run on a generation or by a framework no carried row covers. The fit's
/// factors are of two kinds. Kernel efficiencies (<see cref="KernelFactors"/>: GEMM, grouped GEMM, attention,
/// all-to-all, memory-bound, Mamba SSD) say how far the GPU's kernels fall short of what the cost model prices; they come
/// from the run's own generation when it has a fit, else from the fitted generation whose cost-model calibration is
/// closest: the GEMM tile table's achievable fraction of peak (data/gemm, measured MAMF: Ampere 0.84, Hopper 0.80,
/// Blackwell 0.776, CDNA3 0.514), so Hopper borrows Blackwell's (whose tile set is Hopper's, and whose rows run the same
/// Transformer Engine / cuDNN fused-attention stack with FP8), and so does CDNA3. Every other term (the overhead per
/// layer-microbatch, the experts' host launches, the exposed share of the DP synchronisation, and any term the fit
/// gains) is the framework's: how Megatron-Core or composer schedules, launches and overlaps. Those come from the fit of
/// the generation that holds rows of the run's framework (Megatron-Bridge: Blackwell; MosaicML MPT: Ampere), the kernel
/// source first when it holds some, else the one with the most. Nothing is refitted: the factors are the carried ones,
/// and every transferred prediction carries the warning "outside the calibrated range: factors transferred from ...".</para>
/// </summary>
public sealed record TrainingFits(IReadOnlyDictionary<string, FittedGeneration> Generations, string Table, string TableSha256)
{
    public const string ResourceName = "calibration/training-fits.json";

    /// <summary>Where the file lives in the repository, and the command that writes it (from the repository root).</summary>
    public const string RepositoryPath = "data/calibration/training-fits.json";
    public const string RegenerateCommand = "dotnet run --project lib/MoeNotebooks.Cli -c Release -- validate --write-fits " + RepositoryPath + " (then rebuild: the file is embedded)";

    /// <summary>The factors taken from the kernel source generation; all other properties of a fit are framework-side.</summary>
    public static readonly IReadOnlyList<string> KernelFactors =
        [nameof(GenerationFit.Gemm), nameof(GenerationFit.GroupedGemm), nameof(GenerationFit.Attention), nameof(GenerationFit.AllToAll), nameof(GenerationFit.MemoryBound), nameof(GenerationFit.Ssd)];

    private static readonly Lazy<TrainingFits> Embedded = new(() =>
    {
        using var stream = typeof(TrainingFits).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource {ResourceName} is missing");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), RepositoryPath);
    });

    /// <summary>The fits carried in the repository (embedded at build time).</summary>
    public static TrainingFits Carried => Embedded.Value;

    /// <summary>The fits of a suite run over <paramref name="tablePath"/>: each generation's fit with the rows in it.</summary>
    public static TrainingFits Of(ModernSuiteResult suite, string tablePath)
    {
        var inFit = suite.Rows.Select(r => r.Row).Where(ModernSuite.InFit).ToArray();
        var ranges = CalibratedRange.Over(suite.Rows.Select(r => r.Row.Run));
        var generations = suite.Fits.OrderBy(f => f.Key, StringComparer.Ordinal).ToDictionary(f => f.Key, f =>
        {
            var rows = inFit.Where(r => r.Run.Generation == f.Key).ToArray();
            return new FittedGeneration(f.Value, rows.Select(r => r.Run.Id).ToArray(), rows.Select(r => r.Run.Framework).Distinct().Order().ToArray(),
                rows.Select(r => r.Run.Source).Distinct().Order(StringComparer.Ordinal).ToArray(), ranges[f.Key]);
        });
        return new TrainingFits(generations, Path.GetFileName(tablePath), Sha256(File.ReadAllBytes(tablePath)));
    }

    public static string Sha256(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();

    /// <summary>
    /// The fit for a run on <paramref name="generation"/> published by (or run like) <paramref name="framework"/>, by the
    /// transfer rule of the class summary; the warning is null only when the generation's own fit covers the framework.
    /// </summary>
    public FitChoice For(string generation, ModernFramework framework)
    {
        if (Generations.Count == 0) throw new ConfigException("fits", "none", "no fitted generation is carried; regenerate: " + RegenerateCommand);
        Generations.TryGetValue(generation, out var own);
        if (own is not null && own.Frameworks.Contains(framework)) return new FitChoice(own.Fit, generation, generation, null);
        var kernel = own is not null ? generation : NearestKernelGeneration(generation);
        var frameworkGeneration = Generations.Where(g => g.Value.Frameworks.Contains(framework))
            .OrderByDescending(g => g.Key == kernel).ThenByDescending(g => g.Value.RowIds.Count).ThenBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => g.Key).FirstOrDefault();
        var fit = Transfer(Generations[kernel].Fit, Generations[frameworkGeneration ?? kernel].Fit, generation);
        string F(double v) => v.ToString("F3", CultureInfo.InvariantCulture);
        var kernelWhy = own is not null
            ? $"kernel efficiencies from the {kernel} fit ({Generations[kernel].RowIds.Count} rows)"
            : $"kernel efficiencies (GEMM, grouped GEMM, attention, all-to-all, memory-bound, Mamba SSD) from the {kernel} fit, the fitted generation with the closest GEMM calibration (tile table achievable fraction {F(AchievableFraction(generation))} vs {F(AchievableFraction(kernel))})";
        var frameworkWhy = frameworkGeneration is not null
            ? $"framework terms (overhead per layer-microbatch, host launches, exposed DP share) from the {frameworkGeneration} fit of the {Name(framework)} rows"
            : $"framework terms from the {kernel} fit, which holds no {Name(framework)} row ({string.Join(", ", Generations[kernel].Frameworks.Select(Name))} only)";
        var what = own is null ? $"no published training run on {generation} GPUs is fitted" : $"no {Name(framework)} run on {generation} GPUs is fitted";
        return new FitChoice(fit, kernel, frameworkGeneration ?? kernel, $"outside the calibrated range: {what}; factors transferred from other fits: {kernelWhy}; {frameworkWhy}");
    }

    /// <summary>The framework fit's terms with the kernel fit's <see cref="KernelFactors"/>, labelled <paramref name="generation"/> with no rows of its own.</summary>
    public static GenerationFit Transfer(GenerationFit kernel, GenerationFit framework, string generation) =>
        framework with
        {
            Generation = generation, Rows = 0,
            Gemm = kernel.Gemm, GroupedGemm = kernel.GroupedGemm, Attention = kernel.Attention, AllToAll = kernel.AllToAll, MemoryBound = kernel.MemoryBound, Ssd = kernel.Ssd,
        };

    /// <summary>The fitted generation whose GEMM tile table's achievable fraction is closest to <paramref name="generation"/>'s (ties: more fitted rows, then name).</summary>
    public string NearestKernelGeneration(string generation)
    {
        var target = AchievableFraction(generation);
        return Generations.OrderBy(g => Math.Abs(AchievableFraction(g.Key) - target)).ThenByDescending(g => g.Value.RowIds.Count).ThenBy(g => g.Key, StringComparer.Ordinal).First().Key;
    }

    /// <summary>The achievable fraction of peak of the generation's GEMM tile table (data/gemm).</summary>
    public static double AchievableFraction(string generation) => TileWaveTable.Get(generation, "hardware.gpu.architecture").AchievableFraction;

    public static string Name(ModernFramework f) => f == ModernFramework.MosaicMpt ? "MosaicML MPT" : "Megatron-Bridge";

    // ---- the file ----

    private static PropertyInfo[] FitProperties => typeof(GenerationFit).GetProperties(BindingFlags.Public | BindingFlags.Instance).OrderBy(p => p.MetadataToken).ToArray();

    public string ToJson()
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("about", "Per-GPU-generation fits of the training-modern suite (ModernSuite.Fit), computed from the carried public table named below, rows in the fit listed per generation with their sources. Written by `moe validate --write-fits`; the calibration tests fail when it differs from the live fit. Transfer rule for other generations and frameworks: TrainingFits.For.");
            w.WriteString("table", "data/calibration/" + Table);
            w.WriteString("tableSha256", TableSha256);
            w.WriteStartObject("generations");
            foreach (var (name, g) in Generations)
            {
                w.WriteStartObject(name);
                WriteFit(w, "fit", g.Fit);
                w.WriteStartArray("frameworks");
                foreach (var f in g.Frameworks) w.WriteStringValue(f.ToString());
                w.WriteEndArray();
                w.WriteStartArray("sources");
                foreach (var s in g.Sources) w.WriteStringValue(s);
                w.WriteEndArray();
                w.WriteStartObject("range");
                w.WriteStartArray("systems");
                foreach (var x in g.Range.Systems.Order(StringComparer.Ordinal)) w.WriteStringValue(x);
                w.WriteEndArray();
                w.WriteStartArray("precisions");
                foreach (var x in g.Range.Precisions.Order(StringComparer.Ordinal)) w.WriteStringValue(x);
                w.WriteEndArray();
                w.WriteNumber("minGpus", g.Range.MinGpus);
                w.WriteNumber("maxGpus", g.Range.MaxGpus);
                w.WriteNumber("minSequence", g.Range.MinSequence);
                w.WriteNumber("maxSequence", g.Range.MaxSequence);
                w.WriteBoolean("hasMoe", g.Range.HasMoe);
                w.WriteEndObject();
                w.WriteStartArray("rows");
                foreach (var id in g.RowIds) w.WriteStringValue(id);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <summary>Every public property of <paramref name="fit"/> by name, as an object <paramref name="name"/> (numbers, booleans, strings).</summary>
    public static void WriteFit(Utf8JsonWriter w, string name, GenerationFit fit)
    {
        w.WriteStartObject(name);
        foreach (var p in FitProperties)
        {
            switch (p.GetValue(fit))
            {
                case double d: w.WriteNumber(p.Name, d); break;
                case int i: w.WriteNumber(p.Name, i); break;
                case bool b: w.WriteBoolean(p.Name, b); break;
                case string s: w.WriteString(p.Name, s); break;
                case null: w.WriteNull(p.Name); break;
                case var other: throw new InvalidOperationException($"GenerationFit.{p.Name} is a {other.GetType().Name}: TrainingFits writes numbers, booleans and strings only");
            }
        }
        w.WriteEndObject();
    }

    public static TrainingFits Parse(string json, string source)
    {
        ConfigException Bad(string field, string? value, string what) => new(field, value, what + "; regenerate: " + RegenerateCommand, source);
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        string Str(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : throw Bad(name, null, "must be a string");
        var generations = new Dictionary<string, FittedGeneration>(StringComparer.Ordinal);
        if (!root.TryGetProperty("generations", out var gens) || gens.ValueKind != JsonValueKind.Object) throw Bad("generations", null, "must be an object");
        var properties = FitProperties;
        var ctor = typeof(GenerationFit).GetConstructors().OrderByDescending(c => c.GetParameters().Length).First();
        foreach (var g in gens.EnumerateObject())
        {
            var path = $"generations.{g.Name}";
            if (!g.Value.TryGetProperty("fit", out var fit) || fit.ValueKind != JsonValueKind.Object) throw Bad(path + ".fit", null, "must be an object");
            object? Value(string name, Type type)
            {
                if (!fit.TryGetProperty(name, out var v)) throw Bad($"{path}.fit.{name}", null, "is missing: the fit's shape changed since the file was written");
                try
                {
                    return type == typeof(double) ? v.GetDouble() : type == typeof(int) ? v.GetInt32() : type == typeof(bool) ? v.GetBoolean()
                        : type == typeof(string) ? v.GetString() : throw new InvalidOperationException($"GenerationFit.{name} has type {type.Name}");
                }
                catch (Exception e) when (e is InvalidOperationException or FormatException)
                {
                    throw Bad($"{path}.fit.{name}", v.ToString(), $"must be a {type.Name}");
                }
            }
            foreach (var extra in fit.EnumerateObject().Where(p => properties.All(q => q.Name != p.Name)))
                throw Bad($"{path}.fit.{extra.Name}", extra.Value.ToString(), "is not a term of GenerationFit");
            var parameters = ctor.GetParameters();
            var f = (GenerationFit)ctor.Invoke(parameters.Select(p => Value(properties.First(q => string.Equals(q.Name, p.Name, StringComparison.OrdinalIgnoreCase)).Name, p.ParameterType)).ToArray());
            foreach (var p in properties.Where(p => p.CanWrite && parameters.All(c => !string.Equals(c.Name, p.Name, StringComparison.OrdinalIgnoreCase))))
                p.SetValue(f, Value(p.Name, p.PropertyType));
            string[] Strings(JsonElement parent, string at, string name) => parent.TryGetProperty(name, out var a) && a.ValueKind == JsonValueKind.Array
                ? a.EnumerateArray().Select(x => x.GetString() ?? throw Bad($"{at}.{name}", null, "must hold strings")).ToArray()
                : throw Bad($"{at}.{name}", null, "must be an array");
            string[] List(string name) => Strings(g.Value, path, name);
            var frameworks = List("frameworks").Select(x => Enum.TryParse<ModernFramework>(x, out var fw) ? fw : throw Bad($"{path}.frameworks", x, $"must be one of {string.Join(", ", Enum.GetNames<ModernFramework>())}")).ToArray();
            if (!g.Value.TryGetProperty("range", out var range) || range.ValueKind != JsonValueKind.Object) throw Bad(path + ".range", null, "must be an object: the calibrated range was added after the file was written");
            long Whole(string name) => range.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var x) && x > 0
                ? x : throw Bad($"{path}.range.{name}", range.TryGetProperty(name, out var raw) ? raw.ToString() : null, "must be a positive whole number");
            var hasMoe = range.TryGetProperty("hasMoe", out var moe) && moe.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? moe.GetBoolean() : throw Bad($"{path}.range.hasMoe", null, "must be true or false");
            var gr = new GenerationRange(g.Name, Strings(range, path + ".range", "systems").ToHashSet(StringComparer.Ordinal), Strings(range, path + ".range", "precisions").ToHashSet(StringComparer.Ordinal),
                checked((int)Whole("minGpus")), checked((int)Whole("maxGpus")), Whole("minSequence"), Whole("maxSequence"), hasMoe);
            generations[g.Name] = new FittedGeneration(f, List("rows"), frameworks, List("sources"), gr);
        }
        return new TrainingFits(generations, Path.GetFileName(Str(root, "table")), Str(root, "tableSha256"));
    }
}

using System.Globalization;
using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration;

/// <summary>Megatron-LM's <c>--DDP-impl</c>: when data-parallel gradients are all-reduced.</summary>
public enum DdpImplementation
{
    /// <summary>Megatron's own: one all-reduce of the contiguous gradient buffer after the pipeline flush.</summary>
    Local,

    /// <summary>PyTorch DistributedDataParallel: buckets all-reduced on their own stream while the last microbatch's backward runs.</summary>
    Torch,
}

/// <summary>How one SC21 Table 1 run was launched: what the table does not give.</summary>
/// <param name="MicroBatch">Sequences per microbatch (MBS).</param>
/// <param name="LayersPerVirtualStage">--num-layers-per-virtual-pipeline-stage; 0 for plain 1F1B.</param>
public sealed record Sc21RunSettings(string CaseId, string Model, int MicroBatch, int LayersPerVirtualStage, DdpImplementation Ddp)
{
    public const string ResourceName = "validation/megatron-sc21-table1-runs.json";

    /// <summary>What a case without published settings gets: one sequence per microbatch, plain 1F1B, gradients after the flush.</summary>
    public static Sc21RunSettings Default(TrainingCase c) => new(c.Id, c.Model, 1, 0, DdpImplementation.Local);

    /// <summary>Megatron-LM's name for the DDP implementation ("local", "torch").</summary>
    public string DdpName => Ddp.ToString().ToLowerInvariant();

    /// <summary>Model chunks per GPU for a case (1 without interleaving).</summary>
    public int VirtualStages(TrainingCase c)
    {
        if (LayersPerVirtualStage == 0) return 1;
        var perStage = c.Layers / c.PP;
        if (c.Layers % c.PP != 0 || perStage % LayersPerVirtualStage != 0)
            throw new ConfigException("layersPerVirtualStage", LayersPerVirtualStage.ToString(CultureInfo.InvariantCulture),
                $"must divide the {c.Layers} / {c.PP} layers per stage of {c.Id}");
        return perStage / LayersPerVirtualStage;
    }
}

/// <summary>How the framework executed every run: attention kernel, whether communication overlapped compute, scatter/gather sends.</summary>
public sealed record Sc21Execution(AttentionKernel AttentionKernel, bool OverlapCommunication, bool ScatterGather, string Source);

/// <summary>The published launch settings of the SC21 Table 1 runs (data/validation, embedded) and how Megatron-LM executed them then.</summary>
public sealed record Sc21RunCatalog(string Source, Sc21Execution Execution, IReadOnlyDictionary<string, Sc21RunSettings> Runs)
{
    private static readonly Lazy<Sc21RunCatalog> Embedded = new(() =>
    {
        var asm = typeof(Sc21RunCatalog).Assembly;
        using var stream = asm.GetManifestResourceStream(Sc21RunSettings.ResourceName)
            ?? throw new InvalidOperationException($"embedded resource {Sc21RunSettings.ResourceName} is missing");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), "data/" + Sc21RunSettings.ResourceName);
    });

    /// <summary>The catalog built into this assembly from data/validation/megatron-sc21-table1-runs.json.</summary>
    public static Sc21RunCatalog Published => Embedded.Value;

    /// <summary>The settings of a case, or <see cref="Sc21RunSettings.Default"/> when none were published.</summary>
    public Sc21RunSettings For(TrainingCase c) => Runs.TryGetValue(c.Id, out var s) ? s : Sc21RunSettings.Default(c);

    public static Sc21RunCatalog Parse(string json, string source)
    {
        using var doc = JsonObjectReader.Parse(json, source);
        var root = new JsonObjectReader(doc.RootElement, "", source);
        var runs = new Dictionary<string, Sc21RunSettings>(StringComparer.Ordinal);
        if (root.Element("runs") is not { ValueKind: JsonValueKind.Array } array)
            throw new ConfigException("runs", root.Has("runs") ? "not an array" : "(missing)", "must be an array of run settings", source);
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            var r = new JsonObjectReader(item, $"runs[{i++}]", source);
            var s = new Sc21RunSettings(r.String("case"), r.String("model"), r.Int("microBatch"), r.OptionalInt("layersPerVirtualStage") ?? 0,
                r.Enum("ddp", DdpImplementation.Local));
            r.Finish();
            if (s.MicroBatch <= 0)
                throw new ConfigException($"{r.Path}.microBatch", s.MicroBatch.ToString(CultureInfo.InvariantCulture), "must be > 0", source);
            if (s.LayersPerVirtualStage < 0)
                throw new ConfigException($"{r.Path}.layersPerVirtualStage", s.LayersPerVirtualStage.ToString(CultureInfo.InvariantCulture), "must be >= 0 (0: no interleaving)", source);
            if (!runs.TryAdd(s.CaseId, s)) throw new ConfigException($"{r.Path}.case", $"\"{s.CaseId}\"", "appears twice", source);
        }
        var x = root.Object("execution");
        var execution = new Sc21Execution(x.Enum("attentionKernel", AttentionKernel.Fused), x.OptionalBool("overlapCommunication") ?? true,
            x.OptionalBool("scatterGather") ?? false, x.String("source"));
        x.Finish();
        var catalog = new Sc21RunCatalog(root.String("source"), execution, runs);
        root.Finish();
        return catalog;
    }
}

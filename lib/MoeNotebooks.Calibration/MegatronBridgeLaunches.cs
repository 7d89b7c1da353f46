using System.Globalization;
using System.Text.Json;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>Megatron-Core's MoE token dispatcher as Megatron-Bridge's performance configs select it.</summary>
public enum BridgeDispatcher
{
    /// <summary><c>moe_token_dispatcher_type="alltoall"</c> (or no flex backend): NCCL all-to-all.</summary>
    Alltoall,
    /// <summary><c>moe_flex_dispatcher_backend="deepep"</c>: DeepEP's kernels.</summary>
    Deepep,
    /// <summary><c>moe_flex_dispatcher_backend="hybridep"</c>: NVIDIA's NVLink-domain-aware DeepEP variant.</summary>
    Hybridep,
}

/// <summary>Where a launch entry was read: repository, file and commit.</summary>
public sealed record LaunchSource(string Repo, string Path, string Commit)
{
    public override string ToString() => $"{Repo} {Path} @ {Commit[..Math.Min(12, Commit.Length)]}";
}

/// <summary>The published layout of a perf config (what a row must equal for the entry to apply to it).</summary>
/// <param name="CP">Context-parallel size (the file's optional "cp", default 1).</param>
public sealed record LaunchLayout(int TP, int PP, int? VP, int EP, int MicroBatch, long GlobalBatch, int CP = 1)
{
    /// <summary>Whether the row ran this layout (VP 1 and no VP are the same: no interleaving).</summary>
    public bool Matches(ModernRun r) => TP == r.TP && PP == r.PP && (VP ?? 1) == (r.VP ?? 1) && CP == r.CP && EP == r.EP && MicroBatch == r.MicroBatch && GlobalBatch == r.GlobalBatch;

    public static string Describe(int tp, int pp, int? vp, int ep, int mbs, long gbs, int cp = 1) =>
        string.Create(CultureInfo.InvariantCulture, $"TP{tp} PP{pp} VP{(vp is { } v && v > 1 ? v.ToString(CultureInfo.InvariantCulture) : "-")}{(cp > 1 ? $" CP{cp}" : "")} EP{ep} MBS{mbs} GBS{gbs}");

    public override string ToString() => Describe(TP, PP, VP, EP, MicroBatch, GlobalBatch, CP);
}

/// <summary>
/// One Megatron-Bridge performance config as launched (scripts/performance/configs/&lt;family&gt;/*_workload_base_configs.py):
/// the settings that matter for step time, for a model family, GPU, precision and the releases it was read for.
/// </summary>
public sealed record BridgeLaunch(
    string Family, string Gpu, string Precision, IReadOnlyList<string> Releases, string Config, LaunchLayout Layout,
    bool MoeA2aOverlap, BridgeDispatcher Dispatcher, string? PpLayout, IReadOnlyList<string>? RecomputeModules,
    string? CudaGraphImpl, IReadOnlyList<string>? CudaGraphScope, LaunchSource Source, string? Note = null, bool CutedslFusedGroupedMlp = false)
{
    /// <summary>Applied to a run of a release the entry does not name, because the run's layout equals the config's (<see cref="BridgeLaunchCatalog.For"/>).</summary>
    public bool ByLayout { get; init; }

    /// <summary>The core's all-to-all implementation for the dispatcher: alltoall -> NCCL; deepep and hybridep -> DeepEP normal (see the data file's mapping).</summary>
    public AllToAllImplementation AllToAll => Dispatcher == BridgeDispatcher.Alltoall ? AllToAllImplementation.Nccl : AllToAllImplementation.DeepEpNormal;

    /// <summary>The overlap option the strategy gets.</summary>
    public MoeAllToAllOverlap Overlap => MoeA2aOverlap ? MoeAllToAllOverlap.OneFOneB : MoeAllToAllOverlap.None;

    /// <summary>The launch's <c>recompute_modules</c> as the core's selective recomputation (<see cref="StrategySpec.RecomputeModules"/>).</summary>
    public MoeNotebooks.Config.RecomputeModules Recomputes => RecomputeModules is { Count: > 0 } rm ? RecomputeModulesText.Parse($"{Config}.recompute_modules", rm) : MoeNotebooks.Config.RecomputeModules.None;

    /// <summary>Settings the core cannot express, as one line each (listed, not priced).</summary>
    public IReadOnlyList<string> Unexpressed()
    {
        var list = new List<string>();
        // A full-iteration graph is priced (no expert launches exposed and no per-layer framework overhead:
        // PartFactors.ExpertLaunches, PartFactors.HostOverheadShare); scoped graphs capture
        // attention, router and preprocessing but not the experts, whose launches stay priced as exposed.
        if (CudaGraphImpl is { } g && g != "none" && g != "full_iteration") list.Add($"CUDA graphs {g}{(CudaGraphScope is { Count: > 0 } sc ? $" [{string.Join(", ", sc)}]" : "")} (the captured attention/router launches are not separated from the per-layer overhead; the experts' launches are priced as uncaptured)");
        if (PpLayout is { } pl) list.Add($"pipeline layout \"{pl}\" (largest rank unchanged; MTP and loss on the last chunk not separated)");
        return list;
    }

    /// <summary>One line for the validation notes: what was applied and from where.</summary>
    public string Describe() =>
        $"{Config}: a2a overlap {(MoeA2aOverlap ? "1f1b" : "off")}, dispatcher {JsonObjectReader.Kebab(Dispatcher.ToString())} -> {JsonObjectReader.Kebab(AllToAll.ToString())}"
        + (CutedslFusedGroupedMlp ? ", CuTe DSL fused grouped MLP" : "")
        + (RecomputeModules is { Count: > 0 } rm ? $", selective recompute of {string.Join(", ", rm)}" : "")
        + (Unexpressed() is { Count: > 0 } u ? "; not priced: " + string.Join("; ", u) : "") + $" ({Source})"
        + (ByLayout ? $"; matched by layout: the config as stored at that commit{(Releases.Count > 0 ? $", read for release {string.Join(", ", Releases)}" : "")}, not confirmed for this release" : "");
}

/// <summary>A row whose launch settings were looked for and not found, and why (from the data file).</summary>
public sealed record BridgeLaunchNotFound(string Family, string Gpu, string Precision, string Release, string Why);

/// <summary>The published launch settings of the Megatron-Bridge rows (data/validation/megatron-bridge-launches.json, embedded).</summary>
public sealed record BridgeLaunchCatalog(string Source, IReadOnlyList<BridgeLaunch> Launches, IReadOnlyList<BridgeLaunchNotFound> NotFound)
{
    public const string ResourceName = "validation/megatron-bridge-launches.json";

    private static readonly Lazy<BridgeLaunchCatalog> Embedded = new(() =>
    {
        using var stream = typeof(BridgeLaunchCatalog).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource {ResourceName} is missing");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), "data/" + ResourceName);
    });

    /// <summary>The catalog built into this assembly.</summary>
    public static BridgeLaunchCatalog Published => Embedded.Value;

    /// <summary>The performance config's GPU key for a row's system ("b200", "b300", "gb200", "gb300").</summary>
    public static string GpuKey(ModernRun r) => r.System switch
    {
        "DGX-B200" => "b200", "DGX-B300" => "b300", "GB200-NVL72" => "gb200", "GB300-NVL72" => "gb300", "DGX-H100" or "H100-SXM" => "h100", var s => s.ToLowerInvariant(),
    };

    /// <summary>The performance config's precision key ("bf16", "fp8_cs", "fp8_mx", "nvfp4").</summary>
    public static string PrecisionKey(TrainingPrecision p) => p switch
    {
        TrainingPrecision.Bf16 => "bf16", TrainingPrecision.Fp8CurrentScaling => "fp8_cs", TrainingPrecision.Mxfp8 => "fp8_mx", _ => "nvfp4",
    };

    /// <summary>
    /// The launch of a row, or why there is none (the row then keeps plain settings). An entry applies to a row of a release
    /// it names (its layout must then be the row's). A run of a release the file neither names nor lists as not found
    /// (a user's run, or a GPU no carried row ran, such as H100) takes the entry of its family, GPU and precision whose
    /// layout equals its own (TP, PP, VP, EP, micro and global batch): the config as stored at the entry's commit
    /// (<see cref="BridgeLaunch.ByLayout"/>). A run with no release is never matched: it need not be NVIDIA's launch.
    /// </summary>
    public (BridgeLaunch? Launch, string Why) For(ModernRun r)
    {
        if (r.Framework != ModernFramework.MegatronBridge) return (null, "not a Megatron-Bridge row");
        // Megatron-FSDP launches are other configs (use_megatron_fsdp, CPU offloading: ModernPredictor.CpuOffloadingNumLayers);
        // a DDP config of the same layout must not stand in for them.
        if (r.IsMegatronFsdp) return (null, "Megatron-FSDP run: its launch's CPU offloading is priced from ModernPredictor.CpuOffloadingNumLayers; no other launch setting collected");
        var gpu = GpuKey(r);
        var precision = PrecisionKey(r.Precision);
        var hit = Launches.FirstOrDefault(l => l.Family == r.Family && l.Gpu == gpu && l.Precision == precision && l.Releases.Contains(r.Release));
        if (hit is not null)
        {
            // The file names the releases; the layout check guards against an entry applied to a run it does not describe.
            if (!hit.Layout.Matches(r))
                throw new ConfigException($"launches[{hit.Config}].layout", hit.Layout.ToString(),
                    $"names release {r.Release} but row {r.Id} ran {LaunchLayout.Describe(r.TP, r.PP, r.VP, r.EP, r.MicroBatch, r.GlobalBatch, r.CP)}", Source);
            return (hit, "");
        }
        var nf = NotFound.FirstOrDefault(n => n.Family == r.Family && n.Gpu == gpu && n.Precision == precision && n.Release == r.Release);
        if (nf is not null) return (null, $"launch settings not found: {nf.Why}");
        if (r.Release.Length > 0 && Launches.FirstOrDefault(l => l.Family == r.Family && l.Gpu == gpu && l.Precision == precision && l.Layout.Matches(r)) is { } same)
            return (same with { ByLayout = true }, "");
        return (null, $"launch settings not collected for {r.Family} {gpu} {precision} {r.Release}" + (r.Release.Length > 0 ? " (and no stored config of its family, GPU and precision has its layout)" : ""));
    }

    public static BridgeLaunchCatalog Parse(string json, string source)
    {
        using var doc = JsonObjectReader.Parse(json, source);
        var root = new JsonObjectReader(doc.RootElement, "", source);
        IEnumerable<JsonObjectReader> Items(JsonObjectReader o, string key)
        {
            if (o.Element(key) is not { ValueKind: JsonValueKind.Array } array)
                throw new ConfigException(o.Child(key), o.Has(key) ? "not an array" : "(missing)", "must be an array of objects", source);
            var i = 0;
            foreach (var item in array.EnumerateArray()) yield return new JsonObjectReader(item, $"{o.Child(key)}[{i++}]", source);
        }
        IReadOnlyList<string>? Strings(JsonObjectReader o, string key)
        {
            if (o.Element(key) is not { } e) return null;
            if (e.ValueKind != JsonValueKind.Array || e.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String))
                throw new ConfigException(o.Child(key), e.GetRawText(), "must be an array of strings", source);
            return e.EnumerateArray().Select(x => x.GetString()!).ToArray();
        }
        LaunchSource Src(JsonObjectReader o)
        {
            var s = o.Object("source");
            var ls = new LaunchSource(s.String("repo"), s.String("path"), s.String("commit"));
            s.Finish();
            if (ls.Commit.Length != 40 || !ls.Commit.All(Uri.IsHexDigit))
                throw new ConfigException(s.Child("commit"), $"\"{ls.Commit}\"", "must be a 40-hex-digit commit", source);
            return ls;
        }
        string[] gpus = ["b200", "b300", "gb200", "gb300", "h100"], precisions = ["bf16", "fp8_cs", "fp8_mx", "nvfp4"];
        void Key(JsonObjectReader o, string gpu, string precision)
        {
            if (!gpus.Contains(gpu)) throw new ConfigException(o.Child("gpu"), $"\"{gpu}\"", $"must be one of {string.Join(", ", gpus)}", source);
            if (!precisions.Contains(precision)) throw new ConfigException(o.Child("precision"), $"\"{precision}\"", $"must be one of {string.Join(", ", precisions)}", source);
        }
        var launches = new List<BridgeLaunch>();
        foreach (var r in Items(root, "launches"))
        {
            var l = r.Object("layout");
            var layout = new LaunchLayout(l.Int("tp"), l.Int("pp"), l.OptionalInt("vp"), l.Int("ep"), l.Int("microBatch"), l.Long("globalBatch"), l.OptionalInt("cp") ?? 1);
            l.Finish();
            foreach (var (f, v) in new (string, long)[] { ("tp", layout.TP), ("pp", layout.PP), ("vp", layout.VP ?? 1), ("cp", layout.CP), ("ep", layout.EP), ("microBatch", layout.MicroBatch), ("globalBatch", layout.GlobalBatch) })
                if (v <= 0) throw new ConfigException(l.Child(f), v.ToString(CultureInfo.InvariantCulture), "must be > 0", source);
            var dispatcherText = r.String("dispatcher");
            var e = new BridgeLaunch(r.String("family"), r.String("gpu"), r.String("precision"), Strings(r, "releases") ?? [], r.String("config"), layout,
                r.OptionalBool("moeA2aOverlap") ?? throw new ConfigException(r.Child("moeA2aOverlap"), "(missing)", "must be true or false", source),
                JsonObjectReader.ParseEnum<BridgeDispatcher>(r.Child("dispatcher"), dispatcherText, source),
                r.OptionalString("ppLayout"), Strings(r, "recomputeModules"), r.OptionalString("cudaGraphImpl"), Strings(r, "cudaGraphScope"), Src(r), r.OptionalString("note"),
                r.OptionalBool("cutedslFusedGroupedMlp") ?? false);
            r.Finish();
            Key(r, e.Gpu, e.Precision);
            // An entry may name no release (a GPU no carried row ran): it then applies by layout only, so two entries of one
            // family, GPU and precision must not share a layout.
            if (launches.FirstOrDefault(x => x.Family == e.Family && x.Gpu == e.Gpu && x.Precision == e.Precision && x.Releases.Intersect(e.Releases).Any()) is { } dup)
                throw new ConfigException(r.Child("releases"), string.Join(", ", e.Releases), $"overlap the releases of {dup.Config} for {e.Family} {e.Gpu} {e.Precision}", source);
            if (e.Releases.Count == 0 && launches.FirstOrDefault(x => x.Family == e.Family && x.Gpu == e.Gpu && x.Precision == e.Precision && x.Releases.Count == 0 && x.Layout == e.Layout) is { } same)
                throw new ConfigException(r.Child("layout"), e.Layout.ToString(), $"is also {same.Config}'s for {e.Family} {e.Gpu} {e.Precision}, and neither names a release to tell them apart", source);
            launches.Add(e);
        }
        var notFound = new List<BridgeLaunchNotFound>();
        foreach (var r in Items(root, "notFound"))
        {
            var n = new BridgeLaunchNotFound(r.String("family"), r.String("gpu"), r.String("precision"), r.String("release"), r.String("why"));
            if (r.Has("source")) Src(r);
            r.Finish();
            Key(r, n.Gpu, n.Precision);
            notFound.Add(n);
        }
        foreach (var k in new[] { "versions", "denseRows" }) root.OptionalString(k);
        var mapping = root.Object("mapping");
        foreach (var k in new[] { "moeA2aOverlap", "dispatcher", "ppLayout", "recomputeModules", "cudaGraph" }) mapping.String(k);
        mapping.OptionalString("cutedslFusedGroupedMlp");   // documented where entries carry the field
        mapping.Finish();
        var catalog = new BridgeLaunchCatalog(root.String("source"), launches, notFound);
        root.Finish();
        return catalog;
    }
}

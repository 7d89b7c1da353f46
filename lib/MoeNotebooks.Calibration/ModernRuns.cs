using System.Globalization;
using System.Text.RegularExpressions;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>Who published a modern run, which fixes its metric and FLOP convention.</summary>
public enum ModernFramework
{
    /// <summary>NVIDIA Megatron-Bridge performance summaries: model TFLOP/s per GPU by Megatron's model-FLOPs formula (no recompute).</summary>
    MegatronBridge,

    /// <summary>MosaicML llm-foundry MPT benchmarks: MFU = (6N + 12 L d s) x tokens/s / (GPUs x peak).</summary>
    MosaicMpt,
}

/// <summary>The precision recipe a run trained with (GEMM inputs; attention, norms and master weights stay higher precision).</summary>
public enum TrainingPrecision
{
    Bf16,
    /// <summary>FP8 with per-tensor current scaling (Megatron-Bridge "FP8-CS"; 25.09's plain "FP8").</summary>
    Fp8CurrentScaling,
    /// <summary>FP8 with MX block scaling (32-element blocks).</summary>
    Mxfp8,
    /// <summary>NVFP4 block scaling (16-element blocks).</summary>
    Nvfp4,
}

/// <summary>One row of <c>training_modern_public.csv</c>, typed. Optional architecture columns are null when empty.</summary>
public sealed record ModernRun(
    string Id,
    string Source,
    string Model,
    string Family,
    ModernFramework Framework,
    string Release,
    string Arch,
    string GpuLabel,
    int Gpus,
    string PrecisionLabel,
    TrainingPrecision Precision,
    long SequenceLength,
    long GlobalBatch,
    int MicroBatch,
    int TP,
    int PP,
    int? VP,
    int CP,
    int EP,
    int DP,
    string Sharding,
    bool Recompute,
    double MeasuredTflopsPerGpu,
    double? MeasuredMfuPct,
    double MeasuredTokensPerSecondPerGpu,
    int Line)
{
    /// <summary>Architecture columns as the CSV gives them (null where empty): layers, hidden, ffn (first number), heads, kv heads, vocab, experts, top-k, shared experts, total parameters.</summary>
    public int? Layers { get; init; }
    public long? Hidden { get; init; }
    public long? FfnHidden { get; init; }
    public int? Heads { get; init; }
    public int? KvHeads { get; init; }
    public long? Vocabulary { get; init; }
    public int? Experts { get; init; }
    public int? TopK { get; init; }
    public int? SharedExperts { get; init; }
    public double? ParamsTotalBillions { get; init; }

    /// <summary>Selective recomputation the run was described with (<c>moe predict --recompute-modules</c>); none from a CSV row, whose launch gives it (<see cref="ModernScenario.LaunchRecomputeModules"/>).</summary>
    public RecomputeModules RecomputeModules { get; init; }

    /// <summary>Megatron-Bridge's token-drop variant (capacity factor) rather than dropless routing.</summary>
    public bool TokenDrop => Model.Contains("tokendrop", StringComparison.OrdinalIgnoreCase);

    /// <summary>Multi-token-prediction layers: DeepSeek-V3 trains with one unless the row says "w/o MTP".</summary>
    public int? MtpLayersOverride => Model.Contains("w/o MTP", StringComparison.OrdinalIgnoreCase) ? 0 : Model.Contains("w/ MTP", StringComparison.OrdinalIgnoreCase) ? 1 : null;

    /// <summary>Microbatches per step per pipeline: global batch / (DP x micro-batch), DP counting the EP ranks (EP is carved out of DP).</summary>
    public int Microbatches => checked((int)(GlobalBatch / ((long)DP * MicroBatch)));

    /// <summary>The step time the published throughput implies: global batch x sequence / (GPUs x tokens/s per GPU).</summary>
    public double MeasuredIterationSeconds => GlobalBatch * (double)SequenceLength / (Gpus * MeasuredTokensPerSecondPerGpu);

    /// <summary>
    /// The GPU generation one calibrated description covers: the architecture of the hardware preset the label resolves
    /// to (<see cref="ModernSystems"/>: "ampere", "hopper", "blackwell", "cdna3"), "unknown" when it resolves to none.
    /// </summary>
    public string Generation => ModernSystems.Resolve(GpuLabel).Generation;

    /// <summary>
    /// The hardware preset the label resolves to (<see cref="ModernSystems"/>): A100-40GB, DGX-B200, DGX-B300,
    /// GB200-NVL72, GB300-NVL72 for the carried rows, DGX-H100 for "H100 (DGX-H100)" or "H100-80GB", H200 for "H200";
    /// the label itself when it names no preset (the row is then not expressed, <see cref="ModernPredictor.ScenarioOf"/>).
    /// </summary>
    public string System => ModernSystems.Resolve(GpuLabel).Preset ?? GpuLabel;

    public bool IsMoe => Experts is > 0 || Arch.StartsWith("moe", StringComparison.OrdinalIgnoreCase);

    /// <summary>"moe", "dense" (Megatron-Bridge dense), "mpt", "hybrid" or "megatron-fsdp": the groups the targets are set for.</summary>
    public string TargetGroup => Framework == ModernFramework.MosaicMpt ? "mpt" : IsHybrid ? "hybrid" : IsMegatronFsdp ? "megatron-fsdp" : IsMoe ? "moe" : "dense";

    /// <summary>
    /// A Megatron-Bridge run with Megatron-FSDP (the dense Llama-3 rows "FSDP = 64"): reported as its own group (the dense
    /// target applies) and kept out of the per-generation fit (<see cref="ModernSuite.InFit"/>): their published launch
    /// configs offload activations to the CPU (priced over the host link since stop 21, a one-sided residual left).
    /// </summary>
    public bool IsMegatronFsdp => Framework == ModernFramework.MegatronBridge && Sharding.Contains("Megatron-FSDP", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A hybrid Mamba/attention model (Nemotron-3): reported as its own group beside the MoE rows (the MoE target applies);
    /// in the per-generation fit they alone fit the Mamba SSD factor (see <see cref="ModernSuite.HybridRowsInFit"/>).
    /// </summary>
    public bool IsHybrid => Arch.Contains("hybrid", StringComparison.OrdinalIgnoreCase);

    public string PrecisionName => Precision switch
    {
        TrainingPrecision.Bf16 => "BF16",
        TrainingPrecision.Fp8CurrentScaling => "FP8-CS",
        TrainingPrecision.Mxfp8 => "MXFP8",
        _ => "NVFP4",
    };

    /// <summary>Megatron-Bridge families by the CSV's model name; MPT sizes keep their name.</summary>
    public static string FamilyOf(string model)
    {
        var m = Regex.Replace(model, @"\s*\(.*\)\s*$", "").Trim();
        return m switch
        {
            "DeepSeekV3" => "DeepSeek-V3",
            "DeepSeekV4 Flash" => "DeepSeek-V4-Flash",
            "Qwen3_30B_a3B" => "Qwen3-30B-A3B",
            "Qwen3_235B_a22B" => "Qwen3-235B-A22B",
            "GPT OSS 120B" => "GPT-OSS-120B",
            "Kimi_K2" => "Kimi-K2",
            "LLAMA3_8B" => "Llama-3-8B",
            "LLAMA3_70B" => "Llama-3-70B",
            "LLAMA3.1_405B" => "Llama-3.1-405B",
            _ => m.Replace('_', '-'),
        };
    }

    public static TrainingPrecision PrecisionOf(string label, string field = "precision")
    {
        var p = label.Trim();
        if (p.Equals("bf16", StringComparison.OrdinalIgnoreCase)) return TrainingPrecision.Bf16;
        if (p.StartsWith("MXFP8", StringComparison.OrdinalIgnoreCase) || p.StartsWith("FP8-MX", StringComparison.OrdinalIgnoreCase)) return TrainingPrecision.Mxfp8;
        if (p.StartsWith("NVFP4", StringComparison.OrdinalIgnoreCase)) return TrainingPrecision.Nvfp4;
        // "FP8-CS", "FP8-CS (FP8-MX)" (primary figure current scaling), "FP8" and 25.09's "FP8 (... primary number ...)".
        if (p.StartsWith("FP8", StringComparison.OrdinalIgnoreCase)) return TrainingPrecision.Fp8CurrentScaling;
        throw new ConfigException(field, $"\"{label}\"", "must be bf16, FP8, FP8-CS, MXFP8 / FP8-MX or NVFP4");
    }

    /// <param name="requireMeasured">False for runs to predict (<c>moe predict</c>): the measured columns (tflops_per_gpu,
    /// tokens_per_s_per_gpu, mfu_pct) may be empty, read as NaN (<see cref="HasMeasurement"/> false).</param>
    public static IReadOnlyList<ModernRun> Read(string path, bool requireMeasured = true)
    {
        if (!File.Exists(path)) throw new ConfigException("file", $"\"{path}\"", "not found (modern training runs CSV)");
        using var reader = new StreamReader(path);
        return Read(reader, path, requireMeasured);
    }

    public static IReadOnlyList<ModernRun> Read(TextReader reader, string source, bool requireMeasured = true)
    {
        var table = CsvTable.Read(reader, source);
        table.Require("case_id", "source", "model", "arch", "gpu", "num_gpus", "precision", "seq_len", "global_batch_seqs", "micro_batch",
            "TP", "PP", "VP", "CP", "EP", "DP", "sharding", "recompute", "tflops_per_gpu", "mfu_pct", "tokens_per_s_per_gpu",
            "layers", "hidden", "ffn_hidden", "heads", "kv_heads", "vocab", "experts", "topk", "shared_experts", "params_total_B");
        return table.Rows.Select(r => Row(r, requireMeasured)).ToArray();
    }

    /// <summary>Whether the row carries its published throughput (false for a run read only to be predicted).</summary>
    public bool HasMeasurement => double.IsFinite(MeasuredTokensPerSecondPerGpu) && MeasuredTokensPerSecondPerGpu > 0;

    private static ModernRun Row(CsvRow r, bool requireMeasured)
    {
        double Measured(string c) => requireMeasured || r.OptionalString(c) is not null ? r.PositiveDouble(c) : double.NaN;
        int I(string c) => checked((int)r.PositiveLong(c));
        // Layout columns: empty or "n/a" means the dimension is not used (size 1) -- MPT rows leave CP/EP empty.
        int Dim(string c) => r.OptionalString(c) is null or "n/a" ? 1 : I(c);
        long? OptLong(string c)
        {
            var s = r.OptionalString(c);
            if (s is null) return null;
            var m = Regex.Match(s, @"^\d+");
            if (!m.Success) throw r.Error(c, s, "must start with a positive integer (e.g. \"2048\" or \"2048 per expert\")");
            return long.Parse(m.Value, CultureInfo.InvariantCulture);
        }
        double? OptDouble(string c) => r.OptionalString(c) is null ? null : r.PositiveDouble(c);
        var id = r.String("case_id");
        var framework = id.StartsWith("mpt", StringComparison.OrdinalIgnoreCase) ? ModernFramework.MosaicMpt : ModernFramework.MegatronBridge;
        var release = framework == ModernFramework.MegatronBridge && id.Split('_') is { Length: > 1 } parts ? parts[1] : "";
        var recompute = r.OptionalString("recompute") is { } rc && !rc.Equals("none", StringComparison.OrdinalIgnoreCase);
        var run = new ModernRun(
            id, r.String("source"), r.String("model"), FamilyOf(r.String("model")), framework, release, r.String("arch"), r.String("gpu"),
            I("num_gpus"), r.String("precision"), PrecisionOf(r.String("precision"), $"line {r.Line}, column precision"),
            r.PositiveLong("seq_len"), r.PositiveLong("global_batch_seqs"), I("micro_batch"),
            Dim("TP"), Dim("PP"), r.OptionalString("VP") is null or "n/a" ? null : I("VP"), Dim("CP"), Dim("EP"), I("DP"),
            r.String("sharding"), recompute, Measured("tflops_per_gpu"), OptDouble("mfu_pct"), Measured("tokens_per_s_per_gpu"), r.Line)
        {
            Layers = OptLong("layers") is { } l ? checked((int)l) : null,
            Hidden = OptLong("hidden"),
            FfnHidden = OptLong("ffn_hidden"),
            Heads = OptLong("heads") is { } h ? checked((int)h) : null,
            KvHeads = OptLong("kv_heads") is { } kv ? checked((int)kv) : null,
            Vocabulary = OptLong("vocab"),
            Experts = OptLong("experts") is { } e ? checked((int)e) : null,
            TopK = OptLong("topk") is { } k ? checked((int)k) : null,
            SharedExperts = r.OptionalString("shared_experts") is null ? null : checked((int)(OptLong("shared_experts") ?? 0)),
            ParamsTotalBillions = OptDouble("params_total_B"),
        };
        if ((long)run.TP * run.PP * run.CP * run.DP != run.Gpus)
            throw r.Error("DP", run.DP.ToString(CultureInfo.InvariantCulture), $"TP x PP x CP x DP = {run.TP} x {run.PP} x {run.CP} x {run.DP} must equal num_gpus = {run.Gpus}");
        if (run.GlobalBatch % ((long)run.DP * run.MicroBatch) != 0)
            throw r.Error("global_batch_seqs", run.GlobalBatch.ToString(CultureInfo.InvariantCulture), $"must be a multiple of DP x micro_batch = {run.DP} x {run.MicroBatch}");
        return run;
    }
}

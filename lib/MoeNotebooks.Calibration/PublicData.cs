using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Calibration;

/// <summary>
/// The shared measurement files (<see cref="CalibrationData"/>) and how their names map onto this project's hardware
/// presets: one hardware description per GPU type, used for every case of that GPU.
/// </summary>
public sealed class PublicData
{
    public const string GemmFile = "gemm_measured_public.csv";
    public const string CommFile = "comm_measured_public.csv";
    public const string TrainingFile = "training_measured_public.csv";

    /// <summary>
    /// The GEMM file's gpu column to presets. The profiler's "H100-80GB" is the SXM part: its fp16 GEMMs reach
    /// 869 TFLOP/s, above the PCIe part's 756 TFLOP/s peak. The A100's form factor is not stated; both A100 80GB parts
    /// have the same 108 SMs and 312 TFLOP/s, so the SXM preset stands for it.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> GemmGpuPresets = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        ["A100-80GB"] = "A100-80GB",
        ["H100-80GB"] = "H100-SXM",
    };

    /// <summary>The collectives file's systems that match a cluster preset (for the datasheet comparison).</summary>
    public static readonly IReadOnlyDictionary<string, string> SystemPresets = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        ["DGX A100 (vidur a100_dgx)"] = "DGX-A100",
        ["DGX H100 (vidur h100_dgx)"] = "DGX-H100",
    };

    private PublicData(string directory) => Directory = directory;

    public string Directory { get; }

    /// <summary>The shared folder, or null with <see cref="CalibrationData.WhyMissing"/> to say why.</summary>
    public static PublicData? Locate(string? directory = null)
    {
        var dir = directory ?? CalibrationData.Locate();
        return dir is not null && System.IO.Directory.Exists(dir) ? new PublicData(Path.GetFullPath(dir)) : null;
    }

    public string PathOf(string file) => Path.Combine(Directory, file);

    public IReadOnlyList<GemmMeasurement> Gemm() => MeasurementCsv.ReadGemm(PathOf(GemmFile));

    public IReadOnlyList<CollectiveMeasurement> Collectives() => MeasurementCsv.ReadCollectives(PathOf(CommFile));

    public static HardwareSpec PresetForGemmGpu(string gpu) =>
        GemmGpuPresets.TryGetValue(gpu, out var preset) ? HardwareCatalog.Get(preset)
            : throw new ConfigException("gpu", $"\"{gpu}\"", $"has no hardware preset mapping; known: {string.Join(", ", GemmGpuPresets.Keys)}");

    /// <summary>The model a GEMM row's shape comes from: the first word of its context ("Qwen/Qwen-72B TP1 tokens=4096; ...").</summary>
    public static string ModelOf(GemmMeasurement m) => m.Context.Split(' ', 2)[0];
}

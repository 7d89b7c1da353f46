using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using MoeNotebooks.Config;

namespace MoeNotebooks.Calibration;

/// <summary>A run's hardware label resolved against the hardware catalog (data/hardware): the preset, or why none matches.</summary>
/// <param name="Preset">The catalog name (<see cref="HardwareSpec.Name"/>), null when the label matches none.</param>
/// <param name="Generation">The GPU generation of the preset's description (<see cref="CalibratedRange.GenerationOf"/>: "ampere", "hopper", "blackwell", "cdna3"), "unknown" without a preset.</param>
/// <param name="Reason">One line naming the label and the valid labels, when <paramref name="Preset"/> is null.</param>
public sealed record SystemResolution(string? Preset, string Generation, string? Reason);

/// <summary>
/// Resolves a training run's hardware label (the <c>gpu</c> column of the training-modern CSV, <c>moe predict --system</c>)
/// to one entry of the hardware catalog, in this order (letters and digits compared, case, spaces, hyphens and
/// underscores ignored):
/// <list type="number">
/// <item>a parenthesised note that names a preset: "B200 (DGX-B200)" is DGX-B200, "H100 (DGX-H100)" is DGX-H100;</item>
/// <item>the label before the parenthesis names a preset: "A100-40GB (MosaicML, ...)" is A100-40GB, "GB200 NVL72 (per GPU)" is
/// GB200-NVL72, "H200", "H800", "GH200", "A100-80GB", "H100 SXM", "MI300X";</item>
/// <item>the label names a GPU model, optionally with its memory and form factor ("H100", "H100-80GB", "B300", "A100 PCIe"):
/// the presets whose GPU name starts with that model (GH200's "GH200 (H100 96GB HBM3)" is not an H100), with that much
/// memory when the label gives it, PCIe only when it says so; of those, the cluster preset a training run is measured on
/// first (a DGX node, then a rack-scale NVLink domain), then the plain GPU presets by name. So "H100-80GB" is DGX-H100,
/// "A100" DGX-A100 and "B300" DGX-B300, as the carried "B200 (DGX-B200)" rows are DGX-B200.</item>
/// </list>
/// Anything else resolves to no preset, with one line naming the label and the valid labels; the training-modern
/// suite lists such a row as not expressed. The generation comes from the preset's GPU architecture, not the label.
/// </summary>
public static class ModernSystems
{
    private static readonly ConcurrentDictionary<string, SystemResolution> Cache = new(StringComparer.Ordinal);

    /// <summary>The resolution of <paramref name="label"/> (computed once per label).</summary>
    public static SystemResolution Resolve(string label) => Cache.GetOrAdd(label, Compute);

    /// <summary>Letters and digits of <paramref name="s"/>, upper case: the key labels and catalog names are compared by.</summary>
    public static string Key(string s) => string.Concat(s.Where(char.IsLetterOrDigit).Select(char.ToUpperInvariant));

    /// <summary>What a valid label is, for error lines.</summary>
    public static string ValidLabels => $"a hardware preset ({string.Join(", ", HardwareCatalog.Names)}), optionally as \"GPU (PRESET)\", or a GPU model with its memory such as \"H100-80GB\"";

    private static SystemResolution Compute(string label)
    {
        var found = PresetOf(label);
        if (found is null)
            return new SystemResolution(null, "unknown", $"gpu \"{ConfigException.Visible(label, 80)}\" names no hardware preset: valid labels are {ValidLabels}");
        return new SystemResolution(found, CalibratedRange.GenerationOf(HardwareCatalog.Get(found)), null);
    }

    private static string? PresetOf(string label)
    {
        var text = label.Trim();
        var open = text.IndexOf('(');
        var head = open >= 0 ? text[..open].Trim() : text;
        var note = open >= 0 ? text[(open + 1)..].TrimEnd(')', ' ') : "";
        var presets = HardwareCatalog.All;
        foreach (var part in new[] { note, head })
        {
            var key = Key(part);
            if (key.Length == 0) continue;
            if (presets.FirstOrDefault(h => Key(h.Name) == key) is { } exact) return exact.Name;
        }
        // A GPU model: letters then digits then letters ("H100", "GB200", "MI300X"), then optionally "-80GB", "SXM", "PCIe".
        var m = Regex.Match(head, @"^(?<model>[A-Za-z]+\d+[A-Za-z]?)(?:[\s_-]*(?<gb>\d+)\s*GB)?(?:[\s_-]*(?<form>[A-Za-z][A-Za-z0-9]*))?$", RegexOptions.CultureInvariant);
        if (!m.Success) return null;
        var model = Key(m.Groups["model"].Value);
        var form = m.Groups["form"].Success ? Key(m.Groups["form"].Value) : "";
        if (form.Length > 0 && !form.StartsWith("SXM", StringComparison.Ordinal) && form != "PCIE") return null;
        // The GPU name starts with the model and no digit follows it ("H10" is not "H100").
        bool NamesModel(string gpu) => Key(gpu) is var k && k.StartsWith(model, StringComparison.Ordinal) && (k.Length == model.Length || !char.IsDigit(k[model.Length]));
        var candidates = presets.Where(h => NamesModel(h.Gpu.Name))
            .Where(h => !m.Groups["gb"].Success || Math.Abs(h.Gpu.HbmCapacityBytes / 1e9 - double.Parse(m.Groups["gb"].Value, System.Globalization.CultureInfo.InvariantCulture)) < 0.5)
            .Where(h => (form == "PCIE") == Key(h.Gpu.Name).Contains("PCIE", StringComparison.Ordinal))
            .OrderBy(h => Key(h.Name).StartsWith("DGX", StringComparison.Ordinal) ? 0 : h.GpusPerNvlinkDomain > h.GpusPerNode ? 1 : 2)
            .ThenBy(h => h.Name, StringComparer.Ordinal)
            .ToArray();
        return candidates.FirstOrDefault()?.Name;
    }
}

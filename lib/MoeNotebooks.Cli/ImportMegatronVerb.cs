using System.Globalization;
using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary>
/// <c>moe import-megatron "COMMAND LINE" | FILE [--gpus N] [--hardware PRESET] [--name NAME] [--out SCENARIO.json]</c>:
/// a Megatron-LM launch command as a scenario; flags read, flags not expressible yet, flags without effect on step
/// time and unknown flags are listed on stderr.
/// </summary>
public static class ImportMegatronVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var input = options.Positional(0, "a Megatron-LM command line (quoted) or a file holding one");
        var gpusText = options.Option("--gpus", "");
        var hardware = options.Option("--hardware", "H100-SXM");
        var name = options.Option("--name", "imported-megatron");
        var outPath = options.Option("--out", "");
        options.Finish();
        var text = File.Exists(input) ? File.ReadAllText(input) : input;
        int? gpus = gpusText == "" ? null : SweepVerb.ParseInt("--gpus", gpusText, 1);
        HardwareCatalog.Get(hardware);   // an unknown preset fails here, naming the valid ones
        var result = MegatronImport.Parse(text, gpus);
        var json = result.Scenario(name, hardware).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
        if (outPath == "") stdout.Write(json);
        else File.WriteAllText(outPath, json);
        var c = CultureInfo.InvariantCulture;
        stderr.WriteLine(string.Create(c, $"read {result.Used.Count} flags: {result.Gpus} GPUs, {result.Strategy}"));
        foreach (var (flag, reason) in result.NotModelled) stderr.WriteLine($"  not expressible yet: {flag}: {reason}");
        if (result.NoEffect.Count > 0) stderr.WriteLine($"  no effect on step time: {string.Join(" ", result.NoEffect)}");
        foreach (var flag in result.Unknown) stderr.WriteLine($"  unknown flag (not read): {flag}");
        try { Scenario.Parse(json, outPath == "" ? null : outPath); }
        catch (ConfigException e) { stderr.WriteLine($"  note: evaluate will reject this scenario until priced: {e.Message}"); }
        return 0;
    }
}

using System.Globalization;
using MoeNotebooks.Config;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Loaders and outputs do not depend on the current culture. de-DE writes 3,35 for 3.35 and "." as the thousands
/// separator, so any culture-sensitive parse or format shows up as a different number or a different text.
/// Oracle: the same input under the invariant culture.
/// </summary>
public class CultureTests
{
    private const string InlineScenario = """
        {
          "name": "culture",
          "model": { "layers": 2, "hiddenSize": 1024, "attentionHeads": 8, "ffnHiddenSize": 4096, "experts": 4, "topK": 2,
                     "batch": 16, "sequenceLength": 1000, "dtype": "bf16" },
          "hardware": { "name": "custom", "gpus": 4, "gpusPerNode": 2,
            "gpu": { "name": "g", "peakFlopsPerSecond": { "bf16": 989.5e12 }, "hbmBytesPerSecond": 3.35e12, "hbmCapacityBytes": 80e9 },
            "intraNode": { "bytesPerSecond": 450e9, "latencySeconds": 5.5e-6 },
            "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 1.7E-5 } },
          "strategy": { "ep": 2, "tp": 2, "derivation": "corrected" },
          "costModel": { "kind": "roofline-efficiency", "efficiency": { "name": "t", "matmul": [ { "minFlops": 0, "efficiency": 0.5 }, { "minFlops": 1.5e9, "efficiency": 0.75 } ], "memory": 0.85 } }
        }
        """;

    private static T Under<T>(string culture, Func<T> f)
    {
        var (before, beforeUi) = (CultureInfo.CurrentCulture, CultureInfo.CurrentUICulture);
        try
        {
            CultureInfo.CurrentCulture = CultureInfo.CurrentUICulture = new CultureInfo(culture);
            return f();
        }
        finally { (CultureInfo.CurrentCulture, CultureInfo.CurrentUICulture) = (before, beforeUi); }
    }

    [Fact]
    public void Numbers_parse_the_same_under_de_DE()
    {
        Assert.Equal("3,35", Under("de-DE", () => 3.35.ToString(CultureInfo.CurrentCulture))); // the culture really is active
        var invariant = Under("", () => Scenario.Parse(InlineScenario));
        var german = Under("de-DE", () => Scenario.Parse(InlineScenario));
        Assert.Equal(3.35e12, german.Hardware.Gpu.HbmBytesPerSecond);
        Assert.Equal(989.5e12, german.Hardware.Gpu.PeakFlopsPerSecond["bf16"]);
        Assert.Equal(5.5e-6, german.Hardware.IntraNode.LatencySeconds);
        Assert.Equal(1.7e-5, german.Hardware.InterNode.LatencySeconds);
        Assert.Equal(0.75, german.CostModel.Efficiency!.Matmul[1].Efficiency);
        Assert.Equal(1.5e9, german.CostModel.Efficiency!.Matmul[1].MinFlops);
        Assert.Equal(invariant.Hardware.Gpu.HbmBytesPerSecond, german.Hardware.Gpu.HbmBytesPerSecond);
        Assert.Equal(invariant.Evaluate().TotalSeconds, Under("de-DE", () => german.Evaluate().TotalSeconds));
    }

    [Fact]
    public void Error_messages_are_the_same_under_de_DE()
    {
        var text = InlineScenario.Replace("\"latencySeconds\": 5.5e-6", "\"latencySeconds\": -2.5e-6", StringComparison.Ordinal);
        var invariant = Under("", () => Assert.Throws<ConfigException>(() => Scenario.Parse(text, "c.json")).Message);
        var german = Under("de-DE", () => Assert.Throws<ConfigException>(() => Scenario.Parse(text, "c.json")).Message);
        Assert.Equal(invariant, german);
        Assert.Contains("= -2.5E-06", german, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("table")]
    [InlineData("json")]
    public void Cli_output_is_invariant_culture(string format)
    {
        var path = Path.Combine(Path.GetTempPath(), $"moe-culture-{Environment.ProcessId}-{format}.json");
        File.WriteAllText(path, InlineScenario);
        try
        {
            var invariant = Under("", () => InvalidInputMatrix.Cli(["evaluate", path, "--format", format]));
            var german = Under("de-DE", () => InvalidInputMatrix.Cli(["evaluate", path, "--format", format]));
            Assert.Equal(0, german.Code);
            Assert.Equal(invariant.Stdout, german.Stdout);
            Assert.Equal("", german.Stderr);
            var formula = Under("de-DE", () => InvalidInputMatrix.Cli(["formula", path]));
            Assert.Equal(Under("", () => InvalidInputMatrix.Cli(["formula", path])).Stdout, formula.Stdout);
        }
        finally { File.Delete(path); }
    }
}

using System.Text.Json;
using MoeNotebooks.Cli;

namespace MoeNotebooks.Tests;

public class CliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        var code = Cli.Cli.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public void SearchWithNothingValidSaysWhatWouldLetLayoutsThrough()
    {
        // Oracle: the memory model's verdict on DeepSeek-V3 as shipped (data/scenarios/deepseek-v3.json: 122.9 GB per GPU
        // at its own layout, BF16, no recomputation), and the default microbatch counts (powers of two to 4 x PP), which
        // leave micro-batches of several sequences: no layout of 2,048 GPUs fits in 80 GB.
        var (code, output, _) = Run("search", TestPaths.Scenario("deepseek-v3"), "--gpus", "2048");
        Assert.Equal(0, code);
        Assert.Contains(" 0 valid", output);
        Assert.Contains("no valid candidate: the ", output);
        Assert.Contains("--micro-batch-size 1,2", output);
    }

    [Fact]
    public void SearchTimeLimitIsTheMaxSecondsOption()
    {
        // Oracle: the library's guard (StrategySearch.Run with SearchOptions.MaxSeconds): Megatron-1T's default space on
        // 3,072 GPUs is estimated at tens of seconds, over a 1 s limit and well under the default 300 s; the refusal names the option.
        var (code, output, error) = Run("search", TestPaths.Scenario("megatron-1t"), "--gpus", "3072", "--max-seconds", "1");
        Assert.NotEqual(0, code);
        Assert.Equal("", output);
        Assert.Contains("the limit is about 1 s", error);
        Assert.Contains("--max-seconds", error);
    }

    [Fact]
    public void EvaluateJsonReportsTheSeedTermsAndATotal()
    {
        // Oracle: the founding document's EP=16 terms per 4 layers (see SeedFormulaTests for the full formula).
        var (code, output, _) = Run("evaluate", TestPaths.Scenario("seed-ep16"), "--format", "json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.True(root.GetProperty("totalSeconds").GetDouble() > 0);
        var terms = root.GetProperty("terms").EnumerateArray()
            .ToDictionary(t => (t.GetProperty("m").GetInt64(), t.GetProperty("k").GetInt64(), t.GetProperty("n").GetInt64()), t => t.GetProperty("count").GetInt64());
        Assert.Equal(16, terms[(10240000, 8192, 8192)]);
        Assert.Equal(64, terms[(10240000, 512, 10000)]);
        Assert.Equal(4, terms[(640000, 32768, 8192)]);
        Assert.Equal(0, root.GetProperty("otherTerms").GetArrayLength());
        var path = root.GetProperty("criticalPath");
        Assert.True(path.GetArrayLength() > 0);
        Assert.Equal(root.GetProperty("totalSeconds").GetDouble(), path[path.GetArrayLength() - 1].GetProperty("finishSeconds").GetDouble(), 12);
        foreach (var key in new[] { "matmul", "attention", "communication", "idle" })
            Assert.True(root.GetProperty("breakdownSeconds").TryGetProperty(key, out _), key);
    }

    [Fact]
    public void FormulaPrintsTheDocumentNotation()
    {
        var (code, output, _) = Run("formula", TestPaths.Scenario("seed-tp8-pp2"));
        Assert.Equal(0, code);
        Assert.Contains("2 × [3×Get_Time(10240000, 1024, 1024)", output);
        Assert.Contains("Pipeline_Communication_Latency", output);
    }

    [Fact]
    public void BadInputExitsNonZeroWithOneReadableLine()
    {
        var file = Path.GetTempFileName();
        File.WriteAllText(file, File.ReadAllText(TestPaths.Scenario("ep16")).Replace("\"attentionHeads\": 16", "\"attentionHeads\": 0"));
        var (code, output, error) = Run("evaluate", file);
        Assert.Equal(2, code);
        Assert.Equal("", output);
        var line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("model.attentionHeads = 0", line);
        Assert.DoesNotContain("   at ", error);
    }

    [Fact]
    public void MissingFileAndUnknownOptionAreErrors()
    {
        Assert.Equal(2, Run("evaluate", "/nonexistent.json").Code);
        Assert.Equal(2, Run("evaluate", TestPaths.Scenario("ep16"), "--colour", "red").Code);
        Assert.Equal(2, Run("frobnicate").Code);
    }
}

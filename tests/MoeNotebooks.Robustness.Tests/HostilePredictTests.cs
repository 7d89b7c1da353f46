using System.Text.Json;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// <c>moe predict</c> (issue 14) under bad input: every refusal is exit 2, nothing on stdout, one "error:" line naming the
/// flag (or field) and its value; good input prices to finite numbers in valid JSON. Oracle: the contract of
/// <see cref="Hostile.Refused"/>; for the good run, the throughput identity tokens/s per GPU = batch x sequence / (GPUs x step).
/// </summary>
public class HostilePredictTests
{
    private static readonly string[] Good = ["predict", "--model", "llama3-8b", "--system", "H100-80GB", "--gpus", "8", "--precision", "bf16", "--global-batch", "64", "--seq-length", "2048"];

    private static string[] With(string flag, string value)
    {
        var args = Good.ToList();
        var i = args.IndexOf(flag);
        if (i >= 0) args[i + 1] = value;
        else args.AddRange([flag, value]);
        return args.ToArray();
    }

    private static string[] Without(string flag)
    {
        var args = Good.ToList();
        var i = args.IndexOf(flag);
        args.RemoveRange(i, 2);
        return args.ToArray();
    }

    [Theory]
    [InlineData("--model", "gpt-5", "--model")]
    [InlineData("--model", "\u001b[31mred", "--model")]
    [InlineData("--system", "TPU v5p", "--system")]
    [InlineData("--gpus", "0", "--gpus")]
    [InlineData("--gpus", "-8", "--gpus")]
    [InlineData("--gpus", "abc", "--gpus")]
    [InlineData("--gpus", "99999999999999999999", "--gpus")]
    [InlineData("--gpus", "12", "--gpus")]   // with --tp 8 below: not a multiple of TP x PP x CP
    [InlineData("--tp", "0", "--tp")]
    [InlineData("--tp", "100000", "--tp")]
    [InlineData("--ep", "1000000", "--ep")]
    [InlineData("--cp", "2.5", "--cp")]
    [InlineData("--pp", "3", "--gpus")]
    [InlineData("--vp", "0", "--vp")]
    [InlineData("--micro-batch", "0", "--micro-batch")]
    [InlineData("--global-batch", "63", "--global-batch")]
    [InlineData("--global-batch", "9223372036854775807", "--global-batch")]
    [InlineData("--seq-length", "0", "--seq-length")]
    [InlineData("--seq-length", "1e9", "--seq-length")]
    [InlineData("--precision", "fp3", "--precision")]
    [InlineData("--release", "next", "--release")]
    [InlineData("--recompute", "maybe", "--recompute")]
    [InlineData("--format", "xml", "--format")]
    [InlineData("--bogus", "1", "--bogus")]
    public void A_bad_flag_is_one_line_naming_it(string flag, string value, string named)
    {
        var args = With(flag, value);
        if (flag == "--gpus" && value == "12") args = [.. args, "--tp", "8"];
        Hostile.Refused(Hostile.Cli(args), named);
    }

    [Theory]
    [InlineData("--model")]
    [InlineData("--system")]
    [InlineData("--gpus")]
    [InlineData("--precision")]
    [InlineData("--global-batch")]
    public void A_missing_required_flag_is_named(string flag) => Hostile.Refused(Hostile.Cli(Without(flag)), flag);

    [Fact]
    public void A_run_the_slice_cannot_hold_is_refused_with_its_reason()
    {
        // EP 16 on a dense model at DP 8: EP divides neither DP nor TP x DP (ModernPredictor.ScenarioOf's reason).
        Hostile.Refused(Hostile.Cli(With("--ep", "16")), "EP");
    }

    [Fact]
    public void A_runs_file_and_flags_together_or_a_missing_file_are_refused()
    {
        var csv = Hostile.Temp("runs.csv", "case_id\n");
        Hostile.Refused(Hostile.Cli([.. Good, csv]), "--model");
        Hostile.Refused(Hostile.Cli("predict", "/nonexistent/runs.csv"), "runs.csv");
        Hostile.Refused(Hostile.Cli("predict", csv), "column");
    }

    [Fact]
    public void A_good_run_prices_to_finite_numbers_in_valid_json()
    {
        var (code, stdout, stderr) = Hostile.Cli([.. Good, "--format", "json"]);
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var p = Assert.Single(doc.RootElement.GetProperty("predictions").EnumerateArray());
        Assert.Equal("DGX-H100", p.GetProperty("system").GetString());
        Assert.Equal("hopper", p.GetProperty("generation").GetString());
        var step = p.GetProperty("stepSeconds").GetDouble();
        Assert.True(double.IsFinite(step) && step > 0);
        Assert.Equal(64 * 2048.0 / (8 * step), p.GetProperty("tokensPerSecondPerGpu").GetDouble(), 6);
        foreach (var b in p.GetProperty("breakdownSeconds").EnumerateObject()) Assert.True(double.IsFinite(b.Value.GetDouble()), b.Name);
        Assert.Contains(p.GetProperty("warnings").EnumerateArray(), w => w.GetString()!.Contains("factors transferred from"));
    }

    [Fact]
    public void A_preset_with_no_measured_run_prices_with_a_warning_naming_it()
    {
        // Oracle: the rule that any preset in data/models may be named, and a model none of the fitted runs used is
        // priced with a warning that says so (ModernArchitecture.IsMeasuredFamily); a name that is neither a family nor a
        // preset is refused on --model (A_bad_flag_value_... above).
        var (code, stdout, stderr) = Hostile.Cli("predict", "--model", "mixtral-8x7b", "--system", "H100-80GB", "--gpus", "16", "--precision", "bf16",
            "--global-batch", "32", "--ep", "8", "--seq-length", "4096", "--format", "json");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var p = Assert.Single(doc.RootElement.GetProperty("predictions").EnumerateArray());
        var step = p.GetProperty("stepSeconds").GetDouble();
        Assert.True(double.IsFinite(step) && step > 0);
        Assert.Equal(32 * 4096.0 / (16 * step), p.GetProperty("tokensPerSecondPerGpu").GetDouble(), 6);
        Assert.Contains(p.GetProperty("warnings").EnumerateArray(), w => w.GetString()!.StartsWith("model: no published run of mixtral-8x7b"));
    }
}

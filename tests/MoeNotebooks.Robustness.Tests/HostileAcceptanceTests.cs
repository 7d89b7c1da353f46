using MoeNotebooks.Config;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Class 3 (issue 17): silent 64-bit wrap-around and wrong acceptances — products past 2^63, parameter counts gone
/// negative, sums that overflow, input that was silently ignored (topK on a dense model, a header-only CSV, a key
/// repeated in another case, a second positional argument, an option given twice), and the reverse: whole numbers
/// written as 2.0 or 2e0 are integers. Oracle: the contract (refused naming the field, or accepted and equal to the
/// plain spelling), and for the wrap cases the hand product (e.g. 4 x (2^32)^2 = 2^66 > 2^63).
/// </summary>
public class HostileAcceptanceTests
{
    public static TheoryData<string, string, string> IntegralNotations()
    {
        var data = new TheoryData<string, string, string>();
        var fields = new (string Path, long Value)[]
        {
            ("model.layers", 2), ("model.hiddenSize", 64), ("model.attentionHeads", 4), ("model.ffnHiddenSize", 128),
            ("model.experts", 4), ("model.topK", 1), ("model.batch", 8), ("model.sequenceLength", 16), ("model.vocabulary", 0),
            ("hardware.gpus", 4), ("hardware.gpusPerNode", 8), ("hardware.gpu.smCount", 132),
            ("strategy.ep", 2), ("strategy.tp", 2), ("strategy.pp", 1), ("strategy.dp", 1), ("strategy.microbatches", 1),
        };
        foreach (var (path, v) in fields)
            foreach (var text in new[] { $"{v}.0", $"{v}e0", $"{v * 10}e-1", $"{v}.000", $"{v}E+0" })
                data.Add(path, text, v.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return data;
    }

    [Theory]
    [MemberData(nameof(IntegralNotations))]
    public void Whole_number_in_any_json_notation_is_an_integer(string path, string written, string plain)
    {
        var expected = Scenario.Parse(Hostile.Set(path, plain), "case.json");
        var got = Scenario.Parse(Hostile.Set(path, written), "case.json");
        Assert.Equal(expected.Model, got.Model);
        Assert.Equal(expected.Strategy, got.Strategy);
        Assert.Equal(expected.Hardware.GpuCount, got.Hardware.GpuCount);
        Assert.Equal(expected.Hardware.GpusPerNode, got.Hardware.GpusPerNode);
        Assert.Equal(expected.Hardware.Gpu.SmCount, got.Hardware.Gpu.SmCount);
    }

    [Theory]
    [InlineData("model.layers", "2.5")]
    [InlineData("model.batch", "8.000001")]
    [InlineData("model.hiddenSize", "6.4e1001")]
    [InlineData("strategy.ep", "2e-1")]
    public void Fraction_is_refused_as_not_whole(string path, string value) =>
        Hostile.Judge(Hostile.Set(path, value), path.Split('.')[^1]);

    /// <summary>Products that used to wrap: each refused naming the fields that multiply (hand products in the comments).</summary>
    public static TheoryData<string, string[]> WrapCases() => new()
    {
        // H = 2^32, one head: 4 H^2 = 2^66 wrapped to 0 — H is above its bound (2^20).
        { Hostile.Edit(r => { r["model"]!["hiddenSize"] = 4294967296L; r["model"]!["attentionHeads"] = 1; }), ["hiddenSize"] },
        // vocabulary 2^56: V x H = 2^62 parameters per copy — above the vocabulary bound (2^24).
        { Hostile.Edit(r => r["model"]!["vocabulary"] = 72057594037927936L), ["vocabulary"] },
        // In bounds each, but 16384 layers x 4 x (2^20)^2 = 7e16 parameters > 1e16.
        { Hostile.Edit(r => { r["model"]!["layers"] = 16384; r["model"]!["hiddenSize"] = 1048576; r["model"]!["attentionHeads"] = 4; r["model"]!["ffnHiddenSize"] = 4194304; }), ["layers", "parameters"] },
        // 2^20 experts x 2 x 2^20 x 2^22 = 2^63 expert parameters per layer.
        { Hostile.Edit(r => { r["model"]!["experts"] = 1048576; r["model"]!["hiddenSize"] = 1048576; r["model"]!["ffnHiddenSize"] = 4194304; r["model"]!["attentionHeads"] = 4; }), ["experts", "parameters"] },
        // batch x seq x seq x H x 2 = 2^24 x 2^24 x 2^24 x 64 x 2 > 2^63: materialized score bytes would wrap.
        { Hostile.Edit(r => { r["model"]!["batch"] = 16777216; r["model"]!["sequenceLength"] = 16777216; }), ["batch", "sequenceLength"] },
        // tokens x H x F x 2 x topK past 2^63.
        { Hostile.Edit(r => { r["model"]!["batch"] = 16777216; r["model"]!["sequenceLength"] = 1048576; r["model"]!["hiddenSize"] = 65536; r["model"]!["attentionHeads"] = 4; }), ["batch", "sequenceLength"] },
        // Explicit counts whose sum overflows a double: each count above its bound (1e15).
        { Hostile.Set("model.routing", """{ "distribution": "explicit", "tokensPerExpert": [1.7e308, 1.7e308, 1.7e308, 1.7e308] }"""), ["tokensPerExpert"] },
        { Hostile.Set("model.routing", """{ "distribution": "explicit", "tokensPerExpert": [1e400, 1, 1, 1] }"""), ["tokensPerExpert"] },
        { Hostile.Set("model.routing", """{ "distribution": "explicit", "tokensPerExpert": [1e15, 1e15, 1e15, 1.000001e15] }"""), ["tokensPerExpert"] },
        // ep x tp x pp x dp past 2^31.
        { Hostile.Edit(r => { r["strategy"]!["ep"] = 65536; r["strategy"]!["tp"] = 65536; }), ["strategy"] },
        { Hostile.Edit(r => { r["strategy"]!["dp"] = 16777216; r["strategy"]!["pp"] = 16777216; }), ["strategy"] },
    };

    [Theory]
    [MemberData(nameof(WrapCases))]
    public void Product_past_64_bits_is_refused_naming_its_fields(string json, string[] names) =>
        Assert.False(Hostile.Judge(json, names), "accepted");

    /// <summary>
    /// Near the parameter bound the exact count (<see cref="ParameterCounts.Of"/>, 64-bit) equals the hand count, the
    /// validation's double estimate bounds it from above, and the memory verdict is "does not fit", not "fits" with
    /// negative bytes. Hand count: layers x (4H^2 attention + 4H norms + HE router + E x 2HF experts) + VH
    /// embedding (the output layer is tied to it by default) + H final norm.
    /// </summary>
    [Fact]
    public void Parameter_count_at_the_bound_is_exact_and_positive()
    {
        var m = new ModelSpec("big", 64, 16384, 128, 65536, 64, 2, 64, 4096) { Vocabulary = 262144 };
        m.Validated();
        long h = 16384, f = 65536, e = 64, v = 262144;
        Assert.True(m.TieEmbeddings);
        var hand = 64 * (4 * h * h + 4 * h + h * e + e * 2 * h * f) + v * h + h;
        Assert.Equal(hand, ParameterCounts.Of(m).Total);
        Assert.True(m.TotalParameters >= hand, $"validation estimate {m.TotalParameters} below the exact {hand}");
        var st = new StrategySpec(1, 1, 1, 1);
        Assert.True(ParameterCounts.OnStage(m, st, 0).Total > 0);
        var memory = MoeNotebooks.Analysis.MemoryModel.Estimate(m with { Batch = 1, SequenceLength = 16 }, st, HardwareCatalog.Get("H100-SXM").WithGpus(1));
        Assert.False(memory.Feasible);   // 8.8e12 parameters x 2 bytes cannot fit 80 GB
        Assert.True(memory.PeakBytesPerGpu > 1e13);
    }

    public static TheoryData<string, string[]> IgnoredInputs() => new()
    {
        // topK on a dense model (routing on a dense model already was refused).
        { Hostile.Edit(r => { r["model"]!["experts"] = 0; r["model"]!["topK"] = 2; r["strategy"]!["ep"] = 1; r["hardware"]!["gpus"] = 2; }), ["topK"] },
        { Hostile.Edit(r => { r["model"]!["experts"] = 0; r["model"]!["topK"] = 8; r["strategy"]!["ep"] = 1; r["hardware"]!["gpus"] = 2; }), ["topK"] },
        // Keys differing only in case: one would silently replace the other.
        { Hostile.Base.Replace("\"bf16\": 989e12", "\"bf16\": 989e12, \"BF16\": 1e12", StringComparison.Ordinal), ["BF16", "bf16"] },
        { Hostile.Base.Replace("\"layers\": 2,", "\"layers\": 2, \"Layers\": 3,", StringComparison.Ordinal), ["Layers"] },
        { Hostile.Base.Replace("\"name\": \"base\",", "\"name\": \"base\", \"NAME\": \"other\",", StringComparison.Ordinal), ["NAME"] },
        { Hostile.Base.Replace("\"ep\": 2,", "\"ep\": 2, \"EP\": 4,", StringComparison.Ordinal), ["EP"] },
        { Hostile.Base.Replace("\"model\": {", "\"Model\": {}, \"model\": {", StringComparison.Ordinal), ["model", "Model"] },
        { Hostile.Base.Replace("\"layers\": 2,", "\"layers\": 2, \"layers\": 2,", StringComparison.Ordinal), ["layers"] },
        // Routing keys that do not apply.
        { Hostile.Set("model.routing", """{ "distribution": "uniform", "tokensPerExpert": [1, 2, 3, 4] }"""), ["tokensPerExpert"] },
        { Hostile.Set("model.routing", """{ "distribution": "explicit", "tokensPerExpert": [1, 2, 3] }"""), ["tokensPerExpert"] },
        { Hostile.Set("model.routing", """{ "distribution": "explicit", "tokensPerExpert": [0, 0, 0, 0] }"""), ["tokensPerExpert"] },
    };

    [Theory]
    [MemberData(nameof(IgnoredInputs))]
    public void Input_that_would_be_ignored_is_refused(string json, string[] names) =>
        Assert.False(Hostile.Judge(json, names), "accepted");

    [Theory]
    [InlineData("gemm", "gpu,dtype,m,n,k,time_us\n")]
    [InlineData("gemm", "gpu,dtype,m,n,k,time_us\n\n\n")]
    [InlineData("gemm", "gpu,dtype,m,n,k,time_us")]
    [InlineData("communication", "collective,system,num_gpus,num_nodes,msg_bytes,time_us\n")]
    [InlineData("communication", "collective,system,num_gpus,num_nodes,msg_bytes,time_us\r\n")]
    public void Header_only_calibration_csv_is_refused(string key, string csv)
    {
        var file = Hostile.Temp($"header-only-{key}-{csv.Length}.csv", csv);
        var json = Hostile.Set("costModel", $$"""{ "kind": "calibrated", "{{key}}": "{{file}}" }""");
        var ex = Assert.Throws<ConfigException>(() => Scenario.Parse(json, "case.json"));
        Hostile.OneLine(ex.Message, "no measurement rows");
    }

    public static TheoryData<string[], string[]> ExtraArguments() => new()
    {
        { ["evaluate", "data/scenarios/ep16.json".Repo(), "data/scenarios/ep16.json".Repo()], ["unexpected argument"] },
        { ["evaluate", "data/scenarios/ep16.json".Repo(), "extra"], ["extra"] },
        { ["formula", "data/scenarios/ep16.json".Repo(), "x"], ["x"] },
        { ["search", "data/scenarios/ep16.json".Repo(), "16"], ["16"] },
        { ["sweep", "data/sweeps/none.json", "other.json"], ["other.json"] },
        { ["validate", "extra"], ["extra"] },
        { ["help", "evaluate"], ["evaluate"] },
        { ["evaluate", "data/scenarios/ep16.json".Repo(), "--format", "json", "--format", "table"], ["--format"] },
        { ["evaluate", "data/scenarios/ep16.json".Repo(), "--format=json", "--format=json"], ["--format"] },
        { ["search", "data/scenarios/ep16.json".Repo(), "--gpus", "8", "--gpus", "16"], ["--gpus"] },
    };

    [Theory]
    [MemberData(nameof(ExtraArguments))]
    public void Argument_that_would_be_ignored_is_refused(string[] args, string[] names) =>
        Hostile.Refused(Hostile.Cli(args), names);

    /// <summary>An overflowing product is described in the scenario's own field names, not internal ones.</summary>
    [Fact]
    public void Overflow_message_names_scenario_fields()
    {
        var ex = Assert.Throws<ConfigException>(() => Scenario.Parse(Hostile.Edit(r => { r["model"]!["batch"] = 16777216; r["model"]!["sequenceLength"] = 16777216; }), "case.json"));
        Assert.Contains("model.batch", ex.Field, StringComparison.Ordinal);
        Assert.Contains("model.sequenceLength", ex.Field, StringComparison.Ordinal);
        Assert.Contains("16777216", ex.Message, StringComparison.Ordinal);
    }
}

using System.Text.Json.Nodes;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>One bad scenario file and what its single error line must name: the field, the value and what would be valid.</summary>
public sealed record BadJson(string Text, string Field, string? Value, string Valid);

/// <summary>One bad library call and what its exception must name.</summary>
public sealed record BadCall(Action Call, Type Exception, string Field, string? Value, string Valid);

/// <summary>
/// The invalid-input matrix: every bad input gets one clear message, through the JSON loader, the library records
/// and the CLI, never a NaN, a hang or a stack trace. Oracle: the message text itself (field, value, what is valid).
/// </summary>
public class InvalidInputMatrix
{
    /// <summary>A small valid scenario: 4 GPUs as EP2 x TP2, each case breaks one thing.</summary>
    private const string Base = """
        {
          "name": "base",
          "model": { "layers": 2, "hiddenSize": 64, "attentionHeads": 4, "ffnHiddenSize": 128, "experts": 4, "topK": 1,
                     "batch": 8, "sequenceLength": 16, "dtype": "bf16" },
          "hardware": { "preset": "H100-SXM", "gpus": 4 },
          "strategy": { "ep": 2, "tp": 2, "pp": 1, "dp": 1, "derivation": "corrected" },
          "costModel": "roofline-ideal"
        }
        """;

    private static string With(Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(Base)!.AsObject();
        edit(root);
        return root.ToJsonString();
    }

    private static JsonObject M(JsonObject r) => r["model"]!.AsObject();
    private static JsonObject S(JsonObject r) => r["strategy"]!.AsObject();
    private static JsonObject H(JsonObject r) => r["hardware"]!.AsObject();

    private static string Inline(string intraBandwidth = "450e9", string hbm = "3.35e12") => With(r => r["hardware"] = JsonNode.Parse($$"""
        { "name": "custom", "gpus": 4, "gpusPerNode": 8,
          "gpu": { "name": "g", "peakFlopsPerSecond": { "bf16": 989e12 }, "hbmBytesPerSecond": {{hbm}}, "hbmCapacityBytes": 80e9 },
          "intraNode": { "bytesPerSecond": {{intraBandwidth}}, "latencySeconds": 5e-6 },
          "interNode": { "bytesPerSecond": 50e9, "latencySeconds": 17e-6 } }
        """));

    public static readonly IReadOnlyDictionary<string, BadJson> Json = new Dictionary<string, BadJson>
    {
        ["heads-not-divisible-by-tp"] = new(With(r => { M(r)["hiddenSize"] = 96; M(r)["attentionHeads"] = 6; S(r)["ep"] = 1; S(r)["tp"] = 4; }),
            "model.attentionHeads", "6", "divisible by strategy.tp = 4"),
        ["experts-not-divisible-by-ep"] = new(With(r => M(r)["experts"] = 3), "model.experts", "3", "divisible by strategy.ep = 2"),
        ["experts-not-divisible-by-ep-seed"] = new(With(r => { M(r)["experts"] = 3; S(r)["derivation"] = "seed"; S(r)["tp"] = 1; H(r)["gpus"] = 2; }),
            "model.experts", "3", "divisible by strategy.ep = 2"),
        ["layers-fewer-than-pp"] = new(With(r => { S(r)["ep"] = 1; S(r)["tp"] = 1; S(r)["pp"] = 4; }), "strategy.pp", "4", "<= model.layers = 2"),
        ["gpu-count-mismatch"] = new(With(r => H(r)["gpus"] = 8), "strategy.ep x tp x pp x dp", "2 x 2 x 1 x 1 = 4", "hardware.gpus = 8"),
        ["batch-not-divisible-by-dp-ep-microbatches"] = new(With(r => { M(r)["batch"] = 6; S(r)["microbatches"] = 2; }), "model.batch", "6", "dp x ep x microbatches = 4"),
        ["ffn-not-divisible-by-tp"] = new(With(r => M(r)["ffnHiddenSize"] = 129), "model.ffnHiddenSize", "129", "divisible by strategy.tp = 2"),
        ["hidden-not-divisible-by-heads"] = new(With(r => M(r)["hiddenSize"] = 66), "model.attentionHeads", "4", "must divide hiddenSize = 66"),
        ["zero-layers"] = new(With(r => M(r)["layers"] = 0), "model.layers", "0", "positive integer"),
        ["negative-batch"] = new(With(r => M(r)["batch"] = -8), "model.batch", "-8", "positive integer"),
        ["zero-hidden"] = new(With(r => M(r)["hiddenSize"] = 0), "model.hiddenSize", "0", "positive integer"),
        ["negative-heads"] = new(With(r => M(r)["attentionHeads"] = -4), "model.attentionHeads", "-4", "positive integer"),
        ["zero-sequence"] = new(With(r => M(r)["sequenceLength"] = 0), "model.sequenceLength", "0", "positive integer"),
        ["fractional-batch"] = new(With(r => M(r)["batch"] = 8.5), "model.batch", "8.5", "whole number"),
        ["fractional-layers"] = new(With(r => M(r)["layers"] = 2.5), "model.layers", "2.5", "whole number"),
        ["batch-beyond-int64"] = new(With(r => M(r)["batch"] = JsonNode.Parse("1e20")), "model.batch", "1e20", "overflows a 64-bit integer"),
        ["layers-beyond-int32"] = new(With(r => M(r)["layers"] = 3_000_000_000L), "model.layers", "3000000000", "32-bit integer"),
        ["tokens-overflow"] = new(With(r => { M(r)["batch"] = 4_294_967_296L; M(r)["sequenceLength"] = 4_294_967_296L; }),
            "model.batch x model.sequenceLength", "4294967296 x 4294967296", "overflows a 64-bit integer"),
        ["flop-count-overflow"] = new(With(r => { M(r)["batch"] = 1_048_576; M(r)["sequenceLength"] = 1_048_576; M(r)["hiddenSize"] = 65_536; M(r)["ffnHiddenSize"] = 262_144; }),
            "model.batch x model.sequenceLength x model.hiddenSize x model.ffnHiddenSize x 2 x topK", "1099511627776 x 65536 x 262144 x 2 x 1", "overflows a 64-bit integer"),
        ["topk-above-experts"] = new(With(r => M(r)["topK"] = 5), "model.topK", "5", "<= experts = 4"),
        ["zero-topk"] = new(With(r => M(r)["topK"] = 0), "model.topK", "0", "positive integer"),
        ["unknown-gpu-preset"] = new(With(r => H(r)["preset"] = "H300"), "hardware.preset", "\"H300\"", "known: " + string.Join(", ", HardwareCatalog.Names)),
        ["misspelt-optional-key"] = new(With(r => { M(r).Remove("topK"); M(r)["topk"] = 1; }), "model.topk", "1", "did you mean \"topK\""),
        ["misspelt-required-key"] = new(With(r => { M(r).Remove("hiddenSize"); M(r)["hiddenSzie"] = 64; }), "model.hiddenSize", null, "\"hiddenSzie\""),
        ["misspelt-top-level-key"] = new(With(r => { r["costmodel"] = r["costModel"]!.DeepClone(); r.Remove("costModel"); }), "costmodel", "\"roofline-ideal\"", "did you mean \"costModel\""),
        ["misspelt-strategy-key"] = new(With(r => S(r)["ppp"] = 1), "strategy.ppp", "1", "did you mean \"pp\""),
        ["unknown-key"] = new(With(r => M(r)["capacity"] = 1.25), "model.capacity", "1.25", "known keys here"),
        ["duplicate-key"] = new(Base.Replace("\"layers\": 2,", "\"layers\": 2, \"layers\": 3,"), "model.layers", "3", "more than once"),
        ["string-for-integer"] = new(With(r => M(r)["layers"] = "2"), "model.layers", "\"2\"", "integer number, not a string"),
        ["array-for-object"] = new(With(r => r["model"] = new JsonArray(1, 2)), "model", "[1,2]", "JSON object"),
        ["number-for-string"] = new(With(r => S(r)["derivation"] = 3), "strategy.derivation", "3", "must be a string"),
        ["boolean-for-number"] = new(With(r => S(r)["tp"] = true), "strategy.tp", "true", "integer number, not a boolean"),
        ["unknown-derivation"] = new(With(r => S(r)["derivation"] = "paper"), "strategy.derivation", "\"paper\"", "\"seed\", \"corrected\""),
        ["unknown-cost-model"] = new(With(r => r["costModel"] = "roofline"), "costModel", "\"roofline\"", "\"roofline-ideal\", \"roofline-efficiency\""),
        ["unknown-efficiency-table"] = new(With(r => r["costModel"] = JsonNode.Parse("""{"kind":"roofline-efficiency","efficiency":"typical-ampere"}""")),
            "costModel.efficiency", "\"typical-ampere\"", "known: typical-hopper"),
        ["efficiency-above-one"] = new(With(r => r["costModel"] = JsonNode.Parse("""{"kind":"roofline-efficiency","efficiency":{"name":"x","matmul":[{"minFlops":0,"efficiency":1.5}],"memory":0.8}}""")),
            "costModel.efficiency.matmul[0].efficiency", "1.5", "[1E-06, 1]"),
        ["unknown-nccl-tuning"] = new(With(r => r["costModel"] = JsonNode.Parse("""{"kind":"roofline-ideal","ncclProtocols":"nccl-1.0"}""")),
            "costModel.ncclProtocols", "\"nccl-1.0\"", "known: nccl-2.28"),
        ["nccl-protocols-number"] = new(With(r => r["costModel"] = JsonNode.Parse("""{"kind":"roofline-ideal","ncclProtocols":3}""")),
            "costModel.ncclProtocols", "3", "must be true, false"),
        ["empty-file"] = new("", "(file)", "empty", "JSON object"),
        ["whitespace-file"] = new(" \n\t\n", "(file)", "empty", "JSON object"),
        ["invalid-json"] = new("{\n  \"name\": \"x\",\n  \"model\": { \"layers\": 2 \n}", "line 4", null, "not valid JSON"),
        ["trailing-garbage"] = new(Base + "\n}", "line 9", null, "not valid JSON"),
        ["root-not-object"] = new("[1, 2, 3]", "(root)", "[1, 2, 3]", "JSON object"),
        ["missing-model"] = new(With(r => r.Remove("model")), "model", null, "is required"),
        ["null-required-field"] = new(With(r => M(r)["layers"] = null), "model.layers", null, "is required"),
        ["unknown-dtype"] = new(With(r => M(r)["dtype"] = "bf17"), "model.dtype", "\"bf17\"", "\"bf16\""),
        ["element-bytes-mismatch"] = new(With(r => { M(r)["dtype"] = "fp8"; M(r)["elementBytes"] = 2; }), "model.elementBytes", "2", "must be 1 for dtype \"fp8\""),
        ["dtype-without-peak"] = new(With(r => { M(r)["dtype"] = "fp8"; H(r)["preset"] = "A100-80GB"; }), "hardware.gpu.peakFlopsPerSecond.fp8", null, "has no peak for dtype \"fp8\""),
        ["zero-gpus"] = new(With(r => H(r)["gpus"] = 0), "hardware.gpus", "0", "positive integer"),
        ["negative-gpus-per-node"] = new(With(r => H(r)["gpusPerNode"] = -8), "hardware.gpusPerNode", "-8", "positive integer"),
        ["negative-link-bandwidth"] = new(Inline(intraBandwidth: "-1"), "hardware.intraNode.bytesPerSecond", "-1", "finite number > 0"),
        ["infinite-hbm-bandwidth"] = new(Inline(hbm: "1e400"), "hardware.gpu.hbmBytesPerSecond", "1e400", "finite number"),
        ["seed-derivation-other-layout"] = new(With(r => { S(r)["derivation"] = "seed"; }), "strategy", "EP2 x TP2 x PP1 x DP1 (seed, 1 microbatch)", "use \"derivation\": \"corrected\""),
        ["zero-microbatches"] = new(With(r => S(r)["microbatches"] = 0), "strategy.microbatches", "0", "positive integer"),
        ["negative-ep"] = new(With(r => S(r)["ep"] = -2), "strategy.ep", "-2", "positive integer"),
        ["empty-name"] = new(With(r => r["name"] = ""), "name", "\"\"", "non-empty string"),
        ["capacity-factor-zero"] = new(With(r => M(r)["routing"] = JsonNode.Parse("""{"capacityFactor": 0}""")), "model.routing.capacityFactor", "0", "finite number > 0"),
        ["capacity-factor-negative"] = new(With(r => M(r)["routing"] = JsonNode.Parse("""{"capacityFactor": -1.25}""")), "model.routing.capacityFactor", "-1.25", "finite number > 0"),
    };

    public static TheoryData<string> JsonCases() => new(Json.Keys);

    [Theory]
    [MemberData(nameof(JsonCases))]
    public void Scenario_parse_names_field_value_and_what_is_valid(string name)
    {
        var c = Json[name];
        var e = Assert.Throws<ConfigException>(() => Scenario.Parse(c.Text, "case.json"));
        Assert.Equal(c.Field, e.Field);
        Assert.Equal(c.Value, e.Value);
        Assert.Contains(c.Valid, e.Requirement, StringComparison.Ordinal);
        Assert.StartsWith("case.json: ", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(JsonCases))]
    public void Cli_exits_2_with_one_error_line_naming_field_and_value(string name)
    {
        var c = Json[name];
        var path = Path.Combine(Path.GetTempPath(), $"moe-robustness-{Environment.ProcessId}-{name}.json");
        File.WriteAllText(path, c.Text);
        try
        {
            var (code, stdout, stderr) = Cli(["evaluate", path]);
            Assert.Equal(2, code);
            Assert.Equal("", stdout);
            var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            var line = Assert.Single(lines);
            Assert.StartsWith($"error: {path}: {c.Field} ", line, StringComparison.Ordinal);
            if (c.Value is not null) Assert.Contains($"= {c.Value}", line, StringComparison.Ordinal);
            Assert.Contains(c.Valid, line, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        }
        finally { File.Delete(path); }
    }

    internal static (int Code, string Stdout, string Stderr) Cli(string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = MoeNotebooks.Cli.Cli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static readonly ModelSpec Small = new("small", 2, 64, 4, 128, 4, 1, 8, 16);

    public static readonly IReadOnlyDictionary<string, BadCall> Calls = new Dictionary<string, BadCall>
    {
        ["record-zero-heads"] = new(() => (Small with { AttentionHeads = 0 }).Validated(), typeof(ConfigException), "model.attentionHeads", "0", "positive integer"),
        ["record-negative-layers"] = new(() => (Small with { Layers = -1 }).Validated(), typeof(ConfigException), "model.layers", "-1", "positive integer"),
        ["record-token-overflow"] = new(() => (Small with { Batch = long.MaxValue / 2, SequenceLength = 4 }).Validated(), typeof(ConfigException),
            "model.batch x model.sequenceLength", "4611686018427387903 x 4", "overflows a 64-bit integer"),
        ["record-topk-above-experts"] = new(() => (Small with { TopK = 9 }).Validated(), typeof(ConfigException), "model.topK", "9", "<= experts = 4"),
        ["record-unknown-dtype"] = new(() => (Small with { Dtype = "int4" }).Validated(), typeof(ConfigException), "model.dtype", "\"int4\"", "\"bf16\""),
        ["record-zero-ep"] = new(() => new StrategySpec(0, 1, 1, 1).Validated(), typeof(ConfigException), "strategy.ep", "0", "positive integer"),
        ["build-heads-not-divisible-by-tp"] = new(() => new StrategySpec(1, 8, 1, 1).BuildDag(Small), typeof(ConfigException), "model.attentionHeads", "4", "divisible by strategy.tp = 8"),
        ["build-experts-not-divisible-by-ep"] = new(() => new StrategySpec(8, 1, 1, 1).BuildDag(Small with { Batch = 16 }), typeof(ConfigException), "model.experts", "4", "divisible by strategy.ep = 8"),
        ["build-layers-fewer-than-pp"] = new(() => new StrategySpec(1, 1, 3, 1).BuildDag(Small), typeof(ConfigException), "strategy.pp", "3", "<= model.layers = 2"),
        ["build-batch-not-divisible"] = new(() => new StrategySpec(1, 1, 1, 3).BuildDag(Small), typeof(ConfigException), "model.batch", "8", "dp x ep x microbatches = 3"),
        ["build-gpu-count-overflow"] = new(() => new StrategySpec(65536, 65536, 1, 1).BuildDag(Small), typeof(ConfigException), "strategy.ep x tp x pp x dp", "65536 x 65536 x 1 x 1 = 4294967296", "32-bit"),
        ["evaluate-gpu-count-mismatch"] = new(() => new Scenario("s", Small, HardwareCatalog.Get("H100-SXM"), new StrategySpec(2, 1, 1, 1), CostModelSpec.Ideal).Evaluate(),
            typeof(ConfigException), "strategy.ep x tp x pp x dp", "2 x 1 x 1 x 1 = 2", "hardware.gpus = 8"),
        ["catalog-unknown-preset"] = new(() => HardwareCatalog.Get("H300"), typeof(ConfigException), "hardware.preset", "\"H300\"", "known: " + string.Join(", ", HardwareCatalog.Names)),
        ["hardware-zero-gpus"] = new(() => HardwareCatalog.Get("H200").WithGpus(0), typeof(ConfigException), "hardware.gpus", "0", "positive integer"),
        ["link-negative-bandwidth"] = new(() => new LinkSpec(-1, 0).Validated("hardware.intraNode"), typeof(ConfigException), "hardware.intraNode.bytesPerSecond", "-1", "finite number > 0"),
        ["link-nan-latency"] = new(() => new LinkSpec(1e9, double.NaN).Validated("hardware.interNode"), typeof(ConfigException), "hardware.interNode.latencySeconds", "NaN", "finite number >= 0"),
        ["efficiency-empty-table"] = new(() => new Costs.EfficiencyTable("x", [], 1, "").Validated(), typeof(ConfigException), "costModel.efficiency.matmul", "[]", "at least one"),
        // The API's way of rejecting a cycle: a dependency must already exist, so an edge back to a later (or the same) operation cannot be written.
        ["dag-dependency-on-later-op"] = new(() => Dag(b => b.AddElementwise(0, 8, 0, [1])), typeof(DagException), "operation 1", "operation 1", "does not exist yet"),
        ["dag-self-dependency"] = new(() => Dag(b => b.AddElementwise(0, 8, 0, [b.Count])), typeof(DagException), "operation 1", "operation 1", "does not exist yet"),
        ["dag-gpu-out-of-range"] = new(() => Dag(b => b.AddElementwise(7, 8, 0, [])), typeof(DagException), "GPU 7", "GPU 7", "outside 0..1"),
        ["dag-negative-shape"] = new(() => Dag(b => b.AddMatmul(OpKind.ExpertUp, 0, new MatmulShape(-1, 4, 4), 0, [])), typeof(DagException), "ExpertUp on GPU 0", "m=-1", "must be positive"),
        ["dag-group-repeats-gpu"] = new(() => Dag(b => b.Group([1, 1])), typeof(DagException), "group", "GPU 1 twice", "twice"),
        ["schedule-nan-duration"] = new(() => Scheduler.Schedule(new DagBuilder(1).Let(b => b.AddElementwise(0, 8, 0, [])).Build(), [double.NaN]),
            typeof(ArgumentException), "duration", "NaN", "finite and >= 0"),
    };

    /// <summary>A two-GPU builder holding one operation, then <paramref name="bad"/>.</summary>
    private static void Dag(Action<DagBuilder> bad)
    {
        var b = new DagBuilder(2);
        b.AddElementwise(0, 8, 0, []);
        bad(b);
    }

    public static TheoryData<string> CallCases() => new(Calls.Keys);

    [Theory]
    [MemberData(nameof(CallCases))]
    public void Library_call_names_field_value_and_what_is_valid(string name)
    {
        var c = Calls[name];
        var e = Assert.Throws(c.Exception, c.Call);
        if (e is ConfigException ce)
        {
            Assert.Equal(c.Field, ce.Field);
            Assert.Equal(c.Value, ce.Value);
            Assert.Contains(c.Valid, ce.Requirement, StringComparison.Ordinal);
        }
        else
        {
            Assert.Contains(c.Field, e.Message, StringComparison.Ordinal);
            if (c.Value is not null) Assert.Contains(c.Value, e.Message, StringComparison.Ordinal);
            Assert.Contains(c.Valid, e.Message, StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// A configuration that does not fit in HBM is a verdict, not a crash: the seed model trained on 16 H100s with one
    /// microbatch and no recomputation needs far more than 80 GB per GPU (activations of 640,000 tokens per GPU
    /// across 4 layers alone exceed it); evaluation succeeds, the memory report says it does not fit, how much is
    /// needed, and the CLI prints it with exit code 0.
    /// </summary>
    [Fact]
    public void Memory_infeasible_configuration_is_a_verdict_not_a_crash()
    {
        var text = With(r =>
        {
            r["model"] = JsonNode.Parse("""{ "layers": 4, "hiddenSize": 8192, "attentionHeads": 16, "ffnHiddenSize": 32768, "experts": 16, "topK": 1, "batch": 1024, "sequenceLength": 10000 }""");
            r["hardware"] = JsonNode.Parse("""{ "preset": "H100-SXM", "gpus": 16 }""");
            r["strategy"] = JsonNode.Parse("""{ "ep": 16, "mode": "training", "microbatches": 1 }""");
        });
        var evaluation = Scenario.Parse(text, "big.json").Evaluate();
        Assert.False(evaluation.Memory.Feasible);
        Assert.True(evaluation.Memory.PeakBytesPerGpu > evaluation.Memory.CapacityBytes);
        Assert.StartsWith("does not fit: ", evaluation.Memory.ToString(), StringComparison.Ordinal);
        Assert.True(double.IsFinite(evaluation.TotalSeconds) && evaluation.TotalSeconds > 0);

        var path = Path.Combine(Path.GetTempPath(), $"moe-robustness-{Environment.ProcessId}-memory.json");
        File.WriteAllText(path, text);
        try
        {
            var (code, stdout, stderr) = Cli(["evaluate", path]);
            Assert.Equal(0, code);
            Assert.Equal("", stderr);
            Assert.Contains("does not fit", stdout, StringComparison.Ordinal);
        }
        finally { File.Delete(path); }
    }

    [Theory]
    [InlineData(new[] { "evaluate", "/nonexistent/scenario.json" }, "error: scenario = \"/nonexistent/scenario.json\": file not found")]
    [InlineData(new[] { "evalute", "x.json" }, "error: unknown verb 'evalute'")]
    [InlineData(new[] { "evaluate", "x.json", "--fromat", "json" }, "error: unknown option --fromat")]
    [InlineData(new[] { "evaluate" }, "error: missing SCENARIO.json")]
    [InlineData(new[] { "evaluate", "x.json", "--fold", "half" }, "error: --fold = half: must be periodic")]
    public void Cli_usage_errors_exit_2_with_one_error_line(string[] args, string expected)
    {
        var (code, _, stderr) = Cli(args);
        Assert.Equal(2, code);
        var errors = stderr.Split('\n').Where(l => l.StartsWith("error:", StringComparison.Ordinal)).ToArray();
        Assert.StartsWith(expected, Assert.Single(errors), StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
    }
}

internal static class Fluent
{
    public static T Let<T>(this T value, Action<T> action)
    {
        action(value);
        return value;
    }
}

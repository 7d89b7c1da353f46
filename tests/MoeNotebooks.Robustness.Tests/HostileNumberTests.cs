namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Class 1 (issue 17): finite but extreme numbers in every numeric field of the descriptions — denormals, values near
/// the double and 64-bit limits, out-of-range and mistyped values. Every one is either refused on load with one line
/// naming the field (and the range, see <see cref="MoeNotebooks.Config.Bounds"/>) or prices to finite numbers.
/// Oracle: that contract (<see cref="Hostile.Judge"/>); the bounds' own values are checked in <see cref="In_range_extremes_are_accepted"/>.
/// </summary>
public class HostileNumberTests
{
    /// <summary>Integer fields of a scenario and the name the error line must carry.</summary>
    public static readonly (string Path, string Name)[] IntegerFields =
    [
        ("model.layers", "layers"), ("model.hiddenSize", "hiddenSize"), ("model.attentionHeads", "attentionHeads"),
        ("model.ffnHiddenSize", "ffnHiddenSize"), ("model.experts", "experts"), ("model.topK", "topK"),
        ("model.batch", "batch"), ("model.sequenceLength", "sequenceLength"), ("model.vocabulary", "vocabulary"),
        ("hardware.gpus", "gpus"), ("hardware.gpusPerNode", "gpusPerNode"), ("hardware.gpu.smCount", "smCount"),
        ("strategy.ep", "ep"), ("strategy.tp", "tp"), ("strategy.pp", "pp"), ("strategy.dp", "dp"),
        ("strategy.microbatches", "microbatches"), ("strategy.virtualStages", "virtualStages"),
        ("strategy.alltoallChunks", "alltoallChunks"), ("strategy.zero", "zero"),
        ("hardware.gpusPerNvlinkDomain", "gpusPerNvlinkDomain"), ("hardware.nicsPerNode", "nicsPerNode"),
    ];

    /// <summary>Extreme raw JSON values for an integer field.</summary>
    public static readonly string[] IntegerValues =
    [
        "0", "-1", "-9223372036854775808", "65536", "1048577", "16777217", "2147483647", "2147483648", "4294967296",
        "9007199254740993", "72057594037927936", "9223372036854775807", "9223372036854775808", "1e19", "1e30", "1e400",
        "2.5", "5e-324", "-0.0", "\"2\"", "true", "[2]",
    ];

    /// <summary>Floating-point fields and the name the error line must carry.</summary>
    public static readonly (string Path, string Name)[] DoubleFields =
    [
        ("hardware.gpu.peakFlopsPerSecond.bf16", "peakFlopsPerSecond"), ("hardware.gpu.achievableFlopsPerSecond.bf16", "achievableFlopsPerSecond"),
        ("hardware.gpu.hbmBytesPerSecond", "hbmBytesPerSecond"), ("hardware.gpu.hbmCapacityBytes", "hbmCapacityBytes"),
        ("hardware.intraNode.bytesPerSecond", "bytesPerSecond"), ("hardware.intraNode.latencySeconds", "latencySeconds"),
        ("hardware.interNode.bytesPerSecond", "bytesPerSecond"), ("hardware.interNode.latencySeconds", "latencySeconds"),
        ("model.routing.zipfExponent", "zipfExponent"), ("model.routing.capacityFactor", "capacityFactor"),
        ("hardware.intraNode.stepLatencySeconds", "stepLatencySeconds"), ("hardware.interNode.stepLatencySeconds", "stepLatencySeconds"),
        ("hardware.intraNode.peerBytesPerSecond", "peerBytesPerSecond"), ("hardware.nvlsEfficiency", "nvlsEfficiency"),
    ];

    public static readonly string[] DoubleValues =
    [
        "5e-324", "1e-310", "2.2250738585072014e-308", "1e-30", "1e-12", "0", "-0.0", "-1", "1e19", "1e30", "1e300",
        "1.7e308", "1.7976931348623157e308", "1e309", "-1e309", "\"1e12\"", "true", "{}",
    ];

    public static TheoryData<string, string, string> IntegerCases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var (path, name) in IntegerFields) foreach (var v in IntegerValues) data.Add(path, name, v);
        return data;
    }

    public static TheoryData<string, string, string> DoubleCases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var (path, name) in DoubleFields) foreach (var v in DoubleValues) data.Add(path, name, v);
        return data;
    }

    [Theory]
    [MemberData(nameof(IntegerCases))]
    public void Extreme_integer_is_refused_naming_the_field_or_prices_finite(string path, string name, string value)
    {
        var json = Hostile.Set(path, value);
        // A schedule or interleaving option needs its companion to be meaningful; the judge accepts either verdict.
        var accepted = Hostile.Judge(json, name, "strategy", "model.", "hardware.");
        // Values a 32-bit count cannot hold, fractions and wrong types are never accepted.
        if (value is "2.5" or "\"2\"" or "true" or "[2]" or "1e400" or "9223372036854775808" or "1e19" or "1e30" or "5e-324"
            or "9223372036854775807" or "72057594037927936" or "9007199254740993" or "4294967296" or "2147483648" or "-9223372036854775808")
            Assert.False(accepted, $"{path} = {value} was accepted");
    }

    [Theory]
    [MemberData(nameof(DoubleCases))]
    public void Extreme_double_is_refused_naming_the_field_or_prices_finite(string path, string name, string value)
    {
        var json = path.StartsWith("model.routing", StringComparison.Ordinal)
            ? Hostile.Set("model.routing.distribution", "\"zipf\"", Hostile.Set(path, value))
            : Hostile.Set(path, value);
        var accepted = Hostile.Judge(json, name, "dtype", "peak");
        // Denormals are outside every physical bound that excludes 0; a latency or Zipf exponent of 0 is valid, and a
        // denormal one prices like 0 (the judge checked it is finite).
        var zeroValid = name is "latencySeconds" or "stepLatencySeconds" or "zipfExponent";
        if ((!zeroValid && value is "5e-324" or "1e-310" or "2.2250738585072014e-308") || value is "1.7e308" or "1.7976931348623157e308" or "1e309" or "-1e309" or "\"1e12\"" or "true" or "{}" or "-1")
            Assert.False(accepted, $"{path} = {value} was accepted");
    }

    /// <summary>
    /// The edges of the documented ranges are accepted and price finite: the largest GPU, the fastest link, the slowest
    /// link with the largest latency, the smallest memory. Oracle: <see cref="MoeNotebooks.Config.Bounds"/> as documented.
    /// </summary>
    [Theory]
    [InlineData("hardware.gpu.peakFlopsPerSecond.bf16", "1e18")]
    [InlineData("hardware.gpu.peakFlopsPerSecond.bf16", "1e9")]
    [InlineData("hardware.gpu.hbmBytesPerSecond", "1e15")]
    [InlineData("hardware.gpu.hbmBytesPerSecond", "1e9")]
    [InlineData("hardware.gpu.hbmCapacityBytes", "1e15")]
    [InlineData("hardware.intraNode.bytesPerSecond", "1e6")]
    [InlineData("hardware.intraNode.latencySeconds", "1")]
    [InlineData("hardware.interNode.latencySeconds", "0")]
    [InlineData("model.routing.capacityFactor", "0.001")]
    [InlineData("hardware.interNode.bytesPerSecond", "1e15")]
    public void In_range_extremes_are_accepted(string path, string value)
    {
        var json = Hostile.Set(path, value);
        if (path == "hardware.gpu.peakFlopsPerSecond.bf16" && value == "1e9")
            json = Hostile.Set("hardware.gpu.achievableFlopsPerSecond.bf16", "1e9", json);
        Assert.True(Hostile.Judge(json), $"{path} = {value} refused");
    }

    /// <summary>Calibration CSV numbers: times of 1e-310 us, 1e300 us, dimensions past 2^32; each refused naming line and column.</summary>
    [Theory]
    [InlineData("1e-310", "time_us")]
    [InlineData("1e-7", "time_us")]
    [InlineData("1e300", "time_us")]
    [InlineData("1.7e308", "time_us")]
    [InlineData("NaN", "time_us")]
    [InlineData("Infinity", "time_us")]
    [InlineData("-5", "time_us")]
    [InlineData("0", "time_us")]
    public void Gemm_csv_time_outside_physical_range_is_refused(string time, string column)
    {
        var csv = Hostile.Temp($"gemm-{Math.Abs(time.GetHashCode())}.csv", $"gpu,dtype,m,n,k,time_us\nH100,bf16,1024,1024,1024,{time}\n");
        var json = Hostile.Set("costModel", $$"""{ "kind": "calibrated", "gemm": "{{csv}}" }""");
        var ex = Assert.Throws<MoeNotebooks.Config.ConfigException>(() => MoeNotebooks.Config.Scenario.Parse(json, "case.json"));
        Hostile.OneLine(ex.Message, column);
        Assert.Contains("line 2", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("m", "4294967297")]
    [InlineData("n", "9223372036854775807")]
    [InlineData("k", "99999999999999999999")]
    [InlineData("m", "0")]
    [InlineData("k", "1.5")]
    public void Gemm_csv_dimension_outside_range_is_refused(string column, string value)
    {
        var row = column switch { "m" => $"{value},8,8", "n" => $"8,{value},8", _ => $"8,8,{value}" };
        var csv = Hostile.Temp($"gemm-dim-{column}-{value.Length}.csv", $"gpu,dtype,m,n,k,time_us\nH100,bf16,{row},12.5\n");
        var json = Hostile.Set("costModel", $$"""{ "kind": "calibrated", "gemm": "{{csv}}" }""");
        var ex = Assert.Throws<MoeNotebooks.Config.ConfigException>(() => MoeNotebooks.Config.Scenario.Parse(json, "case.json"));
        Hostile.OneLine(ex.Message, $"column {column}");
    }

    [Theory]
    [InlineData("msg_bytes", "1e30")]
    [InlineData("msg_bytes", "5e-324")]
    [InlineData("time_us", "1e-310")]
    [InlineData("num_gpus", "99999999999")]
    public void Collective_csv_number_outside_range_is_refused(string column, string value)
    {
        var fields = new Dictionary<string, string> { ["msg_bytes"] = "1048576", ["time_us"] = "25.0", ["num_gpus"] = "8" };
        fields[column] = value;
        var csv = Hostile.Temp($"comm-{column}-{value.Length}.csv",
            $"collective,system,num_gpus,num_nodes,msg_bytes,time_us\nall_reduce,dgx,{fields["num_gpus"]},1,{fields["msg_bytes"]},{fields["time_us"]}\n");
        var json = Hostile.Set("costModel", $$"""{ "kind": "calibrated", "communication": "{{csv}}" }""");
        var ex = Assert.Throws<MoeNotebooks.Config.ConfigException>(() => MoeNotebooks.Config.Scenario.Parse(json, "case.json"));
        Hostile.OneLine(ex.Message, $"column {column}");
    }

    /// <summary>--sensitivity with non-fractions: named, before anything is printed.</summary>
    [Theory]
    [InlineData("NaN")]
    [InlineData("Infinity")]
    [InlineData("-Infinity")]
    [InlineData("2")]
    [InlineData("1")]
    [InlineData("0")]
    [InlineData("-0.1")]
    [InlineData("1e400")]
    [InlineData("5e-324x")]
    [InlineData("0,1")]
    public void Sensitivity_outside_zero_one_is_named_before_any_output(string value)
    {
        foreach (var format in new[] { "table", "json" })
            Hostile.Refused(Hostile.Cli("evaluate", "data/scenarios/ep16.json".Repo(), "--format", format, "--sensitivity", value), "--sensitivity");
    }
}

internal static class RepoPath
{
    private static readonly Lazy<string> Root = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) dir = dir.Parent;
        return dir!.FullName;
    });

    /// <summary>A path relative to the repository root, made absolute.</summary>
    public static string Repo(this string relative) => Path.Combine(Root.Value, relative);
}

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Hostile values in the hybrid-model fields (issue 14: hybridOverridePattern, the Mamba-2 sizes, moeLatentSize): every
/// one is refused on load with one line naming the field, or prices to finite numbers. Oracle: that contract
/// (<see cref="Hostile.Judge"/>) and the bounds in <see cref="MoeNotebooks.Config.Bounds"/>.
/// </summary>
public class HostileHybridTests
{
    /// <summary>The hostile base made a hybrid: "ME" (one Mamba-2 layer, one MoE layer) with 2 Mamba heads of 16, 2 groups (TP 2).</summary>
    private static string HybridBase =>
        Hostile.Set("model.mambaNumGroups", "2", Hostile.Set("model.mambaHeadDim", "16", Hostile.Set("model.mambaNumHeads", "2",
            Hostile.Set("model.mambaStateDim", "8", Hostile.Set("model.mambaChunkSize", "8", Hostile.Set("model.hybridOverridePattern", "\"ME\""))))));

    public static readonly (string Path, string Name)[] Fields =
    [
        ("model.mambaStateDim", "mambaStateDim"), ("model.mambaHeadDim", "mambaHeadDim"), ("model.mambaNumGroups", "mambaNumGroups"),
        ("model.mambaNumHeads", "mambaNumHeads"), ("model.mambaConvKernel", "mambaConvKernel"), ("model.mambaChunkSize", "mambaChunkSize"),
        ("model.moeLatentSize", "moeLatentSize"),
    ];

    public static TheoryData<string, string, string> IntegerCases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var (path, name) in Fields) foreach (var v in HostileNumberTests.IntegerValues) data.Add(path, name, v);
        return data;
    }

    [Fact]
    public void The_hybrid_base_prices_finite()
    {
        Assert.True(Hostile.Judge(HybridBase), "the hybrid base was refused");
    }

    [Theory]
    [MemberData(nameof(IntegerCases))]
    public void Extreme_mamba_size_is_refused_naming_the_field_or_prices_finite(string path, string name, string value)
    {
        // A size may also be refused through the field it must divide (heads by groups, heads by TP) or the products it enters.
        var accepted = Hostile.Judge(Hostile.Set(path, value, HybridBase), name, "mambaNum", "mambaHeadDim", "Mamba", "parameters", "hybridOverridePattern");
        if (value is "0" or "-1" or "2.5" or "\"2\"" or "true" or "[2]" or "1e400" or "9223372036854775808" or "1e19" or "1e30" or "5e-324"
            or "9223372036854775807" or "72057594037927936" or "9007199254740993" or "4294967296" or "2147483648" or "-9223372036854775808")
            Assert.False(accepted, $"{path} = {value} was accepted");
    }

    [Theory]
    [InlineData("\"\"")]
    [InlineData("\"MEX\"")]
    [InlineData("\"M\\u202eE\"")]
    [InlineData("\"M\\u0000\"")]
    [InlineData("\"me\"")]
    [InlineData("\"MM\"")]
    [InlineData("\"MEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEMEME\"")]
    [InlineData("12")]
    [InlineData("[\"M\", \"E\"]")]
    [InlineData("{}")]
    public void A_hostile_pattern_is_refused_in_one_line_naming_the_field(string raw)
    {
        // "MM" has no MoE layer in a model with experts: refused naming model.experts; every other one names the pattern.
        Assert.False(Hostile.Judge(Hostile.Set("model.hybridOverridePattern", raw, HybridBase), "hybridOverridePattern", "experts"), $"{raw} was accepted");
    }

    [Fact]
    public void A_huge_pattern_is_refused_without_echoing_it_whole()
    {
        var pattern = new string('M', 1_000_000);
        var ex = Assert.Throws<MoeNotebooks.Config.ConfigException>(() => MoeNotebooks.Config.Scenario.Parse(Hostile.Set("model.hybridOverridePattern", $"\"{pattern}\"", HybridBase), "case.json"));
        Hostile.OneLine(ex.Message, "hybridOverridePattern");
        Assert.True(ex.Message.Length < 2000, $"message of {ex.Message.Length} characters");
    }
}

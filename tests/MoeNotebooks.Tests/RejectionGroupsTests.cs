using MoeNotebooks.Analysis;

namespace MoeNotebooks.Tests;

/// <summary>The search's rejections grouped for reading (<see cref="RejectionGroups"/>). Oracle: the lines written out by hand.</summary>
public class RejectionGroupsTests
{
    [Fact]
    public void Reasons_differing_only_in_numbers_share_a_line_with_their_values_in_order()
    {
        var reasons = new Dictionary<string, long>
        {
            ["model.attentionHeads: must be divisible by strategy.tp = 24 (heads are split over TP ranks)"] = 5,
            ["model.attentionHeads: must be divisible by strategy.tp = 3 (heads are split over TP ranks)"] = 2,
            ["model.attentionHeads: must be divisible by strategy.tp = 1,536 (heads are split over TP ranks)"] = 1,
            ["memory: does not fit in 80 GB per GPU (MemoryModel)"] = 7,
            // Two numbers differ: one line, each number's values, the combinations counted.
            ["strategy.pp = 4 needs 8 layers"] = 1,
            ["strategy.pp = 2 needs 6 layers"] = 1,
        };
        var lines = RejectionGroups.Of(reasons);
        Assert.Equal(
        [
            ("model.attentionHeads: must be divisible by strategy.tp = {3, 24, 1,536} (heads are split over TP ranks)", 8L),
            ("memory: does not fit in 80 GB per GPU (MemoryModel)", 7L),
            ("strategy.pp = {2, 4} needs {6, 8} layers (2 combinations)", 2L),
        ], lines.Select(l => (l.Text, l.Count)));
        Assert.Equal(reasons.Values.Sum(), lines.Sum(l => l.Count));
        Assert.Equal(3, lines[0].Reasons.Count);
    }

    [Fact]
    public void A_number_in_scientific_notation_is_one_value()
    {
        var reasons = new Dictionary<string, long>
        {
            ["would build about 2.71E+007 operations"] = 1,
            ["would build about 1.03E+008 operations"] = 2,
            ["would build about 5.98E+007 operations"] = 3,
        };
        var line = Assert.Single(RejectionGroups.Of(reasons));
        Assert.Equal("would build about {2.71E+007, 5.98E+007, 1.03E+008} operations", line.Text);
        Assert.Equal(6, line.Count);
    }

    [Fact]
    public void Long_value_lists_are_cut_with_a_count()
    {
        var reasons = Enumerable.Range(1, RejectionGroups.ListedValues + 3).ToDictionary(i => $"strategy.dp = {i}: too many", _ => 1L);
        var line = Assert.Single(RejectionGroups.Of(reasons));
        Assert.Equal("strategy.dp = {1, 2, 3, 4, 5, 6, 7, 8 and 3 more}: too many", line.Text);
        Assert.Equal(reasons.Count, line.Count);
    }
}

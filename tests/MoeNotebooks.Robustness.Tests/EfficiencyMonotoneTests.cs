using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Regression for the first bug the properties found: with a step-function efficiency a GEMM just above a step
/// was priced faster than a smaller one just below it, so adding tokens could shorten a step.
/// </summary>
public class EfficiencyMonotoneTests
{
    private static readonly EfficiencyTable Hopper = EfficiencyTable.Get("typical-hopper");

    [Fact]
    public void Gemm_time_never_drops_when_a_gemm_crosses_an_efficiency_step()
    {
        // Oracle (hand derivation): typical-hopper steps 0 -> 0.25, 1e9 -> 0.5, 1e10 -> 0.65. A 1e9-FLOP GEMM costs
        // 1e9 / 0.5 = 2e9 peak-FLOPs (the table as written); a smaller GEMM must not cost more, so from 0.5e9 FLOPs
        // (0.5e9 / 0.25 = 2e9) up to the step it costs 2e9; below 0.5e9 the 0.25 step applies unchanged.
        Assert.Equal(0.5, Hopper.MatmulEfficiency(1e9));
        Assert.Equal(2e9, Hopper.PeakEquivalentFlops(1e9));
        Assert.Equal(2e9, Hopper.PeakEquivalentFlops(0.999999e9));
        Assert.Equal(2e9, Hopper.PeakEquivalentFlops(0.5e9));
        Assert.Equal(0.4e9 / 0.25, Hopper.PeakEquivalentFlops(0.4e9));
        Assert.Equal(3e9 / 0.5, Hopper.PeakEquivalentFlops(3e9));
        Assert.Equal(1e10 / 0.65, Hopper.PeakEquivalentFlops(0.9e10)); // 0.9e10 / 0.5 would exceed the 1e10 step's 1e10 / 0.65
        Assert.Equal(1e13 / 0.8, Hopper.PeakEquivalentFlops(1e13)); // large GEMMs keep the measured MAMF fraction
        Assert.Equal(123.0, EfficiencyTable.Ideal.PeakEquivalentFlops(123.0)); // the ideal roofline is unchanged

        var compute = new RooflineCompute(Config.HardwareCatalog.Get("H100-SXM").Gpu, Hopper);
        var previous = 0.0;
        for (long m = 1; m < 400_000; m = m * 11 / 10 + 1)
        {
            var t = compute.MatmulSeconds(new MatmulShape(m, 1024, 1024), "bf16", 2);
            Assert.True(t >= previous, $"m = {m}: {t} s < {previous} s for a smaller GEMM");
            previous = t;
        }
    }
}

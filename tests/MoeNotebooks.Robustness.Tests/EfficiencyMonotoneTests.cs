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
        // Oracle (hand derivation): typical-hopper steps 0 -> 0.25, 1e9 -> 0.5. The largest GEMM below the step
        // costs ~1e9 / 0.25 = 4e9 peak-FLOPs; a 1e9-FLOP GEMM must cost at least that (not 1e9 / 0.5 = 2e9), and the
        // table's 0.5 applies again from 2e9 FLOPs on (2e9 / 0.5 = 4e9).
        Assert.Equal(0.5, Hopper.MatmulEfficiency(1e9));
        Assert.Equal(0.999999e9 / 0.25, Hopper.PeakEquivalentFlops(0.999999e9)); // below the step: the step model itself
        Assert.Equal(4e9, Hopper.PeakEquivalentFlops(1e9));
        Assert.Equal(4e9, Hopper.PeakEquivalentFlops(1.5e9));
        Assert.Equal(6e9, Hopper.PeakEquivalentFlops(3e9));
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

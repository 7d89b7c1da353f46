using MoeNotebooks.Config;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Random-configuration soak: random valid scenarios up to the founding document's sizes (H = 8192, 16,384 tokens per
/// sequence, thousands of sequences), every preset, both derivations and cost models, evaluated end to end (build,
/// price, schedule, formula) with no exception, NaN or infinity. 2,000 cases by default; MOE_SOAK_FULL=1 runs
/// 100,000 (MOE_SOAK_COUNT overrides both). Every fourth case goes through the JSON loader instead of the records and
/// must give the bitwise same total as the record path.
/// Oracle: finiteness and positivity, the schedule's own bounds, and agreement of two independent input paths.
/// </summary>
public class SoakTests
{
    public static long Count =>
        Property.Env("MOE_SOAK_COUNT", Environment.GetEnvironmentVariable("MOE_SOAK_FULL") == "1" ? 100_000 : 2_000);

    [Fact]
    public void Random_valid_scenarios_evaluate_without_exception_nan_or_infinity()
    {
        long index = 0;
        var checkedCases = Property.Check(RandomScenarios.Valid(large: true), c =>
        {
            var e = c.Scenario.Evaluate();
            var r = e.Result;
            Assert.True(double.IsFinite(r.TotalSeconds) && r.TotalSeconds > 0, $"total = {r.TotalSeconds}");
            double sum = 0;
            foreach (var d in r.Durations)
            {
                Assert.True(double.IsFinite(d) && d >= 0, $"an operation lasts {d} s");
                sum += d;
            }
            Assert.True(r.TotalSeconds <= sum * (1 + 1e-12));
            foreach (var (k, v) in r.BreakdownSeconds) Assert.True(double.IsFinite(v) && v >= -1e-9 * r.TotalSeconds, $"breakdown {k} = {v}");
            foreach (var g in r.PerGpu) Assert.True(double.IsFinite(g.IdleSeconds) && double.IsFinite(g.CommunicationSeconds), $"GPU {g.Gpu}: {g}");
            var formula = e.Formula.Evaluate(e.Cost, e.Dag.Dtype, e.Dag.ElementBytes);
            Assert.True(double.IsFinite(formula) && formula > 0, $"formula evaluates to {formula}");
            Assert.False(string.IsNullOrEmpty(e.Formula.ToString()));
            if (index++ % 4 == 0)
            {
                var loaded = Scenario.Parse(c.Json, "soak.json").Evaluate();
                Assert.Equal(BitConverter.DoubleToInt64Bits(r.TotalSeconds), BitConverter.DoubleToInt64Bits(loaded.TotalSeconds));
            }
        }, Count);
        Assert.Equal(Count, checkedCases);
    }
}

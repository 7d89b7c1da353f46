using CsCheck;
using MoeNotebooks.Config;
using MoeNotebooks.Analysis;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// The search's lower bound (<see cref="SearchBound"/>) never exceeds the step it bounds. Oracle: the whole DAG
/// (<see cref="DagFolding.None"/>: every GPU, every microbatch) of the same scenario, built, priced and scheduled, over
/// the random-scenario stream widened to long pipelines (<see cref="PeriodicFoldingPropertyTests.Cases"/>: PP + 6 ..
/// PP + 30 microbatches, DP 1-3, ZeRO 0-3, rank orders, tensor-parallel attention, all-to-all chunks, sequence parallelism).
/// </summary>
public class SearchBoundPropertyTests
{
    /// <summary>
    /// The bound over the whole DAG's step (<see cref="DagFolding.None"/>: every GPU, every microbatch), built, priced and
    /// scheduled under the scenario's cost model; asserts the bound is not above it (0: no bound given).
    /// </summary>
    internal static double BoundOverWholeStep(Scenario s)
    {
        var cost = s.CreateCostModel();
        var bound = SearchBound.LowerBoundSeconds(s, cost);
        var total = s.BuildDag(DagFolding.None).CriticalPath(cost).TotalSeconds;
        Assert.True(bound <= total * (1 + 1e-12), $"bound {bound:R} s above the whole DAG's {total:R} s for {s.Strategy}");
        return bound / total;
    }

    [Fact]
    public void The_bound_is_at_most_the_whole_dags_total_and_not_vacuous()
    {
        var ratios = new List<double>();
        Property.Check(PeriodicFoldingPropertyTests.Cases, s =>
        {
            if (SearchBound.WhyNot(s.Model, s.Strategy) is not null) return;
            ratios.Add(BoundOverWholeStep(s));
        }, count: Math.Min(Property.Iterations, 4_000));
        // Not vacuous: the bound is given for many cases and is at least half the step for most of those (measured,
        // 4,000 cases at seeds 1-5: 1,388 bounded at seed 1, median bound / step 0.987-0.991).
        var bounded = ratios.Count;
        var tight = ratios.Count(r => r >= 0.5);
        Assert.True(bounded > 100, $"only {bounded} cases bounded");
        Assert.True(tight > bounded / 2, $"{tight} of {bounded} bounds are at least half the step");
        ratios.Sort();
        Console.WriteLine($"search bound: {bounded} cases bounded, {tight} within a factor 2 of the step; bound / step min {ratios[0]:F3} q25 {ratios[bounded / 4]:F3} median {ratios[bounded / 2]:F3} q75 {ratios[3 * bounded / 4]:F3} max {ratios[^1]:F6}");
    }
}

/// <summary>
/// The search's lower bound with context parallelism (the ring attention's sends inside each item), over the context
/// parallel stream's layouts (<see cref="ContextParallelPropertyTests.Cases"/>) made long enough for a bound: up to 3
/// stages, 4-10 microbatches, training with and without recompute.
/// Oracle: the whole DAG (<see cref="DagFolding.None"/>) of the same scenario.
/// </summary>
public class SearchBoundContextParallelPropertyTests
{
    [Fact]
    public void The_bound_with_context_parallelism_is_at_most_the_whole_dags_total()
    {
        var ratios = new List<double>();
        Property.Check(ContextParallelPropertyTests.Cases(maxPp: 3, minMicrobatches: 4, maxMicrobatches: 10, minMode: 1), c =>
        {
            var st = c.Strategy with { ContextParallelSize = c.Cp };
            var s = new Scenario("cp-bound", c.Model, HardwareCatalog.Get("DGX-H100").WithGpus(st.GpuCount), st, CostModelSpec.Ideal).Validated();
            if (SearchBoundPropertyTests.BoundOverWholeStep(s) is > 0 and var ratio) ratios.Add(ratio);
        }, count: Math.Min(Property.Iterations, 1_000));
        Assert.True(ratios.Count > 100, $"only {ratios.Count} cases bounded");
        ratios.Sort();
        Console.WriteLine($"search bound with CP: {ratios.Count} bounded; bound / step min {ratios[0]:F3} median {ratios[ratios.Count / 2]:F3} max {ratios[^1]:F6}");
    }
}

/// <summary>
/// The search's lower bound with selective recomputation (<see cref="RandomScenarios.SelectiveRecomputes"/> made long
/// enough for a bound: 2 PP + 6 microbatches). Oracle: the whole DAG (<see cref="DagFolding.None"/>) of the same scenario.
/// </summary>
public class SearchBoundSelectiveRecomputePropertyTests
{
    [Fact]
    public void The_bound_with_selective_recomputation_is_at_most_the_whole_dags_total()
    {
        long bounded = 0;
        Property.Check(RandomScenarios.SelectiveRecomputes(), c =>
        {
            var s = c.WithMicrobatches(2 * c.PP + 6).Scenario;
            if (SearchBoundPropertyTests.BoundOverWholeStep(s) > 0) bounded++;
        }, count: Math.Min(Property.Iterations, 1_000));
        Assert.True(bounded > 100, $"only {bounded} cases bounded");
    }
}

/// <summary>
/// The search's lower bound for interleaved virtual stages, taken from the candidate's plain 1F1B run
/// (<see cref="SearchBound"/>, class summary): the random-scenario stream widened to long pipelines
/// (<see cref="PeriodicFoldingPropertyTests.Cases"/>) made interleaved, 2-4 chunks per stage over 2-4 stages, PP x 2-4
/// microbatches, where the layers divide over the chunks. Oracle: the whole interleaved DAG (<see cref="DagFolding.None"/>).
/// </summary>
public class SearchBoundInterleavedPropertyTests
{
    private static Gen<Scenario?> Cases =>
        from s in PeriodicFoldingPropertyTests.Cases
        from v in Gen.Int[2, 4]
        from pp in Gen.Int[2, 4]
        from rounds in Gen.Int[2, 4]
        select Interleaved(s, v, pp, rounds);

    /// <summary>The scenario with <paramref name="pp"/> stages of <paramref name="v"/> chunks and PP x rounds microbatches of its micro-batch size; null when not valid.</summary>
    private static Scenario? Interleaved(Scenario s, int v, int pp, int rounds)
    {
        var st = s.Strategy;
        if (st.Derivation != Derivation.Corrected || st.Schedule is not (PipelineSchedule.OneFOneB or PipelineSchedule.Interleaved)) return null;
        var layers = pp * v * Math.Max(1, s.Model.Layers / (pp * v));
        var m = pp * rounds;
        var microBatch = s.Model.Batch / (st.DP * st.Microbatches);
        var interleaved = st with { PP = pp, VirtualStages = v, Schedule = PipelineSchedule.Interleaved, Microbatches = m, DecoderFirstPipelineNumLayers = null, DecoderLastPipelineNumLayers = null };
        try
        {
            return (s with
            {
                Model = s.Model with { Layers = layers, Batch = microBatch * st.DP * m },
                Strategy = interleaved,
                Hardware = s.Hardware.WithGpus(interleaved.GpuCount),
            }).Validated();
        }
        catch (ConfigException) { return null; }
    }

    [Fact]
    public void The_interleaved_bound_is_at_most_the_whole_dags_total()
    {
        var ratios = new List<double>();
        long unbounded = 0;
        Property.Check(Cases, s =>
        {
            if (s is null) return;
            if (SearchBound.WhyNot(s.Model, s.Strategy) is not null) { unbounded++; return; }
            if (SearchBoundPropertyTests.BoundOverWholeStep(s) is > 0 and var ratio) ratios.Add(ratio);
        }, count: Math.Min(Property.Iterations, 2_000));
        // Not vacuous: measured at seeds 1-6, 208-220 of 1,000 cases bounded (1,717-1,746 of 8,000), median bound / step 0.69-0.72.
        Assert.True(ratios.Count > 200, $"only {ratios.Count} interleaved cases bounded ({unbounded} without a bound)");
        ratios.Sort();
        Console.WriteLine($"interleaved search bound: {ratios.Count} bounded, {unbounded} without; bound / step min {ratios[0]:F3} q25 {ratios[ratios.Count / 4]:F3} median {ratios[ratios.Count / 2]:F3} max {ratios[^1]:F6}");
    }
}

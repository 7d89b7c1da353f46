using CsCheck;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Exactness of microbatch-periodic extrapolation (<see cref="DagFolding.Periodic"/>, <see cref="MicrobatchPeriodicity"/>).
/// Oracle: the whole DAG (<see cref="DagFolding.None"/>: every GPU, every microbatch) of the same scenario, built,
/// priced and scheduled by the same code. Over the random-scenario stream with the microbatch count widened so that
/// pipelines run long enough to extrapolate (PP + 6 .. PP + 30 microbatches, the microbatch size kept), DP 1-3, ZeRO
/// 0-3, rank orders, tensor-parallel attention, all-to-all chunks and sequence parallelism drawn on top: the
/// extrapolated total, critical-path seconds by category, breakdowns, per-GPU usage, operation counts (whole and by
/// kind) equal the whole DAG's, times to 1e-12 relative (busy times to 1e-12 of the total: the oracle sums finish - start
/// at times up to the total), and the extrapolated formula evaluates to the whole path's length.
/// </summary>
public class PeriodicFoldingPropertyTests
{
    private static readonly string[] RankOrders = ["tp-ep-pp-dp", "dp-tp-ep-pp", "pp-dp-ep-tp"];

    internal static Gen<Scenario> Cases =>
        from c in RandomScenarios.Valid()
        from extra in Gen.Int[6, 30]
        from dp in Gen.Int[1, 3]
        from zero in Gen.Int[0, 3]
        from order in Gen.OneOf(RankOrders)
        from tensorAttention in Gen.Int[0, 3]
        from chunks in Gen.Int[1, 2]
        from sp in Gen.Int[0, 3]
        select Widen(c, extra, dp, zero, order, tensorAttention == 0, chunks, sp == 0);

    private static Scenario Widen(RandomCase c, int extra, int dp, int zero, string order, bool tensorAttention, int chunks, bool sp)
    {
        if (c.Derivation == Derivation.Seed) return c.Scenario;
        // Schedules with their own microbatch rules (DualPipe: even, >= 2 PP) keep them: the count is made even.
        try { return WidenTo(c, c.PP + extra + (extra % 2), dp, zero, order, tensorAttention, chunks, sp); }
        catch (ConfigException) { return c.Scenario; }
    }

    private static Scenario WidenTo(RandomCase c, int m, int dp, int zero, string order, bool tensorAttention, int chunks, bool sp)
    {
        var wide = c with { DP = dp, Microbatches = m, Batch = c.Batch / (c.DP * c.Microbatches) * dp * m };
        var s = wide.Scenario;
        var st = s.Strategy with
        {
            // ZeRO-3 is refused with split or merged passes (zero-bubble, DualPipe, 1F1B all-to-all overlap): 2 then.
            ZeroStage = c.Mode == WorkloadMode.Training && !c.DistributedOptimizer
                ? (zero == 3 && (c.AllToAllOverlap == MoeAllToAllOverlap.OneFOneB || c.Schedule is PipelineSchedule.ZeroBubbleH1 or PipelineSchedule.DualPipe) ? 2 : zero) : 0,
            RankOrder = order,
            Attention = tensorAttention ? AttentionPlacement.TensorParallel : AttentionPlacement.DataParallel,
        };
        if (tensorAttention && s.Model.AttentionHeads % (st.TP * st.EP) != 0) st = st with { Attention = AttentionPlacement.DataParallel };
        s = (s with { Strategy = st }).Validated();
        // Options whose validity depends on the rest: drawn, kept only when the scenario stays valid.
        foreach (var option in new Func<StrategySpec, StrategySpec>[] { x => x with { AllToAllChunks = chunks }, x => x with { SequenceParallel = sp && x.TP > 1 } })
        {
            try { s = (s with { Strategy = option(s.Strategy) }).Validated(); }
            catch (ConfigException) { }
        }
        return s;
    }

    [Fact]
    public void Extrapolated_run_has_the_whole_dags_total_critical_path_seconds_breakdowns_and_counts()
    {
        long tried = 0, extrapolated = 0;
        var refusals = new Dictionary<string, int>();
        Property.Check(Cases, s =>
        {
            if (MicrobatchPeriodicity.WhyNot(s) is null) tried++;
            if (AssertExtrapolatedEqualsWhole(s)) extrapolated++;
            else if (MicrobatchPeriodicity.LastRefusal is { } why) refusals[why] = refusals.GetValueOrDefault(why) + 1;
        }, count: Math.Min(Property.Iterations, 2_000));
        foreach (var (why, n) in refusals.OrderByDescending(kv => kv.Value)) Console.WriteLine($"  not extrapolated ({n}): {why}");
        // Not vacuous: a good share of the cases it may try are extrapolated (the rest: too short to gain, no repetition
        // within the budget, or link contention whose order is not periodic).
        Assert.True(extrapolated > tried / 4, $"{extrapolated} of {tried} eligible cases extrapolated");
        Console.WriteLine($"periodic extrapolation: {extrapolated} of {tried} eligible cases extrapolated");
    }

    /// <summary>Compares <see cref="Scenario.Evaluate"/> (periodic) with the whole DAG; returns whether it extrapolated.</summary>
    internal static bool AssertExtrapolatedEqualsWhole(Scenario s)
    {
        var e = s.Evaluate(DagFolding.Periodic);
        if (e.Result.Extrapolation is not { } x) return false;
        var cost = s.CreateCostModel();
        var whole = s.BuildDag(DagFolding.None);
        var w = whole.CriticalPath(cost);
        var f = e.Result;
        Close(w.TotalSeconds, f.TotalSeconds, "total");
        Assert.Equal(whole.Count, x.Operations);
        foreach (var (kind, n) in whole.CountByKind()) Assert.Equal(n, x.OperationsByKind.GetValueOrDefault(kind));
        foreach (var (k, v) in w.CriticalPathSecondsByCategory) Close(v, f.CriticalPathSecondsByCategory[k], $"critical {k}");
        // Busy times are sums of (finish - start) at times up to the total, so the oracle itself rounds at 1e-12 of the
        // total (not of a small busy time): they are compared at that scale.
        var t = w.TotalSeconds;
        foreach (var (k, v) in w.BreakdownSeconds) CloseTo(v, f.BreakdownSeconds[k], t, $"breakdown {k}");
        Assert.Equal(w.PerGpu.Count, f.PerGpu.Count);
        for (var g = 0; g < w.PerGpu.Count; g++)
        {
            GpuUsage a = w.PerGpu[g], b = f.PerGpu[g];
            CloseTo(a.MatmulSeconds, b.MatmulSeconds, t, $"GPU {g} matmul");
            CloseTo(a.AttentionSeconds, b.AttentionSeconds, t, $"GPU {g} attention");
            CloseTo(a.ElementwiseSeconds, b.ElementwiseSeconds, t, $"GPU {g} elementwise");
            CloseTo(a.CommunicationSeconds, b.CommunicationSeconds, w.TotalSeconds, $"GPU {g} communication");
            CloseTo(a.OverlappedCommunicationSeconds, b.OverlappedCommunicationSeconds, w.TotalSeconds, $"GPU {g} overlapped");
            CloseTo(a.IdleSeconds, b.IdleSeconds, w.TotalSeconds, $"GPU {g} idle");
        }
        // Formula: it evaluates to the critical path's length, as the whole DAG's does. (Term by term the two may differ
        // where two routes tie in exact arithmetic and rounding picks either: the category sums above still agree.)
        var formula = RuntimeFormula.FromCriticalPath(w);
        CloseTo(formula.Evaluate(cost, whole.Dtype, whole.ElementBytes), e.Formula.Evaluate(cost, whole.Dtype, whole.ElementBytes), 1e3 * t, "formula");
        // The extrapolation counts the built DAGs' critical-path terms directly (RuntimeFormula.FlatCounts); oracle: the
        // terms of the formula built and folded from the same path, in the same order with the same counts.
        var (matmuls, named) = RuntimeFormula.FlatCounts(w);
        Assert.Equal(formula.MatmulTerms.Select(m => (new MatmulShape(m.M, m.K, m.N, m.Batch), m.Dtype, m.Count)),
            matmuls.Select(kv => (kv.Key.Shape, kv.Key.Dtype, kv.Value)));
        Assert.Equal(formula.OtherTerms.Select(o => (o.Name, o.Seconds, o.Count)), named.Select(kv => (kv.Key.Name, kv.Key.Seconds, kv.Value)));
        return true;
    }

    internal static void Close(double expected, double actual, string what) => CloseTo(expected, actual, Math.Max(Math.Abs(expected), Math.Abs(actual)), what);

    internal static void CloseTo(double expected, double actual, double scale, string what) =>
        Assert.True(Math.Abs(expected - actual) <= 1e-12 * scale, $"{what}: whole DAG {expected:R}, extrapolated {actual:R}");
}

/// <summary>Periodic extrapolation on the shipped training scenarios, and refusal of what it is not proven for. Oracle: the whole DAG.</summary>
public class PeriodicFoldingTargetedTests
{
    private static Scenario Load(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var path = Path.Combine(dir.FullName, "data", "scenarios", name + ".json");
            if (File.Exists(path)) return Scenario.Load(path);
        }
        throw new FileNotFoundException($"data/scenarios/{name}.json not found above {AppContext.BaseDirectory}");
    }

    [Theory]
    [InlineData("ep16-training")]
    [InlineData("tp8-pp2-training")]
    public void Shipped_training_runs_are_extrapolated_and_equal_the_whole_dag(string name)
    {
        var s = Load(name);
        Assert.True(PeriodicFoldingPropertyTests.AssertExtrapolatedEqualsWhole(s), MicrobatchPeriodicity.LastRefusal);
        var x = s.Evaluate().Result.Extrapolation!;
        Assert.True(x.BuiltMicrobatches < x.Microbatches, $"{x}");
    }

    /// <summary>
    /// Deep pipelines across nodes (8 A100s per node, one stage per node at TP 8, several stages per node below), the
    /// shape of Megatron-1T at a size still buildable whole. Oracle: the whole DAG (<see cref="DagFolding.None"/>). Before
    /// contention was recognised as inert these were refused (the NIC order of forward and backward sends follows the
    /// driver's readiness sweeps, which are not periodic in the microbatch): each must now extrapolate.
    /// </summary>
    [Theory]
    [InlineData(8, 2, 1, 32)]
    [InlineData(16, 1, 2, 48)]
    [InlineData(16, 2, 1, 40)]
    [InlineData(32, 1, 1, 88)]
    [InlineData(64, 1, 1, 136)]
    public void Deep_pipelines_across_nodes_extrapolate_and_equal_the_whole_dag(int pp, int tp, int dp, int microbatches)
    {
        var s = DeepPipeline(pp, tp, dp, microbatches);
        Assert.True(PeriodicFoldingPropertyTests.AssertExtrapolatedEqualsWhole(s), MicrobatchPeriodicity.LastRefusal);
        var x = s.Evaluate().Result.Extrapolation!;
        Assert.True(x.BuiltMicrobatches < x.Microbatches, $"{x}");
    }

    /// <summary>
    /// Megatron-1T's shape in small (TP 8 filling a node, PP across nodes, DP 2-3 replicas on other nodes): the
    /// data-parallel gradient all-reduces span every replica's NIC and overlap the cool-down's pipeline sends, so
    /// contention bites, in the tail only (MicrobatchPeriodicity.TailContention). Oracle: the whole DAG
    /// (DagFolding.None); not vacuous: contention delays operations of the whole DAG (some finish later than without
    /// links), and the run is extrapolated.
    /// </summary>
    [Theory]
    [InlineData(8, 2, 2, 64)]
    [InlineData(8, 2, 3, 64)]
    [InlineData(16, 1, 2, 48)]
    public void Data_parallel_deep_pipelines_contending_in_the_tail_extrapolate_and_equal_the_whole_dag(int pp, int tp, int dp, int microbatches)
    {
        // One node per stage and replica (gpusPerNode = TP, a NIC per GPU), two layers of hidden 8192 per stage: the
        // steady state's sends never overlap, the tail's gradient all-reduces across the replicas do.
        var s = Scenario.Parse($$"""
            {
              "name": "deep-dp{{dp}}-pp{{pp}}",
              "model": { "name": "gpt", "layers": {{2 * pp}}, "hiddenSize": 8192, "attentionHeads": 8, "ffnHiddenSize": 32768, "experts": 0,
                         "topK": 1, "batch": {{microbatches * dp}}, "sequenceLength": 2048, "vocabulary": 51200, "dtype": "fp16" },
              "hardware": { "preset": "A100-80GB", "gpus": {{pp * tp * dp}}, "gpusPerNode": {{tp}} },
              "strategy": { "ep": 1, "tp": {{tp}}, "pp": {{pp}}, "dp": {{dp}}, "derivation": "corrected", "mode": "training",
                            "microbatches": {{microbatches}}, "recompute": true, "schedule": "1f1b" },
              "costModel": "roofline-ideal"
            }
            """).Validated();
        Assert.True(PeriodicFoldingPropertyTests.AssertExtrapolatedEqualsWhole(s), MicrobatchPeriodicity.LastRefusal);
        var x = s.Evaluate().Result.Extrapolation!;
        Assert.True(x.BuiltMicrobatches < x.Microbatches, $"{x}");
        var cost = s.CreateCostModel();
        var whole = s.BuildDag(DagFolding.None);
        var durations = cost.Price(whole);
        var free = Scheduler.Schedule(whole, durations);
        var contended = Scheduler.Schedule(whole, durations, cost.Name, cost.Footprints(whole));
        Assert.Contains(Enumerable.Range(0, whole.Count), op => contended.FinishSeconds(op) != free.FinishSeconds(op));
    }

    /// <summary>A GPT-style 1F1B training step with recompute on A100 DGX nodes: one layer per stage.</summary>
    internal static Scenario DeepPipeline(int pp, int tp, int dp, int microbatches) => Scenario.Parse($$"""
        {
          "name": "deep-pp{{pp}}",
          "model": { "name": "gpt", "layers": {{pp}}, "hiddenSize": 2048, "attentionHeads": 16, "ffnHiddenSize": 8192, "experts": 0,
                     "topK": 1, "batch": {{microbatches * dp}}, "sequenceLength": 1024, "vocabulary": 51200, "dtype": "fp16" },
          "hardware": { "preset": "A100-80GB", "gpus": {{pp * tp * dp}} },
          "strategy": { "ep": 1, "tp": {{tp}}, "pp": {{pp}}, "dp": {{dp}}, "derivation": "corrected", "mode": "training",
                        "microbatches": {{microbatches}}, "recompute": true, "schedule": "1f1b" },
          "costModel": "roofline-ideal"
        }
        """).Validated();

    [Fact]
    public void The_what_if_table_of_an_extrapolated_run_is_the_built_runs()
    {
        // Oracle: the same scenario evaluated with every microbatch built (DagFolding.Symmetric). The what-if re-schedules
        // every operation, so on an extrapolated evaluation (notebook 05 asks for it) it must re-evaluate, not refuse.
        var s = Load("tp8-pp2-training");
        var extrapolated = s.Evaluate();
        Assert.NotNull(extrapolated.Result.Extrapolation);
        var built = s.Evaluate(DagFolding.Symmetric);
        Assert.Null(built.Result.Extrapolation);
        Assert.Equal(built.Sensitivity(0.1), extrapolated.Sensitivity(0.1));
    }

    [Theory]
    [InlineData(PipelineSchedule.Gpipe)]
    [InlineData(PipelineSchedule.ZeroBubbleH1)]
    public void Schedules_not_proven_periodic_are_built_whole(PipelineSchedule schedule)
    {
        var s = Load("ep16-training");
        s = (s with { Strategy = s.Strategy with { Schedule = schedule } }).Validated();
        Assert.NotNull(MicrobatchPeriodicity.WhyNot(s));
        var e = s.Evaluate();
        Assert.Null(e.Result.Extrapolation);
        Assert.Equal(s.BuildDag().Count, e.Dag.RepresentedCount);
    }
}

/// <summary>
/// The extrapolated link check places only the copies of the repeated spans that can meet another span
/// (<see cref="MicrobatchPeriodicity.RepeatedSpansDisjoint"/>). Oracle: every copy placed, 0 .. R, and the union sorted
/// and compared pair by pair. Spans are drawn on a grid of a quarter period: the repeated ones short or up to three
/// periods long (their copies meet 0 .. 3 periods apart), the ones before and after reaching several periods into the
/// first and last copies.
/// </summary>
public class RepeatedSpansPropertyTests
{
    /// <summary>Up to <paramref name="max"/> spans starting on a quarter-period grid over <paramref name="periods"/> periods from <paramref name="origin"/>, 1 .. <paramref name="quarters"/> quarters long.</summary>
    private static Gen<List<(double Start, double Finish)>> Spans(int max, double origin, int periods, int quarters) =>
        Gen.Select(Gen.Int[0, 4 * periods], Gen.Int[1, quarters]).Select(p => (origin + p.Item1 * 0.25, origin + p.Item1 * 0.25 + p.Item2 * 0.25)).List[0, max];

    [Fact]
    public void Placing_only_the_copies_within_reach_decides_as_placing_every_copy()
    {
        long disjoint = 0, overlapping = 0;
        // The spans before may end periods after the repeated ones start, the spans after start periods before the
        // last copy ends; the repeated spans are short or long (their copies meet 0 .. 3 periods apart).
        var gen = from repeats in Gen.Int[0, 40]
                  from longRepeated in Gen.Bool
                  from before in Spans(3, -3.0, 10, 8)
                  from repeated in Spans(3, 0.0, 4, longRepeated ? 12 : 2)
                  from after in Spans(3, repeats - 6.0, 10, 8)
                  select (repeats, before, repeated, after);
        Property.Check(gen, c =>
        {
            const double delta = 1.0, tol = 1e-12;
            var all = new List<(double Start, double Finish)>(c.before);
            all.AddRange(c.after);
            for (var j = 0; j <= c.repeats; j++) all.AddRange(c.repeated.Select(x => (x.Start + j * delta, x.Finish + j * delta)));
            var expected = Brute(all, tol);
            var actual = MicrobatchPeriodicity.RepeatedSpansDisjoint(c.before, c.repeated, c.after, delta, c.repeats, tol, out var last);
            Assert.Equal(expected, actual);
            Assert.Equal(all.Count == 0 ? double.NegativeInfinity : all.Max(x => x.Finish), last);
            if (expected) disjoint++; else overlapping++;
        }, count: Math.Min(Property.Iterations, 20_000));
        // Not vacuous: both answers occur often.
        Assert.True(disjoint > 1000 && overlapping > 1000, $"{disjoint} disjoint, {overlapping} overlapping");
    }

    /// <summary>Every pair compared (no sorting): the oracle's own independent scan.</summary>
    private static bool Brute(List<(double Start, double Finish)> spans, double tol)
    {
        for (var i = 0; i < spans.Count; i++)
            for (var j = i + 1; j < spans.Count; j++)
            {
                var (a, b) = (spans[i], spans[j]);
                if (Math.Min(a.Finish, b.Finish) - Math.Max(a.Start, b.Start) > tol) return false;
            }
        return true;
    }
}

/// <summary>
/// <c>Scenario.Evaluate(concurrently: true)</c> builds the whole DAG beside the extrapolation's attempts when it costs
/// little more (<see cref="MicrobatchPeriodicity.BuildWholeAlongside"/>), and uses it only when they find no
/// repetition. Oracle: the same evaluation on one thread, which the periodic property test compares with the whole DAG:
/// the same answer to the bit (total, breakdowns, critical path, operations), extrapolated or not alike.
/// </summary>
public class ConcurrentEvaluationPropertyTests
{
    [Fact]
    public void Building_whole_beside_the_attempts_gives_the_sequential_evaluation()
    {
        long extrapolated = 0, whole = 0;
        Property.Check(PeriodicFoldingPropertyTests.Cases.Where(MicrobatchPeriodicity.BuildWholeAlongside), s =>
        {
            var one = s.Evaluate(DagFolding.Periodic);
            var two = s.Evaluate(DagFolding.Periodic, concurrently: true);
            Assert.Equal(one.Result.TotalSeconds, two.Result.TotalSeconds);
            Assert.Equal(one.Result.Extrapolation is null, two.Result.Extrapolation is null);
            Assert.Equal(one.Dag.Count, two.Dag.Count);
            Assert.Equal(one.Result.BreakdownSeconds, two.Result.BreakdownSeconds);
            Assert.Equal(one.Result.CriticalPathSecondsByCategory, two.Result.CriticalPathSecondsByCategory);
            Assert.Equal(one.Formula.ToString(), two.Formula.ToString());
            if (one.Result.Extrapolation is null) whole++; else extrapolated++;
        }, count: Math.Min(Property.Iterations, 300));
        // Not vacuous: both outcomes occur (the attempts extrapolate and the whole build is dropped, or they do not and it is used).
        Assert.True(extrapolated > 10 && whole > 10, $"{extrapolated} extrapolated, {whole} built whole");
    }
}

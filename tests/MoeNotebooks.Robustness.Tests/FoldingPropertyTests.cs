using CsCheck;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Robustness.Tests;

/// <summary>
/// Exactness of symmetry folding (<see cref="DagFolding.Symmetric"/>: one data-parallel replica built, collectives over
/// the replicas kept whole). Oracle: the whole DAG (<see cref="DagFolding.None"/>) of the same scenario, built, priced
/// and scheduled by the same code. Over the random-scenario stream (10,000 cases), with the data-parallel degree
/// widened to 1-4, ZeRO stages 0-3, attention placed data- or tensor-parallel over EP and every rank order drawn on
/// top, and NVLink ports contended in half the cases (<c>costModel.nvlinkContention</c>), the folded total, critical path (operation by operation: kind, phase, layer, microbatch, duration, start),
/// breakdowns, per-GPU usage and operation counts equal the whole DAG's to 1e-12 relative.
/// </summary>
public class FoldingPropertyTests
{
    private static readonly string[] RankOrders = ["tp-ep-pp-dp", "dp-tp-ep-pp", "tp-dp-ep-pp", "ep-tp-dp-pp", "pp-dp-ep-tp"];

    /// <summary>A stream case with DP widened and the folding-relevant options drawn.</summary>
    private static Gen<Scenario> Cases =>
        from c in RandomScenarios.Valid()
        from dp in Gen.Int[1, 4]
        from zero in Gen.Int[0, 3]
        from order in Gen.OneOf(RankOrders)
        from tensorAttention in Gen.Int[0, 3]
        from ports in Gen.Int[0, 1]
        select Widen(c, dp, zero, order, tensorAttention == 0, ports == 1);

    private static Scenario Widen(RandomCase c, int dp, int zero, string order, bool tensorAttention, bool nvlinkPorts = false)
    {
        if (c.Derivation == Derivation.Seed) return c.Scenario;
        if (nvlinkPorts) c = c with { NvlinkContention = true };
        var wide = c with { DP = dp, Batch = c.Batch / c.DP * dp };
        var s = wide.Scenario;
        var st = s.Strategy with
        {
            // The distributed optimizer is ZeRO-1 itself; ZeRO-3 is refused with split or merged passes (2 then).
            ZeroStage = c.Mode == WorkloadMode.Training && !c.DistributedOptimizer ? (zero == 3 && (c.AllToAllOverlap == MoeAllToAllOverlap.OneFOneB || c.Schedule is PipelineSchedule.ZeroBubbleH1 or PipelineSchedule.DualPipe) ? 2 : zero) : 0,
            RankOrder = order,
            Attention = tensorAttention ? AttentionPlacement.TensorParallel : AttentionPlacement.DataParallel,
        };
        // Tensor-parallel attention needs heads divisible by TP x EP and the batch by DP x microbatches only: keep
        // the case's batch (divisible by DP x EP x microbatches) and fall back to data-parallel attention otherwise.
        // A hybrid's Mamba heads and groups are split over the same attention TP group (MambaMixer's asserts).
        var attnTp = st.TP * st.EP;
        if (tensorAttention && (s.Model.AttentionHeads % attnTp != 0 || (s.Model.IsHybrid && (s.Model.MambaHeads % attnTp != 0 || s.Model.MambaNumGroups % attnTp != 0))))
            st = st with { Attention = AttentionPlacement.DataParallel };
        // Megatron-Core's EP all-to-all overlap hides the all-to-all of data-parallel attention (there is none otherwise).
        if (st.MoeAllToAllOverlap == MoeAllToAllOverlap.OneFOneB) st = st with { Attention = AttentionPlacement.DataParallel };
        return (s with { Strategy = st }).Validated();
    }

    [Fact]
    public void Folded_dag_has_the_whole_dags_total_critical_path_and_breakdowns()
    {
        long folded = 0, replicated = 0, tensorParallel = 0, tpFolded = 0, epFolded = 0;
        Property.Check(Cases, s =>
        {
            var wasFolded = AssertFoldedEqualsWhole(s, out var description);
            if (s.Strategy.DP > 1 && s.Strategy.Derivation == Derivation.Corrected) replicated++;
            if (wasFolded) folded++;
            // Rank folding (RankSymmetry): TP ranks, and EP ranks under uniform routing, built once.
            if (s.Strategy.TP > 1 && s.Strategy.Derivation == Derivation.Corrected && s.Strategy.ETP == s.Strategy.TP && s.Strategy.CP == 1) tensorParallel++;
            if (description.Contains("TP ranks", StringComparison.Ordinal)) Interlocked.Increment(ref tpFolded);
            if (description.Contains("EP ranks ->", StringComparison.Ordinal) || description.Contains("EP ranks x", StringComparison.Ordinal)) Interlocked.Increment(ref epFolded);
        });
        // Not vacuous: most replicated cases fold (the rest have replicas placed differently on the nodes), and so do
        // a good share of the tensor-parallel cases fold their TP ranks; some cases fold EP ranks.
        Assert.True(folded > replicated / 2, $"{folded} of {replicated} replicated cases folded");
        // (About half: the stream places TP groups across nodes or behind shared NICs often, where the images differ.)
        Assert.True(tpFolded > tensorParallel / 4, $"{tpFolded} of {tensorParallel} tensor-parallel cases folded their TP ranks");
        Assert.True(epFolded > 0, "no case folded its EP ranks");
    }

    /// <summary>Compares the DAG evaluation uses (folded where the cost model keeps replicas identical) with the whole DAG; returns whether it was folded.</summary>
    internal static bool AssertFoldedEqualsWhole(Scenario s) => AssertFoldedEqualsWhole(s, out _);

    /// <param name="description">What was folded (<see cref="OperatorDag.FoldDescription"/>; empty when built whole).</param>
    internal static bool AssertFoldedEqualsWhole(Scenario s, out string description)
    {
        var cost = s.CreateCostModel();
        var whole = s.BuildDag(DagFolding.None);
        var folded = s.BuildDagFor(cost);
        // A fold the cost model does not keep symmetric is refused, never priced (replicas are the stage's folding
        // units: DP of them with ETP = TP, fewer when MoE parallel folding makes a unit hold several expert replicas).
        if (!folded.IsFolded && s.Strategy.FoldUnits > 1 && s.Strategy.Derivation == Derivation.Corrected)
            Assert.Throws<InvalidOperationException>(() => cost.Price(s.BuildDag(DagFolding.Symmetric)));
        description = folded.IsFolded ? folded.FoldDescription : "";
        // With TP/EP ranks folded, the critical path may pass through another rank's image of an operation: the same
        // kind, phase, layer, microbatch, duration and start, on that rank's own heads or experts (another index).
        var ranksFolded = description.Contains("TP ranks", StringComparison.Ordinal) || description.Contains("EP ranks ->", StringComparison.Ordinal) || description.Contains("EP ranks x", StringComparison.Ordinal);
        var w = whole.CriticalPath(cost);
        var f = folded.CriticalPath(cost);

        Close(w.TotalSeconds, f.TotalSeconds, "total");
        Close(w.TotalSeconds, folded.TotalSeconds(cost), "total (sweep path)");
        Assert.Equal(whole.Count, folded.RepresentedCount);

        // Operations of each kind: the folded ones weighted by what they stand for.
        var byKind = new Dictionary<OpKind, long>();
        for (var op = 0; op < folded.Count; op++) byKind[folded.Kind(op)] = byKind.GetValueOrDefault(folded.Kind(op)) + folded.Multiplicity(op);
        foreach (var (kind, n) in whole.CountByKind()) Assert.Equal(n, byKind.GetValueOrDefault(kind));

        // The critical path, operation by operation (ids differ: the folded DAG lacks the other replicas' operations).
        Assert.Equal(w.CriticalOps.Count, f.CriticalOps.Count);
        for (var i = 0; i < w.CriticalOps.Count; i++)
        {
            int a = w.CriticalOps[i], b = f.CriticalOps[i];
            Assert.Equal((whole.Kind(a), whole.Phase(a), whole.Layer(a), whole.Microbatch(a), ranksFolded ? 0 : whole.Index(a)),
                (folded.Kind(b), folded.Phase(b), folded.Layer(b), folded.Microbatch(b), ranksFolded ? 0 : folded.Index(b)));
            Close(w.Durations[a], f.Durations[b], $"duration of critical op {i}");
            Close(w.StartSeconds(a), f.StartSeconds(b), $"start of critical op {i}");
        }
        foreach (var (k, v) in w.CriticalPathSecondsByCategory) Close(v, f.CriticalPathSecondsByCategory[k], $"critical {k}");
        foreach (var (k, v) in w.BreakdownSeconds) Close(v, f.BreakdownSeconds[k], $"breakdown {k}");
        Assert.Equal(w.PerGpu.Count, f.PerGpu.Count);
        for (var g = 0; g < w.PerGpu.Count; g++)
        {
            GpuUsage x = w.PerGpu[g], y = f.PerGpu[g];
            Assert.Equal(x.Gpu, y.Gpu);
            Close(x.MatmulSeconds, y.MatmulSeconds, $"GPU {g} matmul");
            Close(x.AttentionSeconds, y.AttentionSeconds, $"GPU {g} attention");
            Close(x.ElementwiseSeconds, y.ElementwiseSeconds, $"GPU {g} elementwise");
            Close(x.CommunicationSeconds, y.CommunicationSeconds, $"GPU {g} communication");
            Close(x.OverlappedCommunicationSeconds, y.OverlappedCommunicationSeconds, $"GPU {g} overlapped");
            Close(x.IdleSeconds, y.IdleSeconds, $"GPU {g} idle");
        }
        return folded.IsFolded;
    }

    internal static void Close(double expected, double actual, string what)
    {
        var scale = Math.Max(Math.Abs(expected), Math.Abs(actual));
        Assert.True(Math.Abs(expected - actual) <= 1e-12 * scale, $"{what}: whole DAG {expected:R}, folded {actual:R}");
    }
}

/// <summary>
/// Folding on the shipped scenarios widened to several replicas, and on the layouts the random stream does not draw
/// (interleaved 1F1B, ZeRO 3 with blocking communication, Megatron-1T's shape at small size). Oracle: the whole DAG.
/// </summary>
public class FoldingTargetedTests
{
    private static string ScenarioPath(string name)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var path = Path.Combine(dir.FullName, "data", "scenarios", name + ".json");
            if (File.Exists(path)) return path;
        }
        throw new FileNotFoundException($"data/scenarios/{name}.json not found above {AppContext.BaseDirectory}");
    }

    private static Scenario Replicated(Scenario s, int dp, Func<StrategySpec, StrategySpec>? change = null)
    {
        var st = s.Strategy with { DP = dp };
        if (change is not null) st = change(st);
        return new Scenario(s.Name, s.Model with { Batch = s.Model.Batch / s.Strategy.DP * dp }, s.Hardware.WithGpus(st.GpuCount), st, s.CostModel).Validated();
    }

    [Theory]
    [InlineData("ep16", 2)]
    [InlineData("tp8-pp2", 3)]
    [InlineData("ep16-training", 2)]
    [InlineData("tp8-pp2-training", 4)]
    public void Shipped_scenarios_with_replicas_fold_exactly(string name, int dp)
    {
        var s = Replicated(Scenario.Load(ScenarioPath(name)), dp);
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(s));
        // The folded DAG builds one replica: 1/dp of the per-replica work plus the cross-replica collectives.
        var folded = s.BuildDag(DagFolding.Symmetric);
        Assert.True(folded.Count * (dp - 0.5) < s.BuildDag().Count, $"folded {folded.Count}, whole {s.BuildDag().Count}");
    }

    [Theory]
    [InlineData(0, true)]
    [InlineData(1, true)]
    [InlineData(3, false)]
    public void Interleaved_training_with_zero_and_blocking_folds_exactly(int zero, bool overlap)
    {
        var s = Replicated(Scenario.Load(ScenarioPath("tp8-pp2-training")), 3, st => st with
        {
            Schedule = PipelineSchedule.Interleaved, VirtualStages = 2, Microbatches = 4, ZeroStage = zero, OverlapCommunication = overlap,
        });
        Assert.True(FoldingPropertyTests.AssertFoldedEqualsWhole(s));
    }

    [Fact]
    public void Timeline_of_a_folded_dag_lists_every_gpus_operations()
    {
        // Oracle: the whole DAG's timeline, row by row (GPU, name without the GPU, start, finish), as multisets.
        var s = Replicated(Scenario.Load(ScenarioPath("ep16-training")), 2);
        var cost = s.CreateCostModel();
        static string Key(ScheduledOp o) => $"{o.Gpu}|{o.Kind}|{o.Layer}|{o.Microbatch}|{o.StartSeconds:R}|{o.FinishSeconds:R}";
        var whole = s.BuildDag().CriticalPath(cost).Timeline().Select(Key).OrderBy(k => k, StringComparer.Ordinal).ToArray();
        var folded = s.BuildDag(DagFolding.Symmetric).CriticalPath(cost).Timeline().Select(Key).OrderBy(k => k, StringComparer.Ordinal).ToArray();
        Assert.Equal(whole, folded);
    }

    [Fact]
    public void Evaluate_folds_by_default_and_reports_the_whole_dags_operation_count()
    {
        var s = Replicated(Scenario.Load(ScenarioPath("tp8-pp2-training")), 2);
        var e = s.Evaluate();
        Assert.True(e.Dag.IsFolded);
        // Two replicas, and within each the 8 TP ranks of a group (rank folding, RankSymmetry): 16 GPUs per representative.
        Assert.Equal(2 * s.Strategy.TP, e.Dag.FoldFactor);
        Assert.Equal(s.BuildDag().Count, e.Dag.RepresentedCount);
        var profileWhole = StrategyProfile.Of(s.Evaluate(DagFolding.None));
        var profileFolded = StrategyProfile.Of(e);
        Assert.Equal(profileWhole.Operations, profileFolded.Operations);
        Assert.Equal(profileWhole.CommunicationOperations, profileFolded.CommunicationOperations);
        FoldingPropertyTests.Close(profileWhole.CommunicationBytesPerGpu, profileFolded.CommunicationBytesPerGpu, "communication bytes per GPU");
        // A mean over ~10^5 matmuls: the folded one multiplies by the multiplicity instead of adding the same durations
        // again, so it agrees to the rounding of the sum (a few 1e-12), not bit for bit.
        Assert.Equal(profileWhole.MeanMatmulSeconds, profileFolded.MeanMatmulSeconds, profileWhole.MeanMatmulSeconds * 1e-10);
    }

    [Fact]
    public void Cli_evaluate_folds_by_default_and_builds_whole_with_fold_none()
    {
        // Oracle: the same scenario with --fold none (every GPU built); the JSON totals must be identical.
        var s = Replicated(Scenario.Load(ScenarioPath("tp8-pp2")), 2);
        var path = Path.Combine(Path.GetTempPath(), $"fold-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, $$"""
            { "name": "fold", "model": { "layers": 4, "hiddenSize": 8192, "attentionHeads": 16, "ffnHiddenSize": 32768, "experts": 16, "topK": 1,
                                          "batch": {{s.Model.Batch}}, "sequenceLength": 10000, "dtype": "bf16" },
              "hardware": { "preset": "H100-SXM", "gpus": 32 }, "strategy": { "tp": 8, "pp": 2, "dp": 2 } }
            """);
        try
        {
            var (code, folded, _) = InvalidInputMatrix.Cli(["evaluate", path, "--format", "json"]);
            var (codeWhole, whole, _) = InvalidInputMatrix.Cli(["evaluate", path, "--format", "json", "--fold", "none"]);
            Assert.Equal((0, 0), (code, codeWhole));
            static double Total(string json) => System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("totalSeconds").GetDouble();
            static long Operations(string json) => System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("operations").GetInt64();
            Assert.Equal(Total(whole), Total(folded));
            Assert.Equal(Operations(whole), Operations(folded));
            Assert.Contains("builtOperations", folded, StringComparison.Ordinal);
            Assert.DoesNotContain("builtOperations", whole, StringComparison.Ordinal);
        }
        finally { File.Delete(path); }
    }
}

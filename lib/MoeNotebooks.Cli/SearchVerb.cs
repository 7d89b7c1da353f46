using System.Globalization;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary>
/// <c>moe search SCENARIO.json --gpus N [--top 5] [--microbatches 1,2,4] [--virtual-stages 1,2] [--distributed-optimizer both]
/// [--etp tp,1,2] [--sequence-parallel both] [--schedules 1f1b,zero-bubble-h1,dualpipe] [--context-parallel 1,2] [--recompute both] [--recompute-modules none,layernorm+moe_act] [--micro-batch-size 1,2] [--prune true|false] [--max-seconds 300]</c>:
/// the fastest strategies and why; infeasible candidates counted by reason; candidates whose lower bound is above the
/// k-th best are skipped unless <c>--prune false</c>; a search estimated to take longer than <c>--max-seconds</c> (300) is refused.
/// </summary>
public static class SearchVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var path = options.Positional(0, "SCENARIO.json");
        var gpusText = options.Option("--gpus", "");
        var top = SweepVerb.ParseInt("--top", options.Option("--top", "5"), 1);
        var mbText = options.Option("--microbatches", "");
        var vpText = options.Option("--virtual-stages", "");
        var distText = options.Option("--distributed-optimizer", "");
        var etpText = options.Option("--etp", "");
        var spText = options.Option("--sequence-parallel", "");
        var schedText = options.Option("--schedules", "");
        var cpText = options.Option("--context-parallel", "");
        var rcText = options.Option("--recompute", "");
        var rmText = options.Option("--recompute-modules", "");
        var mbsText = options.Option("--micro-batch-size", "");
        var pruneText = options.Option("--prune", "true");
        var maxSecondsText = options.Option("--max-seconds", "");
        options.Finish();
        var prune = SweepVerb.ParseBool("--prune", pruneText);
        // The search-time guard's limit (estimated seconds of work, not the clock), at most a day.
        var maxSeconds = maxSecondsText == "" ? StrategySearch.MaxSearchSeconds : SweepVerb.ParseInt("--max-seconds", maxSecondsText, 1, 86_400);
        var recompute = ParseBoth("--recompute", rcText);
        // --recompute-modules none,layernorm+moe_act,moe: selective sets (Megatron's module names joined by '+'), tried where full recompute is off.
        var rmParts = rmText == "" ? [] : rmText.Split(',');
        if (rmParts.Length > 16) throw new UsageException($"--recompute-modules lists {rmParts.Length} sets: give at most 16");
        IReadOnlyList<RecomputeModules>? recomputeModules = rmText == "" ? null
            : rmParts.Select(set => RecomputeModulesText.ParseSet("--recompute-modules", set)).ToArray();
        var mbsParts = mbsText == "" ? [] : mbsText.Split(',');
        if (mbsParts.Length > 64) throw new UsageException($"--micro-batch-size lists {mbsParts.Length} sizes: give at most 64");
        if (mbsText != "" && mbText != "") throw new UsageException("--micro-batch-size and --microbatches both given: give one (the size sets the count per data-parallel size)");
        IReadOnlyList<int>? microBatchSizes = mbsText == "" ? null
            : mbsParts.Select(t => SweepVerb.ParseInt("--micro-batch-size", t.Trim(), 1, (int)Bounds.Microbatches.Max)).ToArray();
        // Every option is checked before the scenario is read or anything printed.
        int? gpusOption = gpusText == "" ? null : SweepVerb.ParseInt("--gpus", gpusText, 1, (int)Bounds.Gpus.Max);
        var mbParts = mbText == "" ? [] : mbText.Split(',');
        if (mbParts.Length > 64) throw new UsageException($"--microbatches lists {mbParts.Length} counts: give at most 64");
        var vpParts = vpText == "" ? [] : vpText.Split(',');
        if (vpParts.Length > 64) throw new UsageException($"--virtual-stages lists {vpParts.Length} counts: give at most 64");
        IReadOnlyList<int>? virtualStages = vpText == "" ? null
            : vpParts.Select(t => SweepVerb.ParseInt("--virtual-stages", t.Trim(), 1, (int)Bounds.VirtualStages.Max)).ToArray();
        var distributed = ParseBoth("--distributed-optimizer", distText);
        var etpParts = etpText == "" ? [] : etpText.Split(',');
        if (etpParts.Length > 64) throw new UsageException($"--etp lists {etpParts.Length} sizes: give at most 64");
        // "tp": the experts as tensor-parallel as attention (today's layout); a number: MoE parallel folding with that ETP.
        IReadOnlyList<int?>? etps = etpText == "" ? null
            : etpParts.Select(t => t.Trim() == "tp" ? (int?)null : SweepVerb.ParseInt("--etp", t.Trim(), 1, (int)Bounds.ParallelSize.Max)).ToArray();
        var sequenceParallel = ParseBoth("--sequence-parallel", spText);
        var schedParts = schedText == "" ? [] : schedText.Split(',');
        if (schedParts.Length > 8) throw new UsageException($"--schedules lists {schedParts.Length} schedules: give at most 8");
        IReadOnlyList<PipelineSchedule>? schedules = schedText == "" ? null : schedParts.Select(t => t.Trim() switch
        {
            "1f1b" => PipelineSchedule.OneFOneB,
            "gpipe" => PipelineSchedule.Gpipe,
            "zero-bubble-h1" or "zb-h1" => PipelineSchedule.ZeroBubbleH1,
            "dualpipe" or "dual-pipe" => PipelineSchedule.DualPipe,
            var other => throw new UsageException($"--schedules {Cli.Shown(other)}: must be a comma-separated list of 1f1b, gpipe, zero-bubble-h1, dualpipe (interleaving comes from --virtual-stages)"),
        }).ToArray();
        IReadOnlyList<int>? microbatches = mbText == "" ? null
            : mbParts.Select(t => SweepVerb.ParseInt("--microbatches", t.Trim(), 1, (int)Bounds.Microbatches.Max)).ToArray();
        var cpParts = cpText == "" ? [] : cpText.Split(',');
        if (cpParts.Length > 64) throw new UsageException($"--context-parallel lists {cpParts.Length} sizes: give at most 64");
        IReadOnlyList<int>? contextParallel = cpText == "" ? null
            : cpParts.Select(t => SweepVerb.ParseInt("--context-parallel", t.Trim(), 1, (int)Bounds.ParallelSize.Max)).ToArray();
        var scenario = Scenario.Load(path);
        var gpus = gpusOption ?? scenario.Hardware.GpuCount;
        var bar = new ProgressBar(stderr);
        var result = StrategySearch.Run(scenario, gpus, new SearchOptions(top, microbatches, VirtualStages: virtualStages, DistributedOptimizer: distributed,
            ExpertTensorParallel: etps, SequenceParallel: sequenceParallel, Schedules: schedules, ContextParallel: contextParallel,
            Recompute: recompute, MicroBatchSizes: microBatchSizes, Prune: prune, RecomputeModules: recomputeModules, MaxSeconds: maxSeconds), bar);
        bar.Finish();
        var c = CultureInfo.InvariantCulture;
        stdout.WriteLine(string.Create(c, $"{scenario.Name} on {gpus} x {scenario.Hardware.Gpu.Name}: {result.Considered:N0} strategies, {result.Evaluated:N0} valid ({result.Evaluated - result.Pruned:N0} evaluated, {result.Pruned:N0} skipped: their lower bound is slower than the top {top}), {result.Rejected:N0} rejected, {result.Elapsed.TotalSeconds:F2} s"));
        stdout.WriteLine();
        stdout.WriteLine("rank  strategy                                                  total s    matmul  attention  elementwise  communication    idle   (mean s per GPU)");
        var rank = 0;
        foreach (var b in result.Best)
        {
            var d = b.BreakdownSeconds;
            stdout.WriteLine(string.Create(c,
                $"{++rank,4}  {b.Strategy,-55} {b.TotalSeconds,10:G5} {d["matmul"],9:G4} {d["attention"],10:G4} {d["elementwise"],12:G4} {d["communication"],14:G4} {d["idle"],7:G4}"));
        }
        if (result.RejectedByReason.Count > 0)
        {
            stdout.WriteLine();
            stdout.WriteLine("rejected");
            foreach (var line in result.RejectedGrouped)
                stdout.WriteLine(string.Create(c, $"  {line.Count,6:N0}  {line.Text}"));
        }
        if (result.Evaluated == 0)
        {
            // Nothing to rank: say what would let layouts through (memory is the usual wall at scale).
            var memory = result.RejectedForMemory;
            stdout.WriteLine();
            stdout.WriteLine(memory > 0
                ? string.Create(c, $"no valid candidate: the {memory:N0} layouts valid otherwise do not fit in memory; try smaller microbatches (--micro-batch-size 1,2), recomputation (--recompute both, --recompute-modules layernorm+moe_act), the distributed optimizer (--distributed-optimizer both) or more GPUs")
                : "no valid candidate: every layout is rejected for the reasons above; try other --gpus, --microbatches or --micro-batch-size");
        }
        return 0;
    }

    /// <summary>An option tried both ways or one: "both" -> [false, true], "true", "false"; "" -> null (the scenario's).</summary>
    private static IReadOnlyList<bool>? ParseBoth(string name, string text) => text switch
    {
        "" => null,
        "both" => [false, true],
        "true" => [true],
        "false" => [false],
        _ => throw new UsageException($"{name} {Cli.Shown(text)}: must be both, true or false"),
    };
}

using System.Collections.Concurrent;
using System.Diagnostics;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// How a search runs. <paramref name="Microbatches"/>: the microbatch counts tried (default: 1, and with PP &gt; 1 the powers
/// of two up to 4 x PP). <paramref name="SkipMemoryInfeasible"/>: reject candidates whose <see cref="MemoryModel"/> verdict
/// is "does not fit". <paramref name="InfeasibleReason"/>: an extra verdict on a valid candidate, null when feasible;
/// rejected candidates are counted under their reason, not evaluated. <paramref name="VirtualStages"/>: model chunks per
/// GPU tried (values above 1 use the interleaved schedule with PP &gt; 1; default: the scenario's).
/// <paramref name="DistributedOptimizer"/>: with and/or without Megatron's distributed optimizer (default: the scenario's).
/// <paramref name="ExpertTensorParallel"/>: expert-tensor-parallel sizes tried (MoE parallel folding); null in the list
/// means "as TP" (today's layout), a number k lays the experts out as EP x k x EDP and tries every attention TP that
/// divides the stage's GPUs (default: the scenario's). <paramref name="SequenceParallel"/>: with and/or without
/// sequence parallelism (default: the scenario's; SP at TP = 1 is skipped when "without" is tried too, it is the same run).
/// <paramref name="Schedules"/>: pipeline schedules tried with one virtual stage and PP &gt; 1 (default: the scenario's);
/// a layout a schedule cannot run (DualPipe on an odd pipeline or with fewer than 2 x PP microbatches) is rejected with
/// the reason counted.
/// <paramref name="ContextParallel"/>: context-parallel sizes tried, each carved out of the candidate's data-parallel ranks
/// (default: the scenario's); sizes a candidate cannot take are rejected with their reason.
/// <paramref name="Recompute"/>: with and/or without full activation recomputation (default: the scenario's; without
/// it when only <paramref name="RecomputeModules"/> is given).
/// <paramref name="RecomputeModules"/>: selective recomputation sets tried where full recomputation is off (Megatron's
/// <c>--recompute-modules</c>; <see cref="Config.RecomputeModules.None"/> for none; default: the scenario's).
/// <paramref name="MicroBatchSizes"/>: Megatron's <c>--micro-batch-size</c> values tried (sequences per microbatch and
/// rank that takes whole sequences); each gives the microbatch count batch / (ranks x size) of a candidate, the ranks being
/// its attention data-parallel size (the stage's EP x ETP x DP GPUs over TP x CP) with data-parallel attention, else DP;
/// sizes that do not divide the batch per rank are rejected with their reason. Replaces <paramref name="Microbatches"/> when given.
/// <paramref name="Prune"/>: skip candidates whose lower bound (<see cref="SearchBound"/>) is above the k-th best total
/// found so far (they cannot enter the top k); off evaluates every valid candidate.
/// <paramref name="MaxSeconds"/>: the longest search accepted, estimated from what the candidates build (spread over the
/// cores): over it exhaustively, a pruned search goes on while its bounds and first round fit, and after the first round
/// while the candidates its bounds cannot settle fit the rest; otherwise it is refused with one line.
/// </summary>
public sealed record SearchOptions(
    int Top = 5,
    IReadOnlyList<int>? Microbatches = null,
    Func<Scenario, string?>? InfeasibleReason = null,
    int MaxDegreeOfParallelism = 0,
    bool SkipMemoryInfeasible = true,
    IReadOnlyList<int>? VirtualStages = null,
    IReadOnlyList<bool>? DistributedOptimizer = null,
    IReadOnlyList<int?>? ExpertTensorParallel = null,
    IReadOnlyList<bool>? SequenceParallel = null,
    IReadOnlyList<PipelineSchedule>? Schedules = null,
    IReadOnlyList<int>? ContextParallel = null,
    IReadOnlyList<bool>? Recompute = null,
    IReadOnlyList<int>? MicroBatchSizes = null,
    bool Prune = true,
    IReadOnlyList<RecomputeModules>? RecomputeModules = null,
    double MaxSeconds = StrategySearch.MaxSearchSeconds)
{
    public static SearchOptions Default { get; } = new();
}

/// <summary>One evaluated strategy with its total and the breakdowns of <see cref="CriticalPathResult"/>.</summary>
public sealed record SearchCandidate(
    StrategySpec Strategy,
    double TotalSeconds,
    int Operations,
    IReadOnlyDictionary<string, double> BreakdownSeconds,
    IReadOnlyDictionary<string, double> CriticalPathSecondsByCategory);

/// <summary>What a search found: the best candidates (fastest first), how many were tried, valid, and invalid by reason.</summary>
public sealed record SearchResult(
    Scenario Base,
    int Gpus,
    long Considered,
    long Evaluated,
    IReadOnlyList<SearchCandidate> Best,
    IReadOnlyDictionary<string, long> RejectedByReason,
    TimeSpan Elapsed,
    long Pruned = 0)
{
    /// <summary>The search-time estimate of evaluating every valid candidate (seconds over the cores), what the guard compares with <see cref="SearchOptions.MaxSeconds"/>.</summary>
    public double ExhaustiveEstimateSeconds { get; init; }

    /// <summary>Of <see cref="ExhaustiveEstimateSeconds"/>, what this search was estimated to do: the bounds and the candidates evaluated.</summary>
    public double SearchedEstimateSeconds { get; init; }

    public long Rejected => RejectedByReason.Values.Sum();

    /// <summary>The rejections grouped for reading: reasons that differ only in their numbers on one line with the values (<see cref="RejectionGroups"/>), most frequent first.</summary>
    public IReadOnlyList<RejectionGroup> RejectedGrouped => RejectionGroups.Of(RejectedByReason);

    /// <summary>Candidates valid otherwise that the memory model rejected (<see cref="SearchOptions.SkipMemoryInfeasible"/>).</summary>
    public long RejectedForMemory => RejectedByReason.Where(r => r.Key.StartsWith(StrategySearch.MemoryReasonPrefix, StringComparison.Ordinal)).Sum(r => r.Value);
}

/// <summary>
/// Finds the fastest ways to split a scenario's model over a number of GPUs: every EP x TP x PP x DP whose product is
/// the GPU count, times the microbatch counts, with the corrected derivation on the scenario's hardware (resized to
/// that many GPUs) and cost model; the rest of the scenario's strategy (mode, pipeline schedule, recompute, ZeRO, ...)
/// is kept. Candidates that do not fit (divisibility, layers per stage, ...), that do not fit in memory
/// (<see cref="MemoryModel"/>) or that the optional <see cref="SearchOptions.InfeasibleReason"/> rejects are counted by reason.
/// </summary>
public static class StrategySearch
{
    /// <summary>Every (EP, TP, PP, DP) with EP x TP x PP x DP = <paramref name="gpus"/>, in lexicographic order.</summary>
    public static IEnumerable<(int EP, int TP, int PP, int DP)> Factorizations(int gpus)
    {
        if (gpus <= 0) throw new ConfigException("gpus", gpus.ToString(System.Globalization.CultureInfo.InvariantCulture), "must be a positive integer (>= 1)");
        var divisors = MemoryModel.Divisors(gpus).Select(d => (int)d).ToArray();   // O(sqrt n), not O(n)
        foreach (var ep in divisors)
            foreach (var tp in divisors.Where(d => (gpus / ep) % d == 0))
                foreach (var pp in divisors.Where(d => (gpus / ep / tp) % d == 0))
                    yield return (ep, tp, pp, gpus / ep / tp / pp);
    }

    /// <summary>
    /// The candidate strategies, in a fixed order (factorization, then microbatches ascending), each a copy of
    /// <paramref name="template"/> (default: a corrected forward pass) with the sizes replaced.
    /// </summary>
    public static IReadOnlyList<StrategySpec> Candidates(int gpus, IReadOnlyList<int>? microbatches = null, StrategySpec? template = null,
        IReadOnlyList<int>? virtualStages = null, IReadOnlyList<bool>? distributedOptimizer = null,
        IReadOnlyList<int?>? expertTensorParallel = null, IReadOnlyList<bool>? sequenceParallel = null,
        IReadOnlyList<PipelineSchedule>? schedules = null, IReadOnlyList<int>? contextParallel = null,
        IReadOnlyList<bool>? recompute = null, IReadOnlyList<int>? microBatchSizes = null, long batch = 0, IReadOnlyList<RecomputeModules>? recomputeModules = null) =>
        Candidates(gpus, microbatches, template, virtualStages, distributedOptimizer, expertTensorParallel, sequenceParallel, schedules,
            contextParallel, recompute, microBatchSizes, batch, out _, recomputeModules: recomputeModules);

    /// <summary>
    /// As above; <paramref name="indivisible"/> counts the (candidate, micro-batch size) pairs left out because the size
    /// does not divide the batch per rank that takes whole sequences (<paramref name="batch"/> / attention data-parallel ranks).
    /// </summary>
    public static IReadOnlyList<StrategySpec> Candidates(int gpus, IReadOnlyList<int>? microbatches, StrategySpec? template,
        IReadOnlyList<int>? virtualStages, IReadOnlyList<bool>? distributedOptimizer,
        IReadOnlyList<int?>? expertTensorParallel, IReadOnlyList<bool>? sequenceParallel,
        IReadOnlyList<PipelineSchedule>? schedules, IReadOnlyList<int>? contextParallel,
        IReadOnlyList<bool>? recompute, IReadOnlyList<int>? microBatchSizes, long batch, out long indivisible, int layers = 0,
        IReadOnlyList<RecomputeModules>? recomputeModules = null)
    {
        indivisible = 0;
        template ??= new StrategySpec(1, 1, 1, 1);
        // The recompute settings tried: full recomputation (no modules), or none / a selective set.
        var recomputes = new List<(bool Full, RecomputeModules Modules)>();
        foreach (var full in (recompute ?? (recomputeModules is null ? [template.Recompute] : [false])).Distinct().Order())
            if (full) recomputes.Add((true, Config.RecomputeModules.None));
            else foreach (var modules in (recomputeModules ?? [template.Recompute ? Config.RecomputeModules.None : template.RecomputeModules]).Distinct().Order())
                recomputes.Add((false, modules));
        var list = new List<StrategySpec>();
        var etps = (expertTensorParallel ?? [template.ExpertTensorParallelSize]).Distinct().OrderBy(e => e ?? 0).ToArray();
        var sps = (sequenceParallel ?? [template.SequenceParallel]).Distinct().Order().ToArray();
        var cps = (contextParallel ?? [template.ContextParallelSize]).Distinct().Order().ToArray();
        // Factorizations of the GPUs as EP x (expert-side tensor size) x PP x EDP: with ETP "as TP" the second factor is
        // TP itself (today's layouts); with ETP = k it must be k, and attention's TP is any divisor of the stage's GPUs.
        foreach (var (ep, x, pp, dp) in Factorizations(gpus))
        foreach (var etp in etps)
        {
            if (etp is { } k && k != x) continue;
            var tps = etp is null ? [x] : MemoryModel.Divisors((long)ep * x * dp).Select(d => (int)d).Where(t => !(etps.Contains(null) && t == x)).ToArray();
            foreach (var tp in tps)
            foreach (var sp in sps)
            foreach (var cp in cps)
            {
                if (sp && tp == 1 && sps.Contains(false)) continue;   // SP at TP 1 is the same run as without
                // Megatron-LM turns SP off at TP 1 (nothing to shard), so such a candidate is listed without it.
                foreach (var (rc, modules) in recomputes)
                {
                    var mbs = microbatches;
                    if (microBatchSizes is not null)
                    {
                        // --micro-batch-size: sequences per microbatch on each rank that takes whole sequences, so the count is
                        // the batch over those ranks and the size; a size that does not divide it is left out. Those ranks are,
                        // as StrategySpec validates them, the stage's EP x ETP x DP GPUs over TP x CP with data-parallel
                        // attention (DeepSeek-V3's EP 64 x DP 2: 128 ranks, not 2), else the DP replicas.
                        var stageGpus = (long)ep * x * dp;
                        var ranks = template.Attention == AttentionPlacement.DataParallel && stageGpus % ((long)tp * cp) == 0 ? stageGpus / ((long)tp * cp) : dp;
                        var fitting = microBatchSizes.Distinct().Where(size => size > 0 && batch % (ranks * size) == 0).ToArray();
                        indivisible += microBatchSizes.Distinct().Count() - fitting.Length;
                        mbs = fitting.Select(size => (int)(batch / (ranks * size))).ToArray();
                        if (mbs.Count == 0) continue;
                    }
                    AddCandidates(list, template with { ExpertTensorParallelSize = etp, SequenceParallel = sp && tp > 1, ContextParallelSize = cp, Recompute = rc, RecomputeModules = modules }, ep, tp, pp, dp, mbs, virtualStages, distributedOptimizer, schedules, layers);
                }
            }
        }
        return list;
    }

    private static void AddCandidates(List<StrategySpec> list, StrategySpec template, int ep, int tp, int pp, int dp,
        IReadOnlyList<int>? microbatches, IReadOnlyList<int>? virtualStages, IReadOnlyList<bool>? distributedOptimizer,
        IReadOnlyList<PipelineSchedule>? schedules, int layers)
    {
        var vps = (virtualStages ?? [template.VirtualStages]).Distinct().Order().ToArray();
        var dists = (distributedOptimizer ?? [template.UseDistributedOptimizer]).Distinct().Order().ToArray();
        {
            var mbs = microbatches ?? DefaultMicrobatches(pp);
            foreach (var mb in mbs.Distinct().Order())
            foreach (var vp in vps)
            {
                // Virtual stages need a pipeline; a value above 1 selects Megatron's interleaved schedule.
                if (vp > 1 && pp == 1) continue;
                var schedule = vp > 1 ? PipelineSchedule.Interleaved : template.Schedule == PipelineSchedule.Interleaved ? PipelineSchedule.OneFOneB : template.Schedule;
                schedule = virtualStages is null ? template.Schedule : schedule;
                // Listed schedules apply to pipelines of one virtual stage (interleaving is chosen by the virtual stages);
                // without a pipeline the schedule has nothing to order, so one candidate stands for all.
                var tried = schedules is null || vp > 1 || pp == 1 ? [schedule] : schedules.Where(x => x != PipelineSchedule.Interleaved).Distinct().ToArray();
                // The template's uneven first/last stage (--decoder-first/last-pipeline-num-layers) where it splits this
                // pipeline, else Megatron's even split (the layers a stage holds are the template's choice for its PP).
                var (first, last) = (template.DecoderFirstPipelineNumLayers, template.DecoderLastPipelineNumLayers);
                if (layers > 0 && (first is not null || last is not null))
                {
                    // (Without a pipeline there is no first or last stage: StrategySpec refuses them at PP 1.)
                    try { if (pp < 2) (first, last) = (null, null); else PipelineLayers.Split(layers, pp, vp, first, last); }
                    catch (ConfigException) { (first, last) = (null, null); }
                }
                foreach (var sched in tried)
                foreach (var dist in dists)
                    list.Add(template with
                    {
                        EP = ep, TP = tp, PP = pp, DP = dp, Derivation = Derivation.Corrected, Microbatches = mb,
                        VirtualStages = vp, Schedule = sched,
                        UseDistributedOptimizer = dist, ZeroStage = dist ? 0 : template.ZeroStage,
                        DecoderFirstPipelineNumLayers = first, DecoderLastPipelineNumLayers = last,
                    });
            }
        }
    }

    /// <summary>
    /// 1 and the powers of two up to 4 x PP (at least 4): more microbatches shrink the pipeline bubble, and without a
    /// pipeline they still shrink the activations a GPU holds, which can make a layout fit in memory.
    /// </summary>
    public static IReadOnlyList<int> DefaultMicrobatches(int pp)
    {
        var list = new List<int> { 1 };
        for (var mb = 2; mb <= 4 * Math.Max(pp, 1); mb *= 2) list.Add(mb);
        return list;
    }

    /// <summary>Most candidates one search evaluates (a 2^20-GPU search has about 18,000).</summary>
    public const int MaxCandidates = 20_000;

    /// <summary>Longest search accepted (estimated from the candidates' operation counts, spread over the cores).</summary>
    public const double MaxSearchSeconds = 300;

    public static SearchResult Run(Scenario scenario, int gpus, SearchOptions? options = null, IProgress<SweepProgress>? progress = null, CancellationToken cancellation = default)
    {
        options ??= SearchOptions.Default;
        if (options.Top <= 0) throw new ConfigException("top", options.Top.ToString(System.Globalization.CultureInfo.InvariantCulture), "must be a positive integer (>= 1)");
        if (!(options.MaxSeconds > 0) || double.IsInfinity(options.MaxSeconds))
            throw new ConfigException("maxSeconds", options.MaxSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture), "must be a positive, finite number of seconds");
        if (options.Microbatches is { } mbs)
            foreach (var mb in mbs) Validate.Positive("microbatches", mb);
        var clock = Stopwatch.StartNew();
        var hardware = scenario.Hardware.WithGpus(gpus);
        if (options.ContextParallel is { } cpSizes)
            foreach (var cp in cpSizes) Validate.Positive("contextParallel", cp);
        var candidates = Candidates(gpus, options.Microbatches, scenario.Strategy, options.VirtualStages, options.DistributedOptimizer,
            options.ExpertTensorParallel, options.SequenceParallel, options.Schedules, options.ContextParallel,
            options.Recompute, options.MicroBatchSizes, scenario.Model.Batch, out var indivisible, scenario.Model.Layers, options.RecomputeModules);
        // A dense model takes EP = 1 only (StrategySpec's validation says so for each): counted, not listed.
        long denseEp = 0;
        if (scenario.Model.IsDense && candidates.Any(c => c.EP > 1))
        {
            var kept = candidates.Where(c => c.EP == 1).ToArray();
            denseEp = candidates.Count - kept.Length;
            candidates = kept;
        }
        // The whole search is bounded too: each candidate is bounded by the size guard, and their number by this.
        if (candidates.Count > MaxCandidates)
            throw new ConfigException("gpus", gpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
                $"gives {candidates.Count:N0} candidate strategies (EP x TP x PP x DP factorizations x microbatch counts); the limit is {MaxCandidates:N0}: search fewer GPUs or fewer --microbatches");
        var totals = new double[candidates.Count];
        var reasons = new string?[candidates.Count];
        var operations = new int[candidates.Count];
        var estimates = new double[candidates.Count];
        // The breakdowns an extrapolated evaluation already computed, kept (not its DAG) so that the best are not
        // evaluated twice; null where the quick path ran without them.
        var breakdowns = new (IReadOnlyDictionary<string, double> Breakdown, IReadOnlyDictionary<string, double> Path)?[candidates.Count];
        var parallel = new ParallelOptions
        {
            MaxDegreeOfParallelism = options.MaxDegreeOfParallelism > 0 ? options.MaxDegreeOfParallelism : Environment.ProcessorCount,
            CancellationToken = cancellation,
        };
        // First the verdicts that build nothing: validity, the size guard on what would be built (the extrapolation's two
        // built parts where it applies, else the whole folded DAG), memory, the caller's hook.
        Parallel.For(0, candidates.Count, parallel, i =>
        {
            var candidate = scenario with { Hardware = hardware, Strategy = candidates[i] };
            try
            {
                candidate.Validated();
                // The size guard before the memory estimate: a formula, while the memory verdict routes tokens over the
                // experts (a hostile expert count would cost more there than the whole search).
                estimates[i] = BuiltOperations(candidate, out var tooLarge);
                if (tooLarge is not null) throw tooLarge;
                if (options.SkipMemoryInfeasible && !MemoryModel.Estimate(candidate.Model, candidate.Strategy, candidate.Hardware).Feasible)
                    reasons[i] = $"{MemoryReasonPrefix} does not fit in {candidate.Hardware.Gpu.HbmCapacityBytes / 1e9:F0} GB per GPU (MemoryModel)";
                reasons[i] ??= options.InfeasibleReason?.Invoke(candidate);
            }
            catch (ConfigException e) { reasons[i] = QuickEvaluation.Reason(e); }
            catch (DagException e) { reasons[i] = e.Message; }
        });
        // The search-time estimate, over the candidates that will be evaluated (the verdicts above build nothing, and
        // the size guard comes before the memory verdict, so hostile sizes are refused by formula): what each would
        // build, the periodic extrapolation's parts where it applies.
        var cores = Math.Max(1, parallel.MaxDegreeOfParallelism);
        // Seconds of evaluating these candidates, estimated from what each builds, spread over the cores.
        double Seconds(IEnumerable<int> which) => which.Sum(i => estimates[i]) * Derivations.DagFactory.SecondsPerEstimatedOperation / cores;
        var limit = options.MaxSeconds;
        var valid = Enumerable.Range(0, candidates.Count).Where(i => reasons[i] is null).ToArray();
        var exhaustiveSeconds = Seconds(valid);
        ConfigException TooLong(double seconds, string what) => new("gpus", gpus.ToString(System.Globalization.CultureInfo.InvariantCulture),
            $"would take about {seconds:F0} s to search ({what}, of up to {scenario.Model.Layers} layers); the limit is about {limit:F0} s: search fewer GPUs, a smaller model or fewer --microbatches, or allow more time (moe search --max-seconds, SearchOptions.MaxSeconds)");
        var exhaustive = $"{valid.Length:N0} of {candidates.Count:N0} candidates left after the memory and size verdicts";
        // Over the limit evaluated exhaustively, the search may still fit by pruning: when the bounds (a three-microbatch
        // DAG each) and the first round fit, it goes on, and after the first round, with a threshold known, the candidates
        // the bound cannot settle must fit the rest of the limit (checked below).
        // The staged checks count estimated work, not the clock, so that a search's verdict does not depend on the machine's load.
        var staged = exhaustiveSeconds > limit;
        var prunes = options.Prune && valid.Length > options.Top;
        var boundSeconds = prunes
            ? valid.Sum(i => SearchBound.EstimateOperations(scenario with { Hardware = hardware, Strategy = candidates[i] }, Derivations.DagFolding.Symmetric))
              * Derivations.DagFactory.SecondsPerEstimatedOperation / cores
            : 0;
        if (staged)
        {
            if (!prunes) throw TooLong(exhaustiveSeconds, exhaustive);
            if (boundSeconds > limit) throw TooLong(exhaustiveSeconds, exhaustive + $"; their lower bounds alone about {boundSeconds:F0} s");
        }
        long rejected = reasons.LongCount(r => r is not null);
        long done = rejected;
        progress?.Report(new SweepProgress(done, candidates.Count, rejected, clock.Elapsed));
        // Lower bounds (SearchBound: a three-microbatch DAG each), where pruning may skip anything: a candidate whose bound
        // is above the k-th best total found so far cannot enter the top k.
        var bounds = new double[candidates.Count];
        if (prunes)
            Parallel.For(0, valid.Length, parallel, k =>
            {
                var i = valid[k];
                var candidate = scenario with { Hardware = hardware, Strategy = candidates[i] };
                try { bounds[i] = SearchBound.LowerBoundSeconds(candidate, candidate.CreateCostModel()); }
                catch (ConfigException) { bounds[i] = 0; }   // the evaluation gives the reason
                catch (DagException) { bounds[i] = 0; }
            });
        // Lowest bound first, in fixed-size rounds (the same rounds whatever the thread count, so the result and the counts
        // do not depend on threads): before each round the k-th best total so far is the threshold; within a round,
        // most expensive first, so that the cores finish together.
        // Candidates without a bound (0: SearchBound.WhyNot) last: every one is evaluated anyway, and the bounded ones
        // with the lowest bounds give the first threshold.
        var byBound = valid.OrderBy(i => prunes && bounds[i] == 0 ? 1 : 0).ThenBy(i => bounds[i]).ThenBy(i => i).ToArray();
        var searched = boundSeconds;
        if (staged && searched + Seconds(byBound.Take(options.Top)) is var firstRound && firstRound > limit)
            throw TooLong(firstRound, exhaustive + $"; the lower bounds and the first {options.Top} to evaluate");
        var found = new List<double>();
        var skipped = new bool[candidates.Count];
        long pruned = 0;
        var workspaces = new ConcurrentBag<ScheduleWorkspace>();
        // The first round holds k candidates (what it takes to have a threshold), the later ones PruneRound each.
        for (int from = 0, size = options.Top; from < byBound.Length; from += size, size = PruneRound)
        {
            var threshold = options.Prune && found.Count >= options.Top ? found.Order().ElementAt(options.Top - 1) * (1 + PruneTolerance) : double.PositiveInfinity;
            // A staged search (over the limit exhaustively): once the first round gives a threshold, the candidates whose
            // bound does not settle them (the threshold only falls) must fit what is left of the limit.
            if (staged && from == options.Top && byBound.Skip(from).Where(i => !(bounds[i] > threshold)).ToArray() is var unsettled
                && searched + Seconds(unsettled) is var rest && rest > limit)
            {
                var unbounded = unsettled.Where(i => bounds[i] == 0).ToArray();
                throw TooLong(rest, exhaustive + $"; after the bounds and the first {options.Top}, {unsettled.Length:N0} whose lower bound is below the top {options.Top} so far still to evaluate"
                    + (unbounded.Length > 0 ? $", {unbounded.Length:N0} of them without a bound ({SearchBound.WhyNot(scenario.Model, candidates[unbounded[0]]) ?? "its bound could not be built"})" : ""));
            }
            var order = byBound.Skip(from).Take(size).Where(i => !(bounds[i] > threshold)).OrderByDescending(i => estimates[i]).ToArray();
            foreach (var i in byBound.Skip(from).Take(size))
                if (bounds[i] > threshold)
                {
                    skipped[i] = true;
                    pruned++;
                    var d = Interlocked.Increment(ref done);
                    progress?.Report(new SweepProgress(d, candidates.Count, Interlocked.Read(ref rejected), clock.Elapsed));
                }
            EvaluateAll(order);
            searched += Seconds(order);
            foreach (var i in order) if (reasons[i] is null) found.Add(totals[i]);
        }
        // Skipped candidates stay valid (no reason): counted as evaluated, settled by their bound, not as rejected.

        void EvaluateAll(int[] order) =>
        Parallel.For(0, order.Length, parallel, () => workspaces.TryTake(out var w) ? w : new ScheduleWorkspace(), (k, _, workspace) =>
        {
            var i = order[k];
            var candidate = scenario with { Hardware = hardware, Strategy = candidates[i] };
            try
            {
                var cost = candidate.CreateCostModel();
                if (Extrapolated(candidate, cost) is { } r)
                {
                    totals[i] = r.TotalSeconds;
                    operations[i] = (int)Math.Min(r.Extrapolation!.Operations, int.MaxValue);
                    breakdowns[i] = (r.BreakdownSeconds, r.CriticalPathSecondsByCategory);
                }
                else
                {
                    var e = QuickEvaluation.Run(candidate, null, workspace, breakdown: false);
                    totals[i] = e.TotalSeconds;
                    operations[i] = (int)Math.Min(e.Dag.RepresentedCount, int.MaxValue);
                }
            }
            catch (ConfigException e) { reasons[i] = QuickEvaluation.Reason(e); }
            catch (DagException e) { reasons[i] = e.Message; }
            if (reasons[i] is not null) Interlocked.Increment(ref rejected);
            var d = Interlocked.Increment(ref done);
            if (progress is not null && (d % 4 == 0 || d == candidates.Count))
                progress.Report(new SweepProgress(d, candidates.Count, Interlocked.Read(ref rejected), clock.Elapsed));
            return workspace;
        }, workspaces.Add);

        var byReason = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var r in reasons) if (r is not null) byReason[r] = byReason.GetValueOrDefault(r) + 1;
        if (indivisible > 0) byReason["micro-batch size: does not divide the batch per rank that takes whole sequences (model.batch / attention data-parallel ranks)"] = indivisible;
        if (denseEp > 0) byReason[DenseEp] = byReason.GetValueOrDefault(DenseEp) + denseEp;
        // Fastest first; ties keep candidate order, so the result does not depend on threads.
        var top = Enumerable.Range(0, candidates.Count)
            .Where(i => reasons[i] is null && !skipped[i])
            .OrderBy(i => totals[i]).ThenBy(i => i)
            .Take(options.Top)
            .ToArray();
        var best = new SearchCandidate[top.Length];
        // The quick path priced without breakdowns: those of the best are evaluated again, whole, for them (in parallel,
        // each into its own slot: the order stays the ranking's).
        Parallel.For(0, top.Length, parallel, k =>
        {
            var i = top[k];
            if (breakdowns[i] is { } kept)
            {
                best[k] = new SearchCandidate(candidates[i], totals[i], operations[i], kept.Breakdown, kept.Path);
                return;
            }
            var s = scenario with { Hardware = hardware, Strategy = candidates[i] };
            var cost = s.CreateCostModel();
            var result = s.BuildDagFor(cost).CriticalPath(cost);
            best[k] = new SearchCandidate(candidates[i], result.TotalSeconds, operations[i], result.BreakdownSeconds, result.CriticalPathSecondsByCategory);
        });
        var evaluated = reasons.LongCount(r => r is null);
        return new SearchResult(scenario, gpus, candidates.Count + indivisible + denseEp, evaluated, best, byReason, clock.Elapsed, pruned)
        {
            ExhaustiveEstimateSeconds = exhaustiveSeconds,
            SearchedEstimateSeconds = searched,
        };
    }

    /// <summary>The periodic extrapolation of a candidate (<see cref="MicrobatchPeriodicity"/>), null when it does not apply.</summary>
    private static CriticalPathResult? Extrapolated(Scenario candidate, Costs.CostModel cost) =>
        MicrobatchPeriodicity.WhyNot(candidate) is null ? MicrobatchPeriodicity.TryEvaluate(candidate, cost, Derivations.DagFolding.Symmetric) : null;

    /// <summary>Candidates evaluated between two updates of the pruning threshold after the first k (fixed, so that results
    /// do not depend on threads; a multiple of this machine's two cores).</summary>
    private const int PruneRound = 4;

    /// <summary>Relative margin above the k-th best total before a bound prunes (a pruned candidate is strictly slower).</summary>
    private const double PruneTolerance = 1e-9;

    /// <summary>How every memory-verdict rejection reason begins (<see cref="SearchResult.RejectedForMemory"/>).</summary>
    public const string MemoryReasonPrefix = "memory:";

    private const string DenseEp = "strategy.ep: must be 1 for a dense model (model.experts = 0)";

    private const string TooLarge = "strategy: too large to evaluate (over the size guard, even the parts the periodic extrapolation would build)";

    /// <summary>
    /// Operations an evaluation of the candidate builds (estimated): the extrapolation's two built parts where it applies
    /// and is smaller, else the whole folded DAG; <paramref name="tooLarge"/> is the size guard's verdict on it.
    /// </summary>
    private static double BuiltOperations(Scenario candidate, out ConfigException? tooLarge)
    {
        var whole = Derivations.DagFactory.EstimateOperations(candidate.Model, candidate.Strategy, Derivations.DagFolding.Symmetric);
        var built = MicrobatchPeriodicity.EstimateOperations(candidate, Derivations.DagFolding.Symmetric) is { } parts && parts < whole ? parts : whole;
        tooLarge = built > Derivations.DagFactory.MaxOperations || built * Derivations.DagFactory.SecondsPerEstimatedOperation > Derivations.DagFactory.MaxEstimatedSeconds
            ? new ConfigException("strategy", candidate.Strategy.ToString(), TooLarge["strategy: ".Length..]) : null;
        return built;
    }
}

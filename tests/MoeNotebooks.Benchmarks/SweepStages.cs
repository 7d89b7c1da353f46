using System.Diagnostics;
using System.Globalization;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Benchmarks;

/// <summary>
/// <c>-- --sweep-stages [passes]</c>: where the time of <c>data/sweeps/founding-4800.json</c> goes, stage by stage, on
/// one thread: the sweep's own steps run one stage at a time over all points (distinct points, structures, operations
/// per DAG; Stopwatch per stage, first pass (JIT included) and the best of the later passes). Pin it with
/// <c>taskset -c 0</c>. A smoke measure to steer the work; the whole-path numbers are <c>moe sweep</c>'s.
/// </summary>
public static class SweepStages
{
    // CPU time of this thread (CLOCK_THREAD_CPUTIME_ID, nanoseconds): on a shared machine wall time mostly measures the
    // wait for a core, so stages are timed in CPU time where the platform has the clock (Linux), else in wall time.
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "clock_gettime")]
    private static extern int ClockGetTime(int clock, out TimeSpec time);

    private struct TimeSpec { public long Seconds, Nanoseconds; }

    private sealed class Clock
    {
        private static readonly bool Cpu = OperatingSystem.IsLinux();
        private long _start, _bytes;
        public long AllocatedBytes => GC.GetAllocatedBytesForCurrentThread() - _bytes;
        public static long Now()
        {
            if (Cpu && ClockGetTime(3, out var t) == 0) return t.Seconds * 1_000_000_000 + t.Nanoseconds;
            return (long)(Stopwatch.GetTimestamp() * (1e9 / Stopwatch.Frequency));
        }
        public static Clock StartNew() => new() { _start = Now(), _bytes = GC.GetAllocatedBytesForCurrentThread() };
        public void Restart() { _start = Now(); _bytes = GC.GetAllocatedBytesForCurrentThread(); }
        public long ElapsedNanoseconds => Now() - _start;
        public double ElapsedMilliseconds => ElapsedNanoseconds / 1e6;
    }

    public static void Run(TextWriter w, int passes, string? only = null)
    {
        var sweep = Sweep.Load(Path.Combine(Workloads.RepoRoot, "data", "sweeps", "founding-4800.json"));
        var rng = new Random(sweep.Random!.Seed);
        var choices = new List<int[]>();
        var seen = new HashSet<long>();
        for (var i = 0; i < sweep.Count; i++)
        {
            var c = new int[sweep.Axes.Count];
            for (var a = 0; a < c.Length; a++) c[a] = rng.Next(sweep.Axes[a].Values.Count);
            long key = 0;
            for (var a = 0; a < c.Length; a++) key = key * sweep.Axes[a].Values.Count + c[a];
            if (seen.Add(key)) choices.Add(c);
        }
        if (only is not null)
        {
            // One stage in a loop, for a sampling profiler (perf with DOTNET_PerfMapEnabled=1).
            var sc = choices.Select((c, i) => sweep.ScenarioFor(c, i, true)).ToArray();
            var cm = sc.Select(x => x.CreateCostModel()).ToArray();
            var dg = sc.Select(x => x.BuildDag(DagFolding.Symmetric)).ToArray();
            var clock = Clock.StartNew();
            for (var pass = 0; pass < passes; pass++)
                for (var i = 0; i < sc.Length; i++)
                    _ = only switch
                    {
                        "scenario" => sweep.ScenarioFor(choices[i], i, true).Name.Length,
                        "build" => sc[i].BuildDag(DagFolding.Symmetric).Count,
                        "fold" => cm[i].PricesFoldSymmetrically(dg[i]) ? 1 : 0,
                        "price" => cm[i].Price(dg[i]).Length,
                        "sweep" => i == 0 ? (int)sweep.Run(_ => { }, new SweepOptions(1)).Valid : 0,
                        "memory" => MemoryModel.Estimate(sc[i].Model, sc[i].Strategy, sc[i].Hardware).Stages.Count,
                        _ => throw new ArgumentException(only),
                    };
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{only}: {clock.ElapsedMilliseconds / passes:F1} ms (thread CPU) per pass over {sc.Length} distinct points"));
            return;
        }
        var best = new Dictionary<string, double>();
        var alloc = new Dictionary<string, long>();
        var first = new Dictionary<string, double>();
        var order = new List<string>();
        for (var pass = 0; pass < passes; pass++)
        {
            var t = new Dictionary<string, double>();
            var sw = Clock.StartNew();
            void Add(string stage, long nanoseconds)
            {
                alloc[stage] = sw.AllocatedBytes;
                t[stage] = t.GetValueOrDefault(stage) + nanoseconds / 1e3;
                if (!order.Contains(stage)) order.Add(stage);
            }
            sw.Restart();
            var scenarios = new Scenario[choices.Count];
            for (var i = 0; i < choices.Count; i++) scenarios[i] = sweep.ScenarioFor(choices[i], i, true);
            Add("scenario (clone, set, serialize, parse, validate)", sw.ElapsedNanoseconds);

            sw.Restart();
            var groups = new Dictionary<(ModelSpec, StrategySpec), int>();
            foreach (var s in scenarios) if (!groups.ContainsKey((s.Model, s.Strategy))) groups[(s.Model, s.Strategy)] = groups.Count;
            Add("group by structure (record hashing)", sw.ElapsedNanoseconds);

            sw.Restart();
            var dags = new Dictionary<(ModelSpec, StrategySpec), OperatorDag>();
            foreach (var s in scenarios)
                if (!dags.ContainsKey((s.Model, s.Strategy))) dags[(s.Model, s.Strategy)] = s.BuildDag(DagFolding.Symmetric);
            Add("build (one folded DAG per structure)", sw.ElapsedNanoseconds);

            sw.Restart();
            var costs = new Costs.CostModel[scenarios.Length];
            for (var i = 0; i < scenarios.Length; i++) costs[i] = scenarios[i].CreateCostModel();
            Add("create cost model", sw.ElapsedNanoseconds);

            sw.Restart();
            var chosen = new OperatorDag[scenarios.Length];
            for (var i = 0; i < scenarios.Length; i++)
            {
                var s = scenarios[i];
                chosen[i] = s.BuildDagFor(costs[i], DagFolding.Symmetric, f => f == DagFolding.Symmetric ? dags[(s.Model, s.Strategy)] : s.BuildDag(f));
            }
            Add("fold check (PricesFoldSymmetrically)", sw.ElapsedNanoseconds);

            sw.Restart();
            var links = new Analysis.LinkFootprints?[scenarios.Length];
            for (var i = 0; i < scenarios.Length; i++) links[i] = costs[i].Footprints(chosen[i]);
            Add("link footprints (per point; the sweep keeps them per DAG x hardware)", sw.ElapsedNanoseconds);

            var ws = new ScheduleWorkspace();
            sw.Restart();
            var durations = new double[scenarios.Length][];
            for (var i = 0; i < scenarios.Length; i++) costs[i].PriceFoldChecked(chosen[i], durations[i] = new double[chosen[i].Count]);
            Add("price (fold already checked)", sw.ElapsedNanoseconds);

            sw.Restart();
            var totals = new double[scenarios.Length];
            for (var i = 0; i < scenarios.Length; i++)
                totals[i] = Scheduler.TotalSeconds(chosen[i], durations[i], ws, links[i], costs[i].ComputeShares(chosen[i]));
            Add("schedule (total)", sw.ElapsedNanoseconds);

            sw.Restart();
            for (var i = 0; i < scenarios.Length; i++)
            {
                ws.Ensure(chosen[i].Count);
                Scheduler.TotalSeconds(chosen[i], durations[i], ws, links[i], costs[i].ComputeShares(chosen[i]));
                var n = chosen[i].Count;
                Scheduler.MeanUsage(chosen[i], ws.Start.AsSpan(0, n), ws.Finish.AsSpan(0, n), totals[i], ws);
            }
            Add("schedule again + breakdown (usage measure)", sw.ElapsedNanoseconds);

            sw.Restart();
            for (var i = 0; i < scenarios.Length; i++) MemoryModel.EstimateAtMicrobatches(scenarios[i].Model, scenarios[i].Strategy, scenarios[i].Hardware);
            Add("memory verdict (at the point's microbatches, as a row needs)", sw.ElapsedNanoseconds);

            sw.Restart();
            var rows = 0L;
            sweep.Run(_ => rows++, new SweepOptions(1));
            Add("whole sweep (Sweep.Run, 4,800 points, reuse)", sw.ElapsedNanoseconds);

            foreach (var (k, v) in t)
            {
                if (pass == 0) first[k] = v;
                else best[k] = Math.Min(best.GetValueOrDefault(k, double.MaxValue), v);
            }
            if (pass == 0)
            {
                long ops = 0, built = 0;
                foreach (var d in dags.Values) { ops += d.Count; }
                foreach (var d in chosen) built += d.Count;
                w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"points {sweep.Count:N0}, distinct {choices.Count:N0}, structures {dags.Count:N0}, built operations per structure {ops / (double)dags.Count:N0} (total {ops:N0}), operations priced+scheduled per distinct point {built / (double)choices.Count:N0}"));
            }
        }
        w.WriteLine($"{"stage (thread CPU time)",-72} {"first pass ms",14} {"best later ms",14} {"us/distinct pt",15} {"MB allocated",13}");
        foreach (var k in order)
        {
            var b = best.GetValueOrDefault(k, double.NaN);
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{k,-72} {first[k] / 1000,14:F1} {b / 1000,14:F1} {b / choices.Count,15:F1} {alloc[k] / 1e6,13:F1}"));
        }
    }
}

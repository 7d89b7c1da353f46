using System.Diagnostics;
using System.Globalization;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;

namespace MoeNotebooks.Benchmarks;

/// <summary>
/// <c>-- --probe</c>: a rough Stopwatch pass over the same workloads (seconds, not minutes) for quick iteration.
/// The numbers to report are BenchmarkDotNet's; this is a smoke check.
/// </summary>
public static class Probe
{
    public static void Run(TextWriter w)
    {
        foreach (var name in Workloads.FoundingScenarios)
        {
            var s = Workloads.Founding(name);
            Time(w, $"{name} build+price+schedule", 2000, () => s.BuildDag().CriticalPath(s.CreateCostModel()).TotalSeconds);
            var dag = s.BuildDag();
            var cost = s.CreateCostModel();
            Time(w, $"{name} price+schedule", 2000, () => dag.CriticalPath(cost).TotalSeconds);
        }
        foreach (var mb in new[] { 8, 64 })
        {
            var s = Workloads.Megatron1T(mb);
            Time(w, $"1T mb={mb} build+price+schedule", 3, () => s.BuildDag().CriticalPath(s.CreateCostModel()).TotalSeconds);
        }
        var sweep = MoeNotebooks.Analysis.Sweep.Load(Path.Combine(Workloads.RepoRoot, "data", "sweeps", "founding-4800.json"));
        foreach (var reuse in new[] { true, false })
            Time(w, $"founding-4800 sweep, 1 thread, reuse {reuse}", 3, () => sweep.Run(_ => { }, new SweepOptions(1) { Reuse = reuse }).Valid);
        var syn = Workloads.Synthetic(1_000_000);
        var c = CostModel.RooflineIdeal(HardwareCatalog.Get("H100-SXM").WithGpus(64));
        Time(w, "synthetic 1e6 price+schedule", 5, () => syn.CriticalPath(c).TotalSeconds);
        Time(w, "synthetic 1e6 build", 3, () => Workloads.Synthetic(1_000_000).Count);
    }

    /// <summary><c>-- --probe-evaluate NAME...</c>: <c>moe evaluate</c>'s library call on data/scenarios/NAME.json, cold then warm.</summary>
    public static void Evaluate(TextWriter w, string[] names)
    {
        foreach (var name in names)
        {
            var sw = Stopwatch.StartNew();
            var total = Workloads.Founding(name).Evaluate().TotalSeconds;
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name} first evaluation {sw.Elapsed.TotalMilliseconds,10:N1} ms ({total:G6} s)"));
            Time(w, $"{name} evaluate", 5, () => Workloads.Founding(name).Evaluate().TotalSeconds);
        }
    }

    /// <summary><c>-- --probe-build NAME MICROBATCHES</c>: one extrapolation part of data/scenarios/NAME.json built (folded, as evaluate builds it), warm.</summary>
    public static void Build(TextWriter w, string name, int microbatches)
    {
        var s = Workloads.Founding(name);
        var cost = s.CreateCostModel();
        Time(w, $"{name} build {microbatches} microbatches", 20, () => MicrobatchPeriodicity.BuildPart(s, cost, MoeNotebooks.Derivations.DagFolding.Symmetric, microbatches).Dag.Count);
        var dag = MicrobatchPeriodicity.BuildPart(s, cost, MoeNotebooks.Derivations.DagFolding.Symmetric, microbatches).Dag;
        Time(w, $"{name} build {microbatches} microbatches, room reserved exactly", 20, () => MicrobatchPeriodicity.BuildPart(s, cost, MoeNotebooks.Derivations.DagFolding.Symmetric, microbatches, dag.Count).Dag.Count);
        Time(w, $"{name} price+schedule {microbatches} microbatches", 10, () => dag.CriticalPath(cost).TotalSeconds);
    }

    private static void Time(TextWriter w, string label, int reps, Func<double> f)
    {
        var x = f();
        var alloc0 = GC.GetTotalAllocatedBytes(true);
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var min = double.MaxValue;
        for (var i = 0; i < reps; i++)
        {
            var t0 = sw.Elapsed.TotalMicroseconds;
            x += f();
            min = Math.Min(min, sw.Elapsed.TotalMicroseconds - t0);
        }
        sw.Stop();
        var cpuUs = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalMicroseconds / reps;
        var alloc = (GC.GetTotalAllocatedBytes(true) - alloc0) / (double)reps;
        var us = sw.Elapsed.TotalMicroseconds / reps;
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{label,-40} {us,14:N1} us/op {1e6 / us,12:N0} /s {alloc / 1024,12:N0} KiB/op {cpuUs,14:N1} us cpu, fastest {min,12:N1} us  ({x:G3})"));
    }
}

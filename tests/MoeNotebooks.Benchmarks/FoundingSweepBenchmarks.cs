using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using MoeNotebooks.Analysis;

namespace MoeNotebooks.Benchmarks;

/// <summary>
/// Issue 15's sweep target: <c>data/sweeps/founding-4800.json</c> (4,800 random points of the founding model: sequence
/// length, batch, eight 16-GPU layouts, three GPUs, two cost models) on one thread, the whole path per point (clone,
/// parse, validate, build or reuse the DAG, price, schedule, breakdown, memory verdict), rows counted (no file).
/// <c>Reuse</c> = true is what <c>moe sweep</c> does (one DAG per structure, a repeated draw takes its first row);
/// false evaluates every point from scratch (the oracle of the reuse tests). Evaluations per second = 4,800 / mean.
/// Pin it to one core as the target says: <c>taskset -c 0 dotnet run -c Release --project tests/MoeNotebooks.Benchmarks
/// -- --filter '*FoundingSweep*'</c> (docs/performance.md).
/// </summary>
[MemoryDiagnoser]
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 5)]
public class FoundingSweepBenchmarks
{
    private Sweep _sweep = null!;

    [Params(true, false)]
    public bool Reuse { get; set; }

    [GlobalSetup]
    public void Setup() => _sweep = Sweep.Load(Path.Combine(Workloads.RepoRoot, "data", "sweeps", "founding-4800.json"));

    [Benchmark]
    public long Founding4800() => _sweep.Run(_ => { }, new SweepOptions(1) { Reuse = Reuse }).Valid;
}

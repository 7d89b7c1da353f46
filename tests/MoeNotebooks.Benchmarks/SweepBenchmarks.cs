using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using MoeNotebooks.Analysis;

namespace MoeNotebooks.Benchmarks;

/// <summary>
/// <c>data/sweeps/bench-100k.json</c>: 100,000 random valid points (founding model sizes, eight 16-GPU layouts, three GPUs,
/// two cost models) on all cores, rows counted (no file). One run is many seconds, so three measured runs.
/// </summary>
[MemoryDiagnoser]
[SimpleJob(RunStrategy.Monitoring, launchCount: 1, warmupCount: 1, iterationCount: 3)]
public class SweepBenchmarks
{
    private Sweep _sweep = null!;

    [Params(false, true)]
    public bool Breakdown { get; set; }

    [GlobalSetup]
    public void Setup() => _sweep = Sweep.Load(Path.Combine(Workloads.RepoRoot, "data", "sweeps", "bench-100k.json"));

    [Benchmark]
    public long Sweep100k() => _sweep.Run(_ => { }, new SweepOptions(Breakdown: Breakdown)).Valid;
}

using BenchmarkDotNet.Attributes;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Benchmarks;

/// <summary>A Megatron-1T-sized iteration (TP 8 x PP 64): build + price + schedule + critical path.</summary>
[MemoryDiagnoser]
public class Megatron1TBenchmarks
{
    private Scenario _scenario = null!;
    private OperatorDag _dag = null!;
    private CostModel _cost = null!;

    [Params(8, 64)]
    public int Microbatches { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _scenario = Workloads.Megatron1T(Microbatches);
        _dag = _scenario.BuildDag();
        _cost = _scenario.CreateCostModel();
    }

    [Benchmark(Baseline = true)]
    public double BuildPriceSchedule() => _scenario.BuildDag().CriticalPath(_scenario.CreateCostModel()).TotalSeconds;

    [Benchmark]
    public double PriceSchedule() => _dag.CriticalPath(_cost).TotalSeconds;

    /// <summary>
    /// The same step as <c>moe evaluate</c> builds it without microbatch extrapolation: TP ranks folded onto one
    /// representative per stage (<see cref="Scenario.BuildDagFor(CostModel, Derivations.DagFolding)"/>, exact by the
    /// folding property tests), then priced, scheduled and the critical path taken.
    /// </summary>
    [Benchmark]
    public double BuildPriceScheduleFolded()
    {
        var cost = _scenario.CreateCostModel();
        return _scenario.BuildDagFor(cost).CriticalPath(cost).TotalSeconds;
    }
}

/// <summary>Synthetic DAGs of 10^4..10^6 operations: price + schedule + critical path, and the builder, to show cost is linear in operations.</summary>
[MemoryDiagnoser]
public class SyntheticDagBenchmarks
{
    private OperatorDag _dag = null!;
    private CostModel _cost = null!;

    [Params(10_000, 100_000, 1_000_000)]
    public int Operations { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _dag = Workloads.Synthetic(Operations);
        _cost = CostModel.RooflineIdeal(HardwareCatalog.Get("H100-SXM").WithGpus(64));
    }

    [Benchmark(Baseline = true)]
    public double PriceSchedule() => _dag.CriticalPath(_cost).TotalSeconds;

    [Benchmark]
    public OperatorDag Build() => Workloads.Synthetic(Operations);
}

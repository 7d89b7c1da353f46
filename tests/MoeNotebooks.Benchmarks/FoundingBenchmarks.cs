using BenchmarkDotNet.Attributes;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Benchmarks;

/// <summary>One evaluation of a founding scenario: build the DAG, price it, schedule it, find the critical path.</summary>
[MemoryDiagnoser]
public class FoundingBenchmarks
{
    private Scenario _scenario = null!;
    private OperatorDag _dag = null!;
    private CostModel _cost = null!;

    [ParamsSource(nameof(Names))]
    public string Scenario { get; set; } = "";

    public static IEnumerable<string> Names => Workloads.FoundingScenarios;

    [GlobalSetup]
    public void Setup()
    {
        _scenario = Workloads.Founding(Scenario);
        _dag = _scenario.BuildDag();
        _cost = _scenario.CreateCostModel();
    }

    /// <summary>Build + price + schedule + critical path: the total and the path, what a sweep needs.</summary>
    [Benchmark(Baseline = true)]
    public double BuildPriceSchedule() => _scenario.BuildDag().CriticalPath(_scenario.CreateCostModel()).TotalSeconds;

    /// <summary>Everything <c>moe evaluate</c> computes, including the derived formula.</summary>
    [Benchmark]
    public double Evaluate() => _scenario.Evaluate().Formula.Terms.Count;

    [Benchmark]
    public OperatorDag Build() => _scenario.BuildDag();

    [Benchmark]
    public double[] Price() => _cost.Price(_dag);

    [Benchmark]
    public double PriceSchedule() => _dag.CriticalPath(_cost).TotalSeconds;
}

using BenchmarkDotNet.Running;
using MoeNotebooks.Benchmarks;

// `dotnet run -c Release --project tests/MoeNotebooks.Benchmarks -- --filter '*'` runs every benchmark;
// add `--job short` for a quick run; `-- --counts` prints operation counts of the benchmarked DAGs only.
if (args is ["--counts"])
{
    Workloads.PrintCounts(Console.Out);
    return 0;
}
if (args is ["--probe"])
{
    Probe.Run(Console.Out);
    return 0;
}
if (args is ["--sweep-stages", ..])
{
    SweepStages.Run(Console.Out, args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 4, args.Length > 2 ? args[2] : null);
    return 0;
}
if (args is ["--probe-build", var buildName, var buildMicrobatches])
{
    Probe.Build(Console.Out, buildName, int.Parse(buildMicrobatches, System.Globalization.CultureInfo.InvariantCulture));
    return 0;
}
if (args is ["--probe-evaluate", ..])
{
    Probe.Evaluate(Console.Out, args.Skip(1).ToArray());
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(Workloads).Assembly).Run(args);
return 0;

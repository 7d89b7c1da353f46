using System.Globalization;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Benchmarks;

/// <summary>The inputs the benchmarks use, shared so that <c>--counts</c> reports the same DAGs.</summary>
public static class Workloads
{
    public static readonly string[] FoundingScenarios = ["seed-ep16", "seed-tp8-pp2", "ep16", "tp8-pp2"];

    /// <summary>The repository root, found by walking up to MoeNotebooks.sln (benchmarks run from a bin folder).</summary>
    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) return dir.FullName;
            for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MoeNotebooks.sln"))) return dir.FullName;
            throw new DirectoryNotFoundException("MoeNotebooks.sln not found above the benchmark's folder or the current directory");
        }
    }

    public static Scenario Founding(string name) => Scenario.Load(Path.Combine(RepoRoot, "data", "scenarios", name + ".json"));

    /// <summary>
    /// A Megatron-1T-sized training iteration (Narayanan et al. 2021, table 1: 128 layers, hidden 25600, 160 heads,
    /// TP 8 x PP 64): a dense transformer (F = 4H, vocabulary 51200), sequence 2048, one sequence per microbatch,
    /// forward + backward with the 1F1B schedule, gradient all-reduce and optimizer step.
    /// </summary>
    public static Scenario Megatron1T(int microbatches) => new(
        "megatron-1t",
        new ModelSpec("megatron-1t", 128, 25600, 160, 4 * 25600, 0, 1, microbatches, 2048) { Vocabulary = 51200 },
        HardwareCatalog.Get("H100-SXM").WithGpus(512),
        new StrategySpec(1, 8, 64, 1, Derivation.Corrected, microbatches) { Mode = WorkloadMode.Training, Schedule = PipelineSchedule.OneFOneB },
        CostModelSpec.Ideal);

    /// <summary>
    /// A synthetic DAG of about <paramref name="operations"/> operations on 64 GPUs: per GPU a chain of matmuls and
    /// elementwise ops, with an all-reduce over 8-GPU groups every 16 operations and a cross-group send every 64.
    /// Shapes cycle through a few sizes, as real layers do.
    /// </summary>
    public static OperatorDag Synthetic(int operations, int gpus = 64)
    {
        var b = new DagBuilder(gpus, description: string.Create(CultureInfo.InvariantCulture, $"synthetic {operations} ops"));
        var last = new int[gpus];
        Array.Fill(last, -1);
        Span<int> members = stackalloc int[8];
        var groups = new int[gpus / 8];
        for (var i = 0; i < groups.Length; i++)
        {
            for (var j = 0; j < 8; j++) members[j] = i * 8 + j;
            groups[i] = b.Group(members);
        }
        var deps = new int[8];
        var step = 0;
        while (b.Count < operations)
        {
            for (var g = 0; g < gpus && b.Count < operations; g++)
            {
                ReadOnlySpan<int> dep = last[g] < 0 ? [] : [last[g]];
                last[g] = (step % 4) switch
                {
                    3 => b.AddElementwise(g, 1L << 20, step / 16, dep),
                    var r => b.AddMatmul(r == 0 ? OpKind.QProjection : OpKind.ExpertUp, g, new(4096, 1024 << r, 1024), step / 16, dep),
                };
            }
            if (step % 16 == 15)
                for (var i = 0; i < groups.Length && b.Count < operations; i++)
                {
                    for (var j = 0; j < 8; j++) deps[j] = last[i * 8 + j];
                    var op = b.AddCommunication(OpKind.AttentionAllReduce, groups[i], 8L << 20, step / 16, deps);
                    for (var j = 0; j < 8; j++) last[i * 8 + j] = op;
                }
            if (step % 64 == 63)
                for (var g = 0; g < gpus && b.Count < operations; g++)
                {
                    var op = b.AddSend(g, (g + 8) % gpus, 4L << 20, [last[g]]);
                    last[(g + 8) % gpus] = op;
                }
            step++;
        }
        return b.Build();
    }

    public static void PrintCounts(TextWriter w)
    {
        foreach (var name in FoundingScenarios)
        {
            var dag = Founding(name).BuildDag();
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name,-14} {dag.Count,10:N0} ops {dag.EdgeCount,10:N0} edges"));
        }
        foreach (var mb in new[] { 1, 8, 64 })
        {
            var dag = Megatron1T(mb).BuildDag();
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"1T mb={mb,-8} {dag.Count,10:N0} ops {dag.EdgeCount,10:N0} edges"));
        }
        var syn = Synthetic(1_000_000);
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"synthetic      {syn.Count,10:N0} ops {syn.EdgeCount,10:N0} edges"));
        var cost = CostModel.RooflineIdeal(HardwareCatalog.Get("H100-SXM").WithGpus(64));
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"synthetic total {syn.CriticalPath(cost).TotalSeconds:G6} s"));
    }
}

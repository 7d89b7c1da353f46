using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// The block refactor (a layer composed of attention / dense-FFN / MoE blocks, a model a layer pattern) is behaviour
/// preserving. Oracle: per-operation fingerprints (kind, phase, GPU, group members, layer, microbatch, index, shape,
/// bytes, price class, dependencies) captured from the pre-refactor monolithic CorrectedDerivation (commit 2a3cd56)
/// into Data/dag-fingerprints.json; every DAG built now one head and one expert at a time (the derivation's oracle
/// form, <c>BuildDagProductsApart</c>; by default a rank's heads, and its experts with equal tokens, are repeated
/// products, whose schedule RepeatedProductTests checks against this form) must hash to the same text, operation by operation.
/// Regenerate only on purpose: MOE_WRITE_DAG_FINGERPRINTS=1 dotnet test --filter BlockRefactor.
/// </summary>
public sealed class BlockRefactorTests
{
    private static string FingerprintFile => Path.Combine(TestPaths.RepoRoot, "tests", "MoeNotebooks.Tests", "Data", "dag-fingerprints.json");

    /// <summary>Every founding scenario plus variants covering each branch of the derivation.</summary>
    public static IEnumerable<(string Name, ModelSpec Model, StrategySpec Strategy)> Variants()
    {
        // The scenarios that existed when the fingerprints were captured (later scenarios use features they predate).
        foreach (var name in new[] { "ep16", "ep16-training", "gpt39b-sc21-replica", "seed-ep16", "seed-tp8-pp2", "tp8-pp2", "tp8-pp2-training" })
        {
            var s = Scenario.Load(TestPaths.Scenario(name));
            yield return ("scenario:" + name, s.Model, s.Strategy);
        }
        var small = new ModelSpec("small-moe", 4, 1024, 8, 4096, 8, 2, 32, 256);
        var skewed = small with { Routing = new RoutingSpec(RoutingDistribution.Zipf, 1.2, CapacityFactor: 1.25) };
        var dense = new ModelSpec("small-dense", 6, 1024, 8, 4096, 0, 1, 48, 256) { Vocabulary = 5000 };
        var train = new StrategySpec(4, 2, 2, 2, Microbatches: 4) { Mode = WorkloadMode.Training };
        yield return ("moe-ep4-tp2-pp2-dp2-1f1b", small, train);
        yield return ("moe-recompute-zero2", small, train with { Recompute = true, ZeroStage = 2 });
        yield return ("moe-interleaved", small with { Layers = 8 }, train with { Schedule = PipelineSchedule.Interleaved, VirtualStages = 2 });
        yield return ("moe-gpipe-chunks", skewed, train with { Schedule = PipelineSchedule.Gpipe, AllToAllChunks = 3 });
        yield return ("moe-skewed-tp-attention", skewed, train with { Attention = AttentionPlacement.TensorParallel, Recompute = true });
        yield return ("moe-skewed-inference-chunks", skewed, new StrategySpec(8, 1, 1, 1, Microbatches: 2) { AllToAllChunks = 2 });
        yield return ("moe-materialized-scatter", small with { Vocabulary = 3000 }, train with { AttentionKernel = AttentionKernel.MaterializedDropout, ScatterGather = true, OverlapCommunication = false });
        yield return ("moe-materialized-order", small, train with { AttentionKernel = AttentionKernel.Materialized, RankOrder = "tp-pp-ep-dp", ZeroStage = 1 });
        yield return ("dense-tp2-pp3-training", dense, new StrategySpec(1, 2, 3, 2, Microbatches: 6) { Mode = WorkloadMode.Training, Recompute = true });
        yield return ("dense-interleaved-zero3", dense with { Layers = 12 }, new StrategySpec(1, 2, 2, 2, Microbatches: 4) { Mode = WorkloadMode.Training, Schedule = PipelineSchedule.Interleaved, VirtualStages = 3, ZeroStage = 3, ScatterGather = true });
        yield return ("dense-inference", dense, new StrategySpec(1, 4, 1, 1, Microbatches: 2));
    }

    /// <summary>One line per operation with every field that a cost model, scheduler or report reads.</summary>
    internal static IEnumerable<string> OperationLines(OperatorDag dag)
    {
        for (var op = 0; op < dag.Count; op++)
        {
            var s = dag.Shape(op);
            var group = dag.Group(op) < 0 ? "-" : string.Join(",", dag.GroupMembers(dag.Group(op)).ToArray());
            yield return string.Create(CultureInfo.InvariantCulture,
                $"{op} {dag.Kind(op)} {dag.Phase(op)} g{dag.Gpu(op)} [{group}] L{dag.Layer(op)} mb{dag.Microbatch(op)} i{dag.Index(op)} s{s.Batch}x{s.M}x{s.K}x{s.N} b{dag.Bytes(op):R} c{dag.PriceClassOf(op)} <- {string.Join(",", dag.Predecessors(op).ToArray())}");
        }
    }

    internal static (int Operations, string Sha256) Fingerprint(OperatorDag dag)
    {
        var text = new StringBuilder();
        foreach (var line in OperationLines(dag)) text.Append(line).Append('\n');
        text.Append(CultureInfo.InvariantCulture, $"gpus {dag.GpuCount} bytes {dag.ElementBytes} dtype {dag.Dtype} overlap {dag.CommunicationOverlapsCompute} classes {dag.PriceClassCount}\n");
        return (dag.Count, Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString()))));
    }

    [Fact]
    public void Dags_are_identical_operation_by_operation_to_the_pre_refactor_builder()
    {
        var computed = new SortedDictionary<string, (int Operations, string Sha256)>(StringComparer.Ordinal);
        foreach (var (name, model, strategy) in Variants()) computed[name] = Fingerprint(strategy.BuildDagProductsApart(model));
        if (Environment.GetEnvironmentVariable("MOE_WRITE_DAG_FINGERPRINTS") == "1")
        {
            var json = JsonSerializer.Serialize(computed.ToDictionary(kv => kv.Key, kv => new { operations = kv.Value.Operations, sha256 = kv.Value.Sha256 }),
                new JsonSerializerOptions { WriteIndented = true });
            File.WriteAllText(FingerprintFile, json + "\n");
        }
        using var doc = JsonDocument.Parse(File.ReadAllText(FingerprintFile));
        var expected = doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => (p.Value.GetProperty("operations").GetInt32(), p.Value.GetProperty("sha256").GetString()!));
        Assert.Equal(expected.Keys.OrderBy(k => k, StringComparer.Ordinal), computed.Keys);
        foreach (var (name, fp) in computed)
            Assert.True(expected[name] == fp, $"{name}: expected {expected[name].Item1} ops {expected[name].Item2}, built {fp.Operations} ops {fp.Sha256}");
    }
}

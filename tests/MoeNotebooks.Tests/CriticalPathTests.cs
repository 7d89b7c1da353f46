using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;
using QuikGraph;
using QuikGraph.Algorithms;

namespace MoeNotebooks.Tests;

public class CriticalPathTests
{
    /// <summary>
    /// Oracle: an independent longest-path computation. The scheduler's semantics are "start = max(finish of data
    /// predecessors, finish of the previous operation on the same stream)", so the total equals the longest path
    /// in the graph of data edges plus stream-order edges. The oracle builds that graph in QuikGraph, orders it
    /// with QuikGraph's topological sort and enumerates every path by brute force on small random DAGs.
    /// </summary>
    [Fact]
    public void TotalEqualsBruteForceLongestPathOnRandomDags()
    {
        var random = new Random(20261128);
        for (var trial = 0; trial < 300; trial++)
        {
            var (dag, durations) = RandomDag(random, random.Next(1, 11), random.Next(1, 4));
            var result = Scheduler.Schedule(dag, durations);

            var graph = new AdjacencyGraph<int, Edge<int>>();
            for (var op = 0; op < dag.Count; op++) graph.AddVertex(op);
            for (var op = 0; op < dag.Count; op++)
                foreach (var p in dag.Predecessors(op)) graph.AddEdge(new Edge<int>(p, op));
            var lastOnStream = new Dictionary<(int Gpu, bool Comm), int>();
            for (var op = 0; op < dag.Count; op++)
            {
                var comm = dag.Category(op) == OpCategory.Communication;
                foreach (var g in dag.Participants(op).ToArray())
                {
                    if (lastOnStream.TryGetValue((g, comm), out var prev)) graph.AddEdge(new Edge<int>(prev, op));
                    lastOnStream[(g, comm)] = op;
                }
            }
            Assert.True(graph.IsDirectedAcyclicGraph());
            var order = graph.TopologicalSort().ToArray();
            Assert.Equal(dag.Count, order.Length);
            var best = 0.0;
            void Walk(int v, double sum)
            {
                sum += durations[v];
                best = Math.Max(best, sum);
                foreach (var e in graph.OutEdges(v)) Walk(e.Target, sum);
            }
            foreach (var v in order) Walk(v, 0);
            Assert.Equal(best, result.TotalSeconds, 9);
        }
    }

    [Fact]
    public void CriticalPathIsAChainOfEdgesWhoseDurationsSumToTheTotal()
    {
        var random = new Random(7);
        for (var trial = 0; trial < 200; trial++)
        {
            var (dag, durations) = RandomDag(random, random.Next(1, 30), random.Next(1, 5));
            var r = Scheduler.Schedule(dag, durations);
            var ops = r.CriticalOps;
            Assert.Equal(r.TotalSeconds, ops.Sum(op => durations[op]), 9);
            Assert.Equal(0, r.StartSeconds(ops[0]));
            for (var i = 1; i < ops.Count; i++)
            {
                // Each step is a data edge or the previous operation on a shared stream, with no gap.
                var a = ops[i - 1];
                var b = ops[i];
                var dataEdge = dag.Predecessors(b).Contains(a);
                var sameStream = dag.Category(a) == OpCategory.Communication == (dag.Category(b) == OpCategory.Communication)
                                 && dag.Participants(a).ToArray().Intersect(dag.Participants(b).ToArray()).Any();
                Assert.True(dataEdge || sameStream, $"{dag.Name(a)} -> {dag.Name(b)} is neither an edge nor a stream order");
                Assert.Equal(r.FinishSeconds(a), r.StartSeconds(b), 12);
            }
        }
    }

    [Theory]
    [InlineData("seed-ep16")]
    [InlineData("seed-tp8-pp2")]
    [InlineData("ep16")]
    [InlineData("tp8-pp2")]
    public void TotalLiesBetweenLongestOpAndSumOfOps(string scenario)
    {
        var e = Scenario.Load(TestPaths.Scenario(scenario)).Evaluate();
        var durations = e.Result.Durations;
        Assert.InRange(e.TotalSeconds, durations.Max(), durations.Sum());
    }

    [Theory]
    [InlineData("seed-ep16")]
    [InlineData("seed-tp8-pp2")]
    [InlineData("ep16")]
    [InlineData("tp8-pp2")]
    public void MoreTokensAreNeverFaster(string scenario)
    {
        var s = Scenario.Load(TestPaths.Scenario(scenario));
        var previous = 0.0;
        foreach (var seq in new long[] { 1000, 2000, 5000, 10000, 20000 })
        {
            var total = (s with { Model = s.Model with { SequenceLength = seq } }).Evaluate().TotalSeconds;
            Assert.True(total >= previous, $"seq {seq}: {total} < {previous}");
            previous = total;
        }
        previous = 0;
        foreach (var batch in new long[] { 16, 64, 256, 1024, 2048 })
        {
            var total = (s with { Model = s.Model with { Batch = batch } }).Evaluate().TotalSeconds;
            Assert.True(total >= previous, $"batch {batch}: {total} < {previous}");
            previous = total;
        }
    }

    [Fact]
    public void PerGpuBreakdownAddsUpToTheTotal()
    {
        foreach (var name in new[] { "seed-ep16", "seed-tp8-pp2", "ep16", "tp8-pp2" })
        {
            var r = Scenario.Load(TestPaths.Scenario(name)).Evaluate().Result;
            foreach (var g in r.PerGpu)
                Assert.Equal(r.TotalSeconds, g.ComputeBusySeconds + g.CommunicationSeconds + g.IdleSeconds, 9);
            Assert.Equal(r.TotalSeconds, r.BreakdownSeconds.Values.Sum(), 9);
            Assert.Equal(r.TotalSeconds, r.CriticalPathSecondsByCategory.Values.Sum(), 9);
        }
    }

    [Fact]
    public void CommunicationOverlapsComputeOnItsOwnStream()
    {
        // Hand-built: GPU 0 computes A (2 s) then B (3 s); a send of A's output to GPU 1 (1 s) runs while B computes.
        var b = new DagBuilder(2);
        var a = b.AddMatmul(OpKind.QProjection, 0, new(1, 1, 1), 0, []);
        b.AddMatmul(OpKind.KProjection, 0, new(1, 1, 1), 0, [a]);
        var send = b.AddSend(0, 1, 1, [a]);
        b.AddMatmul(OpKind.QProjection, 1, new(1, 1, 1), 1, [send]);
        var r = Scheduler.Schedule(b.Build(), [2, 3, 1, 1.5]);
        Assert.Equal(5, r.TotalSeconds);             // max(2 + 3, 2 + 1 + 1.5)
        Assert.Equal(1, r.PerGpu[0].OverlappedCommunicationSeconds, 12);
        Assert.Equal(0, r.PerGpu[0].CommunicationSeconds, 12);
        Assert.Equal(1, r.PerGpu[1].CommunicationSeconds, 12);   // nothing to hide it behind on GPU 1
    }

    [Fact]
    public void DependencyOnAFutureOperationIsRejected()
    {
        var b = new DagBuilder(1);
        var ex = Assert.Throws<DagException>(() => b.AddMatmul(OpKind.QProjection, 0, new(1, 1, 1), 0, [0]));
        Assert.Contains("does not exist yet", ex.Message);
    }

    internal static (OperatorDag Dag, double[] Durations) RandomDag(Random random, int count, int gpus)
    {
        var b = new DagBuilder(gpus);
        var durations = new double[count];
        for (var op = 0; op < count; op++)
        {
            var deps = Enumerable.Range(0, op).Where(_ => random.NextDouble() < 0.3).ToArray();
            if (gpus > 1 && random.NextDouble() < 0.3)
            {
                var members = Enumerable.Range(0, gpus).OrderBy(_ => random.Next()).Take(random.Next(2, gpus + 1)).ToArray();
                b.AddCommunication(OpKind.AllToAllDispatch, b.Group(members), 1, 0, deps);
            }
            else b.AddMatmul(OpKind.QProjection, random.Next(gpus), new(1, 1, 1), 0, deps);
            durations[op] = Math.Round(random.NextDouble() * 10, 3);
        }
        return (b.Build(), durations);
    }
}

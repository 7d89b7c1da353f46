using MoeNotebooks.Config;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Tests;

/// <summary>
/// Pipeline plans (issue 12): ZB-H1 and DualPipe bubbles against their papers' formulas with no communication, uneven
/// first/last stage layers. The plans are timed by a small list scheduler written here (each stage runs its items in
/// plan order, an item starts when its stage is free and its producer has finished), independent of the DAG.
/// </summary>
public class PipelinePlanTests
{
    /// <summary>Per-item unit times: forward, input-gradient B, weight-gradient W, and an overlapped F&amp;B pair.</summary>
    internal sealed record Times(double F, double B, double W, double FB);

    /// <summary>Makespan and each stage's busy time of a plan with zero-cost communication.</summary>
    internal static (double Makespan, double[] Busy) Simulate(IReadOnlyList<PipelineItem>[] plan, int chunks, Times t)
    {
        var stages = plan.Length;
        var finish = new Dictionary<(int Chunk, int Mb, int Dir, bool Backward, PipelinePart Part), double>();
        var next = new int[stages];
        var free = new double[stages];
        var busy = new double[stages];
        (int, int, int, bool, PipelinePart) Key(PipelineItem i) => (i.Chunk, i.Microbatch, i.Direction, i.Backward, i.Part);
        double? Ready(PipelineItem i)
        {
            (int, int, int, bool, PipelinePart)? dep = null;
            if (!i.Backward) { if (i.Chunk > 0) dep = (i.Chunk - 1, i.Microbatch, i.Direction, false, PipelinePart.Full); }
            else if (i.Part == PipelinePart.WeightGradient) dep = (i.Chunk, i.Microbatch, i.Direction, true, PipelinePart.InputGradient);
            else if (i.Chunk == chunks - 1) dep = (i.Chunk, i.Microbatch, i.Direction, false, PipelinePart.Full);
            else
            {
                // The next chunk's backward: whole, or its input-gradient part.
                var whole = (i.Chunk + 1, i.Microbatch, i.Direction, true, PipelinePart.Full);
                var input = (i.Chunk + 1, i.Microbatch, i.Direction, true, PipelinePart.InputGradient);
                if (finish.TryGetValue(whole, out var a)) return a;
                if (finish.TryGetValue(input, out var b)) return b;
                return null;
            }
            if (dep is null) return 0;
            return finish.TryGetValue(dep.Value, out var f) ? f : null;
        }
        double Duration(PipelineItem i) => !i.Backward ? t.F : i.Part switch
        {
            PipelinePart.InputGradient => t.B,
            PipelinePart.WeightGradient => t.W,
            _ => t.B + t.W,
        };
        var remaining = plan.Sum(p => p.Count);
        while (remaining > 0)
        {
            var progress = false;
            for (var s = 0; s < stages; s++)
            {
                while (next[s] < plan[s].Count)
                {
                    var item = plan[s][next[s]];
                    if (item.OverlapsNext)
                    {
                        var partner = plan[s][next[s] + 1];
                        if (Ready(item) is not { } r1 || Ready(partner) is not { } r2) break;
                        var start = Math.Max(free[s], Math.Max(r1, r2));
                        free[s] = start + t.FB;
                        busy[s] += t.FB;
                        finish[Key(item)] = finish[Key(partner)] = free[s];
                        next[s] += 2;
                        remaining -= 2;
                    }
                    else
                    {
                        if (Ready(item) is not { } r) break;
                        free[s] = Math.Max(free[s], r) + Duration(item);
                        busy[s] += Duration(item);
                        finish[Key(item)] = free[s];
                        next[s]++;
                        remaining--;
                    }
                    progress = true;
                }
            }
            Assert.True(progress, "plan deadlocks");
        }
        return (free.Max(), busy);
    }

    [Theory]
    [InlineData(4, 8, 1.0, 1.0, 1.0)]
    [InlineData(8, 16, 1.0, 1.2, 0.8)]
    [InlineData(4, 12, 1.0, 1.0, 0.5)]
    public void OneFOneBBubbleIsPMinusOneTimesFPlusBPlusW(int p, int m, double f, double b, double w)
    {
        // Oracle: Qi et al. 2023 ("Zero Bubble Pipeline Parallelism", Table 1/§2): the 1F1B bubble is (p - 1)(T_F + T_B + T_W)
        // on every stage. Checks the simulator on the schedule the DAG already used before ZB-H1.
        var plan = PipelinePlan.Build(p, 1, m, PipelineSchedule.OneFOneB, training: true);
        var (makespan, busy) = Simulate(plan, p, new Times(f, b, w, 0));
        Assert.All(busy, x => Assert.Equal(m * (f + b + w), x, 9));
        Assert.Equal((p - 1) * (f + b + w), makespan - m * (f + b + w), 9);
    }

    [Theory]
    [InlineData(4, 8, 1.0, 1.0, 1.0)]
    [InlineData(4, 16, 1.0, 1.0, 1.0)]
    [InlineData(8, 24, 1.0, 1.0, 1.0)]
    [InlineData(6, 12, 1.0, 1.2, 0.8)]
    [InlineData(4, 8, 1.0, 1.0, 0.5)]
    public void ZeroBubbleH1BubbleIsPMinusOneTimesFPlusBMinusW(int p, int m, double f, double b, double w)
    {
        // Oracle: Qi et al. 2023, §3.1: "the bubble size of ZB-H1 is reduced to (p - 1)(T_F + T_B - T_W)", a third of
        // 1F1B's when T_F = T_B = T_W, with the same peak activation memory as 1F1B (p microbatches on stage 0).
        var plan = PipelinePlan.Build(p, 1, m, PipelineSchedule.ZeroBubbleH1, training: true);
        Assert.All(plan, s => Assert.Equal(3 * m, s.Count));
        var (makespan, _) = Simulate(plan, p, new Times(f, b, w, 0));
        Assert.Equal((p - 1) * (f + b - w), makespan - m * (f + b + w), 9);
        var oneFOneB = PipelinePlan.Build(p, 1, m, PipelineSchedule.OneFOneB, training: true);
        for (var s = 0; s < p; s++) Assert.Equal(PipelinePlan.PeakInFlight(oneFOneB[s]), PipelinePlan.PeakInFlight(plan[s]));
    }

    [Theory]
    [InlineData(4, 8, 1.0, 1.0, 1.0, 3.0)]
    [InlineData(8, 16, 1.0, 1.0, 1.0, 3.0)]
    [InlineData(8, 32, 1.0, 1.0, 1.0, 2.5)]
    [InlineData(6, 12, 1.0, 1.0, 1.0, 3.0)]
    [InlineData(6, 20, 1.0, 1.0, 1.0, 2.0)]
    public void DualPipeBubbleIsHalfPMinusOneTimesFAndBPlusBMinusThreeW(int p, int m, double f, double b, double w, double fb)
    {
        // Oracle: DeepSeek-V3 technical report §3.2.1, Table 2: DualPipe's bubble is (PP/2 - 1)(F&B + B - 3W), B the full
        // backward (here T_B + T_W) and F&B an overlapped forward-backward pair; every rank does m forwards and m backwards.
        var plan = PipelinePlan.Build(p, 1, m, PipelineSchedule.DualPipe, training: true);
        var (makespan, busy) = Simulate(plan, p, new Times(f, b, w, fb));
        var bubble = (p / 2 - 1) * (fb + (b + w) - 3 * w);
        Assert.Equal(bubble, makespan - busy.Min(), 9);
        // Every microbatch passes every model stage once in each pass: m forwards and m backward input parts per rank.
        Assert.All(plan, s => Assert.Equal(m, s.Count(i => !i.Backward)));
        Assert.All(plan, s => Assert.Equal(m, s.Count(i => i.Backward && i.Part != PipelinePart.WeightGradient)));
        Assert.All(plan, s => Assert.Equal(s.Count(i => i.Part == PipelinePart.InputGradient), s.Count(i => i.Part == PipelinePart.WeightGradient)));
    }

    [Theory]
    [InlineData(6, 20, 1.0, 1.5, 0.7, 2.8)]
    [InlineData(8, 16, 1.0, 2.0, 0.5, 2.5)]
    public void DualPipeBubbleStaysWithinTheFormulaWhenPassesDiffer(int p, int m, double f, double b, double w, double fb)
    {
        // Oracle: the same Table 2 formula as an upper bound. With unequal F, B and W the reference order lets some
        // W passes fill idle time the formula counts (simulated 4.8 vs 5.8 for the first case), never more.
        var plan = PipelinePlan.Build(p, 1, m, PipelineSchedule.DualPipe, training: true);
        var (makespan, busy) = Simulate(plan, p, new Times(f, b, w, fb));
        Assert.InRange(makespan - busy.Min(), 0, (p / 2 - 1) * (fb + (b + w) - 3 * w) + 1e-9);
    }

    [Fact]
    public void FirstAndLastStageLayersFollowMegatron()
    {
        // Oracle: Megatron-Core's --decoder-first/last-pipeline-num-layers: those stages hold the given layers, the rest
        // is split evenly over the middle stages (hand count: 30 layers, pp 4, first 6, last 6 -> 6, 9, 9, 6).
        var split = PipelineLayers.Split(30, 4, 1, 6, 6);
        Assert.Equal([6, 9, 9, 6], split.Select(c => c.Count));
        Assert.Equal([0, 6, 15, 24], split.Select(c => c.First));
        // Interleaved: each stage's layers split evenly over its chunks (chunk c on stage c mod pp).
        // (28 layers, pp 4, vp 2, first 4, last 4: middle stages 20 / 2 = 10 each, chunks 2, 5, 5, 2 twice.)
        var vp = PipelineLayers.Split(28, 4, 2, 4, 4);
        Assert.Equal([2, 5, 5, 2, 2, 5, 5, 2], vp.Select(c => c.Count));
        Assert.Equal(28, vp.Sum(c => c.Count));
        // Without them: today's even split, earlier chunks taking the remainder.
        Assert.Equal([3, 3, 2, 2], PipelineLayers.Split(10, 4, 1, null, null).Select(c => c.Count));
        var e = Assert.Throws<ConfigException>(() => PipelineLayers.Split(30, 4, 1, 5, 6));
        Assert.Contains("decoderFirstPipelineNumLayers", e.Message);
        Assert.Contains("multiple of 2", e.Message);
    }
}

using MoeNotebooks.Config;

namespace MoeNotebooks.Derivations;

/// <summary>One unit of pipeline work: a model chunk's forward or backward for one microbatch.</summary>
public readonly record struct PipelineItem(int Chunk, int Microbatch, bool Backward);

/// <summary>
/// The order in which each pipeline stage runs its work items under GPipe, 1F1B or interleaved 1F1B.
/// The DAG builder issues items in this order per stage; the bubble then emerges from the schedule.
/// Chunk c (of pp x virtualStages) lives on stage c mod pp.
/// </summary>
public static class PipelinePlan
{
    public static IReadOnlyList<PipelineItem>[] Build(int stages, int virtualStages, int microbatches, PipelineSchedule schedule, bool training)
    {
        var plan = new IReadOnlyList<PipelineItem>[stages];
        for (var s = 0; s < stages; s++) plan[s] = ForStage(s, stages, virtualStages, microbatches, schedule, training);
        return plan;
    }

    private static List<PipelineItem> ForStage(int s, int p, int v, int m, PipelineSchedule schedule, bool training)
    {
        var total = m * v;
        // Megatron's interleaved order: groups of p microbatches walk through the local chunks in turn
        // (with one chunk per stage this is simply microbatch k).
        PipelineItem Forward(int k) => new(((k / p) % v) * p + s, (k / (p * v)) * p + k % p, false);
        PipelineItem Backward(int k) => new((v - 1 - (k / p) % v) * p + s, (k / (p * v)) * p + k % p, true);
        var items = new List<PipelineItem>(2 * total);
        if (!training || schedule == PipelineSchedule.Gpipe)
        {
            for (var k = 0; k < total; k++) items.Add(Forward(k));
            if (training) for (var k = 0; k < total; k++) items.Add(Backward(k));
            return items;
        }
        var warmup = v == 1 ? Math.Min(p - s - 1, total) : Math.Min((p - s - 1) * 2 + (v - 1) * p, total);
        for (var k = 0; k < warmup; k++) items.Add(Forward(k));
        for (var i = 0; i < total - warmup; i++)
        {
            items.Add(Forward(warmup + i));
            items.Add(Backward(i));
        }
        for (var k = total - warmup; k < total; k++) items.Add(Backward(k));
        return items;
    }

    /// <summary>Most forward items a stage holds before their backward (activations alive at once).</summary>
    public static int PeakInFlight(IReadOnlyList<PipelineItem> stageItems)
    {
        int live = 0, peak = 0;
        foreach (var item in stageItems)
        {
            live += item.Backward ? -1 : 1;
            peak = Math.Max(peak, live);
        }
        return peak;
    }
}

using MoeNotebooks.Config;

namespace MoeNotebooks.Derivations;

/// <summary>Which part of a backward an item runs.</summary>
public enum PipelinePart : byte
{
    /// <summary>A forward, or a whole backward (input and weight gradients together).</summary>
    Full,

    /// <summary>Zero-bubble B: the input gradient only (dX), on the critical path.</summary>
    InputGradient,

    /// <summary>Zero-bubble W: the weight gradient only (dW), deferred to fill bubbles.</summary>
    WeightGradient,
}

/// <summary>
/// One unit of pipeline work: a model chunk's forward or backward for one microbatch. <see cref="Part"/> splits a
/// zero-bubble backward into B and W; <see cref="Direction"/> says which end a DualPipe microbatch entered from;
/// <see cref="OverlapsNext"/> marks the forward of a DualPipe F&amp;B pair that runs overlapped with the next item.
/// </summary>
public readonly record struct PipelineItem(int Chunk, int Microbatch, bool Backward)
{
    public PipelinePart Part { get; init; }
    public int Direction { get; init; }
    public bool OverlapsNext { get; init; }

    public override string ToString() =>
        $"{(Backward ? Part switch { PipelinePart.InputGradient => "B", PipelinePart.WeightGradient => "W", _ => "BW" } : "F")}{Microbatch}" +
        $"c{Chunk}{(Direction == 1 ? "r" : "")}{(OverlapsNext ? "&" : "")}";
}

/// <summary>
/// The order in which each pipeline stage runs its work items under GPipe, 1F1B, interleaved 1F1B, ZB-H1 or DualPipe.
/// The DAG builder issues items in this order per stage; the bubble then emerges from the schedule.
/// Chunk c (of pp x virtualStages) lives on stage c mod pp, except under DualPipe (<see cref="StageOf"/>).
/// </summary>
public static class PipelinePlan
{
    public static IReadOnlyList<PipelineItem>[] Build(int stages, int virtualStages, int microbatches, PipelineSchedule schedule, bool training)
    {
        var plan = new IReadOnlyList<PipelineItem>[stages];
        for (var s = 0; s < stages; s++)
            plan[s] = !training ? ForStage(s, stages, virtualStages, microbatches, PipelineSchedule.Gpipe, false)
                : schedule switch
                {
                    PipelineSchedule.ZeroBubbleH1 => ZeroBubbleH1(s, stages, microbatches),
                    PipelineSchedule.DualPipe => DualPipe(s, stages, microbatches),
                    _ => ForStage(s, stages, virtualStages, microbatches, schedule, training),
                };
        return plan;
    }

    /// <summary>
    /// A stage's 1F1B order as Megatron-Core runs it with <c>--overlap-moe-expert-parallel-comm</c>: one extra
    /// warm-up forward ("we schedule one extra micro-batch forward step before the 1f1b stages ... to ensure the
    /// forward and backward computations are independent in all 1f1b steps", megatron/core/pipeline_parallel/schedules.py;
    /// with one stage combined_1f1b_schedule_for_no_pipelining runs F0 alone, then (F i+1, B i) pairs, then the last
    /// backward alone), then each steady-state forward merged with the next backward (the forward is marked
    /// <see cref="PipelineItem.OverlapsNext"/>), then the remaining backwards. Forwards and backwards keep their own order.
    /// </summary>
    public static IReadOnlyList<PipelineItem> MergedForwardBackward(IReadOnlyList<PipelineItem> items)
    {
        var forwards = items.Where(i => !i.Backward).ToList();
        var backwards = items.Where(i => i.Backward).ToList();
        // 1F1B's leading forwards are its warm-up plus the first steady-state forward, which now runs alone: the
        // warm-up grows by one and the steady state pairs each following forward with the next backward.
        var warmup = 0;
        while (warmup < items.Count && !items[warmup].Backward) warmup++;
        var merged = new List<PipelineItem>(items.Count);
        merged.AddRange(forwards.Take(warmup));
        int f = warmup, b = 0;
        for (; f < forwards.Count && b < backwards.Count; f++, b++)
        {
            merged.Add(forwards[f] with { OverlapsNext = true });
            merged.Add(backwards[b]);
        }
        for (; f < forwards.Count; f++) merged.Add(forwards[f]);
        for (; b < backwards.Count; b++) merged.Add(backwards[b]);
        return merged;
    }

    /// <summary>
    /// The stage (rank) that runs an item: chunk mod pp, or under DualPipe chunk (= model stage) s for direction 0
    /// and pp - 1 - s for direction 1 (each rank holds stages i and pp - 1 - i).
    /// </summary>
    public static int StageOf(PipelineItem item, int stages) =>
        item.Direction == 1 ? stages - 1 - item.Chunk % stages : item.Chunk % stages;

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

    /// <summary>
    /// ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", §3.1 and Figure 3), in the order of the authors'
    /// reference schedule (sail-sg/zero-bubble-pipeline-parallelism, ZeroBubbleH1Pipeline.steps, exact semantics):
    /// stage i runs p - i - 1 warm-up forwards, then i (F, B) pairs whose W is deferred, then (F, B, W) triples while
    /// forwards remain, then (B, W) pairs, then the i deferred W passes. In-flight activations stay those of 1F1B.
    /// </summary>
    private static List<PipelineItem> ZeroBubbleH1(int s, int p, int m)
    {
        var items = new List<PipelineItem>(3 * m);
        int f = 0, b = 0, w = 0;
        void F() => items.Add(new PipelineItem(s, f++, false));
        void B() => items.Add(new PipelineItem(s, b++, true) { Part = PipelinePart.InputGradient });
        void W() => items.Add(new PipelineItem(s, w++, true) { Part = PipelinePart.WeightGradient });
        for (var k = 0; k < p - s - 1 && f < m; k++) F();
        for (var k = 0; k < s && f < m; k++) { F(); B(); }
        while (f < m) { F(); B(); W(); }
        while (b < m) { B(); W(); }
        while (w < m) W();
        return items;
    }

    /// <summary>
    /// DualPipe (DeepSeek-V3 technical report §3.2.1, Figure 5; the order of deepseek-ai/DualPipe's DualPipe.step):
    /// half the microbatches enter at rank 0 (direction 0, model stage s on rank s), half at rank pp - 1
    /// (direction 1, stage s on rank pp - 1 - s). Per rank, with h = min(rank, pp - 1 - rank) and "phase 0" the
    /// direction the rank's first-half/second-half position starts with: (1) 2(pp/2 - h - 1) forwards of phase 0;
    /// (2) h + 1 pairs F0 F1; (3) pp/2 - h - 1 times B1 (input part) W F1; (4) m/2 - pp + h + 1 times the overlapped
    /// pairs F0&amp;B1 and F1&amp;B0 (the middle ranks run their first pair unoverlapped); (5) pp/2 - h - 1 times B1 then
    /// F1&amp;B0; (6) h + 1 times B1 B0, switching to input-only backwards halfway; (7) pp/2 - h - 1 times W B0 (input part);
    /// (8) the remaining W passes. W passes run in the order their input parts were deferred.
    /// </summary>
    private static List<PipelineItem> DualPipe(int rank, int p, int m)
    {
        var items = new List<PipelineItem>(4 * m);
        var halfRanks = p / 2;
        var h = Math.Min(rank, p - 1 - rank);
        var secondHalf = rank >= halfRanks ? 1 : 0;
        var middle = h == halfRanks - 1;
        var halfChunks = m / 2;
        var forwards = new int[2];
        var backwards = new int[2];
        var deferred = new Queue<PipelineItem>();
        int Direction(int phase) => phase ^ secondHalf;
        int Chunk(int direction) => direction == 0 ? rank : p - 1 - rank;
        PipelineItem Forward(int phase, bool overlapsNext = false)
        {
            var d = Direction(phase);
            return new PipelineItem(Chunk(d), d * halfChunks + forwards[d]++, false) { Direction = d, OverlapsNext = overlapsNext };
        }
        void F(int phase) => items.Add(Forward(phase));
        void B(int phase, bool zeroBubble)
        {
            var d = Direction(phase);
            var mb = d * halfChunks + backwards[d]++;
            if (!zeroBubble)
            {
                items.Add(new PipelineItem(Chunk(d), mb, true) { Direction = d });
                return;
            }
            items.Add(new PipelineItem(Chunk(d), mb, true) { Direction = d, Part = PipelinePart.InputGradient });
            deferred.Enqueue(new PipelineItem(Chunk(d), mb, true) { Direction = d, Part = PipelinePart.WeightGradient });
        }
        void W() => items.Add(deferred.Dequeue());
        void FB(int forwardPhase, int backwardPhase)
        {
            items.Add(Forward(forwardPhase, overlapsNext: true));
            B(backwardPhase, false);
        }

        for (var i = 0; i < (halfRanks - h - 1) * 2; i++) F(0);
        for (var i = 0; i < h + 1; i++) { F(0); F(1); }
        for (var i = 0; i < halfRanks - h - 1; i++) { B(1, true); W(); F(1); }
        for (var i = 0; i < halfChunks - p + h + 1; i++)
        {
            if (i == 0 && middle) { F(0); B(1, false); }
            else FB(0, 1);
            FB(1, 0);
        }
        for (var i = 0; i < halfRanks - h - 1; i++) { B(1, false); FB(1, 0); }
        var zb = false;
        for (var i = 0; i < h + 1; i++)
        {
            if (i == (h + 1) / 2 && h % 2 == 1) zb = true;
            B(1, zb);
            if (i == (h + 1) / 2 && h % 2 == 0) zb = true;
            B(0, zb);
        }
        for (var i = 0; i < halfRanks - h - 1; i++) { W(); B(0, true); }
        while (deferred.Count > 0) W();
        return items;
    }

    /// <summary>
    /// Most forward items a stage holds before their backward (activations alive at once). A zero-bubble W pass
    /// does not count: Qi et al. (§3.1) keep ZB-H1's peak activation memory that of 1F1B.
    /// </summary>
    public static int PeakInFlight(IReadOnlyList<PipelineItem> stageItems)
    {
        int live = 0, peak = 0;
        foreach (var item in stageItems)
        {
            if (item.Part == PipelinePart.WeightGradient) continue;
            live += item.Backward ? -1 : 1;
            peak = Math.Max(peak, live);
        }
        return peak;
    }
}

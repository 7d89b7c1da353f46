using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// A lower bound on a candidate's step time from a three-microbatch DAG, so that a search can skip candidates that
/// cannot reach its top k without building them whole (<see cref="StrategySearch"/>).
/// <para>The argument. <see cref="Scheduler"/> runs every GPU's operations on two streams, compute and communication
/// (collectives take every member's communication stream; without overlap they and the sends also take the compute
/// streams), one operation at a time per stream, each no shorter than its priced duration (link contention and
/// SM-taking communication only stretch durations), never before its predecessors are done, each stream in id order.
/// So for any stream S the step lasts at least max(head_S, I_S) + W_S + max(tail_S, U_S): I_S and U_S, the priced
/// seconds of the update-phase operations (gradient reset; gradient synchronisation, optimizer) before S's first other
/// operation x_first and after its last one x_last; W_S, the priced seconds of everything between (the stream is busy at
/// least that long); head_S, the longest dependency path ending at x_first (x_first runs first and cannot start
/// earlier), or the shortest such path over S's operations where x_first is not the first microbatch's; tail_S, the
/// longest path after x_last (it runs last), or the shortest over S's operations where x_last is not the last
/// microbatch's. On the last stage of a 1F1B pipeline head and tail are the pipeline's fill and drain. The
/// paths are taken through operations of the operation's own microbatch only (a subset of the edges, so still a lower
/// bound), which makes them the same in a DAG of m microbatches as in one of three: the builder emits microbatch j's
/// operations and their edges among themselves alike for every middle microbatch (0 &lt; j &lt; m - 1); only the first
/// (the FP8 weight casts, the gradient reset) and the last (gradient synchronisation triggered after it) differ. With the
/// three-microbatch DAG's microbatches 0, 1 and 2 standing for the first, every middle one and the last,
/// W_S(m) = W_S(0) + (m - 2) W_S(1) + W_S(2); x_first and x_last, where they are the first and the last microbatch's,
/// are the same operations with the same paths (streams keep id order, the first and last items open and close each
/// stage's plan), and the minima are over the same operations. (Under
/// --overlap-param-gather only the first microbatch's forward gathers, which the built first microbatch holds.)</para>
/// <para>Where that likeness is not what the builder does, no bound is given (0): fewer than four microbatches (nothing to
/// gain), zero-bubble W deferral and DualPipe (a microbatch's weight gradients move with the schedule), the MoE
/// all-to-all overlap (operations of two microbatches merged in pairs), ZeRO-3 / FSDP parameter gathers (shared by the
/// microbatches of a layer), interleaved virtual stages over layers that differ (see below). The search checks the bound against the evaluated totals in its tests (bound &lt;= total
/// over random scenarios; the pruned search's best equal the exhaustive search's).</para>
/// <para>Interleaved virtual stages (v chunks per stage, <see cref="PipelineSchedule.Interleaved"/>). A three-microbatch
/// interleaved plan is not the run's (Megatron interleaves at least PP microbatches; on deeper pipelines such a plan
/// deadlocks), so the bound is taken from the same candidate run as plain 1F1B (v = 1), where every layer of the model is
/// alike (<see cref="LayersAlike"/>) and the layers divide evenly over PP x v chunks. Then each stage holds the same L / PP
/// layers either way (v chunks of L / (PP v)), with the embedding on the first stage and the output layer on the last,
/// and interleaving only adds operations (a send per chunk boundary): every stream's work W_S is at least the plain
/// run's. A stage's first operation waits at least for the first microbatch's first chunk on every earlier stage, whose
/// layers are 1/v of that stage's, and its sends: the plain run's fill path scaled by 1/v is no longer (each of its
/// terms is a layer's or a send's, scaled down), and the drain likewise. The update phase (gradient reset, gradient
/// synchronisation, optimizer), which interleaving splits per chunk, is left out (zero seconds), as are the spans inside
/// items (a plain item holds v chunks whose boundary is no dependency when interleaved). So the bound is
/// max_S (head_S / v + W_S + tail_S / v) over the plain three-microbatch DAG, with update operations at zero. Checked
/// against the whole interleaved DAG over random scenarios (SearchBoundInterleavedPropertyTests).</para>
/// </summary>
public static class SearchBound
{
    /// <summary>Microbatches built for the bound: the first, one middle, the last.</summary>
    public const int BuiltMicrobatches = 3;

    /// <summary>Why no bound is given for this candidate (null: a bound is given).</summary>
    public static string? WhyNot(ModelSpec model, StrategySpec st)
    {
        if (st.Microbatches <= BuiltMicrobatches) return "nothing to gain: the run has no more microbatches than the bound builds";
        if (st.Schedule is PipelineSchedule.ZeroBubbleH1 or PipelineSchedule.DualPipe) return "weight gradients move with the schedule";
        if (st.MoeAllToAllOverlap != MoeAllToAllOverlap.None) return "operations of two microbatches are merged in pairs";
        if (st.ZeroStage >= 3) return "parameter gathers are shared by the microbatches of a layer";
        // An interleaved plan of three microbatches is not the run's (Megatron's interleaving needs at least PP microbatches):
        // bounded through the plain 1F1B run where that is admissible (class summary).
        if (st.VirtualStages > 1 && InterleavedWhyNot(model, st) is { } why) return why;
        return null;
    }

    /// <summary>
    /// Whether every transformer layer of the model is built alike: no dense first layers in an MoE model, no hybrid or
    /// attention-kind pattern, no MTP depths. (Routing and the precision recipe are the same for every layer.)
    /// </summary>
    public static bool LayersAlike(ModelSpec model) =>
        !model.IsHybrid && (model.IsDense || model.DenseLayers == 0) && model.MtpLayers == 0
        && (model.AttentionPattern is null || model.AttentionPattern.Distinct().Count() <= 1);

    private static string? InterleavedWhyNot(ModelSpec model, StrategySpec st)
    {
        if (!LayersAlike(model))
            return "interleaved virtual stages over layers that differ (dense first layers, a layer pattern or MTP depths): the plain 1F1B plan's stages hold other layers";
        if (st.DecoderFirstPipelineNumLayers is not null || st.DecoderLastPipelineNumLayers is not null || model.Layers % (st.PP * st.VirtualStages) != 0)
            return "interleaved virtual stages with uneven chunks: the plain 1F1B plan's stages hold other layers";
        return null;
    }

    /// <summary>The candidate as plain 1F1B (one chunk per stage), whose three-microbatch DAG bounds an interleaved candidate.</summary>
    private static StrategySpec Plain(StrategySpec st) =>
        st.VirtualStages > 1 ? st with { VirtualStages = 1, Schedule = PipelineSchedule.OneFOneB } : st;

    /// <summary>Operations the bound builds (estimated), 0 when none is given.</summary>
    public static double EstimateOperations(Scenario candidate, Derivations.DagFolding folding) =>
        WhyNot(candidate.Model, candidate.Strategy) is null
            ? Derivations.DagFactory.EstimateOperations(candidate.Model, Plain(candidate.Strategy) with { Microbatches = BuiltMicrobatches }, folding)
            : 0;

    /// <summary>
    /// The lower bound in seconds on <paramref name="candidate"/>'s step under <paramref name="cost"/> (the candidate's own
    /// cost model); 0 where <see cref="WhyNot"/> gives a reason.
    /// </summary>
    public static double LowerBoundSeconds(Scenario candidate, CostModel cost)
    {
        var st = candidate.Strategy;
        if (WhyNot(candidate.Model, st) is not null) return 0;
        if (st.VirtualStages > 1)
        {
            // Interleaved: the plain 1F1B run's three microbatches, update operations at zero, fill and drain scaled by 1 / v.
            var plain = candidate with { Strategy = Plain(st) };
            var (plainDag, _) = MicrobatchPeriodicity.BuildPart(plain, cost, Derivations.DagFolding.Symmetric, BuiltMicrobatches);
            var durations = cost.Price(plainDag);
            for (var op = 0; op < plainDag.Count; op++)
                if (plainDag.Phase(op) == OpPhase.Update) durations[op] = 0;
            return LowerBoundSeconds(plainDag, durations, st.Microbatches, items: null, fillDrainScale: 1.0 / st.VirtualStages);
        }
        // Three microbatches of the candidate's own size (the plan's count; the model's batch is not re-derived).
        var (dag, items) = MicrobatchPeriodicity.BuildPart(candidate, cost, Derivations.DagFolding.Symmetric, BuiltMicrobatches);
        return LowerBoundSeconds(dag, cost.Price(dag), st.Microbatches, items?.Select(i => (i.First, i.End)).ToArray());
    }

    /// <summary>
    /// The bound on a run of <paramref name="microbatches"/> microbatches from a DAG of <see cref="BuiltMicrobatches"/>
    /// (microbatch 1 stands for every middle one) with its priced <paramref name="durations"/>.
    /// <para><paramref name="items"/>: the id ranges [First, End) of the pipeline items (one stage's forward or backward of
    /// one microbatch, emitted as one contiguous run of operations), when the builder emitted them so. Inside an item a
    /// stream's next operation b after a cannot start before a path from a reaches it: where b waits on a directly, or
    /// through one operation p that waits on a (a GEMM, the tensor-parallel all-reduce p, the next GEMM), the stream
    /// spends at least d(a) + d(p) from a's start to b's start instead of d(a). Streams run in id order, so these spans
    /// add up along the stream; an item's operations and edges are the same for every middle microbatch, so the sums
    /// extrapolate as the work does.</para>
    /// </summary>
    /// <param name="fillDrainScale">Factor on each stream's head and tail paths (1; 1 / v for an interleaved candidate bounded by its plain run).</param>
    public static double LowerBoundSeconds(OperatorDag dag, double[] durations, int microbatches, IReadOnlyList<(int First, int End)>? items = null, double fillDrainScale = 1)
    {
        if (microbatches < BuiltMicrobatches) throw new ArgumentOutOfRangeException(nameof(microbatches), microbatches, $"the bound stands for at least {BuiltMicrobatches} microbatches");
        var n = dag.Count;
        // Longest same-microbatch path ending at each operation's start (ids are topological: predecessors come first).
        var before = new double[n];
        for (var op = 0; op < n; op++)
        {
            var mb = dag.Microbatch(op);
            var best = 0.0;
            foreach (var pred in dag.Predecessors(op))
                if (dag.Microbatch(pred) == mb) best = Math.Max(best, before[pred] + durations[pred]);
            before[op] = best;
        }
        // Longest same-microbatch path after each operation's end, in reverse id order.
        var after = new double[n];
        for (var op = n - 1; op >= 0; op--)
        {
            var mb = dag.Microbatch(op);
            var tail = after[op] + durations[op];
            foreach (var pred in dag.Predecessors(op))
                if (dag.Microbatch(pred) == mb) after[pred] = Math.Max(after[pred], tail);
        }
        // Per GPU two streams (Scheduler.Run): compute (index g) and communication (index gpus + g).
        var gpus = dag.GpuCount;
        var blocking = !dag.CommunicationOverlapsCompute;
        var work = new double[2 * gpus];
        var head = new double[2 * gpus];
        var end = new double[2 * gpus];
        Array.Fill(head, double.PositiveInfinity);
        Array.Fill(end, double.PositiveInfinity);
        // The item each operation belongs to (-1: none), and each stream's previous operation.
        var itemOf = new int[n];
        Array.Fill(itemOf, -1);
        if (items is not null)
            for (var i = 0; i < items.Count; i++)
                for (var op = items[i].First; op < items[i].End; op++) itemOf[op] = i;
        var previous = new int[2 * gpus];
        Array.Fill(previous, -1);
        double Weight(int op) => dag.Microbatch(op) == 1 ? microbatches - 2 : 1;
        // Least seconds from a's start to b's start along a path a -> b or a -> p -> b (0 when there is none).
        double Reach(int a, int b)
        {
            var best = 0.0;
            foreach (var p in dag.Predecessors(b))
            {
                if (p == a) best = Math.Max(best, durations[a]);
                else if (p > a)
                    foreach (var q in dag.Predecessors(p))
                        if (q == a) { best = Math.Max(best, durations[a] + durations[p]); break; }
            }
            return best;
        }
        // The streams each operation takes, in id order (each stream runs its operations in that order).
        void ForStreams(int op, Action<int> visit)
        {
            if (dag.Group(op) < 0) visit(dag.Gpu(op));
            // A send goes over its own link; without overlap it blocks its sender's compute stream.
            else if (dag.Kind(op).IsPointToPoint()) { if (blocking) visit(dag.Gpu(op)); }
            // A collective takes every member's communication stream, and without overlap their compute streams too.
            else
                foreach (var g in dag.Streams(op))
                {
                    visit(gpus + g);
                    if (blocking) visit(g);
                }
        }
        // First pass: each stream's first and last operation outside the update phase (gradient reset, gradient
        // synchronisation, optimizer), x_first and x_last. Update operations before x_first take the stream before it
        // (init), those after x_last after it (tail); x_first starts no earlier than its own longest path, and the run
        // lasts at least x_last's longest path beyond its end. Where x_first is the first microbatch's and x_last the
        // last's, those paths are the same in the run of m microbatches as here (the builder emits the first and the last
        // microbatch alike for every m; streams keep id order), else the minima over the stream's operations stand in.
        var firstX = new int[2 * gpus];
        var lastX = new int[2 * gpus];
        Array.Fill(firstX, -1);
        Array.Fill(lastX, -1);
        for (var op = 0; op < n; op++)
        {
            if (dag.Phase(op) == OpPhase.Update) continue;
            var x = op;
            ForStreams(op, stream =>
            {
                if (firstX[stream] < 0) firstX[stream] = x;
                lastX[stream] = x;
            });
        }
        var initWork = new double[2 * gpus];
        var tailWork = new double[2 * gpus];
        for (var op = 0; op < n; op++)
        {
            var x = op;
            var update = dag.Phase(op) == OpPhase.Update;
            ForStreams(op, stream =>
            {
                if (update && (firstX[stream] < 0 || x < firstX[stream])) { initWork[stream] += durations[x]; return; }   // emitted once in every run
                if (update && x > lastX[stream]) { tailWork[stream] += durations[x]; return; }
                work[stream] += Weight(x) * durations[x];
                if (!update)
                {
                    head[stream] = Math.Min(head[stream], before[x]);
                    end[stream] = Math.Min(end[stream], after[x]);
                }
                var a = previous[stream];
                if (a >= 0 && itemOf[a] >= 0 && itemOf[a] == itemOf[x])
                    work[stream] += Weight(a) * Math.Max(0, Reach(a, x) - durations[a]);
                previous[stream] = x;
            });
        }
        var bound = 0.0;
        var last = BuiltMicrobatches - 1;
        for (var stream = 0; stream < 2 * gpus; stream++)
        {
            if (firstX[stream] < 0)
            {
                bound = Math.Max(bound, initWork[stream] + tailWork[stream] + work[stream]);
                continue;
            }
            var h = dag.Microbatch(firstX[stream]) == 0 ? Math.Max(head[stream], before[firstX[stream]]) : head[stream];
            var t = dag.Microbatch(lastX[stream]) == last ? Math.Max(end[stream], after[lastX[stream]]) : end[stream];
            bound = Math.Max(bound, Math.Max(fillDrainScale * h, initWork[stream]) + work[stream] + Math.Max(fillDrainScale * t, tailWork[stream]));
        }
        return bound;
    }
}

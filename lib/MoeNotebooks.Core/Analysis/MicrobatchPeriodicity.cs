using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Analysis;

/// <summary>
/// How a run was extrapolated over identical microbatches (<see cref="MicrobatchPeriodicity"/>).
/// </summary>
/// <param name="Microbatches">Microbatches of the whole run (the strategy's).</param>
/// <param name="BuiltMicrobatches">Microbatches in the built DAG that <see cref="CriticalPathResult.Dag"/> holds.</param>
/// <param name="Period">Microbatches per period c: the schedule repeats every c microbatches, shifted by <see cref="ShiftSeconds"/>.</param>
/// <param name="ShiftSeconds">Seconds the schedule moves per period (lambda x c, lambda the max-plus eigenvalue).</param>
/// <param name="TransientPeriods">Steady-state periods before the repetition starts (k0).</param>
/// <param name="Operations">Operations of the whole run's DAG (every GPU, every microbatch), of which none beyond the built ones were built.</param>
/// <param name="OperationsByKind">The whole run's operations by kind.</param>
public sealed record MicrobatchExtrapolation(
    int Microbatches, int BuiltMicrobatches, int Period, double ShiftSeconds, int TransientPeriods, long Operations,
    IReadOnlyDictionary<OpKind, long> OperationsByKind)
{
    /// <summary>The whole run's critical-path formula, flat (count x term), extrapolated like the totals.</summary>
    public RuntimeFormula? Formula { get; init; }

    /// <summary>The distinct collectives with their counts extrapolated (counts of built operations, as for a folded DAG).</summary>
    public IReadOnlyList<CollectiveUse>? Collectives { get; init; }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Microbatches} microbatches extrapolated from {BuiltMicrobatches} built (period {Period}, +{ShiftSeconds:G6} s per period after {TransientPeriods})");
}

/// <summary>
/// Exact extrapolation of a pipeline over identical microbatches (max-plus periodicity).
/// <para><b>Why it is exact.</b> The scheduler computes, in id order, <c>start(x) = max(finish of x's data predecessors,
/// finish of the previous operation on each stream x needs)</c> and <c>finish(x) = start(x) + d(x)</c>: a max-plus linear
/// recursion. Number each stage's 1F1B steady state in periods (period i = the stage's pair F(w_s + i), B(i), w_s its
/// warm-up count; forward-only runs: period i = F(i)); σ maps every operation of an item of microbatch k to the same
/// operation of microbatch k + c. When microbatches are identical (same shapes and bytes, hence the same durations,
/// and the same dependency and stream pattern: σ(pred(x)) = pred(σx)), the recursion is the same for every period, and
/// max-plus maps are homogeneous: adding Δ to every input adds Δ to every output. So once the state entering a period
/// (every finish time and stream-free time the later periods read) repeats up to a constant shift Δ after c periods,
/// it repeats forever (by induction over the periods), which is the cyclicity theorem of max-plus algebra (Cohen,
/// Dubois, Quadrat and Viot 1985; Baccelli, Cohen, Olsder and Quadrat, "Synchronization and Linearity", 1992, Thm 3.109)
/// observed rather than assumed. The cool-down, gradient synchronisation and optimizer read only operations of the
/// last periods, so with n more periods they are the same operations shifted by nΔ: the total is
/// <c>T(m) = T(m1) + n Δ</c>. Critical-path seconds by category follow the same recursion (a critical predecessor is
/// chosen by comparing times, which shift together), so the path's category sums grow by a constant vector per
/// period; per-GPU busy, exposed-communication and idle times are measures of a timeline that is Δ-periodic between
/// the transient and the tail, so they grow by a constant per period too. Every quantity is therefore affine in n,
/// and two built DAGs (m1 and m1 + c microbatches) give it exactly: <c>R(m) = R(m1) + n (R(m1 + c) - R(m1))</c>.</para>
/// <para><b>What is checked, not assumed</b> (on the built DAGs; any failure builds the whole DAG instead): the strategy
/// uses only features this argument was proven and tested for (<see cref="WhyNot"/>); σ-consistency of every operation of the verified periods
/// (kind, phase, GPU, group, layer, index, price class, data predecessors, stream predecessors, critical predecessor,
/// and with link contention the previous operation on every link it occupies: the contention rule is built of max, min
/// and + on times, so it is homogeneous too, and a link's state is carried in id order like a stream's);
/// the time shift Δ and the category-vector shift are the same for every operation of at least two consecutive
/// periods; every predecessor of a verified period and of the tail lies in the verified periods or the tail; the
/// last operation is in the tail and strictly later than everything before it; the tail of the bigger built DAG is the
/// σ-image of the smaller one's; and on every GPU the transient ends a period before the tail starts. Floating point:
/// shifts agree to a relative 1e-12 (the whole DAG itself rounds at that level); the property test
/// (FoldingPropertyTests) compares against the whole DAG.</para>
/// </summary>
public static class MicrobatchPeriodicity
{
    /// <summary>Fewest full steady periods the smaller built DAG holds beyond the transient; grown while no repetition is found.</summary>

    /// <summary>
    /// Operation <paramref name="op"/> of DAG <paramref name="from"/> as it stands in DAG <paramref name="to"/>, in the item
    /// <paramref name="shift"/> microbatches later (same replica, stage, chunk and pass; same offset inside the item);
    /// -1 when that item is not built or has another size.
    /// </summary>
    private static int Counterpart(Built from, Built to, int op, int shift)
    {
        var i = from.ItemOf[op];
        if (i < 0) return -1;
        var it = from.Items[i];
        var j = to.ItemIndex.Find(it.Replica, it.Stage, it.Item.Chunk, it.Item.Backward, it.Item.Microbatch + shift);
        if (j < 0) return -1;
        var target = to.Items[j];
        return target.End - target.First == it.End - it.First ? target.First + (op - it.First) : -1;
    }
    /// <summary>Every operation of <paramref name="from"/> as it stands in <paramref name="to"/>, <paramref name="shift"/> microbatches later (<see cref="Counterpart"/>).</summary>
    private static int[] Images(Built from, Built to, int shift)
    {
        var images = new int[from.Dag.Count];
        for (var op = 0; op < images.Length; op++) images[op] = Counterpart(from, to, op, shift);
        return images;
    }

    private static readonly int[] SteadyPeriodsTried = [3, 6, 12, 24, 48];

    /// <summary>Periods c tried (microbatches per repetition).</summary>
    private const int MaxPeriod = 4;

    /// <summary>
    /// Why a strategy cannot be extrapolated over microbatches (null when it can be tried): only the layouts and options
    /// the exactness argument and the property test cover. Any other field with a non-default value (a feature added
    /// later, e.g. context parallelism, expert-tensor parallelism, zero-bubble or DualPipe schedules, all-to-all overlap,
    /// parameter-gather overlap) refuses, so that new features stay correct until they are proven here.
    /// </summary>
    public static string? WhyNot(Scenario scenario)
    {
        var st = scenario.Strategy;
        if (st.Derivation != Derivation.Corrected) return "the seed derivation is built whole";
        if (st.Mode == WorkloadMode.Training && st.Schedule != PipelineSchedule.OneFOneB) return $"schedule {st.Schedule} is not proven periodic here (1F1B only)";
        if (st.VirtualStages != 1) return "interleaved virtual stages are not proven periodic here";
        // Every field this argument covers reset to its default: what remains must be the default strategy, so any
        // other field in use (today's or a later one) refuses.
        var known = st with
        {
            EP = 1, TP = 1, PP = 1, DP = 1, Microbatches = 1, Mode = WorkloadMode.Inference, Schedule = PipelineSchedule.OneFOneB,
            Recompute = false, RecomputeModules = RecomputeModules.None, ZeroStage = 0, OverlapCommunication = true, AllToAllChunks = 1, Attention = AttentionPlacement.DataParallel,
            ScatterGather = false, AttentionKernel = AttentionKernel.Fused, RankOrder = "tp-ep-pp-dp", SequenceParallel = false,
            UseDistributedOptimizer = false, OverlapGradReduce = true, DecoderFirstPipelineNumLayers = null, DecoderLastPipelineNumLayers = null,
        };
        if (known != new StrategySpec(1, 1, 1, 1)) return "the strategy uses a feature not proven periodic here";
        return null;
    }

    /// <summary>
    /// Schedules the scenario by building fewer microbatches and extrapolating exactly (see the type's summary); null
    /// when the strategy, the cost model or the built DAG does not allow it (the caller builds the whole DAG).
    /// </summary>
    public static CriticalPathResult? TryEvaluate(Scenario scenario, CostModel cost, DagFolding folding)
    {
        LastRefusal = WhyNot(scenario);
        if (LastRefusal is not null) return null;
        var st = scenario.Strategy;
        var m = st.Microbatches;
        var training = st.Mode == WorkloadMode.Training;
        var p = st.PP;
        // Never spend more on attempts than building the run whole would cost (or than the size guard allows).
        var budget = Math.Min(DagFactory.EstimateOperations(scenario.Model, st, folding),
            Math.Min(DagFactory.MaxOperations, DagFactory.MaxEstimatedSeconds / DagFactory.SecondsPerEstimatedOperation));
        Built? last = null;
        var lastMicrobatches = 0;
        var attempts = new Budget(budget);
        foreach (var steady in SteadyPeriodsTried)
        {
            // Full steady periods of a plan of m microbatches: 0 .. m - p (training); forward only 0 .. m - 2 (its last
            // microbatch is the tail). B holds `steady` full periods plus one; its count is congruent to m modulo
            // 12, so that m - (B - c) is a multiple of every period c tried (1 .. 4).
            // First period 1 with the fewest microbatches, then periods 2-4 on one DAG whose count suits them all.
            foreach (var (modulus, periods) in new[] { (1, 1), (12, MaxPeriod) })
            {
                var mB = (training ? p + steady : steady + 2) + 1;
                mB += ((m - mB) % modulus + modulus) % modulus;
                if (mB >= m) return Refuse("nothing to gain: the whole run is as small as the parts to build");
                if (mB != lastMicrobatches)
                {
                    // An extrapolation builds two DAGs (mB and mB - c microbatches): refuse before building the first when
                    // the pair cannot fit the budget, rather than after (a deep pipeline's built part is itself large).
                    var estB = DagFactory.EstimateOperations(scenario.Model, st with { Microbatches = mB }, folding);
                    var estA = DagFactory.EstimateOperations(scenario.Model, st with { Microbatches = mB - periods }, folding);
                    if (!attempts.Fits(estB + estA))
                        return Refuse(string.Create(CultureInfo.InvariantCulture,
                            $"the two parts to build ({mB} and {mB - periods} of {m} microbatches, about {estB + estA:E2} operations) cost more than building the run whole or than the size guard allows ({budget:E2})"));
                    attempts.Spend(estB);
                }
                try
                {
                    var b = mB == lastMicrobatches ? last : BuildAndSchedule(scenario, cost, folding, mB);
                    if (b is null) return null;
                    (last, lastMicrobatches) = (b, mB);
                    for (var c = modulus == 1 ? 1 : 2; c <= periods; c++)
                        if (TryWith(scenario, cost, folding, b, mB, c, attempts) is { } result) return result;
                }
                // A built part over the size guard: the whole DAG is bigger still, and the caller's guard says so.
                // (Typically: the cost model does not price the folded ranks alike, so the part is rebuilt unfolded.)
                catch (ConfigException e) { return Refuse($"a built part ({mB} microbatches) was refused: {e.Requirement}"); }
            }
        }
        return null;
    }

    /// <summary>Operations the attempts may still build (estimated).</summary>
    private sealed class Budget(double limit)
    {
        private double _spent;

        public bool Spend(double operations)
        {
            _spent += operations;
            return _spent <= limit;
        }

        /// <summary>Whether that many more operations stay within the budget (spends nothing).</summary>
        public bool Fits(double operations) => _spent + operations <= limit;
    }

    /// <summary>Estimated operations built by an extrapolation (both built DAGs), for the size guard; null when it is not tried.</summary>
    public static double? EstimateOperations(Scenario scenario, DagFolding folding)
    {
        if (WhyNot(scenario) is not null) return null;
        var st = scenario.Strategy;
        var m1 = st.Mode == WorkloadMode.Training ? st.PP + SteadyPeriodsTried[0] : SteadyPeriodsTried[0] + 2;
        if (m1 + 1 > st.Microbatches) return null;
        return DagFactory.EstimateOperations(scenario.Model, st with { Microbatches = m1 }, folding)
            + DagFactory.EstimateOperations(scenario.Model, st with { Microbatches = m1 + 1 }, folding);
    }

    /// <summary>
    /// Whether an evaluation with a core to spare should build the run whole beside the extrapolation's attempts: when
    /// the whole DAG passes the size guard and costs at most twice the first attempt's two parts (estimated), so that a
    /// run whose repetition the parts do not show (DeepSeek-V3 at PP16: a transient that moves one stage down per period
    /// outlasts them) is not built after its refused attempts but beside them. Not for deep pipelines whose whole run is
    /// many times the parts (Megatron-1T: 512 microbatches against 68 + 67).
    /// </summary>
    public static bool BuildWholeAlongside(Scenario scenario)
    {
        if (EstimateOperations(scenario, DagFolding.Symmetric) is not { } parts) return false;
        var whole = DagFactory.EstimateOperations(scenario.Model, scenario.Strategy, DagFolding.Symmetric);
        return whole <= DagFactory.MaxOperations && whole * DagFactory.SecondsPerEstimatedOperation <= DagFactory.MaxEstimatedSeconds && whole <= 2 * parts;
    }

    /// <summary>Why the last attempt on this thread did not extrapolate (diagnostics for tests and docs).</summary>
    [ThreadStatic] public static string? LastRefusal;

    private static CriticalPathResult? Refuse(string why)
    {
        LastRefusal = why;
        if (Environment.GetEnvironmentVariable("MOE_DEBUG_PERIODIC") is not null) Console.Error.WriteLine("periodic: " + why);
        return null;
    }

    private static void Dbg(string what)
    {
        if (Environment.GetEnvironmentVariable("MOE_DEBUG_PERIODIC") is not null) Console.Error.WriteLine("periodic:   " + what);
    }

    /// <summary>
    /// The items of a built DAG by (replica, stage, chunk, pass, microbatch), a dense table over the built ranges (the
    /// items fill them: every replica, stage and chunk runs every microbatch's forward and backward). Not a dictionary
    /// keyed by a value tuple: that framework generic is compiled just in time in every process, and a short run spends
    /// most of its life in its unoptimised first-tier code (see <see cref="Dag.PriceClassIndex"/>).
    /// </summary>
    internal sealed class ItemTable
    {
        private readonly int _replicas, _stages, _chunks, _microbatches;
        private readonly int[] _slots;   // item index, -1: none

        public ItemTable(IReadOnlyList<ItemSpan> items)
        {
            int replicas = 0, stages = 0, chunks = 0, microbatches = 0;
            foreach (var it in items)
            {
                if (it.Replica < 0 || it.Stage < 0 || it.Item.Chunk < 0 || it.Item.Microbatch < 0) throw new ArgumentException("item coordinates must be >= 0");
                replicas = Math.Max(replicas, it.Replica + 1);
                stages = Math.Max(stages, it.Stage + 1);
                chunks = Math.Max(chunks, it.Item.Chunk + 1);
                microbatches = Math.Max(microbatches, it.Item.Microbatch + 1);
            }
            (_replicas, _stages, _chunks, _microbatches) = (replicas, stages, chunks, microbatches);
            _slots = new int[checked(replicas * stages * chunks * 2 * microbatches)];
            Array.Fill(_slots, -1);
        }

        private int Slot(int replica, int stage, int chunk, bool backward, int microbatch) =>
            (((replica * _stages + stage) * _chunks + chunk) * 2 + (backward ? 1 : 0)) * _microbatches + microbatch;

        public void Set(int replica, int stage, int chunk, bool backward, int microbatch, int item) => _slots[Slot(replica, stage, chunk, backward, microbatch)] = item;

        /// <summary>The item's index, -1 when it is not built (coordinates outside the built ranges included).</summary>
        public int Find(int replica, int stage, int chunk, bool backward, int microbatch) =>
            (uint)microbatch >= (uint)_microbatches || (uint)replica >= (uint)_replicas || (uint)stage >= (uint)_stages || (uint)chunk >= (uint)_chunks
                ? -1 : _slots[Slot(replica, stage, chunk, backward, microbatch)];
    }

    private sealed class Built
    {
        public required OperatorDag Dag;
        public required IReadOnlyList<ItemSpan> Items;
        public required CriticalPathResult Result;
        public required int[] CritPred;
        public required LinkFootprints? Links;
        public required LinkFootprints? Inert;   // the links, when no two operations overlap on one (then Links is null) or only tail operations contend
        public required bool[]? TailLinks;       // contention only among tail operations: the operations whose links are streams (null: all)
        public required bool[]? HotLinks;        // with TailLinks: the links where tail operations overlap (the others are inert)
        public required int[] ItemOf;      // per op: index into Items, or -1 (tail operations outside items)
        public required int[] Periods;     // per op: its steady-state period (int.MaxValue outside items: the tail)
        public required ItemTable ItemIndex;

        /// <summary>Every operation's stream (and link) predecessors, computed once per built DAG (every period tried reads them).</summary>
        public StreamLinks Streams => _streams ??= StreamPredecessors(Dag, Links, TailLinks, HotLinks);
        private StreamLinks? _streams;
    }

    /// <summary>
    /// The scenario's DAG with <paramref name="microbatches"/> microbatches of its own size (the plan's count, not the
    /// strategy's), folded as far as <paramref name="cost"/> prices the folded ranks alike (as Scenario.BuildDagFor does);
    /// the size guard applies to what is built.
    /// </summary>
    /// <param name="reserve">Operations to reserve room for when known better than the size guard's upper estimate
    /// (the smaller part of an extrapolation: the bigger part's count).</param>
    internal static (OperatorDag Dag, IReadOnlyList<ItemSpan>? Items) BuildPart(Scenario s, CostModel cost, DagFolding folding, int microbatches, int? reserve = null)
    {
        if (folding != DagFolding.None && s.Strategy.DP == 1 && RankSymmetry.Of(s.Model, s.Strategy) is null) folding = DagFolding.None;
        var estimate = DagFactory.CheckSize(s.Model, s.Strategy with { Microbatches = microbatches }, folding);
        var (dag, items) = CorrectedDerivation.BuildWithItems(s.Model, s.Strategy, microbatches, folding, reserve ?? estimate);
        if (dag.Symmetries is not null && !cost.PricesFoldSymmetrically(dag))
            (dag, items) = CorrectedDerivation.BuildWithItems(s.Model, s.Strategy, microbatches, DagFolding.Replicas, DagFactory.CheckSize(s.Model, s.Strategy with { Microbatches = microbatches }, DagFolding.Replicas));
        if (dag.IsFolded && !cost.PricesFoldSymmetrically(dag))
        {
            // The cost model prices replicas differently: build them all (as Scenario.BuildDagFor does).
            estimate = DagFactory.CheckSize(s.Model, s.Strategy with { Microbatches = microbatches });
            (dag, items) = CorrectedDerivation.BuildWithItems(s.Model, s.Strategy, microbatches, DagFolding.None, estimate);
        }
        return (dag, items);
    }

    private static Built? BuildAndSchedule(Scenario s, CostModel cost, DagFolding folding, int microbatches, int? reserve = null)
    {
        var (dag, items) = BuildPart(s, cost, folding, microbatches, reserve);
        if (items is null) { Refuse("an item was emitted outside the plain item order (zero-bubble W, overlapped pair)"); return null; }
        // Link contention: a link's state is carried from operation to operation in id order, so links are streams too
        // (their predecessors must map by σ like the GPU streams'); the contention rule is homogeneous in time.
        var links = cost.Footprints(dag);
        // Communication taking SMs from compute (DeepEP-style all-to-all) couples streams in a way not proven here.
        if (cost.ComputeShares(dag) is not null) { Refuse("communication takes SMs from compute (not proven periodic here)"); return null; }
        var durations = cost.Price(dag);
        var itemOf = new int[dag.Count];
        Array.Fill(itemOf, -1);
        var index = new ItemTable(items);
        for (var i = 0; i < items.Count; i++)
        {
            var it = items[i];
            if (it.Item.Part != PipelinePart.Full || it.Item.Direction != 0 || it.Item.OverlapsNext) { Refuse("a pipeline item splits its backward or overlaps another"); return null; }
            index.Set(it.Replica, it.Stage, it.Item.Chunk, it.Item.Backward, it.Item.Microbatch, i);
            for (var op = it.First; op < it.End; op++) itemOf[op] = i;
        }
        var periods = Periods(s.Strategy, items, itemOf, microbatches);
        CriticalPathResult result;
        int[] critPred;
        LinkFootprints? inert = null;
        bool[]? tailLinks = null, hotLinks = null;
        // Contention that never bites: when no two operations on a link overlap in the contention-free schedule, the
        // contended schedule is the same schedule (LinksInert); the links then impose no order, so the periodicity is
        // checked on data and streams alone, and the extrapolated run's links are checked for overlap at the end. This
        // is what deep pipelines need: the driver's emission order on a NIC (forward sends of stage s against backward
        // sends of stage s + 1) follows its readiness sweeps, which are not periodic in the microbatch.
        // Contention that bites in the tail only (TailContention: data-parallel gradient all-reduces against the
        // cool-down's sends): the steady periods are checked without links, the tail with the links among tail
        // operations as streams.
        if (links is not null)
        {
            var free = Scheduler.Schedule(dag, durations, cost.Name, null, null, out var freePred);
            if (LinksInert(dag, links, free, 0))
            {
                (result, critPred, inert, links) = (free, freePred, links, null);
                Dbg($"{microbatches} microbatches: no operations overlap on a link; contention is inert");
            }
            else
            {
                result = Scheduler.Schedule(dag, durations, cost.Name, links, null, out critPred);
                var lastFull = s.Strategy.Mode == WorkloadMode.Training ? microbatches - s.Strategy.PP : microbatches - 2;
                var tail = new bool[dag.Count];
                for (var op = 0; op < dag.Count; op++) tail[op] = periods[op] > lastFull;
                if (TailContention(dag, links, free, result, tail) is { } hot)
                {
                    (inert, tailLinks, hotLinks) = (links, tail, hot);
                    Dbg($"{microbatches} microbatches: operations overlap on links in the tail only; contention is periodic");
                }
            }
        }
        else result = Scheduler.Schedule(dag, durations, cost.Name, null, null, out critPred);
        return new Built { Dag = dag, Items = items, Result = result, CritPred = critPred, ItemOf = itemOf, Periods = periods, ItemIndex = index, Links = links, Inert = inert, TailLinks = tailLinks, HotLinks = hotLinks };
    }

    /// <summary>The steady-state period of an item (see the type's summary); may be negative (warm-up) or past the last full period (cool-down).</summary>
    private static int PeriodOf(StrategySpec st, int microbatches, ItemSpan it)
    {
        if (st.Mode != WorkloadMode.Training || it.Item.Backward) return it.Item.Microbatch;
        var warmup = Math.Min(st.PP - it.Stage - 1, microbatches);
        return it.Item.Microbatch - warmup;
    }

    private static CriticalPathResult? TryWith(Scenario s, CostModel cost, DagFolding folding, Built b, int mb, int c, Budget attempts)
    {
        var st = s.Strategy;
        var m = st.Microbatches;
        var training = st.Mode == WorkloadMode.Training;
        var m1 = mb - c;
        var lastFull = training ? mb - st.PP : mb - 2;    // last full period of B (forward only: the last microbatch is the tail)
        var lastFullA = lastFull - c;

        // σ: the same operation of the item c microbatches later (-1 when that item is not built).
        var sigma = Images(b, b, c);

        var dag = b.Dag;
        var n = dag.Count;
        var stream = b.Streams;
        var start = b.Result;
        var categories = CategoryPaths(dag, b.Result.Durations, b.CritPred);
        var total = b.Result.TotalSeconds;
        var tol = 1e-12 * Math.Max(total, 1e-300);

        // Find the first period k0 from which every operation of periods k0 .. lastFull - c maps by σ onto an operation
        // that is structurally the same and runs Δ later (at least two periods verified).
        var byPeriod = new List<int>[Math.Max(0, lastFull + 1)];
        for (var k = 0; k < byPeriod.Length; k++) byPeriod[k] = new List<int>();
        for (var op = 0; op < n; op++)
        {
            var per = b.Periods[op];
            if (per >= 0 && per <= lastFull) byPeriod[per].Add(op);
        }
        var delta = double.NaN;
        var deltaPath = new double[4];
        var k0 = -1;
        for (var candidate = 0; candidate + c + 1 <= lastFull; candidate++)
        {
            var ok = true;
            double dl = double.NaN;
            var dp = new double[4];
            // How many periods back a predecessor reaches: the induction beyond the built periods needs the verified
            // window to be at least that long.
            var reach = 0;
            int Reach(int x, int q)
            {
                var pq = b.Periods[q];
                return pq > lastFull ? int.MaxValue : b.Periods[x] - pq;
            }
            for (var per = candidate; per + c <= lastFull && ok; per++)
            {
                foreach (var x in byPeriod[per])
                {
                    var y = sigma[x];
                    if (y < 0 || !SameOperation(dag, x, y)) { ok = false; Dbg($"structure at period {per} op {dag.Name(x)} -> {(y < 0 ? "none" : dag.Name(y))}"); break; }
                    // Data predecessors, stream predecessors and the critical predecessor map by σ.
                    var px = dag.Predecessors(x);
                    var py = dag.Predecessors(y);
                    if (px.Length != py.Length) { ok = false; break; }
                    for (var e = 0; e < px.Length && ok; e++)
                    {
                        ok = sigma[px[e]] == py[e];
                        reach = Math.Max(reach, Reach(x, px[e]));
                    }
                    if (!ok) break;
                    if (!StreamLinks.Maps(stream, x, stream, y, sigma)) { ok = false; Dbg($"stream at period {per} op {dag.Name(x)}: [{string.Join(", ", stream.List(x).Select(q => q < 0 ? "-" : dag.Name(q) + "/" + sigma[q]))}] vs {dag.Name(y)} [{string.Join(", ", stream.List(y).Select(q => q < 0 ? "-" : dag.Name(q) + "#" + q))}]"); break; }
                    foreach (var q in stream.Of(x)) if (q >= 0) reach = Math.Max(reach, Reach(x, q));
                    var cx = b.CritPred[x];
                    var cy = b.CritPred[y];
                    if (cx < 0 ? cy >= 0 : sigma[cx] != cy) { ok = false; Dbg($"critical predecessor at period {per} op {dag.Name(x)}: {(cx < 0 ? "-" : dag.Name(cx))} vs {(cy < 0 ? "-" : dag.Name(cy))}"); break; }
                    var d = start.FinishSeconds(y) - start.FinishSeconds(x);
                    var ds = start.StartSeconds(y) - start.StartSeconds(x);
                    if (double.IsNaN(dl)) { dl = d; for (var k = 0; k < 4; k++) dp[k] = categories[4 * y + k] - categories[4 * x + k]; }
                    if (Math.Abs(d - dl) > tol || Math.Abs(ds - dl) > tol) { ok = false; Dbg($"shift at period {per} op {dag.Name(x)}: {d} / {ds} vs {dl}"); break; }
                    for (var k = 0; k < 4 && ok; k++) ok = Math.Abs(categories[4 * y + k] - categories[4 * x + k] - dp[k]) <= tol;
                    if (!ok) break;
                }
            }
            Dbg($"B of {mb} microbatches, period {c}, k0 {candidate}: {(ok ? "repeats" : "no")}, shift {dl}, reach {reach}");
            var window = lastFull - c - candidate + 1;
            if (ok && !double.IsNaN(dl) && dl >= 0 && reach < int.MaxValue && window >= Math.Max(2, reach)) { k0 = candidate; delta = dl; deltaPath = dp; break; }
        }
        if (k0 < 0) return Refuse($"no repetition with period {c} found in the built periods");
        if (!attempts.Spend(DagFactory.EstimateOperations(s.Model, st with { Microbatches = m1 }, folding)))
            return Refuse("the attempts would cost more than building the run whole");
        // Fewer microbatches than B: B's operation count is room enough (the size guard's estimate is an upper bound, ~2x loose for deep pipelines).
        var a = BuildAndSchedule(s, cost, folding, m1, b.Dag.Count);
        if (a is null) return null;

        var (periodsA, periodsB) = (a.Periods, b.Periods);

        // The tail (cool-down, gradient synchronisation, optimizer) reads only the tail and periods >= k0, in both DAGs.
        foreach (var (x, periods, full) in new[] { (a, periodsA, lastFullA), (b, periodsB, lastFull) })
        {
            var xs = x.Streams;
            for (var op = 0; op < x.Dag.Count; op++)
            {
                if (periods[op] <= full) continue;
                foreach (var q in x.Dag.Predecessors(op)) if (periods[q] < k0) return Refuse("the tail reads the transient");
                foreach (var q in xs.Of(op)) if (q >= 0 && periods[q] < k0) return Refuse("the tail's streams read the transient");
            }
        }

        // The tail of B is the σ-image of A's, operation by operation (cool-down items c microbatches later; operations
        // outside items, such as gradient synchronisation and the optimizer, in the same order): same operation, data,
        // stream and link predecessors mapped, finishing Δ later. (Id interleaving of stages may differ; it matters only
        // through the predecessors on streams and links, which are compared.)
        var tailA = TailOf(periodsA, lastFullA);
        var tailB = TailOf(periodsB, lastFull);
        if (tailA.Length != tailB.Length) return Refuse("the tails differ in size");
        // A's operations as they stand in B: an item's the same operation of the item c microbatches later; the
        // operations outside items, in order.
        var image = Images(a, b, c);
        var nextB = 0;
        foreach (var x in tailA)
        {
            if (a.ItemOf[x] >= 0) continue;
            while (nextB < tailB.Length && b.ItemOf[tailB[nextB]] >= 0) nextB++;
            if (nextB == tailB.Length) return Refuse("the tails differ in size");
            image[x] = tailB[nextB++];
        }
        while (nextB < tailB.Length && b.ItemOf[tailB[nextB]] >= 0) nextB++;
        if (nextB != tailB.Length) return Refuse("the tails differ in size");
        var streamA = a.Streams;
        var (classes, sameGroups) = Correspondence(a.Dag, dag);
        foreach (var x in tailA)
        {
            var y = image[x];
            if (y < 0 || periodsB[y] <= lastFull) return Refuse($"the tail operation {a.Dag.Name(x)} has no image");
            if (!SameOperation(a.Dag, x, dag, y, classes, sameGroups)) return Refuse($"the tails differ: {a.Dag.Name(x)} vs {dag.Name(y)}");
            var px = a.Dag.Predecessors(x);
            var py = dag.Predecessors(y);
            if (px.Length != py.Length) return Refuse("the tails' predecessors differ");
            for (var e = 0; e < px.Length; e++) if (image[px[e]] != py[e]) return Refuse("the tails' predecessors differ");
            if (!StreamLinks.Maps(streamA, x, stream, y, image)) return Refuse($"the tails' stream predecessors differ at {a.Dag.Name(x)}");
            if (Math.Abs(b.Result.FinishSeconds(y) - a.Result.FinishSeconds(x) - delta) > tol) return Refuse("the tail does not shift by one period");
        }

        // The last operation lies in the tail and strictly after every earlier operation; on every GPU the transient
        // (periods < k0) ends at least Δ before the tail starts (the timeline between them is Δ-periodic).
        foreach (var (x, periods, full) in new[] { (a, periodsA, lastFullA), (b, periodsB, lastFull) })
        {
            double lastTail = 0, lastOther = 0;
            var transientEnd = new double[x.Dag.GpuCount];
            var tailStart = new double[x.Dag.GpuCount];
            Array.Fill(tailStart, double.PositiveInfinity);
            for (var op = 0; op < x.Dag.Count; op++)
            {
                var per = periods[op];
                double f = x.Result.FinishSeconds(op), st0 = x.Result.StartSeconds(op);
                if (per > full) lastTail = Math.Max(lastTail, f); else lastOther = Math.Max(lastOther, f);
                foreach (var g in x.Dag.Streams(op))
                {
                    if (per > full) tailStart[g] = Math.Min(tailStart[g], st0);
                    else if (per < k0) transientEnd[g] = Math.Max(transientEnd[g], f);
                }
            }
            if (!(lastTail > lastOther)) return Refuse("the last operation is not in the tail");
            for (var g = 0; g < x.Dag.GpuCount; g++)
                if (x.Dag.Representative(g) == g && transientEnd[g] + delta > tailStart[g] + tol) return Refuse("the transient overlaps the tail on a GPU");
        }

        var steps = (m - m1) / c;
        if ((a.Inert is null) != (b.Inert is null) || (a.HotLinks is null) != (b.HotLinks is null)
            || (a.HotLinks is { } hotA && !hotA.AsSpan().SequenceEqual(b.HotLinks))) return Refuse("link contention bites in one built DAG and not in the other, or on other links");
        if (b.Inert is { } footprints && !ExtrapolatedLinksInert(b, footprints, lastFull, c, steps - 1, delta, tol, b.HotLinks))
            return Refuse("operations would overlap on a link in the extrapolated periods (contention not proven periodic)");
        var ta = a.Result.TotalSeconds;
        var tb = b.Result.TotalSeconds;
        if (Math.Abs(tb - ta - delta) > tol) return Refuse("the totals do not differ by one period");
        double Affine(double x, double y) => x + steps * (y - x);
        var totalM = Affine(ta, tb);

        var critA = a.Result.CriticalPathSecondsByCategory;
        var critB = b.Result.CriticalPathSecondsByCategory;
        var critM = critA.ToDictionary(kv => kv.Key, kv => Affine(kv.Value, critB[kv.Key]));
        var ua = a.Result.PerGpu;
        var ub = b.Result.PerGpu;
        var perGpu = new GpuUsage[ua.Count];
        for (var g = 0; g < ua.Count; g++)
        {
            var idle = Affine(ua[g].IdleSeconds, ub[g].IdleSeconds);
            perGpu[g] = new GpuUsage(g, Affine(ua[g].MatmulSeconds, ub[g].MatmulSeconds), Affine(ua[g].AttentionSeconds, ub[g].AttentionSeconds),
                Affine(ua[g].ElementwiseSeconds, ub[g].ElementwiseSeconds), Affine(ua[g].CommunicationSeconds, ub[g].CommunicationSeconds),
                Affine(ua[g].OverlappedCommunicationSeconds, ub[g].OverlappedCommunicationSeconds), idle > totalM * 1e-12 ? idle : 0);
        }
        var kindsA = WholeCountByKind(a.Dag);
        var kindsB = WholeCountByKind(b.Dag);
        var kinds = new Dictionary<OpKind, long>();
        foreach (var k in kindsA.Keys.Union(kindsB.Keys))
        {
            long x = kindsA.GetValueOrDefault(k), y = kindsB.GetValueOrDefault(k);
            kinds[k] = x + steps * (y - x);
        }
        var formula = RuntimeFormula.Extrapolated(a.Result, b.Result, steps);
        if (formula is null) return Refuse("the critical-path formula is not periodic");
        // Distinct collectives: the bigger DAG's rows with their counts extrapolated like the operations (rows that differ
        // only in their group, identical in every reported field, are merged: a group is not reported).
        var rowsA = CollectiveReport.Of(a.Dag, cost).GroupBy(r => r with { Count = 0 }).ToDictionary(g => g.Key, g => g.Sum(r => (long)r.Count));
        var collectives = CollectiveReport.Of(b.Dag, cost).GroupBy(r => r with { Count = 0 })
            .Select(g => g.Key with { Count = (int)(rowsA.GetValueOrDefault(g.Key) + steps * (g.Sum(r => (long)r.Count) - rowsA.GetValueOrDefault(g.Key))) })
            .OrderByDescending(r => r.Seconds * r.Count).ThenBy(r => r.Kind).ToArray();
        var ext = new MicrobatchExtrapolation(m, mb, c, delta, k0, kinds.Values.Sum(), kinds) { Formula = formula, Collectives = collectives };
        return new CriticalPathResult(b.Result, ext, totalM, critM, perGpu);
    }

    /// <summary>
    /// Whether no two operations of positive duration overlap on any link in a contention-free schedule (touching
    /// allowed; <paramref name="tol"/> seconds of rounding). Then the contended schedule is the same: the scheduler's
    /// <c>Contend</c> delays an operation only when the span committed on one of its links overlaps its own, and that
    /// span is always a single earlier operation's (spans merge only on overlap), so by induction in id order every
    /// operation starts and finishes as without contention.
    /// </summary>
    private static bool LinksInert(OperatorDag dag, LinkFootprints links, CriticalPathResult free, double tol)
    {
        var spans = new List<(double Start, double Finish)>?[links.LinkCount];
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Group(op) < 0) continue;
            var ls = links.Of(op);
            if (ls.IsEmpty || !(free.FinishSeconds(op) > free.StartSeconds(op))) continue;
            foreach (var l in ls) (spans[l] ??= []).Add((free.StartSeconds(op), free.FinishSeconds(op)));
        }
        return spans.All(list => Disjoint(list, tol));
    }

    private static bool Disjoint(List<(double Start, double Finish)>? list, double tol)
    {
        if (list is null) return true;
        list.Sort((x, y) => x.Start.CompareTo(y.Start));
        for (var i = 1; i < list.Count; i++) if (list[i - 1].Finish > list[i].Start + tol) return false;
        return true;
    }

    /// <summary>
    /// The link spans of the whole run, as the extrapolation places them: B's operations up to its last full period
    /// where they are, its last c periods repeated <paramref name="repeats"/> times <paramref name="delta"/> apart, and
    /// its tail <paramref name="repeats"/> x Δ later; true when no two overlap on a link (so contention stays inert in
    /// the whole run too, and the contention-free extrapolation is the contended run's). Per link by
    /// <see cref="RepeatedSpansDisjoint"/>.
    /// </summary>
    private static bool ExtrapolatedLinksInert(Built b, LinkFootprints links, int lastFull, int c, int repeats, double delta, double tol, bool[]? hotLinks = null)
    {
        var st = b.Result;
        var dag = b.Dag;
        var n = links.LinkCount;
        var before = new List<(double Start, double Finish)>?[n];
        var repeated = new List<(double Start, double Finish)>?[n];
        var after = new List<(double Start, double Finish)>?[n];
        // Tail contention: on the links where the tail contends its spans are kept apart and must start after every
        // other span ends; on the others every span is disjoint, as without contention.
        var tailStart = hotLinks is not null ? new double[n] : null;
        if (tailStart is not null) Array.Fill(tailStart, double.PositiveInfinity);
        for (var op = 0; op < dag.Count; op++)
        {
            if (dag.Group(op) < 0) continue;
            var ls = links.Of(op);
            double s0 = st.StartSeconds(op), f0 = st.FinishSeconds(op);
            if (ls.IsEmpty || !(f0 > s0)) continue;
            var per = b.Periods[op];
            foreach (var l in ls)
            {
                if (per <= lastFull - c) (before[l] ??= []).Add((s0, f0));
                else if (per <= lastFull) (repeated[l] ??= []).Add((s0, f0));
                else if (hotLinks is not null && hotLinks[l]) tailStart![l] = Math.Min(tailStart[l], s0 + repeats * delta);
                else (after[l] ??= []).Add((s0 + repeats * delta, f0 + repeats * delta));
            }
        }
        for (var l = 0; l < n; l++)
        {
            if (!RepeatedSpansDisjoint(before[l], repeated[l], after[l], delta, repeats, tol, out var lastFinish)) return false;
            if (tailStart is not null && lastFinish > tailStart[l] + tol) return false;
        }
        return true;
    }

    /// <summary>
    /// Whether the spans <paramref name="before"/>, <paramref name="repeated"/> placed at 0, Δ, .., RΔ (R =
    /// <paramref name="repeats"/>) and <paramref name="after"/> are pairwise disjoint (touching within
    /// <paramref name="tol"/> allowed); <paramref name="lastFinish"/>: the latest finish among them.
    /// <para>Only the copies that can meet another span are placed (exact, not a sample). With the repeated spans within
    /// [lo, hi], copies j and j + t can overlap only when tΔ &lt; hi - lo; copy j can meet a span before only when
    /// lo + jΔ is earlier than the last of them ends, and one after only when hi + jΔ is later than the first of them
    /// starts. Copy j against copy j + t is copy 0 against copy t moved by jΔ, so the first copies stand for every pair
    /// in the middle: copies 0 .. J1 and R - J2 .. R are placed, every copy when those ranges meet (a deep pipeline repeats
    /// its last period hundreds of times, Megatron-1T 444, of which a few copies are placed).</para>
    /// </summary>
    internal static bool RepeatedSpansDisjoint(List<(double Start, double Finish)>? before, List<(double Start, double Finish)>? repeated,
        List<(double Start, double Finish)>? after, double delta, int repeats, double tol, out double lastFinish)
    {
        lastFinish = double.NegativeInfinity;
        var all = new List<(double Start, double Finish)>();
        double beforeEnd = double.NegativeInfinity, afterBegin = double.PositiveInfinity;
        foreach (var x in before ?? []) { all.Add(x); beforeEnd = Math.Max(beforeEnd, x.Finish); }
        foreach (var x in after ?? []) { all.Add(x); afterBegin = Math.Min(afterBegin, x.Start); }
        if (repeated is { Count: > 0 })
        {
            double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
            foreach (var x in repeated) { lo = Math.Min(lo, x.Start); hi = Math.Max(hi, x.Finish); }
            // Copies to place so that every copy within reach of another, or of the spans before or after, is placed.
            int Reach(double span) => !(delta > 0) || !(span / delta < repeats) ? repeats : Math.Max(0, (int)Math.Ceiling(span / delta)) + 1;
            var apart = Reach(hi - lo);
            var first = Math.Max(apart, beforeEnd > lo ? Reach(beforeEnd - lo) : 0);
            var last = repeats - Math.Max(apart, afterBegin < hi + repeats * delta ? Reach(hi + repeats * delta - afterBegin) : 0);
            if (last <= first + 1) (first, last) = (repeats, repeats + 1);
            foreach (var (s0, f0) in repeated)
            {
                for (var j = 0; j <= first; j++) all.Add((s0 + j * delta, f0 + j * delta));
                for (var j = last; j <= repeats; j++) all.Add((s0 + j * delta, f0 + j * delta));
            }
        }
        foreach (var x in all) lastFinish = Math.Max(lastFinish, x.Finish);
        return Disjoint(all, tol);
    }

    /// <summary>
    /// The links where contention bites, when it bites only among tail operations (cool-down, gradient
    /// synchronisation, optimizer), else null. Conditions, on the built DAG: the contended schedule gives every steady
    /// operation (not <paramref name="tail"/>) its contention-free times, and no two steady operations overlap on a
    /// link; a link is hot when two of its operations overlap in the contended schedule, and on a hot link every steady
    /// operation ends before any tail operation starts.
    /// <para>Why the tail then contends among its own operations only, in their id order on the hot links: on a link
    /// where no two contended spans overlap, the committed span is always one operation's (spans merge only on
    /// overlap), which no later operation overlaps, so the link delays nothing whatever the order operations reach it
    /// in. On a hot link, a steady operation processed after a tail one lies wholly before the committed tail span
    /// (no delay, span unchanged), and a tail operation meets a steady span only wholly before it (no delay, span
    /// replaced). So the links are streams of the tail only, restricted to the hot links, and the A/B tail comparison
    /// checks their order like the other streams'; the extrapolated run's spans are checked the same way
    /// (<see cref="ExtrapolatedLinksInert"/>).</para>
    /// </summary>
    private static bool[]? TailContention(OperatorDag dag, LinkFootprints links, CriticalPathResult free, CriticalPathResult contended, bool[] tail)
    {
        var steady = new List<(double Start, double Finish)>?[links.LinkCount];
        var all = new List<(double Start, double Finish)>?[links.LinkCount];
        var tailStart = new double[links.LinkCount];
        Array.Fill(tailStart, double.PositiveInfinity);
        for (var op = 0; op < dag.Count; op++)
        {
            if (!tail[op] && (contended.StartSeconds(op) != free.StartSeconds(op) || contended.FinishSeconds(op) != free.FinishSeconds(op))) return null;
            if (dag.Group(op) < 0) continue;
            var ls = links.Of(op);
            double s0 = contended.StartSeconds(op), f0 = contended.FinishSeconds(op);
            if (ls.IsEmpty || !(f0 > s0)) continue;
            foreach (var l in ls)
            {
                (all[l] ??= []).Add((s0, f0));
                if (tail[op]) tailStart[l] = Math.Min(tailStart[l], s0);
                else (steady[l] ??= []).Add((s0, f0));
            }
        }
        if (!steady.All(list => Disjoint(list, 0))) return null;
        var hot = new bool[links.LinkCount];
        for (var l = 0; l < hot.Length; l++)
        {
            hot[l] = !Disjoint(all[l], 0);
            if (hot[l] && steady[l] is { Count: > 0 } list && list.Max(x => x.Finish) > tailStart[l]) return null;
        }
        return hot;
    }

    /// <summary>Operations of the whole (unfolded) DAG by kind: each built operation weighted by what it stands for.</summary>
    internal static Dictionary<OpKind, long> WholeCountByKind(OperatorDag dag)
    {
        // Counted in an array by kind (a dictionary update per operation cost 4 % of a Megatron-1T evaluate), then
        // listed in order of first appearance, as the dictionary was filled before.
        var counts = new long[byte.MaxValue + 1];
        var order = new List<OpKind>();
        for (var op = 0; op < dag.Count; op++)
        {
            var kind = dag.Kind(op);
            if (counts[(byte)kind] == 0) order.Add(kind);
            counts[(byte)kind] += dag.Multiplicity(op);
        }
        var byKind = new Dictionary<OpKind, long>(order.Count);
        foreach (var kind in order) byKind[kind] = counts[(byte)kind];
        return byKind;
    }

    /// <summary>Every operation's steady-state period (<see cref="PeriodOf"/>; int.MaxValue outside items: the tail).</summary>
    private static int[] Periods(StrategySpec st, IReadOnlyList<ItemSpan> items, int[] itemOf, int microbatches)
    {
        var byItem = new int[items.Count];
        for (var i = 0; i < byItem.Length; i++) byItem[i] = PeriodOf(st, microbatches, items[i]);
        var periods = new int[itemOf.Length];
        for (var op = 0; op < periods.Length; op++) periods[op] = itemOf[op] is var i and >= 0 ? byItem[i] : int.MaxValue;
        return periods;
    }

    /// <summary>The operations past the last full period, in id order.</summary>
    private static int[] TailOf(int[] periods, int lastFull)
    {
        var count = 0;
        foreach (var p in periods) if (p > lastFull) count++;
        var tail = new int[count];
        count = 0;
        for (var op = 0; op < periods.Length; op++) if (periods[op] > lastFull) tail[count++] = op;
        return tail;
    }

    /// <summary>Whether operations x and y of one DAG are the same operation but for their time (a DAG's price classes are distinct, so equal ids are equal classes).</summary>
    private static bool SameOperation(OperatorDag dag, int x, int y) =>
        dag.Kind(x) == dag.Kind(y) && dag.Phase(x) == dag.Phase(y) && dag.Gpu(x) == dag.Gpu(y) && dag.Group(x) == dag.Group(y)
        && dag.Layer(x) == dag.Layer(y) && dag.Index(x) == dag.Index(y) && dag.PriceClassOf(x) == dag.PriceClassOf(y);

    /// <summary>
    /// Operation x of <paramref name="a"/> and y of <paramref name="b"/> likewise, across two DAGs: the same group id with
    /// the same members, and the same price class (<paramref name="classes"/>: a's class ids as b's, -1 where b has none).
    /// </summary>
    private static bool SameOperation(OperatorDag a, int x, OperatorDag b, int y, int[] classes, bool[] sameGroups) =>
        a.Kind(x) == b.Kind(y) && a.Phase(x) == b.Phase(y) && a.Gpu(x) == b.Gpu(y) && a.Group(x) == b.Group(y)
        && a.Layer(x) == b.Layer(y) && a.Index(x) == b.Index(y) && classes[a.PriceClassOf(x)] == b.PriceClassOf(y)
        && (a.Group(x) < 0 || sameGroups[a.Group(x)]);

    /// <summary>
    /// <paramref name="a"/>'s price class ids as <paramref name="b"/>'s (-1 where b has no equal class), and per group id
    /// of a whether b's group of that id has the same members.
    /// </summary>
    private static (int[] Classes, bool[] SameGroups) Correspondence(OperatorDag a, OperatorDag b)
    {
        var classes = new int[a.PriceClassCount];
        for (var i = 0; i < classes.Length; i++)
        {
            classes[i] = -1;
            for (var j = 0; j < b.PriceClassCount; j++)
                if (a._classTable[i] == b._classTable[j]) { classes[i] = j; break; }
        }
        var groups = new bool[a.GroupCount];
        for (var g = 0; g < groups.Length; g++) groups[g] = g < b.GroupCount && a.GroupMembers(g).SequenceEqual(b.GroupMembers(g));
        return (classes, groups);
    }

    /// <summary>
    /// Per operation, the critical path's seconds by category up to and including it (4 doubles per operation:
    /// matmul, attention, elementwise, communication): P(x) = P(critical predecessor of x) + d(x) in x's category.
    /// </summary>
    private static double[] CategoryPaths(OperatorDag dag, IReadOnlyList<double> durations, int[] critPred)
    {
        var paths = new double[4 * dag.Count];
        for (var op = 0; op < dag.Count; op++)
        {
            var p = critPred[op];
            if (p >= 0) for (var k = 0; k < 4; k++) paths[4 * op + k] = paths[4 * p + k];
            paths[4 * op + (int)dag.Category(op)] += durations[op];
        }
        return paths;
    }

    /// <summary>
    /// The stream predecessors the scheduler reads for each operation: on every stream it occupies (compute stream of
    /// its GPU; communication streams of a collective's members; the compute streams too without overlap; a blocking
    /// send's sender compute stream; every link it occupies when the cost model has contention), the previous operation issued there.
    /// </summary>
    private static StreamLinks StreamPredecessors(OperatorDag dag, LinkFootprints? footprints, bool[]? linkOps = null, bool[]? hotLinks = null)
    {
        var blocking = !dag.CommunicationOverlapsCompute;
        var lastLink = new int[footprints?.LinkCount ?? 0];
        Array.Fill(lastLink, -1);
        var lastCompute = new int[dag.GpuCount];
        var lastComm = new int[dag.GpuCount];
        Array.Fill(lastCompute, -1);
        Array.Fill(lastComm, -1);
        var start = new int[dag.Count + 1];
        var links = new List<int>(dag.Count * 2);
        for (var op = 0; op < dag.Count; op++)
        {
            start[op] = links.Count;
            var group = dag.Group(op);
            if (footprints is not null && (linkOps is null || linkOps[op]))
                foreach (var l in footprints.Of(op))
                {
                    if (hotLinks is not null && !hotLinks[l]) continue;
                    links.Add(lastLink[l]);
                    lastLink[l] = op;
                }
            if (group < 0)
            {
                var g = dag.Gpu(op);
                links.Add(lastCompute[g]);
                if (blocking) links.Add(lastComm[g]);
                lastCompute[g] = op;
            }
            else if (dag.Kind(op) == OpKind.PipelineSend)
            {
                if (!blocking) continue;
                var g = dag.Gpu(op);
                links.Add(lastCompute[g]);
                lastCompute[g] = op;
            }
            else
            {
                foreach (var g in dag.Streams(op))
                {
                    links.Add(lastComm[g]);
                    if (blocking) links.Add(lastCompute[g]);
                }
                foreach (var g in dag.Streams(op))
                {
                    lastComm[g] = op;
                    if (blocking) lastCompute[g] = op;
                }
            }
        }
        start[dag.Count] = links.Count;
        return new StreamLinks(start, links.ToArray());
    }

    private sealed record StreamLinks(int[] Start, int[] Links)
    {
        /// <summary>Whether y's stream predecessors (in <paramref name="ly"/>) are the images of x's (in <paramref name="lx"/>), position by position.</summary>
        public static bool Maps(StreamLinks lx, int x, StreamLinks ly, int y, int[] image)
        {
            int sx = lx.Start[x], ex = lx.Start[x + 1], sy = ly.Start[y], ey = ly.Start[y + 1];
            if (ex - sx != ey - sy) return false;
            for (var i = 0; i < ex - sx; i++)
            {
                int px = lx.Links[sx + i], py = ly.Links[sy + i];
                if (px < 0 ? py >= 0 : image[px] != py) return false;
            }
            return true;
        }

        public IEnumerable<int> List(int op) { for (var i = Start[op]; i < Start[op + 1]; i++) yield return Links[i]; }

        /// <summary>The stream predecessors of op (-1: none on that stream).</summary>
        public ReadOnlySpan<int> Of(int op) => Links.AsSpan(Start[op], Start[op + 1] - Start[op]);
    }
}

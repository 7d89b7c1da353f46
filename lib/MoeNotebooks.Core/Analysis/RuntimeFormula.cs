using System.Globalization;
using System.Text;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>A piece of the symbolic runtime: Get_Time(m, k, n), a named non-matmul term, or a repetition.</summary>
public abstract record FormulaTerm;

/// <summary>Get_Time(m, k, n) of one matmul-shaped operation; <see cref="Dtype"/> is set when it runs in another datatype than the DAG's (a precision recipe's GEMMs).</summary>
public sealed record GetTimeTerm(MatmulShape Shape, string? Dtype = null) : FormulaTerm;

/// <summary>A non-matmul operation (communication, elementwise) with its priced seconds.</summary>
public sealed record NamedTerm(string Name, double Seconds) : FormulaTerm;

/// <summary><c>Count x (Body)</c>; <see cref="IsBlock"/> marks a transformer layer, printed in square brackets.</summary>
public sealed record RepeatTerm(int Count, IReadOnlyList<FormulaTerm> Body, bool IsBlock) : FormulaTerm
{
    public bool Equals(RepeatTerm? other) =>
        other is not null && Count == other.Count && IsBlock == other.IsBlock && Body.SequenceEqual(other.Body);

    // A structural hash over the body: with only the body's length, every block of a long critical path shared one
    // hash bucket and interning them (RuntimeFormula.Compress) was quadratic. Not cached: `with` would copy a stale value.
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(Count);
        h.Add(IsBlock);
        foreach (var t in Body) h.Add(t);
        return h.ToHashCode();
    }
}

/// <summary>A matmul term of the formula flattened: <c>Count x Get_Time(M, K, N)</c>.</summary>
public sealed record MatmulTermCount(long M, long K, long N, long Batch, long Count, string? Dtype = null);

/// <summary>A named term flattened: <c>Count x Name</c>, each occurrence taking <c>Seconds</c>.</summary>
public sealed record NamedTermCount(string Name, long Count, double Seconds);

/// <summary>
/// The critical path written back as the founding document writes runtimes: a sum of count x Get_Time(m, k, n)
/// terms and named non-matmul terms, with repeated layers and repeated runs folded (4 x [...], 16 x (...)).
/// Derived from the schedule, never typed in. Operations priced at zero seconds are left out.
/// </summary>
public sealed class RuntimeFormula
{
    private RuntimeFormula(IReadOnlyList<FormulaTerm> terms) => Terms = terms;

    public IReadOnlyList<FormulaTerm> Terms { get; }

    public static RuntimeFormula FromCriticalPath(CriticalPathResult result)
    {
        var dag = result.Dag;
        var items = new List<FormulaTerm>();
        var block = new List<FormulaTerm>();
        (int Mb, int Layer, int Pass) current = (-1, -1, -1);
        void Flush()
        {
            if (block.Count > 0) items.Add(new RepeatTerm(1, Compress(block), IsBlock: true));
            block.Clear();
        }
        foreach (var op in result.CriticalOps)
        {
            var seconds = result.Durations[op];
            if (seconds == 0) continue;
            var kind = dag.Kind(op);
            FormulaTerm leaf = kind.IsMatmulShaped() ? new GetTimeTerm(dag.Shape(op), TermDtype(dag, op)) : new NamedTerm(TermName(dag, op), seconds);
            // A repeated product (a rank's heads, or experts with equal tokens) is that many Get_Time terms in a row.
            if (dag.Repeat(op) > 1) leaf = new RepeatTerm(dag.Repeat(op), [leaf], IsBlock: false);
            var layer = dag.Layer(op);
            if (layer < 0) { Flush(); current = (-1, -1, -1); items.Add(leaf); continue; }
            // A block is one layer's forward, recomputation or backward for one microbatch.
            var pass = dag.Phase(op) switch { OpPhase.Forward => 0, OpPhase.Recompute => 1, OpPhase.Update => 3, _ => 2 };
            var key = (dag.Microbatch(op), layer, pass);
            if (key != current) { Flush(); current = key; }
            block.Add(leaf);
        }
        Flush();
        return new RuntimeFormula(Compress(items));
    }

    /// <summary>A matmul term's dtype: null when it runs in the DAG's own dtype (written without one).</summary>
    private static string? TermDtype(OperatorDag dag, int op) => dag.MatmulDtype(op) == dag.Dtype ? null : dag.MatmulDtype(op);

    private static string TermName(OperatorDag dag, int op) => dag.Kind(op) switch
    {
        OpKind.Elementwise => Prefix(dag.Phase(op)) + OpKindExtensions.ElementwiseRole(dag.Index(op)),
        var k => Prefix(dag.Phase(op)) + k.Label(),
    };

    private static string Prefix(OpPhase phase) => phase is OpPhase.BackwardData or OpPhase.BackwardWeight ? "d" : "";

    private const int ExactFoldLength = 8192;
    private const int MaxLongPeriod = 1024;

    /// <summary>Folds consecutive repeats (tandem repeats), preferring the fold that covers the most terms.</summary>
    internal static IReadOnlyList<FormulaTerm> Compress(IReadOnlyList<FormulaTerm> seq)
    {
        // Terms are compared as small integers (equal terms share an id), not by deep structural equality on every
        // comparison: the search compares the same blocks many times.
        var intern = new Dictionary<FormulaTerm, int>();
        var ids = new int[seq.Count];
        for (var k = 0; k < seq.Count; k++)
        {
            if (!intern.TryGetValue(seq[k], out var id)) intern[seq[k]] = id = intern.Count;
            ids[k] = id;
        }
        var output = new List<FormulaTerm>();
        var i = 0;
        // Every period is tried for ordinary critical paths (exact folding); a very long path (10^4+ microbatches or
        // layers) tries periods up to MaxLongPeriod only, so folding costs O(MaxLongPeriod x n) instead of O(n^2)
        // (a 10,000-microbatch pipeline took 50 s here).
        var maxPeriod = seq.Count <= ExactFoldLength ? int.MaxValue : MaxLongPeriod;
        while (i < seq.Count)
        {
            int bestPeriod = 1, bestCount = 1;
            for (var p = 1; p <= Math.Min(maxPeriod, (seq.Count - i) / 2); p++)
            {
                var count = 1;
                while (i + (count + 1) * p <= seq.Count && SameRun(ids, i, i + count * p, p)) count++;
                if (count > 1 && count * p > bestCount * bestPeriod) { bestPeriod = p; bestCount = count; }
            }
            if (bestCount > 1)
            {
                var unit = seq.Skip(i).Take(bestPeriod).ToList();
                if (unit is [RepeatTerm { Count: 1, IsBlock: true } single])
                    output.Add(single with { Count = bestCount });
                else
                    output.Add(new RepeatTerm(bestCount, Compress(unit), IsBlock: false));
                i += bestCount * bestPeriod;
            }
            else output.Add(seq[i++]);
        }
        return output;
    }

    /// <summary>
    /// The formula of a run extrapolated over identical microbatches (<see cref="MicrobatchPeriodicity"/>): each term's
    /// count is affine in the periods added, <c>count(a) + steps (count(b) - count(a))</c>, with <paramref name="a"/> and
    /// <paramref name="b"/> the schedules of the two built DAGs (one period apart), their critical paths counted term by
    /// term (<see cref="FlatCounts"/>). Written flat (count x term): B's terms in order of first appearance, then those
    /// only A has. Null when a count would be negative or overflow (the critical path is then not periodic term by term).
    /// </summary>
    internal static RuntimeFormula? Extrapolated(CriticalPathResult a, CriticalPathResult b, long steps)
    {
        var terms = new List<FormulaTerm>();
        bool Add(long ca, long cb, FormulaTerm leaf)
        {
            var count = ca + steps * (cb - ca);
            if (count < 0 || count > int.MaxValue) return false;
            if (count > 0) terms.Add(count == 1 ? leaf : new RepeatTerm((int)count, [leaf], IsBlock: false));
            return true;
        }
        var (ma, na) = FlatCounts(a);
        var (mb, nb) = FlatCounts(b);
        foreach (var (key, cb) in mb)
            if (!Add(ma.GetValueOrDefault(key), cb, new GetTimeTerm(key.Shape, key.Dtype))) return null;
        foreach (var (key, ca) in ma)
            if (!mb.ContainsKey(key) && !Add(ca, 0, new GetTimeTerm(key.Shape, key.Dtype))) return null;
        foreach (var (key, cb) in nb)
            if (!Add(na.GetValueOrDefault(key), cb, new NamedTerm(key.Name, key.Seconds))) return null;
        foreach (var (key, ca) in na)
            if (!nb.ContainsKey(key) && !Add(ca, 0, new NamedTerm(key.Name, key.Seconds))) return null;
        return new RuntimeFormula(terms);
    }

    /// <summary>
    /// The critical path's terms with their counts, in order of first appearance (a dictionary enumerates in insertion
    /// order when nothing is removed): what <see cref="MatmulTerms"/> and <see cref="OtherTerms"/> of
    /// <see cref="FromCriticalPath"/> give, without building and folding the formula (folding moves no first appearance
    /// and keeps every count).
    /// </summary>
    internal static (Dictionary<(MatmulShape Shape, string? Dtype), long> Matmuls, Dictionary<(string Name, double Seconds), long> Named) FlatCounts(CriticalPathResult result)
    {
        var dag = result.Dag;
        var matmuls = new Dictionary<(MatmulShape, string?), long>();
        var named = new Dictionary<(string, double), long>();
        foreach (var op in result.CriticalOps)
        {
            var seconds = result.Durations[op];
            if (seconds == 0) continue;
            long count = dag.Repeat(op);
            if (dag.Kind(op).IsMatmulShaped())
            {
                var key = (dag.Shape(op), TermDtype(dag, op));
                matmuls[key] = matmuls.GetValueOrDefault(key) + count;
            }
            else
            {
                var key = (TermName(dag, op), seconds);
                named[key] = named.GetValueOrDefault(key) + count;
            }
        }
        return (matmuls, named);
    }

    private static bool SameRun(int[] ids, int a, int b, int length) =>
        ids.AsSpan(a, length).SequenceEqual(ids.AsSpan(b, length));

    /// <summary>Matmul terms with their total counts, in order of first appearance.</summary>
    public IReadOnlyList<MatmulTermCount> MatmulTerms
    {
        get
        {
            var counts = new Dictionary<(MatmulShape, string?), long>();
            var order = new List<(MatmulShape Shape, string? Dtype)>();
            Walk(Terms, 1, (t, c) =>
            {
                if (t is not GetTimeTerm g) return;
                var key = (g.Shape, g.Dtype);
                if (!counts.ContainsKey(key)) order.Add(key);
                counts[key] = counts.GetValueOrDefault(key) + c;
            });
            return order.Select(k => new MatmulTermCount(k.Shape.M, k.Shape.K, k.Shape.N, k.Shape.Batch, counts[k], k.Dtype)).ToArray();
        }
    }

    /// <summary>Named (non-matmul) terms with their total counts, in order of first appearance.</summary>
    public IReadOnlyList<NamedTermCount> OtherTerms
    {
        get
        {
            var counts = new Dictionary<(string, double), long>();
            var order = new List<(string, double)>();
            Walk(Terms, 1, (t, c) =>
            {
                if (t is not NamedTerm n) return;
                var key = (n.Name, n.Seconds);
                if (!counts.ContainsKey(key)) order.Add(key);
                counts[key] = counts.GetValueOrDefault(key) + c;
            });
            return order.Select(k => new NamedTermCount(k.Item1, counts[k], k.Item2)).ToArray();
        }
    }

    private static void Walk(IReadOnlyList<FormulaTerm> terms, long multiplier, Action<FormulaTerm, long> visit)
    {
        foreach (var t in terms)
        {
            if (t is RepeatTerm r) Walk(r.Body, multiplier * r.Count, visit);
            else visit(t, multiplier);
        }
    }

    /// <summary>Evaluates the formula with a cost model's Get_Time; named terms keep their priced seconds.</summary>
    public double Evaluate(CostModel cost, string dtype, int elementBytes) =>
        MatmulTerms.Sum(t => t.Count * cost.Compute.MatmulSeconds(new MatmulShape(t.M, t.K, t.N, t.Batch), dtype, elementBytes))
        + OtherTerms.Sum(t => t.Count * t.Seconds);

    /// <summary>The formula in the founding document's notation, e.g. <c>4 × [3×Get_Time(10240000, 8192, 8192) + ...]</c>.</summary>
    public override string ToString() => Join(Terms, topLevel: true);

    private static string Join(IReadOnlyList<FormulaTerm> terms, bool topLevel) =>
        string.Join(topLevel ? "\n+ " : " + ", terms.Select(Print));

    private static string Print(FormulaTerm t) => t switch
    {
        GetTimeTerm g => g.Dtype is null ? g.Shape.ToString() : $"{g.Shape}@{g.Dtype}",
        NamedTerm n => n.Name,
        RepeatTerm { IsBlock: true } r => (r.Count == 1 ? "" : $"{r.Count.ToString(CultureInfo.InvariantCulture)} × ") + $"[{Join(r.Body, false)}]",
        RepeatTerm r when r.Body.Count == 1 => $"{r.Count.ToString(CultureInfo.InvariantCulture)}×{Print(r.Body[0])}",
        RepeatTerm r => $"{r.Count.ToString(CultureInfo.InvariantCulture)}×({Join(r.Body, false)})",
        _ => throw new InvalidOperationException(),
    };
}

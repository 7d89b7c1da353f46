namespace MoeNotebooks.Dag;

/// <summary>
/// Rank folding: the derivation emits every built GPU's operations as usual, and the builder keeps only those of one
/// representative per class of identical ranks (e.g. the TP ranks of a group, the EP ranks under uniform routing). Each
/// GPU's operations form a sequence (its compute operations, and the collectives and sends it takes part in, in issue
/// order); the k-th operation of a folded GPU is its representative's k-th. Instead of being appended it is checked
/// against that counterpart (kind, phase, layer, microbatch, shape or bytes, the group's classes, and the
/// predecessors, which earlier folded operations already mapped onto the representative's) and the counterpart's id is
/// returned, so the derivation's later operations depend on it. Any difference throws <see cref="RankFoldException"/>
/// (the caller builds without rank folding): the folded DAG is the whole DAG's quotient by construction and check.
/// The index (which head or expert of the layer) may differ: it names the rank's own heads and experts, a label that
/// no cost model or the scheduler reads.
/// </summary>
public sealed partial class DagBuilder
{
    // Per built GPU: its rank representative (itself for a representative); null without rank folding.
    private int[]? _rankRep;
    // Per rank representative: its operation sequence; per folded GPU: how much of its sequence was emitted.
    private List<int>[]? _repOps;
    private int[]? _position;
    private int[][]? _symmetries;
    private bool[]? _movesRanks;

    /// <summary>What was folded, in words, carried to <see cref="OperatorDag.FoldDescription"/>.</summary>
    public string FoldDescription { get; set; } = "";

    /// <summary>
    /// Declares rank folding (on top of <see cref="FoldOnto"/>, if any): <paramref name="rankRepresentative"/>[g] is the
    /// representative of built GPU g; <paramref name="symmetries"/> are the GPU permutations the whole DAG is invariant
    /// under (the identity first), whose orbits are the classes of the combined fold. Call before adding operations.
    /// </summary>
    /// <param name="movesRanks">Per symmetry: whether it moves ranks within a unit (not only whole replicas).</param>
    public void FoldRanksOnto(int[] rankRepresentative, int[][] symmetries, bool[] movesRanks)
    {
        if (_count > 0) throw new DagException("rank folding must be declared before any operation is added");
        if (rankRepresentative.Length != GpuCount) throw new DagException($"a rank fold maps {rankRepresentative.Length} GPUs but the DAG has {GpuCount}");
        _rankRep = (int[])rankRepresentative.Clone();
        _repOps = new List<int>[GpuCount];
        _position = new int[GpuCount];
        for (var g = 0; g < GpuCount; g++)
            if (_rankRep[g] == g) _repOps[g] = new List<int>();
        _symmetries = symmetries;
        _movesRanks = movesRanks;
    }

    /// <summary>
    /// Room in each rank representative's operation sequence for its share of <paramref name="expectedOperations"/> (the
    /// sequences otherwise grow by doubling, copying and reallocating large arrays as a deep pipeline's ranks fill).
    /// </summary>
    private void ReserveRankSequences(double expectedOperations)
    {
        if (_repOps is null) return;
        var representatives = 0;
        for (var g = 0; g < _repOps.Length; g++) if (_repOps[g] is not null && IsBuilt(g)) representatives++;
        var each = (int)Math.Min(expectedOperations / Math.Max(1, representatives) * 1.25, 1 << 20);
        for (var g = 0; g < _repOps.Length; g++)
            if (_repOps[g] is { } ops && IsBuilt(g) && ops.Capacity < each) ops.Capacity = each;
    }

    /// <summary>The representative of every GPU under both folds (null when nothing is folded).</summary>
    private int[]? FoldedRepresentative()
    {
        if (_rankRep is null) return _representative;
        var rep = new int[GpuCount];
        for (var g = 0; g < GpuCount; g++) rep[g] = _rankRep[_representative is null ? g : _representative[g]];
        return rep;
    }

    private int Full(int g) => _rankRep![_representative is null ? g : _representative[g]];

    private bool IsRankRep(int g) => _rankRep![g] == g;

    /// <summary>The folded GPU's next operation: its representative's at the same position.</summary>
    private int Next(int g)
    {
        var ops = _repOps![_rankRep![g]];
        var k = _position![g]++;
        if (k >= ops.Count) throw new RankFoldException($"GPU {g} issues operation {k} before its representative {_rankRep[g]} did");
        return ops[k];
    }

    /// <summary>Whether ranks are folded (<see cref="FoldRanksOnto"/> was declared).</summary>
    public bool FoldsRanks => _rankRep is not null;

    /// <summary>Whether <paramref name="gpu"/> is built but folded onto another rank (its operations are its representative's).</summary>
    public bool IsFoldedRank(int gpu) => _rankRep is not null && IsBuilt(gpu) && _rankRep[gpu] != gpu;

    /// <summary>The rank representative of a built GPU (itself without rank folding).</summary>
    public int RankRepresentative(int gpu) => _rankRep is null ? gpu : _rankRep[gpu];

    /// <summary>
    /// A folded rank's operations up to where its representative's sequence stands now are taken as issued, unchecked:
    /// for a derivation loop that emits the same per-rank operations for every rank of a site and has just emitted the
    /// representative's (the loop body depends on the rank only through its GPU id and head or expert labels). Waits
    /// queued for its next compute operation went to the representative's counterpart. What follows is checked again.
    /// </summary>
    public void CatchUp(int gpu)
    {
        if (!IsFoldedRank(gpu)) throw new DagException($"GPU {gpu} is not a folded rank");
        _position![gpu] = _repOps![_rankRep![gpu]].Count;
        if (_computeWaits?[gpu] is { Count: > 0 } waits)
        {
            _pendingWaits -= waits.Count;
            waits.Clear();
        }
    }

    /// <summary>-1 when the operation is to be built (it involves a representative), else its checked counterpart.</summary>
    private int RankFoldCounterpart(OpKind kind, int gpu, int group, int layer, int microbatch, int index, PriceClass priceClass, ref ReadOnlySpan<int> deps)
    {
        int counterpart;
        if (group < 0)
        {
            if (IsRankRep(gpu)) { deps = Distinct(deps); return -1; }
            counterpart = Next(gpu);
        }
        else
        {
            var members = _groupMembers[group];
            foreach (var g in members)
                if (IsBuilt(g) && IsRankRep(g)) { deps = Distinct(deps); return -1; }
            counterpart = -1;
            foreach (var g in members)
            {
                if (!IsBuilt(g)) continue;
                var c = Next(g);
                if (counterpart < 0) counterpart = c;
                else if (c != counterpart) throw new RankFoldException($"{kind}: the members of group [{string.Join(",", members)}] map to different operations of their representatives");
            }
            if (counterpart < 0) throw new RankFoldException($"{kind}: group [{string.Join(",", members)}] has no built member");
            var theirs = _groups[counterpart];
            if (theirs < 0 || !SameClasses(members, _groupMembers[theirs]))
                throw new RankFoldException($"{kind}: group [{string.Join(",", members)}] is not an image of its counterpart's group");
        }
        var pc = _classTable[_classes[counterpart]];
        if (_kinds[counterpart] != kind || _phases[counterpart] != Phase || _layers[counterpart] != layer || _microbatches[counterpart] != microbatch
            || pc != priceClass with { Group = pc.Group })
            throw new RankFoldException($"{kind} on GPU {gpu} (layer {layer}, microbatch {microbatch}) differs from its representative's operation {counterpart} ({_kinds[counterpart]})");
        var start = _predStart[counterpart];
        if (!SameSet(deps, _preds.AsSpan(start, _predStart[counterpart + 1] - start)))
            throw new RankFoldException($"{kind} on GPU {gpu} (layer {layer}, microbatch {microbatch}) waits for other operations than its representative's");
        return counterpart;
    }

    /// <summary>Records a built operation in the sequences of its representatives and checks the folded members are in step.</summary>
    private void RankFoldRecord(int id, int gpu, int group)
    {
        if (group < 0) { _repOps![gpu].Add(id); return; }
        var members = _groupMembers[group];
        foreach (var g in members)
            if (IsBuilt(g) && IsRankRep(g)) _repOps![g].Add(id);
        foreach (var g in members)
        {
            if (!IsBuilt(g) || IsRankRep(g)) continue;
            if (Next(g) != id) throw new RankFoldException($"GPU {g} takes part in operation {id} out of step with its representative {_rankRep![g]}");
        }
    }

    /// <summary>Whether <paramref name="deps"/> (duplicates allowed) holds exactly the distinct <paramref name="preds"/>; no allocation for short lists.</summary>
    private static bool SameSet(ReadOnlySpan<int> deps, ReadOnlySpan<int> preds)
    {
        if (deps.Length < preds.Length) return false;
        if (preds.Length > 16)
        {
            var set = new HashSet<int>(preds.ToArray());
            foreach (var d in deps) if (!set.Contains(d)) return false;
            var mine = new HashSet<int>(deps.ToArray());
            return mine.Count == set.Count;
        }
        foreach (var d in deps) if (preds.IndexOf(d) < 0) return false;
        foreach (var p in preds) if (deps.IndexOf(p) < 0) return false;
        return true;
    }

    /// <summary>Whether two groups hold the same members' classes (as multisets).</summary>
    private bool SameClasses(int[] a, int[] b)
    {
        if (a.Length != b.Length) return false;
        Span<int> x = a.Length <= 128 ? stackalloc int[a.Length] : new int[a.Length];
        Span<int> y = b.Length <= 128 ? stackalloc int[b.Length] : new int[b.Length];
        for (var i = 0; i < a.Length; i++) { x[i] = Full(a[i]); y[i] = Full(b[i]); }
        x.Sort();
        y.Sort();
        return x.SequenceEqual(y);
    }

    private static ReadOnlySpan<int> Distinct(ReadOnlySpan<int> deps)
    {
        if (deps.Length > 16)
        {
            var seen = new HashSet<int>(deps.Length);
            var list = new List<int>(deps.Length);
            foreach (var d in deps) if (seen.Add(d)) list.Add(d);
            return list.Count == deps.Length ? deps : list.ToArray();
        }
        for (var i = 1; i < deps.Length; i++)
            for (var j = 0; j < i; j++)
                if (deps[i] == deps[j])
                {
                    var list = new List<int>(deps.Length);
                    foreach (var d in deps) if (!list.Contains(d)) list.Add(d);
                    return list.ToArray();
                }
        return deps;
    }
}

/// <summary>A rank fold whose folded ranks turned out not to issue their representatives' operations (build without it).</summary>
public sealed class RankFoldException(string message) : Exception(message);

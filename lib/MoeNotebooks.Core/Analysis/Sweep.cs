using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Analysis;

/// <summary>One swept field and the values it takes, in file order; each value is kept as its JSON text.</summary>
public sealed record SweepAxis(string Field, IReadOnlyList<string> Values)
{
    /// <summary>The values as shown in rows and CSV: a JSON string without its quotes, anything else as written.</summary>
    public IReadOnlyList<string> Labels { get; } = Values.Select(Label).ToArray();

    private static string Label(string json)
    {
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.ValueKind == JsonValueKind.String ? doc.RootElement.GetString()! : json;
    }
}

/// <summary>Random sampling of the grid: <paramref name="Count"/> points, each axis drawn uniformly, from a seeded generator.</summary>
public sealed record SweepRandom(int Count, int Seed);

/// <summary>How a sweep runs. <paramref name="Breakdown"/> adds per-category mean GPU seconds to every row (costs a second pass over the schedule).</summary>
public sealed record SweepOptions(int MaxDegreeOfParallelism = 0, int BatchSize = 4096, bool Breakdown = true)
{
    /// <summary>
    /// Reuse what provably repeats (the default): one DAG per structure (model and strategy, <see cref="Scenario.BuildDag"/>)
    /// for the whole sweep, re-priced and re-scheduled for every hardware and cost model, and one evaluation per distinct
    /// point (a random sweep draws some points more than once; the same point gives the same row). False evaluates every
    /// point from scratch, its own DAG built fresh: the oracle the reuse is tested against (same CSV, byte for byte).
    /// </summary>
    public bool Reuse { get; init; } = true;

    /// <summary>Most operations the sweep keeps built across batches (about 45 bytes each); beyond it a structure met again in a later batch is rebuilt.</summary>
    public long StructureCacheOperations { get; init; } = 4_000_000;

    public static SweepOptions Default { get; } = new();
    internal int Threads => MaxDegreeOfParallelism > 0 ? MaxDegreeOfParallelism : Environment.ProcessorCount;
}

/// <summary>Where a running sweep is: points done out of the total, how many were invalid, time so far.</summary>
public sealed record SweepProgress(long Done, long Total, long Invalid, TimeSpan Elapsed)
{
    public double Fraction => Total == 0 ? 1 : (double)Done / Total;
}

/// <summary>
/// One evaluated point. <see cref="Values"/> are the swept fields' values (<see cref="SweepAxis.Labels"/>, axis order). An invalid point has
/// <see cref="Valid"/> false, its <see cref="Reason"/> (field and requirement) and NaN times.
/// </summary>
public sealed record SweepRow(
    long Index,
    IReadOnlyList<string> Values,
    bool Valid,
    string? Reason,
    int Gpus,
    int Operations,
    double TotalSeconds,
    double MatmulSeconds,
    double AttentionSeconds,
    double ElementwiseSeconds,
    double CommunicationSeconds,
    double IdleSeconds)
{
    /// <summary>
    /// The memory model's verdict for a valid point (<see cref="MemoryModel.Estimate"/>, the check <c>moe search</c>
    /// rejects candidates with): true when it fits, false when not, null for an invalid point.
    /// </summary>
    public bool? FitsInMemory { get; init; }

    /// <summary>Peak bytes per GPU the memory model estimates (NaN for an invalid point).</summary>
    public double PeakBytesPerGpu { get; init; } = double.NaN;
}

/// <summary>Counts after a sweep: points, valid and invalid ones, invalid ones by reason, the fastest valid point.</summary>
public sealed record SweepSummary(long Total, long Valid, long Invalid, IReadOnlyDictionary<string, long> InvalidByReason, SweepRow? Fastest, TimeSpan Elapsed)
{
    /// <summary>Valid points whose memory verdict is "does not fit".</summary>
    public long MemoryInfeasible { get; init; }

    /// <summary>The fastest valid point that fits in memory, if any.</summary>
    public SweepRow? FastestFitting { get; init; }

    /// <summary>
    /// CPU time the process spent while the sweep ran (all its threads: the workers, the garbage collector, the JIT).
    /// On a shared machine the wall time <see cref="Elapsed"/> also counts time spent waiting for a core; this does not.
    /// </summary>
    public TimeSpan CpuTime { get; init; }
}

/// <summary>
/// A grid or random sweep over a base scenario's model, hardware, strategy and cost-model fields, read from JSON:
/// <code>
/// { "base": "data/scenarios/ep16.json" | { ...scenario... },
///   "grid": { "model.sequenceLength": [4096, 10000], "strategy.ep": [8, 16], "hardware.preset": ["H100-SXM", "H200"] },
///   "random": { "count": 1000, "seed": 1 } }
/// </code>
/// Without <c>random</c> every combination is evaluated (the last axis varies fastest); with it, <c>count</c> points are
/// drawn. A point is the base scenario with the values set and is validated exactly as a scenario file is; one that
/// does not fit is counted with its reason, not thrown. Points are evaluated in parallel and come out in index order,
/// so the output does not depend on the number of threads.
/// </summary>
public sealed class Sweep
{
    private readonly JsonObject _base;

    private Sweep(JsonObject baseScenario, IReadOnlyList<SweepAxis> axes, SweepRandom? random, string? source)
    {
        _base = baseScenario;
        Axes = axes;
        Random = random;
        Source = source;
        GridSize = 1;
        foreach (var a in axes) GridSize = Validate.Product("grid (number of combinations)", GridSize, a.Values.Count);
        Count = random?.Count ?? GridSize;
        _sections = SectionCache.For(baseScenario, axes);
        if (Count > MaxPoints)
            throw new ConfigException(random is null ? "grid (number of combinations)" : "random.count", Count.ToString(CultureInfo.InvariantCulture),
                string.Create(CultureInfo.InvariantCulture, $"must be at most {MaxPoints:N0} points (about a day at 1,000 points per second); split the sweep"), source);
    }

    /// <summary>Most points one sweep evaluates.</summary>
    public const long MaxPoints = 100_000_000;

    public IReadOnlyList<SweepAxis> Axes { get; }
    public SweepRandom? Random { get; }
    public string? Source { get; }

    /// <summary>Combinations in the full grid.</summary>
    public long GridSize { get; }

    /// <summary>Points this sweep evaluates: the grid size, or the random count.</summary>
    public long Count { get; }

    /// <summary>The base scenario (as JSON text) that every point starts from.</summary>
    public string BaseJson => _base.ToJsonString();

    public static Sweep Load(string path)
    {
        return Parse(JsonObjectReader.ReadFile(path, "sweep"), path, Path.GetDirectoryName(Path.GetFullPath(path)));
    }

    /// <summary>
    /// Reads a sweep description. A <c>base</c> path is looked up relative to <paramref name="baseDirectory"/> (the grid
    /// file's folder) first, then the current directory.
    /// </summary>
    public static Sweep Parse(string json, string? source = null, string? baseDirectory = null)
    {
        using var doc = JsonObjectReader.Parse(json, source);
        var r = new JsonObjectReader(doc.RootElement, "", source);
        var baseElement = r.Element("base") ?? throw new ConfigException("base", null, "is required: a scenario file path or an inline scenario object", source);
        JsonObject baseNode;
        if (baseElement.ValueKind == JsonValueKind.String)
        {
            var path = baseElement.GetString()!;
            var candidates = new[] { baseDirectory is null ? null : Path.Combine(baseDirectory, path), path };
            var found = candidates.FirstOrDefault(p => p is not null && (File.Exists(p) || Directory.Exists(p)))
                ?? throw new ConfigException("base", $"\"{path}\"", $"file not found (looked in {baseDirectory ?? "."} and the current directory)", source);
            var text = JsonObjectReader.ReadFile(found, "base", source: source);
            Scenario.Parse(text, found); // the base itself must be valid
            baseNode = ParseObject(text, found);
        }
        else if (baseElement.ValueKind == JsonValueKind.Object)
        {
            Scenario.Parse(baseElement.GetRawText(), source is null ? "base" : $"{source}: base");
            baseNode = ParseObject(baseElement.GetRawText(), source);
        }
        else throw new ConfigException("base", JsonObjectReader.Raw(baseElement), "must be a scenario file path (string) or an inline scenario object", source);

        var axes = new List<SweepAxis>();
        if (r.Element("grid") is { } grid)
        {
            var g = new JsonObjectReader(grid, "grid", source);
            foreach (var p in grid.EnumerateObject())
            {
                g.Has(p.Name);
                var field = g.Child(p.Name);
                if (p.Value.ValueKind != JsonValueKind.Array || p.Value.GetArrayLength() == 0)
                    throw new ConfigException(field, JsonObjectReader.Raw(p.Value), "must be a non-empty array of values", source);
                if (axes.Any(a => a.Field == p.Name))
                    throw new ConfigException(field, null, "is listed twice", source);
                var values = p.Value.EnumerateArray().Select(v => v.GetRawText()).ToArray();
                CheckField(baseNode, p.Name, values[0], field, source);
                axes.Add(new SweepAxis(p.Name, values));
            }
            g.Finish();
        }
        SweepRandom? random = null;
        if (r.Has("random"))
        {
            var rr = r.Object("random");
            random = new SweepRandom(rr.Int("count"), rr.OptionalInt("seed") ?? 0);
            rr.Finish();
            Validate.Positive("random.count", random.Count);
        }
        r.OptionalString("description");
        r.Finish();
        return new Sweep(baseNode, axes, random, source);
    }

    private static JsonObject ParseObject(string json, string? source) =>
        JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
        ?? throw new ConfigException("base", null, "must be a JSON object", source);

    /// <summary>A grid key must name a scenario field: set it on the base and let the scenario reader judge the key.</summary>
    private static void CheckField(JsonObject baseNode, string key, string value, string field, string? source)
    {
        var parts = key.Split('.');
        if (parts.Any(string.IsNullOrEmpty))
            throw new ConfigException(field, null, "must be a dotted scenario field such as \"strategy.ep\" or \"model.sequenceLength\"", source);
        try { Scenario.Parse(Apply(baseNode, [key], [value]).ToJsonString()); }
        catch (ConfigException e) when (e.Requirement.StartsWith("is not a known key", StringComparison.Ordinal) && (key == e.Field || key.StartsWith(e.Field + ".", StringComparison.Ordinal)))
        {
            throw new ConfigException(field, null, $"is not a scenario field: {e.Field} {e.Requirement}", source);
        }
        catch (ConfigException e) when (e.Requirement.StartsWith("must be a JSON object", StringComparison.Ordinal) && key.StartsWith(e.Field + ".", StringComparison.Ordinal))
        {
            throw new ConfigException(field, null, $"is not a scenario field: {e.Field} is not an object", source);
        }
        catch (ConfigException) { /* another problem with this value: judged per point */ }
        catch (DagException) { }
    }

    /// <summary>The base with the given fields set. Setting <c>hardware.preset</c> replaces an inline hardware description.</summary>
    private static JsonObject Apply(JsonObject baseNode, IReadOnlyList<string> fields, IReadOnlyList<string> values)
    {
        var node = (JsonObject)baseNode.DeepClone();
        for (var i = 0; i < fields.Count; i++)
        {
            var parts = fields[i].Split('.');
            var obj = node;
            for (var j = 0; j < parts.Length - 1; j++)
            {
                if (obj[parts[j]] is JsonObject child) { obj = child; continue; }
                var created = new JsonObject();
                obj[parts[j]] = created;
                obj = created;
            }
            if (fields[i] == "hardware.preset")
                foreach (var k in obj.Select(p => p.Key).Where(k => k is not ("gpus" or "gpusPerNode")).ToArray()) obj.Remove(k);
            obj[parts[^1]] = JsonNode.Parse(values[i]);
        }
        return node;
    }

    /// <summary>Which value of each axis point <paramref name="index"/> takes (grid: mixed radix, last axis fastest).</summary>
    private int[] GridChoice(long index)
    {
        var choice = new int[Axes.Count];
        for (var a = Axes.Count - 1; a >= 0; a--)
        {
            var n = Axes[a].Values.Count;
            choice[a] = (int)(index % n);
            index /= n;
        }
        return choice;
    }

    /// <summary>The scenario at a point; throws <see cref="ConfigException"/> when the combination is invalid.</summary>
    public Scenario ScenarioAt(long index)
    {
        if (index < 0 || index >= Count) throw new ArgumentOutOfRangeException(nameof(index), index, $"a point index lies in 0..{Count - 1}");
        if (Random is null) return ScenarioFor(GridChoice(index), index);
        var rng = new Random(Random.Seed);
        int[] choice = [];
        for (long i = 0; i <= index; i++)
        {
            choice = new int[Axes.Count];
            for (var a = 0; a < choice.Length; a++) choice[a] = rng.Next(Axes[a].Values.Count);
        }
        return ScenarioFor(choice, index);
    }

    internal Scenario ScenarioFor(int[] choice, long index, bool bySection = false)
    {
        if (bySection && _sections is { } sections && sections.Compose(this, choice) is { } composed)
            return composed with { Name = string.Create(CultureInfo.InvariantCulture, $"{composed.Name}#{index}") };
        var values = new string[Axes.Count];
        for (var a = 0; a < values.Length; a++) values[a] = Axes[a].Values[choice[a]];
        var node = Apply(_base, Axes.Select(a => a.Field).ToArray(), values);
        var scenario = Scenario.Parse(node.ToJsonString());
        return scenario with { Name = string.Create(CultureInfo.InvariantCulture, $"{scenario.Name}#{index}") };
    }

    /// <summary>The per-section reader of this sweep's points, or null when an axis sets something outside the four sections.</summary>
    private readonly SectionCache? _sections;

    /// <summary>
    /// A point's scenario read section by section: <see cref="Scenario.Parse"/> reads the model, hardware, strategy and
    /// cost-model objects each on its own (<c>ModelSpec.Read(r.Object("model"))</c>, ...) and only then checks how they
    /// fit together (<see cref="Scenario.Validated"/>). Each section of a point is the base's section with the values of
    /// the axes that fall inside it, so it takes as many distinct values as those axes have combinations (96 models,
    /// 8 strategies, 3 GPUs and 2 cost models in the founding sweep, instead of 2,970 whole scenarios): each is read
    /// once, from exactly the JSON text the whole point would hold there, by the same reader, and the records are
    /// shared. The scenario is then assembled and validated as <see cref="Scenario.Parse"/> does. A section that fails
    /// to read sends its points down the whole-document path, so that an invalid point reports the very error the
    /// whole document gives first (the document-wide checks run before any section is read).
    /// </summary>
    private sealed class SectionCache
    {
        private static readonly string[] Names = Scenario.Sections;
        private readonly JsonObject _base;
        private readonly string _name, _description;
        private readonly int[][] _axes; // per section, the axes inside it
        private readonly System.Collections.Concurrent.ConcurrentDictionary<long, object?>[] _read;

        private SectionCache(JsonObject baseNode, string name, string description, int[][] axes)
        {
            _base = baseNode;
            _name = name;
            _description = description;
            _axes = axes;
            _read = new System.Collections.Concurrent.ConcurrentDictionary<long, object?>[Names.Length];
            for (var s = 0; s < Names.Length; s++) _read[s] = new();
        }

        public static SectionCache? For(JsonObject baseNode, IReadOnlyList<SweepAxis> axes)
        {
            var bySection = new List<int>[Names.Length];
            for (var s = 0; s < Names.Length; s++) bySection[s] = [];
            for (var a = 0; a < axes.Count; a++)
            {
                var section = Array.IndexOf(Names, axes[a].Field.Split('.')[0]);
                if (section < 0) return null;
                bySection[section].Add(a);
            }
            // The base's name and description, as Scenario.Parse reads them (the base was read whole when loaded).
            using var doc = JsonObjectReader.Parse(baseNode.ToJsonString(), null);
            var r = new JsonObjectReader(doc.RootElement, "", null);
            return new SectionCache(baseNode, r.OptionalString("name") ?? "scenario", r.OptionalString("description") ?? "", [.. bySection.Select(l => l.ToArray())]);
        }

        /// <summary>The point's scenario, validated; null when one of its sections does not read (the caller reads the whole document).</summary>
        public Scenario? Compose(Sweep sweep, int[] choice)
        {
            var parts = new object?[Names.Length];
            for (var s = 0; s < Names.Length; s++)
            {
                long key = 0;
                foreach (var a in _axes[s]) key = key * sweep.Axes[a].Values.Count + choice[a];
                parts[s] = _read[s].GetOrAdd(key, static (_, x) => x.Cache.Read(x.Section, x.Sweep, x.Choice), (Cache: this, Section: s, Sweep: sweep, Choice: choice));
                if (parts[s] is null) return null;
            }
            return new Scenario(_name, (ModelSpec)parts[0]!, (HardwareSpec)parts[1]!, (StrategySpec)parts[2]!, (CostModelSpec)parts[3]!, _description).Validated();
        }

        /// <summary>Section <paramref name="s"/> of the point, read as <see cref="Scenario.Parse"/> reads it from the whole document; null when it does not read.</summary>
        private object? Read(int s, Sweep sweep, int[] choice)
        {
            var name = Names[s];
            var node = new JsonObject();
            if (_base[name] is { } section) node[name] = section.DeepClone();
            var fields = _axes[s].Select(a => sweep.Axes[a].Field).ToArray();
            var values = _axes[s].Select(a => sweep.Axes[a].Values[choice[a]]).ToArray();
            node = Apply(node, fields, values);
            try
            {
                using var doc = JsonObjectReader.Parse(node.ToJsonString(), null);
                var r = new JsonObjectReader(doc.RootElement, "", null);
                return Scenario.ReadSection(r, s, null);
            }
            catch (ConfigException) { return null; }
            catch (DagException) { return null; }
        }
    }

    /// <summary>Evaluates every point, calling <paramref name="onRow"/> in index order (on the calling thread).</summary>
    public SweepSummary Run(Action<SweepRow> onRow, SweepOptions? options = null, IProgress<SweepProgress>? progress = null, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        long valid = 0, invalid = 0, done = 0;
        var reasons = new SortedDictionary<string, long>(StringComparer.Ordinal);
        SweepRow? fastest = null, fastestFitting = null;
        long memoryInfeasible = 0;
        foreach (var rows in Batches(options ?? SweepOptions.Default, cancellation))
        {
            foreach (var row in rows)
            {
                if (row.Valid)
                {
                    valid++;
                    if (fastest is null || row.TotalSeconds < fastest.TotalSeconds) fastest = row;
                    if (row.FitsInMemory == false) memoryInfeasible++;
                    else if (fastestFitting is null || row.TotalSeconds < fastestFitting.TotalSeconds) fastestFitting = row;
                }
                else
                {
                    invalid++;
                    reasons[row.Reason!] = reasons.GetValueOrDefault(row.Reason!) + 1;
                }
                onRow(row);
            }
            done += rows.Length;
            progress?.Report(new SweepProgress(done, Count, invalid, clock.Elapsed));
        }
        return new SweepSummary(Count, valid, invalid, reasons, fastest, clock.Elapsed)
        {
            MemoryInfeasible = memoryInfeasible, FastestFitting = fastestFitting, CpuTime = Process.GetCurrentProcess().TotalProcessorTime - cpu0,
        };
    }

    /// <summary>Every row in index order, evaluated in parallel batches as the enumeration proceeds (no DataFrame needed).</summary>
    public IEnumerable<SweepRow> Rows(SweepOptions? options = null, CancellationToken cancellation = default)
    {
        foreach (var rows in Batches(options ?? SweepOptions.Default, cancellation))
            foreach (var row in rows) yield return row;
    }

    /// <summary>
    /// Batches of rows in index order; each batch is evaluated in parallel, choices are drawn sequentially. With
    /// <see cref="SweepOptions.Reuse"/>, a point drawn before (same value on every axis, hence the same scenario) takes
    /// the earlier row with its own index, and points that share a structure (model and strategy: the DAG depends on
    /// nothing else) are evaluated one after another on one DAG, built once for the whole sweep while the cache's
    /// budget lasts. Only the evaluation order changes: rows keep their index, so the output does not.
    /// </summary>
    private IEnumerable<SweepRow[]> Batches(SweepOptions options, CancellationToken cancellation)
    {
        var batch = Math.Max(1, options.BatchSize);
        var rng = Random is null ? null : new Random(Random.Seed);
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = options.Threads, CancellationToken = cancellation };
        var workers = new ConcurrentBag<Worker>();
        var structures = options.Reuse ? new StructureCache(options.StructureCacheOperations) : null;
        // Rows of points already evaluated, by grid position (only a random sweep repeats points); bounded in count.
        var seen = options.Reuse && Random is not null ? new Dictionary<long, SweepRow>() : null;
        const int MaxRemembered = 1 << 20;
        for (long from = 0; from < Count; from += batch)
        {
            // Checked here too: a batch whose points were all drawn before runs no parallel loop (which would check it).
            cancellation.ThrowIfCancellationRequested();
            var to = Math.Min(Count, from + batch);
            var choices = new int[to - from][];
            for (var i = 0; i < choices.Length; i++)
            {
                if (rng is null) { choices[i] = GridChoice(from + i); continue; }
                var choice = new int[Axes.Count];
                for (var a = 0; a < choice.Length; a++) choice[a] = rng.Next(Axes[a].Values.Count);
                choices[i] = choice;
            }
            var rows = new SweepRow[choices.Length];
            var scenarios = new Scenario?[choices.Length];
            var start = from;
            // 0. Points drawn before take that row; a point drawn twice in this batch is evaluated once (its first draw).
            var sameAs = new int[choices.Length];
            Array.Fill(sameAs, -1);
            var firsts = seen is null ? null : new Dictionary<long, int>();
            var fresh = new List<int>(choices.Length);
            for (var i = 0; i < choices.Length; i++)
            {
                if (seen is not null)
                {
                    var key = GridPosition(choices[i]);
                    if (seen.TryGetValue(key, out var earlier)) { rows[i] = earlier with { Index = start + i }; continue; }
                    if (firsts!.TryGetValue(key, out var first)) { sameAs[i] = first; continue; }
                    firsts[key] = i;
                }
                fresh.Add(i);
            }
            // 1. Read every point's scenario (invalid ones become rows here).
            Parallel.For(0, fresh.Count, parallel, k =>
            {
                var i = fresh[k];
                try { scenarios[i] = ScenarioFor(choices[i], start + i, options.Reuse); }
                catch (ConfigException e) { rows[i] = Invalid(start + i, LabelsOf(choices[i]), QuickEvaluation.Reason(e)); }
                catch (DagException e) { rows[i] = Invalid(start + i, LabelsOf(choices[i]), e.Message); }
            });
            // 2. Evaluate points that share model and strategy (hence the DAG) one after another on one worker.
            var groups = new Dictionary<(ModelSpec, StrategySpec), int>();
            var order = new List<(int Group, int Index)>(choices.Length);
            foreach (var i in fresh)
            {
                if (scenarios[i] is not { } sc) continue;
                if (!groups.TryGetValue((sc.Model, sc.Strategy), out var gid)) groups[(sc.Model, sc.Strategy)] = gid = groups.Count;
                order.Add((gid, i));
            }
            order.Sort();
            var chunk = Math.Max(1, order.Count / (options.Threads * 4));
            if (order.Count > 0)
                Parallel.ForEach(Partitioner.Create(0, order.Count, chunk), parallel, () => workers.TryTake(out var w) ? w : new Worker(),
                    (range, _, worker) =>
                    {
                        for (var k = range.Item1; k < range.Item2; k++)
                        {
                            var i = order[k].Index;
                            rows[i] = Evaluate(start + i, choices[i], scenarios[i]!, worker, structures, options.Breakdown);
                        }
                        return worker;
                    },
                    workers.Add);
            // 3. Repeated points: the row of their first draw, with their own index.
            for (var i = 0; i < choices.Length; i++)
                if (sameAs[i] >= 0) rows[i] = rows[sameAs[i]] with { Index = start + i };
            if (seen is not null)
                foreach (var i in fresh)
                    if (seen.Count < MaxRemembered) seen[GridPosition(choices[i])] = rows[i];
            yield return rows;
        }
    }

    /// <summary>A point's position in the full grid (mixed radix, last axis fastest): equal positions are equal points.</summary>
    private long GridPosition(int[] choice)
    {
        long p = 0;
        for (var a = 0; a < choice.Length; a++) p = p * Axes[a].Values.Count + choice[a];
        return p;
    }

    /// <summary>Streams rows as CSV (invariant culture, round-trip doubles): header, then one line per point in index order.</summary>
    public SweepSummary WriteCsv(TextWriter writer, SweepOptions? options = null, IProgress<SweepProgress>? progress = null, CancellationToken cancellation = default)
    {
        writer.WriteLine(string.Join(',', CsvHeader().Select(Csv)));
        return Run(row => WriteCsvRow(writer, row), options, progress, cancellation);
    }

    /// <summary>
    /// One row under <see cref="CsvHeader"/>: index, the axis labels, valid, reason, GPUs, operations, the six seconds
    /// ("R" format, empty for NaN), the memory verdict and the peak bytes; quoted as the header is, with the writer's line end, handed to
    /// <paramref name="writer"/> in one call (a console writer flushes on every call: one row, one write). The fields are
    /// formatted into a per-thread buffer, numbers straight into it, so a row allocates nothing (a sweep writes thousands
    /// per second; the strings, arrays and LINQ of joining the fields took a tenth of the founding sweep).
    /// </summary>
    public static void WriteCsvRow(TextWriter writer, SweepRow row)
    {
        var b = new RowBuffer(t_row ??= new char[256]);
        b.Integer(row.Index);
        foreach (var v in row.Values) { b.Add(','); b.Add(Csv(v)); }
        b.Add(row.Valid ? ",true," : ",false,");
        b.Add(Csv(row.Reason ?? ""));
        b.Add(',');
        b.Integer(row.Gpus);
        b.Add(',');
        b.Integer(row.Operations);
        b.Real(row.TotalSeconds);
        b.Real(row.MatmulSeconds);
        b.Real(row.AttentionSeconds);
        b.Real(row.ElementwiseSeconds);
        b.Real(row.CommunicationSeconds);
        b.Real(row.IdleSeconds);
        b.Add(row.FitsInMemory switch { true => ",fits", false => ",does not fit", null => "," });
        b.Real(row.PeakBytesPerGpu);
        b.Add(writer.NewLine);
        t_row = b.Chars;
        writer.Write(b.Chars, 0, b.Length);
    }

    [ThreadStatic] private static char[]? t_row;

    /// <summary>A growing character buffer for one CSV row.</summary>
    private struct RowBuffer(char[] chars)
    {
        public char[] Chars = chars;
        public int Length;

        private void Room(int more)
        {
            if (Length + more > Chars.Length) Array.Resize(ref Chars, Math.Max(2 * Chars.Length, Length + more));
        }

        public void Add(char c) { Room(1); Chars[Length++] = c; }

        public void Add(string s) { Room(s.Length); s.CopyTo(0, Chars, Length, s.Length); Length += s.Length; }

        public void Integer(long v)
        {
            Room(24);
            v.TryFormat(Chars.AsSpan(Length), out var n, default, CultureInfo.InvariantCulture);
            Length += n;
        }

        /// <summary>A comma, then the number in "R" format (nothing for NaN).</summary>
        public void Real(double v)
        {
            Add(',');
            if (double.IsNaN(v)) return;
            Room(32);
            v.TryFormat(Chars.AsSpan(Length), out var n, "R", CultureInfo.InvariantCulture);
            Length += n;
        }
    }

    public IReadOnlyList<string> CsvHeader() =>
        ["index", .. Axes.Select(a => a.Field), "valid", "reason", "gpus", "operations", "total_seconds",
         "matmul_seconds", "attention_seconds", "elementwise_seconds", "communication_seconds", "idle_seconds",
         "memory_verdict", "peak_bytes_per_gpu"];

    private static string Csv(string field) =>
        field.AsSpan().IndexOfAny(",\"\n\r") < 0 ? field : "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>Per-thread state: the last DAG used (reused while model and strategy repeat) and schedule buffers.</summary>
    private sealed class Worker
    {
        public readonly ScheduleWorkspace Workspace = new();
        // By folding (an array, not a dictionary keyed by our enum: see Dag.PriceClassIndex on framework generics in short runs).
        private readonly (ModelSpec Model, StrategySpec Strategy, OperatorDag Dag)?[] _last = new (ModelSpec, StrategySpec, OperatorDag)?[(int)DagFolding.Periodic + 1];   // the last folding
        private StructureCache? _shared;

        /// <summary>The sweep's DAGs, remembering the last one of each folding (points of one structure come in a row).</summary>
        public Func<Scenario, DagFolding, OperatorDag> Structures(StructureCache shared)
        {
            _shared = shared;
            return _get ??= Get;
        }

        private Func<Scenario, DagFolding, OperatorDag>? _get;

        // Per DAG, hardware and communication inputs: whether the cost model prices the DAG's folded ranks symmetrically
        // and its link footprints. Both depend on the DAG's groups and on the communication model alone, which is made
        // from the hardware and CostModelSpec.Communication: points of one structure that differ in the compute cost
        // model or in numbers outside the hardware share them. Hardware by reference (a sweep's sections are shared
        // records; a miss only recomputes). A handful of entries, scanned: points of one structure come in a row.
        private readonly CommunicationEntry?[] _communication = new CommunicationEntry?[8];
        private int _communicationNext;

        private sealed class CommunicationEntry(OperatorDag dag, HardwareSpec hardware, CommunicationKey key)
        {
            public readonly OperatorDag Dag = dag;
            public readonly HardwareSpec Hardware = hardware;
            public readonly CommunicationKey Key = key;
            public bool? Keeps;
            public bool HasFootprints;
            public LinkFootprints? Footprints;
        }

        private CommunicationEntry EntryFor(OperatorDag dag, Scenario scenario)
        {
            var key = scenario.CostModel.Communication;
            foreach (var e in _communication)
                if (e is not null && ReferenceEquals(e.Dag, dag) && ReferenceEquals(e.Hardware, scenario.Hardware) && e.Key.Same(key)) return e;
            var entry = new CommunicationEntry(dag, scenario.Hardware, key);
            _communication[_communicationNext] = entry;
            _communicationNext = (_communicationNext + 1) % _communication.Length;
            return entry;
        }

        /// <summary><c>cost.PricesFoldSymmetrically(dag)</c>, kept per DAG, hardware and communication inputs.</summary>
        public bool KeepsFold(OperatorDag dag, Scenario scenario, CostModel cost)
        {
            if (!dag.IsFolded) return true;
            var e = EntryFor(dag, scenario);
            return e.Keeps ??= cost.PricesFoldSymmetrically(dag);
        }

        /// <summary><c>cost.Footprints(dag)</c>, kept per DAG, hardware and communication inputs.</summary>
        public LinkFootprints? FootprintsOf(OperatorDag dag, Scenario scenario, CostModel cost)
        {
            var e = EntryFor(dag, scenario);
            if (!e.HasFootprints) { e.Footprints = cost.Footprints(dag); e.HasFootprints = true; }
            return e.Footprints;
        }

        private OperatorDag Get(Scenario scenario, DagFolding folding)
        {
            if (_last[(int)folding] is { } last && last.Model == scenario.Model && last.Strategy == scenario.Strategy) return last.Dag;
            var dag = _shared!.Get(scenario, folding);
            _last[(int)folding] = (scenario.Model, scenario.Strategy, dag);
            return dag;
        }
    }

    /// <summary>
    /// The DAGs of a sweep by structure: a DAG depends on the model and the strategy only (<see cref="Scenario.BuildDag"/>),
    /// folded or whole; shared by the workers, up to a budget of operations (past it, nothing more is kept).
    /// </summary>
    internal sealed class StructureCache(long budgetOperations)
    {
        private readonly ConcurrentDictionary<(ModelSpec Model, StrategySpec Strategy, DagFolding Folding), OperatorDag> _dags = new();
        private long _operations;

        // Memory verdicts by the very model, strategy and hardware records (a sweep reading points by section shares
        // them between points that differ only in the cost model); at most MaxVerdicts kept.
        private readonly ConcurrentDictionary<(object Model, object Strategy, object Hardware), MemoryReport> _memory = new(SameRecords.Instance);
        private const int MaxVerdicts = 1 << 20;

        /// <summary>
        /// The memory verdict and peak of the point (<see cref="MemoryModel.EstimateAtMicrobatches"/>: what the row shows,
        /// the same numbers as <see cref="MemoryModel.Estimate"/>; a pure function of the model, strategy and hardware), once per such triple.
        /// </summary>
        public MemoryReport Memory(Scenario scenario)
        {
            var key = ((object)scenario.Model, (object)scenario.Strategy, (object)scenario.Hardware);
            if (_memory.TryGetValue(key, out var report)) return report;
            report = MemoryModel.EstimateAtMicrobatches(scenario.Model, scenario.Strategy, scenario.Hardware);
            if (_memory.Count < MaxVerdicts) _memory.TryAdd(key, report);
            return report;
        }

        /// <summary>Keys equal when they hold the same three instances (no record hashing: equal records that are distinct instances just miss).</summary>
        private sealed class SameRecords : IEqualityComparer<(object Model, object Strategy, object Hardware)>
        {
            public static readonly SameRecords Instance = new();

            public bool Equals((object Model, object Strategy, object Hardware) x, (object Model, object Strategy, object Hardware) y) =>
                ReferenceEquals(x.Model, y.Model) && ReferenceEquals(x.Strategy, y.Strategy) && ReferenceEquals(x.Hardware, y.Hardware);

            public int GetHashCode((object Model, object Strategy, object Hardware) k) =>
                HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Model), System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Strategy),
                    System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Hardware));
        }

        public OperatorDag Get(Scenario scenario, DagFolding folding)
        {
            var key = (scenario.Model, scenario.Strategy, folding);
            if (_dags.TryGetValue(key, out var dag)) return dag;
            dag = scenario.BuildDag(folding);
            if (Interlocked.Add(ref _operations, dag.Count) <= budgetOperations) dag = _dags.GetOrAdd(key, dag);
            else Interlocked.Add(ref _operations, -dag.Count);
            return dag;
        }
    }

    private string[] LabelsOf(int[] choice)
    {
        var values = new string[Axes.Count];
        for (var a = 0; a < values.Length; a++) values[a] = Axes[a].Labels[choice[a]];
        return values;
    }

    private SweepRow Evaluate(long index, int[] choice, Scenario scenario, Worker worker, StructureCache? structures, bool breakdown)
    {
        var values = LabelsOf(choice);
        try
        {
            var e = structures is null
                ? QuickEvaluation.Run(scenario, null, worker.Workspace, breakdown)
                : QuickEvaluation.Run(scenario, null, worker.Workspace, breakdown, worker.Structures(structures), worker.FootprintsOf, worker.KeepsFold);
            var memory = structures is null ? MemoryModel.Estimate(scenario.Model, scenario.Strategy, scenario.Hardware) : structures.Memory(scenario);
            return new SweepRow(index, values, true, null, scenario.Hardware.GpuCount, (int)Math.Min(e.Dag.RepresentedCount, int.MaxValue), e.TotalSeconds,
                e.Breakdown?["matmul"] ?? double.NaN, e.Breakdown?["attention"] ?? double.NaN, e.Breakdown?["elementwise"] ?? double.NaN,
                e.Breakdown?["communication"] ?? double.NaN, e.Breakdown?["idle"] ?? double.NaN)
            { FitsInMemory = memory.Feasible, PeakBytesPerGpu = memory.PeakBytesPerGpu };
        }
        catch (ConfigException e) { return Invalid(index, values, QuickEvaluation.Reason(e)); }
        catch (DagException e) { return Invalid(index, values, e.Message); }
    }

    private static SweepRow Invalid(long index, string[] values, string reason) =>
        new(index, values, false, reason, 0, 0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
}

/// <summary>The total (and optionally the breakdown) of a valid scenario without the formula or named critical path.</summary>
internal static class QuickEvaluation
{
    public readonly record struct Outcome(OperatorDag Dag, double TotalSeconds, IReadOnlyDictionary<string, double>? Breakdown);

    /// <summary>
    /// <paramref name="scenario"/> must be validated; <paramref name="dag"/>, when given, must be its DAG: a DAG depends on
    /// the model and the strategy only (<see cref="Scenario.BuildDag"/>), so sweeps reuse it while those repeat.
    /// </summary>
    public static Outcome Run(Scenario scenario, OperatorDag? dag, ScheduleWorkspace workspace, bool breakdown, Func<Scenario, DagFolding, OperatorDag>? structures = null,
        Func<OperatorDag, Scenario, CostModel, LinkFootprints?>? footprints = null, Func<OperatorDag, Scenario, CostModel, bool>? keepsFold = null)
    {
        var cost = scenario.CreateCostModel();
        Func<OperatorDag, bool> keeps = keepsFold is null ? cost.PricesFoldSymmetrically : d => keepsFold(d, scenario, cost);
        if (dag is not null && dag.IsFolded && !keeps(dag)) dag = null;
        // Scenario.BuildDagFor's choice (folded, or less folded when this cost model prices the symmetric ranks
        // differently), with the sweep's DAG of this structure where it has one.
        dag ??= structures is null ? scenario.BuildDagFor(cost) : scenario.BuildDagFor(cost, DagFolding.Symmetric, f => structures(scenario, f), keeps);
        if (!breakdown) return new(dag, dag.TotalSeconds(cost, workspace), null);
        // The total and the breakdown of dag.CriticalPath(cost), without the critical path or fresh buffers.
        var (total, mean) = dag.TotalAndBreakdown(cost, workspace, footprints is null ? cost.Footprints(dag) : footprints(dag, scenario, cost));
        return new(dag, total, mean);
    }

    /// <summary>A reason that groups alike failures: the field and the requirement, without the file or the value.</summary>
    public static string Reason(ConfigException e) => $"{e.Field}: {e.Requirement}";
}

using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>
/// A fitted latency-bandwidth line for one collective on one group shape (GPUs and nodes) over a range of message sizes:
/// seconds = <see cref="LatencySeconds"/> + bytes / <see cref="BytesPerSecond"/>. <see cref="BytesPerSecond"/> is the
/// algorithm bandwidth (message bytes per second, nccl-tests' algbw); <see cref="BusBytesPerSecond"/> multiplies in the
/// algorithm factor (2(p-1)/p for all-reduce, (p-1)/p for all-to-all) to compare with a link's datasheet bandwidth.
/// </summary>
public sealed record CollectiveFit(
    CollectivePattern Pattern,
    int Gpus,
    int Nodes,
    double MinBytes,
    double MaxBytes,
    double LatencySeconds,
    double BytesPerSecond,
    int Points,
    double RmsRelativeError)
{
    public double Seconds(double bytes) => LatencySeconds + bytes / BytesPerSecond;

    public double BusBytesPerSecond => BytesPerSecond * LinkCommunication.AlgorithmFactor(Pattern, Gpus);

    public bool Covers(double bytes) => bytes >= MinBytes && bytes <= MaxBytes;

    /// <summary>
    /// Least squares on time versus bytes, weighted by 1/time² (so every size counts by its relative error):
    /// minimises Σ ((a + b·bytes) / t - 1)². A negative intercept is refitted through the origin (latency 0); a slope
    /// that is not positive (time flat or falling over the points, as for small latency-bound messages) becomes a
    /// constant time with infinite <see cref="BytesPerSecond"/>.
    /// </summary>
    public static CollectiveFit Fit(CollectivePattern pattern, int gpus, int nodes, IReadOnlyList<(double Bytes, double Seconds)> points)
    {
        var what = $"{MeasurementCsv.NameOf(pattern)} on {gpus} GPUs / {nodes} node(s)";
        if (points.Select(p => p.Bytes).Distinct().Count() < 2)
            throw new ConfigException("costModel.communication", $"{points.Count} rows", $"cannot fit {what}: needs at least two distinct message sizes");
        double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
        foreach (var (x, t) in points)
        {
            var w = 1 / (t * t);
            sw += w; sx += w * x; sy += w * t; sxx += w * x * x; sxy += w * x * t;
        }
        var slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx);
        var intercept = (sy - slope * sx) / sw;
        if (intercept < 0)
        {
            intercept = 0;
            slope = sxy / sxx;
        }
        if (!(slope > 0))
        {
            // Time does not grow with size over these points (latency-bound, noisy): a constant, weighted mean time.
            slope = 0;
            intercept = sy / sw;
        }
        var rms = Math.Sqrt(points.Average(p => Math.Pow((intercept + slope * p.Bytes) / p.Seconds - 1, 2)));
        return new CollectiveFit(pattern, gpus, nodes, points.Min(p => p.Bytes), points.Max(p => p.Bytes), intercept, slope > 0 ? 1 / slope : double.PositiveInfinity, points.Count, rms);
    }

    /// <summary>
    /// Fits every (collective, GPUs, nodes) group of <paramref name="measurements"/>, one line per message-size segment:
    /// <paramref name="breakpointsBytes"/> split the sizes (default one split at 1 MiB, where NCCL moves from latency- to
    /// bandwidth-bound protocols). A segment with fewer than two sizes joins its neighbour.
    /// </summary>
    public static IReadOnlyList<CollectiveFit> FitAll(IEnumerable<CollectiveMeasurement> measurements, IReadOnlyList<double>? breakpointsBytes = null)
    {
        var breaks = (breakpointsBytes ?? [1 << 20]).Order().ToArray();
        var fits = new List<CollectiveFit>();
        foreach (var group in measurements.Where(m => m.Pattern != CollectivePattern.None).GroupBy(m => (m.Pattern, m.Gpus, m.Nodes)).OrderBy(g => g.Key))
        {
            var segments = new List<List<(double, double)>>();
            for (var s = 0; s <= breaks.Length; s++)
            {
                double lo = s == 0 ? double.NegativeInfinity : breaks[s - 1], hi = s == breaks.Length ? double.PositiveInfinity : breaks[s];
                var seg = group.Where(m => m.Bytes >= lo && m.Bytes < hi).Select(m => (m.Bytes, m.Seconds)).ToList();
                if (seg.Count > 0) segments.Add(seg);
            }
            for (var i = 0; i < segments.Count; i++)
            {
                if (segments[i].Select(p => p.Item1).Distinct().Count() >= 2 || segments.Count == 1) continue;
                var into = i + 1 < segments.Count ? i + 1 : i - 1;
                segments[into].AddRange(segments[i]);
                segments.RemoveAt(i);
                i = -1;
            }
            foreach (var seg in segments) fits.Add(Fit(group.Key.Pattern, group.Key.Gpus, group.Key.Nodes, seg));
        }
        return fits;
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{MeasurementCsv.NameOf(Pattern)} {Gpus} GPUs/{Nodes} node(s) [{MinBytes:G4}, {MaxBytes:G4}] B: {LatencySeconds * 1e6:F1} us + bytes / {BytesPerSecond / 1e9:F1} GB/s (bus {BusBytesPerSecond / 1e9:F1} GB/s)");
}

/// <summary>
/// Communication priced by fitted latency-bandwidth lines (<see cref="CollectiveFit"/>) where a fit exists for the
/// collective and the group's shape (GPUs, nodes), and by the topology model <see cref="LinkCommunication"/> otherwise:
/// on links calibrated per level from the same measurements (<see cref="LinkCalibration.CalibrateLevels"/>) when they
/// come from one system and pin a level, else on the datasheet links.
/// Within a group shape, the segment covering the message size is used; beyond the measured sizes the nearest segment
/// extrapolates and a warning is collected in <see cref="Warnings"/>, as is every fallback to the datasheet.
/// </summary>
public sealed class CalibratedCommunication(HardwareSpec hardware, IReadOnlyList<CollectiveFit> fits, string source = "measurements", AllToAllImplementation allToAll = AllToAllImplementation.Nccl, HardwareSpec? levels = null, IReadOnlyList<string>? levelNotes = null) : ICommunicationCostModel, ILinkTopology, ILinkOwners
{
    private readonly ILookup<(CollectivePattern, int, int), CollectiveFit> _fits = fits.ToLookup(f => (f.Pattern, f.Gpus, f.Nodes));
    private readonly LinkCommunication _datasheet = new(levels ?? hardware, allToAll);

    /// <summary>
    /// The topology model that prices what no fit covers (on links calibrated per level when <see cref="LevelNotes"/>
    /// is not empty), and says which links a collective occupies.
    /// </summary>
    public LinkCommunication Datasheet => _datasheet;

    public int LinkCount => _datasheet.LinkCount;

    public void Links(CollectivePattern pattern, ReadOnlySpan<int> gpus, List<int> into) => _datasheet.Links(pattern, gpus, into);

    public int OwnerOf(int link) => _datasheet.OwnerOf(link);

    public int SameLinkOf(int link, int gpu) => _datasheet.SameLinkOf(link, gpu);
    private readonly List<string> _warnings = new();
    private readonly HashSet<string> _warned = new(StringComparer.Ordinal);
    private readonly object _gate = new();

    public HardwareSpec Hardware { get; } = hardware;
    public IReadOnlyList<CollectiveFit> Fits { get; } = fits;

    /// <summary>What the per-level link calibration read (empty when the fallback uses the datasheet links).</summary>
    public IReadOnlyList<string> LevelNotes { get; } = levels is null ? [] : levelNotes ?? [];
    public string Source { get; } = source;
    public string Name => $"calibrated-links({Source})";

    public IReadOnlyList<string> Warnings { get { lock (_gate) return _warnings.ToArray(); } }

    /// <summary>
    /// Fits every measured group shape, and calibrates the links per level for the shapes not measured when the rows
    /// come from one system (rows of several systems would mix their links).
    /// </summary>
    public static CalibratedCommunication FromMeasurements(HardwareSpec hardware, IEnumerable<CollectiveMeasurement> measurements, string source = "measurements", IReadOnlyList<double>? breakpointsBytes = null, AllToAllImplementation allToAll = AllToAllImplementation.Nccl)
    {
        var rows = measurements as IReadOnlyList<CollectiveMeasurement> ?? measurements.ToArray();
        var notes = new List<string>();
        var levels = rows.Select(r => r.System).Distinct(StringComparer.Ordinal).Count() == 1 ? LinkCalibration.CalibrateLevels(hardware, rows, notes) : null;
        return new(hardware, CollectiveFit.FitAll(rows, breakpointsBytes), source, allToAll, levels, notes);
    }

    /// <summary>The fit that prices this collective, or null when the datasheet link does.</summary>
    public CollectiveFit? FitFor(CollectivePattern pattern, double bytes, int gpus, int nodes)
    {
        var candidates = _fits[(pattern, gpus, nodes)].ToArray();
        if (candidates.Length == 0) return null;
        return candidates.FirstOrDefault(f => f.Covers(bytes))
            ?? candidates.MinBy(f => bytes < f.MinBytes ? f.MinBytes / bytes : bytes / f.MaxBytes);
    }

    public double Seconds(CollectivePattern pattern, double bytesPerGpu, ReadOnlySpan<int> gpus)
    {
        if (bytesPerGpu <= 0 || gpus.Length < 2) return 0;
        var nodes = new HashSet<int>();
        foreach (var g in gpus) nodes.Add(Hardware.NodeOf(g));
        var fit = FitFor(pattern, bytesPerGpu, gpus.Length, nodes.Count);
        if (fit is null)
        {
            Warn($"none:{pattern}:{gpus.Length}:{nodes.Count}",
                LevelNotes.Count > 0
                    ? $"no fitted {MeasurementCsv.NameOf(pattern)} for {gpus.Length} GPUs over {nodes.Count} node(s) in {Source}; using the topology model on links calibrated per level ({string.Join("; ", LevelNotes)})"
                    : $"no fitted {MeasurementCsv.NameOf(pattern)} for {gpus.Length} GPUs over {nodes.Count} node(s) in {Source}; using the datasheet link of {Hardware.Name}");
            return _datasheet.Seconds(pattern, bytesPerGpu, gpus);
        }
        if (!fit.Covers(bytesPerGpu))
            Warn($"range:{pattern}:{gpus.Length}:{nodes.Count}:{(bytesPerGpu < fit.MinBytes ? "lo" : "hi")}",
                string.Create(CultureInfo.InvariantCulture, $"{MeasurementCsv.NameOf(pattern)} of {bytesPerGpu:G4} B on {gpus.Length} GPUs/{nodes.Count} node(s) lies outside the measured sizes [{fit.MinBytes:G4}, {fit.MaxBytes:G4}] B in {Source}; extrapolating"));
        return fit.Seconds(bytesPerGpu);
    }

    private void Warn(string key, string message)
    {
        lock (_gate)
        {
            if (_warned.Add(key)) _warnings.Add(message);
        }
    }
}

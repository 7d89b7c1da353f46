using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>The box of shapes a calibration saw: a shape outside it is an extrapolation.</summary>
public sealed record GemmRange(long MinM, long MaxM, long MinN, long MaxN, long MinK, long MaxK)
{
    public bool Contains(MatmulShape s) => s.M >= MinM && s.M <= MaxM && s.N >= MinN && s.N <= MaxN && s.K >= MinK && s.K <= MaxK;

    public static GemmRange Of(IEnumerable<GemmMeasurement> points)
    {
        var p = points.ToArray();
        return new GemmRange(p.Min(x => x.M), p.Max(x => x.M), p.Min(x => x.N), p.Max(x => x.N), p.Min(x => x.K), p.Max(x => x.K));
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"m in [{MinM}, {MaxM}], n in [{MinN}, {MaxN}], k in [{MinK}, {MaxK}]");
}

/// <summary>
/// The tile/wave model's parameters fitted to measured GEMM times of one GPU and dtype: the achievable fraction of peak,
/// the relative efficiency of every tile but the first, HBM efficiency, launch time and k-loop overhead,
/// by least squares on ln(predicted / measured) (relative errors, so small and large GEMMs weigh alike), minimised with
/// <see cref="NelderMead"/> from the datasheet table. <see cref="LogRatios"/> keep each point's residual, ln(measured / fitted).
/// </summary>
public sealed record GemmCalibration(
    string Dtype,
    TileWaveTable Fitted,
    IReadOnlyList<GemmMeasurement> Points,
    IReadOnlyList<double> LogRatios,
    GemmRange Range,
    double RmsLogError,
    int Evaluations)
{
    /// <summary>Mean |fitted / measured - 1| over the calibration points, in percent (before any residual correction).</summary>
    public double FitMapePct => 100 * LogRatios.Average(r => Math.Abs(Math.Exp(-r) - 1));

    public static GemmCalibration Fit(GpuSpec gpu, TileWaveTable start, IReadOnlyList<GemmMeasurement> points, string dtype)
    {
        if (points.Count < 8)
            throw new ConfigException("costModel.gemm", $"{points.Count} rows", $"are too few to calibrate {dtype} GEMMs on {gpu.Name}; give at least 8 measured shapes");
        var sms = gpu.SmCount ?? throw new ConfigException("hardware.gpu.smCount", null, $"is required to calibrate GEMMs on {gpu.Name}");
        var peak = gpu.PeakFor(dtype);
        var bytes = ModelSpec.DtypeBytes[dtype];
        var tileCount = start.Tiles.Count;

        TileWaveTable Table(double[] x)
        {
            var tiles = new GemmTile[tileCount];
            tiles[0] = start.Tiles[0] with { RelativeEfficiency = 1.0 };
            for (var i = 1; i < tileCount; i++) tiles[i] = start.Tiles[i] with { RelativeEfficiency = x[i] };
            return start with
            {
                Name = $"{start.Name}, fitted to {gpu.Name} {dtype}",
                Tiles = tiles,
                AchievableFraction = x[0],
                MemoryEfficiency = x[tileCount],
                LaunchSeconds = x[tileCount + 1] * 1e-6,
                KOverhead = x[tileCount + 2] * 100,
            };
        }

        bool InBounds(double[] x)
        {
            if (x[0] is < 0.01 or > 1.0) return false;
            for (var i = 1; i < tileCount; i++) if (x[i] is < 0.01 or > 2.0) return false;
            return x[tileCount] is >= 0.01 and <= 1.0 && x[tileCount + 1] is >= 0 and <= 1000 && x[tileCount + 2] is >= 0 and <= 100;
        }

        double Loss(double[] x)
        {
            if (!InBounds(x)) return double.MaxValue;
            var table = Table(x);
            var sum = 0.0;
            foreach (var p in points)
            {
                var predicted = TileWaveCompute.Estimate(p.Shape, bytes, peak * table.AchievableFraction, gpu.HbmBytesPerSecond, sms, table).Seconds;
                var r = Math.Log(predicted / p.Seconds);
                sum += r * r;
            }
            return sum / points.Count;
        }

        var x0 = new double[tileCount + 3];
        x0[0] = gpu.AchievableFraction(dtype) ?? start.AchievableFraction;
        for (var i = 1; i < tileCount; i++) x0[i] = start.Tiles[i].RelativeEfficiency / start.Tiles[0].RelativeEfficiency;
        x0[tileCount] = start.MemoryEfficiency;
        x0[tileCount + 1] = start.LaunchSeconds * 1e6;
        x0[tileCount + 2] = start.KOverhead / 100;
        var steps = x0.Select((v, i) => i == tileCount + 2 ? 1.0 : Math.Max(0.05, 0.1 * v)).ToArray();
        // Two restarts from the previous optimum shake the simplex out of a collapsed shape.
        var (x, value, evals) = NelderMead.Minimize(Loss, x0, steps);
        for (var restart = 0; restart < 2; restart++)
        {
            var (x2, v2, e2) = NelderMead.Minimize(Loss, x, steps);
            evals += e2;
            if (v2 < value) (x, value) = (x2, v2);
        }
        var fitted = Table(x).Validated("costModel.gemm(fitted)");
        var ratios = points.Select(p => Math.Log(p.Seconds /
            TileWaveCompute.Estimate(p.Shape, bytes, peak * fitted.AchievableFraction, gpu.HbmBytesPerSecond, sms, fitted).Seconds)).ToArray();
        return new GemmCalibration(dtype, fitted, points, ratios, GemmRange.Of(points), Math.Sqrt(value), evals);
    }
}

/// <summary>How the calibrated model priced one GEMM.</summary>
/// <param name="Base">The fitted tile/wave estimate.</param>
/// <param name="Correction">Multiplier interpolated from the residuals of the nearest calibration shapes (1 without correction).</param>
/// <param name="CalibratedDtype">The dtype whose fit was used (another dtype's when the requested one was not measured).</param>
public sealed record CalibratedEstimate(TileWaveEstimate Base, double Correction, bool InRange, string CalibratedDtype)
{
    public double Seconds => Base.Seconds * Correction;
}

/// <summary>
/// GEMM time calibrated from measurements of one GPU: the tile/wave model with parameters fitted per dtype
/// (<see cref="GemmCalibration"/>), times a residual correction interpolated from the <see cref="Neighbors"/> nearest
/// measured shapes (inverse-distance weights, squared, in log2(m), log2(n), log2(k); an exact match takes its own residual).
/// A shape outside the calibrated range, or a dtype without measurements, is priced anyway and adds a warning
/// to <see cref="Warnings"/> (collected, never printed: callers show them).
/// </summary>
public sealed class CalibratedCompute : IComputeCostModel
{
    private readonly Dictionary<string, GemmCalibration> _fits;
    private readonly Dictionary<string, (double[] X, double[] Y, double[] Z)> _logShapes = new(StringComparer.OrdinalIgnoreCase);
    private readonly List<string> _warnings = new();
    private readonly HashSet<string> _warned = new(StringComparer.Ordinal);
    private readonly object _gate = new();

    /// <param name="measurements">Timings of this GPU only (filter by the CSV's gpu column first).</param>
    /// <param name="neighbors">Calibration shapes that correct each prediction; 0 turns the correction off.</param>
    public CalibratedCompute(GpuSpec gpu, TileWaveTable start, IReadOnlyList<GemmMeasurement> measurements, int neighbors = 8, string source = "measurements")
    {
        if (measurements.Count == 0) throw new ConfigException("costModel.gemm", source, "holds no GEMM rows for this GPU");
        if (neighbors < 0) throw new ConfigException("costModel.neighbors", neighbors.ToString(CultureInfo.InvariantCulture), "must be >= 0");
        Gpu = gpu;
        Start = start;
        Neighbors = neighbors;
        Source = source;
        Sms = gpu.SmCount ?? throw new ConfigException("hardware.gpu.smCount", null, $"is required by the calibrated cost model (GPU \"{gpu.Name}\")");
        _fits = measurements.GroupBy(m => m.Dtype, StringComparer.OrdinalIgnoreCase)
            .ToDictionary(g => g.Key, g => GemmCalibration.Fit(gpu, start, g.ToArray(), g.Key), StringComparer.OrdinalIgnoreCase);
        foreach (var (dtype, fit) in _fits)
            _logShapes[dtype] = (fit.Points.Select(p => Math.Log2(p.M)).ToArray(), fit.Points.Select(p => Math.Log2(p.N)).ToArray(), fit.Points.Select(p => Math.Log2(p.K)).ToArray());
    }

    public GpuSpec Gpu { get; }
    public TileWaveTable Start { get; }
    public int Neighbors { get; }
    public string Source { get; }
    public int Sms { get; }
    public string Name => $"calibrated({Source})";

    /// <summary>The fit per dtype.</summary>
    public IReadOnlyDictionary<string, GemmCalibration> Calibrations => _fits;

    /// <summary>Extrapolation warnings so far, one per distinct cause, in the order they arose.</summary>
    public IReadOnlyList<string> Warnings { get { lock (_gate) return _warnings.ToArray(); } }

    public CalibratedEstimate Estimate(MatmulShape shape, string dtype, int elementBytes)
    {
        if (!_fits.TryGetValue(dtype, out var fit))
        {
            fit = _fits.Values.OrderBy(f => f.Dtype, StringComparer.Ordinal).FirstOrDefault(f => ModelSpec.DtypeBytes[f.Dtype] == elementBytes) ?? _fits.Values.First();
            Warn($"dtype:{dtype}", $"no {dtype} GEMM measurements for {Gpu.Name} in {Source}; using the {fit.Dtype} calibration scaled to the {dtype} peak");
        }
        var achievable = Gpu.PeakFor(dtype) * fit.Fitted.AchievableFraction;
        var baseEstimate = TileWaveCompute.Estimate(shape, elementBytes, achievable, Gpu.HbmBytesPerSecond, Sms, fit.Fitted);
        var inRange = fit.Range.Contains(shape);
        if (!inRange)
            Warn($"range:{fit.Dtype}:{shape.M}:{shape.K}:{shape.N}",
                string.Create(CultureInfo.InvariantCulture, $"GEMM m={shape.M}, n={shape.N}, k={shape.K} lies outside the range calibrated for {Gpu.Name} {fit.Dtype} ({fit.Range}) in {Source}; extrapolating"));
        return new CalibratedEstimate(baseEstimate, Neighbors == 0 ? 1.0 : Correction(fit, shape), inRange, fit.Dtype);
    }

    public double MatmulSeconds(MatmulShape shape, string dtype, int elementBytes) => Estimate(shape, dtype, elementBytes).Seconds;

    public double ElementwiseSeconds(double bytes)
    {
        var memoryEfficiency = _fits.Values.Average(f => f.Fitted.MemoryEfficiency);
        return bytes / (Gpu.HbmBytesPerSecond * memoryEfficiency);
    }

    private double Correction(GemmCalibration fit, MatmulShape shape)
    {
        var (xs, ys, zs) = _logShapes[fit.Dtype];
        double x = Math.Log2(shape.M), y = Math.Log2(shape.N), z = Math.Log2(shape.K);
        var count = Math.Min(Neighbors, xs.Length);
        var nearest = new (double D, double R)[xs.Length];
        for (var i = 0; i < xs.Length; i++)
        {
            double dx = xs[i] - x, dy = ys[i] - y, dz = zs[i] - z;
            nearest[i] = (Math.Sqrt(dx * dx + dy * dy + dz * dz), fit.LogRatios[i]);
        }
        Array.Sort(nearest, (a, b) => a.D.CompareTo(b.D));
        if (nearest[0].D < 1e-9)
        {
            // Exact matches: the mean residual of the repeated measurements of this shape.
            var exact = nearest.TakeWhile(n => n.D < 1e-9).ToArray();
            return Math.Exp(exact.Average(n => n.R));
        }
        double weights = 0, sum = 0;
        for (var i = 0; i < count; i++)
        {
            var w = 1 / (nearest[i].D * nearest[i].D);
            weights += w;
            sum += w * nearest[i].R;
        }
        return Math.Exp(sum / weights);
    }

    private void Warn(string key, string message)
    {
        lock (_gate)
        {
            if (_warned.Add(key)) _warnings.Add(message);
        }
    }
}

using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>An output tile a GEMM kernel may use, in either orientation (rows x cols or cols x rows), and its efficiency relative to the first tile of its table.</summary>
public sealed record GemmTile(int Rows, int Cols, double RelativeEfficiency)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Rows}x{Cols}");
}

/// <summary>
/// The parameters of the tile/wave GEMM model (see <see cref="TileWaveCompute"/>), kept as data in
/// <c>data/gemm/*.json</c> (one table per architecture) or fitted by <see cref="GemmCalibration"/>.
/// </summary>
/// <param name="Tiles">Candidate output tiles; the model takes the fastest (the first tile's efficiency is the reference, 1.0).</param>
/// <param name="AchievableFraction">Fraction of peak a full wave of the first tile reaches when the GPU lists no measured achievable FLOP/s.</param>
/// <param name="MemoryEfficiency">Fraction of datasheet HBM bandwidth that streaming the operands reaches.</param>
/// <param name="LaunchSeconds">Fixed time per kernel (launch, prologue, epilogue).</param>
/// <param name="KOverhead">Extra k-loop iterations' worth of time per tile (pipeline fill/drain), in elements of k; 0 in the datasheet tables.</param>
public sealed record TileWaveTable(
    string Name,
    IReadOnlyList<GemmTile> Tiles,
    double AchievableFraction,
    double MemoryEfficiency,
    double LaunchSeconds,
    double KOverhead,
    string Source)
{
    public TileWaveTable Validated(string path = "costModel.tiles", string? source = null)
    {
        Validate.NotEmpty($"{path}.name", Name);
        if (Tiles.Count == 0) throw new ConfigException($"{path}.tiles", "[]", "must list at least one {rows, cols, relativeEfficiency} tile", source);
        for (var i = 0; i < Tiles.Count; i++)
        {
            Validate.Positive($"{path}.tiles[{i}].rows", Tiles[i].Rows);
            Validate.Positive($"{path}.tiles[{i}].cols", Tiles[i].Cols);
            Validate.Within($"{path}.tiles[{i}].rows", Tiles[i].Rows, Bounds.TileSide, source);
            Validate.Within($"{path}.tiles[{i}].cols", Tiles[i].Cols, Bounds.TileSide, source);
            Validate.InRange($"{path}.tiles[{i}].relativeEfficiency", Tiles[i].RelativeEfficiency, 1e-3, 2.0);
        }
        Validate.InRange($"{path}.achievableFraction", AchievableFraction, 1e-3, 1.0);
        Validate.InRange($"{path}.memoryEfficiency", MemoryEfficiency, 1e-3, 1.0);
        Validate.InRange($"{path}.launchSeconds", LaunchSeconds, 0, 1.0);
        Validate.InRange($"{path}.kOverhead", KOverhead, 0, 1e6);
        return this;
    }

    public static TileWaveTable Read(JsonObjectReader r)
    {
        if (r.Element("tiles") is not { ValueKind: System.Text.Json.JsonValueKind.Array } array)
            throw new ConfigException(r.Child("tiles"), null, "is required: an array of {\"rows\": 256, \"cols\": 128, \"relativeEfficiency\": 1.0}", r.Source);
        var tiles = new List<GemmTile>();
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            var tr = new JsonObjectReader(item, $"{r.Child("tiles")}[{i++}]", r.Source);
            tiles.Add(new GemmTile(tr.Int("rows"), tr.Int("cols"), tr.Double("relativeEfficiency")));
            tr.Finish();
        }
        var t = new TileWaveTable(
            r.String("name"),
            tiles,
            r.Double("achievableFraction"),
            r.Double("memoryEfficiency"),
            r.Double("launchSeconds"),
            r.OptionalDouble("kOverhead") ?? 0,
            r.OptionalString("source") ?? "");
        r.Finish();
        return t.Validated(r.Path, r.Source);
    }

    private static readonly Lazy<IReadOnlyDictionary<string, TileWaveTable>> Catalog = new(() => EmbeddedCatalog.Load("gemm", Read, t => t.Name));

    public static IReadOnlyCollection<string> Names => Catalog.Value.Keys.Order().ToArray();

    /// <summary>A tile table shipped in <c>data/gemm/</c> by name (an architecture: "ampere", "hopper", ...).</summary>
    public static TileWaveTable Get(string name, string field = "costModel.tiles", string? source = null) =>
        Catalog.Value.TryGetValue(name, out var t) ? t
            : throw new ConfigException(field, $"\"{name}\"", $"is not a known GEMM tile table; known: {string.Join(", ", Names)}", source);

    /// <summary>The table for a GPU's architecture (its <see cref="GpuSpec.Architecture"/>).</summary>
    public static TileWaveTable For(GpuSpec gpu, string field = "hardware.gpu.architecture") =>
        gpu.Architecture is { } arch ? Get(arch, field)
            : throw new ConfigException(field, null, $"is required by the tile-wave and calibrated cost models (GPU \"{gpu.Name}\"); known tile tables: {string.Join(", ", Names)}, or give costModel.tiles");
}

/// <summary>How the tile/wave model priced one GEMM.</summary>
/// <param name="Tile">The chosen output tile (rows along m, cols along n).</param>
/// <param name="TileCount">Output tiles, batch x ceil(m / rows) x ceil(n / cols).</param>
/// <param name="Waves">ceil(tiles / SMs).</param>
/// <param name="ComputeSeconds">Waves x one tile's time on one SM.</param>
/// <param name="MemorySeconds">Operands and result streamed once through HBM.</param>
public sealed record TileWaveEstimate(
    GemmTile Tile, bool Transposed, long TileCount, long Waves, double ComputeSeconds, double MemorySeconds, double LaunchSeconds)
{
    public double Seconds => Math.Max(ComputeSeconds, MemorySeconds) + LaunchSeconds;
    public bool MemoryBound => MemorySeconds > ComputeSeconds;

    /// <summary>Fraction of the last wave's SMs that have a tile: 1 means no wave quantization loss.</summary>
    public double LastWaveFill(int sms) => TileCount % sms == 0 ? 1.0 : (double)(TileCount % sms) / sms;
}

/// <summary>
/// GEMM time from tile and wave quantization (NVIDIA, "Matrix Multiplication Background" user's guide, Ch. 3):
/// the output C[m x n] is cut into tiles; each SM computes one tile at a time at 1/SMs of the achievable rate, so
/// a GEMM takes ceil(tiles / SMs) waves of one tile's time, 2 x rows x cols x (k + kOverhead) / (achievable x relEff / SMs).
/// The kernel picks the fastest tile (either orientation). The GEMM cannot beat streaming its operands through HBM;
/// a fixed launch time is added. Nothing here is fitted: the parameters are a <see cref="TileWaveTable"/>.
/// </summary>
public sealed class TileWaveCompute : IComputeCostModel, IGroupedGemmCostModel, IFusedAttentionCostModel
{
    public TileWaveCompute(GpuSpec gpu, TileWaveTable table, string? name = null)
    {
        Gpu = gpu;
        Table = table;
        Sms = gpu.SmCount ?? throw new ConfigException("hardware.gpu.smCount", null,
            $"is required by the tile-wave cost model (GPU \"{gpu.Name}\" lists no SM count)");
        Name = name ?? $"tile-wave({table.Name})";
    }

    public GpuSpec Gpu { get; }
    public TileWaveTable Table { get; }
    public int Sms { get; }
    public string Name { get; }

    /// <summary>Achievable FLOP/s of a full wave of the reference tile: measured where the GPU lists it, else peak x the table's fraction.</summary>
    public double AchievableFlopsPerSecond(string dtype) => Gpu.PeakFor(dtype) * (Gpu.AchievableFraction(dtype) ?? Table.AchievableFraction);

    public TileWaveEstimate Estimate(MatmulShape shape, string dtype, int elementBytes) =>
        Estimate(shape, elementBytes, AchievableFlopsPerSecond(dtype), Gpu.HbmBytesPerSecond, Sms, Table);

    /// <summary>The model itself, with every input explicit (used by the fit too).</summary>
    public static TileWaveEstimate Estimate(MatmulShape shape, int elementBytes, double achievableFlopsPerSecond, double hbmBytesPerSecond, int sms, TileWaveTable table)
    {
        var perSm = achievableFlopsPerSecond / sms;
        TileWaveEstimate? best = null;
        foreach (var tile in table.Tiles)
        {
            for (var o = 0; o < (tile.Rows == tile.Cols ? 1 : 2); o++)
            {
                long rows = o == 0 ? tile.Rows : tile.Cols, cols = o == 0 ? tile.Cols : tile.Rows;
                var tiles = shape.Batch * CeilDiv(shape.M, rows) * CeilDiv(shape.N, cols);
                var waves = CeilDiv(tiles, sms);
                var compute = waves * 2.0 * rows * cols * (shape.K + table.KOverhead) / (perSm * tile.RelativeEfficiency);
                if (best is null || compute < best.ComputeSeconds)
                    best = new TileWaveEstimate(tile, o == 1, tiles, waves, compute, 0, 0);
            }
        }
        var memory = shape.Elements * elementBytes / (hbmBytesPerSecond * table.MemoryEfficiency);
        return best! with { MemorySeconds = memory, LaunchSeconds = table.LaunchSeconds };
    }

    public double MatmulSeconds(MatmulShape shape, string dtype, int elementBytes) => Estimate(shape, dtype, elementBytes).Seconds;

    public double ElementwiseSeconds(double bytes) => bytes / (Gpu.HbmBytesPerSecond * Table.MemoryEfficiency);

    /// <summary>
    /// One expert's GEMM inside a grouped GEMM of <paramref name="groupSize"/> experts (CUTLASS / Transformer Engine
    /// grouped GEMM: one kernel walks every member's output tiles with persistent CTAs): the member keeps its own
    /// tiles, ceil(m / rows) x ceil(n / cols), so a small m per expert pads its last row of tiles, but its tiles share
    /// the waves with the other members: its compute is tiles / SMs of a wave (the group's last partial wave, at most
    /// one wave per grouped GEMM, is not charged), its operands stream through HBM as before, and it pays 1 / groupSize
    /// of the kernel's launch. The tile is the one that is fastest for the member.
    /// </summary>
    public double GroupedMatmulSeconds(MatmulShape member, string dtype, int elementBytes, int groupSize)
    {
        if (groupSize < 1) throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "a grouped GEMM has at least one member");
        var perSm = AchievableFlopsPerSecond(dtype) / Sms;
        var compute = double.PositiveInfinity;
        foreach (var tile in Table.Tiles)
        {
            for (var o = 0; o < (tile.Rows == tile.Cols ? 1 : 2); o++)
            {
                long rows = o == 0 ? tile.Rows : tile.Cols, cols = o == 0 ? tile.Cols : tile.Rows;
                var tiles = member.Batch * CeilDiv(member.M, rows) * CeilDiv(member.N, cols);
                compute = Math.Min(compute, (double)tiles / Sms * 2.0 * rows * cols * (member.K + Table.KOverhead) / (perSm * tile.RelativeEfficiency));
            }
        }
        var memory = member.Elements * elementBytes / (Gpu.HbmBytesPerSecond * Table.MemoryEfficiency);
        return Math.Max(compute, memory) + Table.LaunchSeconds / groupSize;
    }

    /// <summary>
    /// One head's score or value product (or its gradient) inside a fused attention kernel over <paramref name="heads"/>
    /// heads (FlashAttention: one grid over sequences x heads x query blocks, Dao, FlashAttention-2, arXiv:2307.08691
    /// §3.2; each head's score and probability tiles stay in shared memory, §3.1): the head keeps its own tiles and
    /// shares the waves with the other heads, as a grouped GEMM member (<see cref="GroupedMatmulSeconds"/>); HBM carries
    /// only the two operands that are not the sequence x sequence matrix (Q and K^T for the scores, V and the output for
    /// the value product): the largest of the three matrices, the scores or probabilities, is never written. It pays
    /// 1 / heads of the kernel's launch.
    /// </summary>
    public double FusedAttentionSeconds(MatmulShape head, string dtype, int elementBytes, int heads)
    {
        if (heads < 1) throw new ArgumentOutOfRangeException(nameof(heads), heads, "a fused attention kernel has at least one head");
        var perSm = AchievableFlopsPerSecond(dtype) / Sms;
        var compute = double.PositiveInfinity;
        foreach (var tile in Table.Tiles)
        {
            for (var o = 0; o < (tile.Rows == tile.Cols ? 1 : 2); o++)
            {
                long rows = o == 0 ? tile.Rows : tile.Cols, cols = o == 0 ? tile.Cols : tile.Rows;
                var tiles = head.Batch * CeilDiv(head.M, rows) * CeilDiv(head.N, cols);
                compute = Math.Min(compute, (double)tiles / Sms * 2.0 * rows * cols * (head.K + Table.KOverhead) / (perSm * tile.RelativeEfficiency));
            }
        }
        double mk = (double)head.M * head.K, kn = (double)head.K * head.N, mn = (double)head.M * head.N;
        var streamed = head.Batch * (mk + kn + mn - Math.Max(mk, Math.Max(kn, mn)));
        var memory = streamed * elementBytes / (Gpu.HbmBytesPerSecond * Table.MemoryEfficiency);
        return Math.Max(compute, memory) + Table.LaunchSeconds / heads;
    }

    private static long CeilDiv(long a, long b) => (a + b - 1) / b;
}

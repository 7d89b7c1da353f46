using System.Globalization;
using System.Text;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Costs;

/// <summary>One timed GEMM C[m x n] = A[m x k] . B[k x n]: the row format of <c>gemm_measured_public.csv</c> and of <c>tools/measure_gemm.py</c>.</summary>
/// <param name="Gpu">The GPU column as written (e.g. "A100-80GB"); empty when the file has none.</param>
/// <param name="Context">Free text describing where the shape comes from (model, TP, tokens); empty when absent.</param>
/// <param name="Line">1-based line of the row in its file, for messages.</param>
public sealed record GemmMeasurement(string Gpu, string Dtype, long M, long N, long K, double Seconds, string Context = "", int Line = 0)
{
    public MatmulShape Shape => new(M, K, N);
    public double Flops => 2.0 * M * N * K;
    public double FlopsPerSecond => Flops / Seconds;
}

/// <summary>One timed collective: the row format of <c>comm_measured_public.csv</c> (nccl-tests-like).</summary>
/// <param name="Collective">The collective as written, normalised to lower case with underscores ("all_reduce", "send_recv").</param>
/// <param name="System">Which cluster it ran on (free text; empty when absent).</param>
/// <param name="Bytes">Message size: the buffer each GPU holds (all-reduce) or sends (send/recv).</param>
public sealed record CollectiveMeasurement(string Collective, string System, int Gpus, int Nodes, double Bytes, double Seconds, int Line = 0)
{
    /// <summary>The DAG's pattern for this collective; <see cref="CollectivePattern.None"/> for collectives the DAG does not use (broadcast...).</summary>
    public CollectivePattern Pattern => MeasurementCsv.PatternOf(Collective);
}

/// <summary>
/// Reads measurement CSV files (RFC 4180 quoting, a header row naming the columns, invariant-culture numbers,
/// times in microseconds in column <c>time_us</c>). A malformed row is a <see cref="ConfigException"/> naming the
/// file, the line, the column and the value; parsing never depends on the current culture.
/// </summary>
public static class MeasurementCsv
{
    /// <summary>GEMM rows: required columns m, n, k, dtype, time_us; optional gpu, context.</summary>
    public static IReadOnlyList<GemmMeasurement> ReadGemm(string path) => WithFile(path, r => ReadGemm(r, path));

    public static IReadOnlyList<GemmMeasurement> ReadGemm(TextReader reader, string source)
    {
        var table = CsvTable.Read(reader, source);
        table.Require("m", "n", "k", "dtype", "time_us");
        var rows = new List<GemmMeasurement>();
        foreach (var row in table.Rows)
        {
            var dtype = row.String("dtype");
            if (!ModelSpec.DtypeBytes.ContainsKey(dtype))
                throw row.Error("dtype", dtype, $"is not a known dtype; use {string.Join(", ", ModelSpec.DtypeBytes.Keys)}");
            rows.Add(new GemmMeasurement(
                row.OptionalString("gpu") ?? "",
                dtype.ToLowerInvariant(),
                row.PositiveLong("m", Bounds.MatrixDimension),
                row.PositiveLong("n", Bounds.MatrixDimension),
                row.PositiveLong("k", Bounds.MatrixDimension),
                row.MicrosecondsAsSeconds("time_us"),
                row.OptionalString("context") ?? "",
                row.Line));
        }
        if (rows.Count == 0) throw NoRows(table);
        return rows;
    }

    private static ConfigException NoRows(CsvTable table) =>
        new("(file)", "header only", "has no measurement rows; a calibration needs at least one timed row below the header", table.Source);

    /// <summary>Collective rows: required columns collective, num_gpus, msg_bytes, time_us; optional system, num_nodes (default 1).</summary>
    public static IReadOnlyList<CollectiveMeasurement> ReadCollectives(string path) => WithFile(path, r => ReadCollectives(r, path));

    public static IReadOnlyList<CollectiveMeasurement> ReadCollectives(TextReader reader, string source)
    {
        var table = CsvTable.Read(reader, source);
        table.Require("collective", "num_gpus", "msg_bytes", "time_us");
        var rows = new List<CollectiveMeasurement>();
        foreach (var row in table.Rows)
        {
            var gpus = row.PositiveLong("num_gpus", Bounds.Gpus);
            var nodes = table.Has("num_nodes") && row.OptionalString("num_nodes") is not null ? row.PositiveLong("num_nodes") : 1;
            if (gpus > int.MaxValue) throw row.Error("num_gpus", gpus.ToString(CultureInfo.InvariantCulture), "must fit a 32-bit integer");
            if (nodes > gpus) throw row.Error("num_nodes", nodes.ToString(CultureInfo.InvariantCulture), $"must not exceed num_gpus = {gpus}");
            rows.Add(new CollectiveMeasurement(
                Normalise(row.String("collective")),
                row.OptionalString("system") ?? "",
                (int)gpus,
                (int)nodes,
                row.PositiveDouble("msg_bytes", Bounds.Bytes),
                row.MicrosecondsAsSeconds("time_us"),
                row.Line));
        }
        if (rows.Count == 0) throw NoRows(table);
        return rows;
    }

    internal static string Normalise(string collective) => collective.Trim().ToLowerInvariant().Replace('-', '_') switch
    {
        "allreduce" => "all_reduce",
        "alltoall" => "all_to_all",
        "sendrecv" or "p2p" => "send_recv",
        "reducescatter" => "reduce_scatter",
        "allgather" => "all_gather",
        var s => s,
    };

    internal static CollectivePattern PatternOf(string collective) => Normalise(collective) switch
    {
        "all_reduce" => CollectivePattern.AllReduce,
        "all_to_all" => CollectivePattern.AllToAll,
        "send_recv" => CollectivePattern.SendRecv,
        "reduce_scatter" => CollectivePattern.ReduceScatter,
        "all_gather" => CollectivePattern.AllGather,
        _ => CollectivePattern.None,
    };

    /// <summary>The CSV name of a pattern ("all_reduce", "all_to_all", "send_recv").</summary>
    public static string NameOf(CollectivePattern pattern) => pattern switch
    {
        CollectivePattern.AllReduce => "all_reduce",
        CollectivePattern.AllToAll => "all_to_all",
        CollectivePattern.SendRecv => "send_recv",
        CollectivePattern.ReduceScatter => "reduce_scatter",
        CollectivePattern.AllGather => "all_gather",
        _ => "none",
    };

    /// <summary>Largest measurement CSV read (bytes); the public GEMM table is under 1 MB.</summary>
    public const long MaxBytes = 64L << 20;

    private static T WithFile<T>(string path, Func<TextReader, T> read)
    {
        if (!File.Exists(path) && !Directory.Exists(path)) throw new ConfigException("file", $"\"{path}\"", "not found (a measurement CSV)");
        using var reader = new StringReader(Config.JsonObjectReader.ReadFile(path, "file", MaxBytes));
        return read(reader);
    }
}

/// <summary>A parsed CSV: header and rows, each row knowing its line for error messages.</summary>
public sealed class CsvTable
{
    private readonly Dictionary<string, int> _columns;

    private CsvTable(string source, IReadOnlyList<string> header, List<CsvRow> rows)
    {
        Source = source;
        Header = header;
        _columns = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (var i = 0; i < header.Count; i++)
        {
            if (!_columns.TryAdd(header[i], i))
                throw new ConfigException("line 1", $"\"{header[i]}\"", "repeats a column name; each column must be named once", source);
        }
        foreach (var r in rows) r.Table = this;
        Rows = rows;
    }

    public string Source { get; }
    public IReadOnlyList<string> Header { get; }
    public IReadOnlyList<CsvRow> Rows { get; }

    public bool Has(string column) => _columns.ContainsKey(column);

    internal int Index(string column) => _columns.TryGetValue(column, out var i) ? i : -1;

    public void Require(params string[] columns)
    {
        foreach (var c in columns)
            if (!Has(c))
                throw new ConfigException("line 1", string.Join(",", Header), $"lacks column \"{c}\"; required columns: {string.Join(", ", columns)}", Source);
    }

    /// <summary>Parses RFC 4180 CSV: commas, double quotes ("" inside quotes), CRLF or LF; blank lines are skipped.</summary>
    public static CsvTable Read(TextReader reader, string source)
    {
        var records = new List<(int Line, List<string> Fields)>();
        var fields = new List<string>();
        var field = new StringBuilder();
        var line = 1;
        var recordLine = 1;
        var inQuotes = false;
        var fieldStarted = false;
        int c;
        void EndField() { fields.Add(field.ToString()); field.Clear(); fieldStarted = false; }
        void EndRecord()
        {
            EndField();
            if (!(fields.Count == 1 && fields[0].Length == 0)) records.Add((recordLine, fields));
            fields = new List<string>();
        }
        while ((c = reader.Read()) != -1)
        {
            var ch = (char)c;
            if (inQuotes)
            {
                if (ch == '"')
                {
                    if (reader.Peek() == '"') { reader.Read(); field.Append('"'); }
                    else inQuotes = false;
                }
                else
                {
                    if (ch == '\n') line++;
                    field.Append(ch);
                }
                continue;
            }
            switch (ch)
            {
                case '"' when field.Length == 0 && !fieldStarted:
                    inQuotes = true;
                    fieldStarted = true;
                    break;
                case '"':
                    throw new ConfigException($"line {line}", null, "has a double quote inside an unquoted field; quote the whole field (\"...\")", source);
                case ',':
                    EndField();
                    break;
                case '\r':
                    break;
                case '\n':
                    EndRecord();
                    line++;
                    recordLine = line;
                    break;
                default:
                    field.Append(ch);
                    break;
            }
        }
        if (inQuotes) throw new ConfigException($"line {recordLine}", null, "opens a quoted field that never closes", source);
        if (field.Length > 0 || fields.Count > 0 || fieldStarted) EndRecord();
        if (records.Count == 0) throw new ConfigException("(file)", "empty", "must start with a header row naming the columns", source);
        var header = records[0].Fields.Select(h => h.Trim()).ToArray();
        var rows = new List<CsvRow>();
        foreach (var (l, f) in records.Skip(1))
        {
            if (f.Count != header.Length)
                throw new ConfigException($"line {l}", $"{f.Count} fields", $"must have {header.Length} fields like the header", source);
            rows.Add(new CsvRow(l, f.ToArray()));
        }
        return new CsvTable(source, header, rows);
    }
}

/// <summary>One data row. Accessors throw <see cref="ConfigException"/> naming line, column and value.</summary>
public sealed class CsvRow(int line, string[] fields)
{
    public int Line { get; } = line;
    public IReadOnlyList<string> Fields => fields;
    internal CsvTable Table { get; set; } = null!;

    public string? OptionalString(string column)
    {
        var i = Table.Index(column);
        if (i < 0) return null;
        var v = fields[i].Trim();
        return v.Length == 0 ? null : v;
    }

    public string String(string column) => OptionalString(column) ?? throw Error(column, null, "is empty; a value is required");

    public long PositiveLong(string column)
    {
        var s = String(column);
        if (!long.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v <= 0)
            throw Error(column, s, "must be a positive integer (digits only, e.g. 4096)");
        return v;
    }

    public double PositiveDouble(string column)
    {
        var s = String(column);
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v) || v <= 0)
            throw Error(column, s, "must be a finite number > 0 written with a decimal point (e.g. 12.5)");
        return v;
    }

    /// <summary>A positive integer within <paramref name="bound"/>; the message states the range.</summary>
    public long PositiveLong(string column, Bound bound)
    {
        var v = PositiveLong(column);
        if (v > bound.Max) throw Error(column, v.ToString(CultureInfo.InvariantCulture), bound.Requirement);
        return v;
    }

    /// <summary>A positive number within <paramref name="bound"/>; the message states the range.</summary>
    public double PositiveDouble(string column, Bound bound)
    {
        var v = PositiveDouble(column);
        if (v < bound.Min || v > bound.Max) throw Error(column, String(column), bound.Requirement);
        return v;
    }

    /// <summary>A time in microseconds (the CSV's unit) as seconds, within <see cref="Bounds.MeasuredSeconds"/>.</summary>
    public double MicrosecondsAsSeconds(string column)
    {
        var us = PositiveDouble(column);
        var b = Bounds.MeasuredSeconds;
        if (us * 1e-6 < b.Min || us * 1e-6 > b.Max)
            throw Error(column, String(column), string.Create(CultureInfo.InvariantCulture, $"must lie in [{b.Min * 1e6:R}, {b.Max * 1e6:0.###e0}] microseconds ({b.Why})"));
        return us * 1e-6;
    }

    public ConfigException Error(string column, string? value, string requirement) =>
        new($"line {Line}, column {column}", value is null ? null : $"\"{value}\"", requirement, Table.Source);
}

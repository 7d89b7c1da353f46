using System.Globalization;
using MoeNotebooks.Analysis;
using MoeNotebooks.Config;
using MoeNotebooks.Derivations;

namespace MoeNotebooks.Perf.Tests;

public class SweepTests
{
    private static string Grid(string grid, string? random = null) =>
        $$"""{ "base": "{{Repo.ScenarioPath("ep16").Replace("\\", "/")}}", "grid": {{grid}}{{(random is null ? "" : $", \"random\": {random}")}} }""";

    private const string SmallGrid = """
        { "model.sequenceLength": [2048, 4096], "strategy.ep": [4, 8, 16], "strategy.dp": [1, 2, 4], "hardware.preset": ["H100-SXM", "H200"] }
        """;

    private static string Csv(Sweep sweep, SweepOptions options)
    {
        var w = new StringWriter();
        sweep.WriteCsv(w, options);
        return w.ToString();
    }

    [Fact]
    public void Grid_size_is_the_product_of_the_axes()
    {
        // Oracle: 2 x 3 x 3 x 2 by hand; the last axis varies fastest (nested loops in file order).
        var sweep = Sweep.Parse(Grid(SmallGrid));
        Assert.Equal(36, sweep.GridSize);
        Assert.Equal(36, sweep.Count);
        var rows = sweep.Rows().ToArray();
        Assert.Equal(Enumerable.Range(0, 36).Select(i => (long)i), rows.Select(r => r.Index));
        Assert.Equal(["2048", "4", "1", "H100-SXM"], rows[0].Values);
        Assert.Equal(["2048", "4", "1", "H200"], rows[1].Values);
        Assert.Equal(["4096", "16", "4", "H200"], rows[35].Values);
        Assert.Equal(36, rows.Count(r => r.Valid) + rows.Count(r => !r.Valid));
    }

    [Fact]
    public void Random_sweep_draws_count_points_reproducibly()
    {
        var a = Sweep.Parse(Grid(SmallGrid, """{ "count": 50, "seed": 7 }"""));
        Assert.Equal(36, a.GridSize);
        Assert.Equal(50, a.Count);
        var all = a.Rows().ToArray();
        var rowsA = all.Select(r => string.Join("|", r.Values)).ToArray();
        var rowsB = Sweep.Parse(Grid(SmallGrid, """{ "count": 50, "seed": 7 }""")).Rows(new SweepOptions(BatchSize: 7)).Select(r => string.Join("|", r.Values)).ToArray();
        Assert.Equal(rowsA, rowsB);
        Assert.True(rowsA.Distinct().Count() > 10);
        // ScenarioAt replays the same stream: a valid point's scenario has the row's values; an invalid one throws.
        var valid = all.Last(r => r.Valid);
        var at = a.ScenarioAt(valid.Index);
        Assert.Equal(valid.Values[0], at.Model.SequenceLength.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(valid.Values[1], at.Strategy.EP.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(valid.Values[3], at.Hardware.Name);
        Assert.Throws<ConfigException>(() => a.ScenarioAt(all.First(r => !r.Valid).Index));
    }

    [Fact]
    public void Csv_rows_written_in_place_equal_the_joined_fields()
    {
        // Oracle: the header's columns written out field by field (numbers in "R" format, NaN empty), joined with commas,
        // a field quoted (quotes doubled) when it holds a comma, quote or line break.
        static string Quote(string f) => f.AsSpan().IndexOfAny(",\"\n\r") < 0 ? f : "\"" + f.Replace("\"", "\"\"") + "\"";
        static string D(double v) => double.IsNaN(v) ? "" : v.ToString("R", CultureInfo.InvariantCulture);
        static string[] Fields(SweepRow row) =>
            [row.Index.ToString(CultureInfo.InvariantCulture), .. row.Values, row.Valid ? "true" : "false", row.Reason ?? "",
             row.Gpus.ToString(CultureInfo.InvariantCulture), row.Operations.ToString(CultureInfo.InvariantCulture), D(row.TotalSeconds),
             D(row.MatmulSeconds), D(row.AttentionSeconds), D(row.ElementwiseSeconds), D(row.CommunicationSeconds), D(row.IdleSeconds),
             row.FitsInMemory switch { true => "fits", false => "does not fit", null => "" }, D(row.PeakBytesPerGpu)];
        SweepRow[] rows =
        [
            new(0, ["2048", "a,b"], true, null, 16, 1234, 1.0 / 3, 0.1, 2e-300, 5e20, 0, double.Epsilon) { FitsInMemory = true, PeakBytesPerGpu = 8.1e10 },
            new(long.MaxValue, ["say \"x\"", "line\nbreak"], false, "model.layers: must be >= 1, got \"0\"", 0, 0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN),
            new(7, [], true, null, int.MaxValue, int.MaxValue, -0.0, double.MaxValue, double.MinValue, 1e-7, 123456789.123, 0.30000000000000004) { FitsInMemory = false, PeakBytesPerGpu = 1 },
        ];
        foreach (var row in rows)
        {
            var w = new StringWriter();
            Sweep.WriteCsvRow(w, row);
            Assert.Equal(string.Join(',', Fields(row).Select(Quote)) + w.NewLine, w.ToString());
        }
    }

    [Fact]
    public void Csv_is_the_same_for_any_thread_count_batch_size_and_run()
    {
        // Oracle: a single-threaded run with one batch per point.
        var sweep = Sweep.Parse(Grid(SmallGrid, """{ "count": 60, "seed": 3 }"""));
        var single = Csv(sweep, new SweepOptions(1, BatchSize: 1));
        Assert.Equal(single, Csv(sweep, new SweepOptions(2, BatchSize: 5)));
        Assert.Equal(single, Csv(sweep, new SweepOptions(4, BatchSize: 4096)));
        Assert.Equal(single, Csv(Sweep.Parse(Grid(SmallGrid, """{ "count": 60, "seed": 3 }""")), SweepOptions.Default));
        Assert.Equal(61, single.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public void Rows_equal_direct_evaluations_bit_for_bit()
    {
        // Oracle: Scenario.Evaluate() on the scenario of each point (checks the DAG reuse between neighbouring points).
        var sweep = Sweep.Parse(Grid("""{ "strategy.ep": [8, 16], "strategy.dp": [1, 2], "hardware.preset": ["H100-SXM", "H200", "A100-80GB"] }"""));
        foreach (var row in sweep.Rows(new SweepOptions(2)))
        {
            if (!row.Valid) continue;
            var e = sweep.ScenarioAt(row.Index).Evaluate();
            Assert.Equal(e.TotalSeconds, row.TotalSeconds);
            Assert.Equal(e.Result.BreakdownSeconds["communication"], row.CommunicationSeconds);
            Assert.Equal(e.Dag.RepresentedCount, row.Operations);   // the whole DAG's count (Evaluate folds replicas; Dag.Count is the built part)
        }
    }

    /// <summary>
    /// The founding sweep's axes (data/sweeps/founding-4800.json: sequence length, batch, eight layouts, three GPUs, two
    /// cost models) plus rank orders and node sizes under which some cost models price data-parallel replicas differently
    /// (the sweep then builds the DAG whole, as Scenario.BuildDagFor does), drawn at random so that points repeat.
    /// </summary>
    private static string FoundingLikeGrid(int count, int seed) => Grid("""
        { "model.sequenceLength": [1024, 4096, 9216, 32768], "model.batch": [512, 2048],
          "strategy": [{ "ep": 16 }, { "ep": 8, "dp": 2 }, { "ep": 4, "dp": 4 }, { "ep": 4, "tp": 4 }, { "ep": 2, "tp": 8 },
                       { "tp": 8, "pp": 2 }, { "tp": 8, "pp": 2, "microbatches": 4 }, { "ep": 8, "pp": 2, "microbatches": 2 },
                       { "ep": 4, "dp": 4, "rankOrder": "pp-dp-ep-tp" }, { "ep": 4, "pp": 2, "dp": 2, "microbatches": 2, "rankOrder": "pp-dp-ep-tp" }],
          "hardware.gpusPerNode": [2, 8],
          "hardware.preset": ["H100-SXM", "H200", "A100-80GB"],
          "costModel": ["roofline-ideal", { "kind": "roofline-efficiency", "efficiency": "typical-hopper" }] }
        """, $$"""{ "count": {{count}}, "seed": {{seed}} }""");

    [Fact]
    public void Structure_reuse_gives_the_csv_of_fresh_evaluation_byte_for_byte()
    {
        // Oracle: every point evaluated from scratch (Reuse = false: its own scenario parsed, its own DAG built, priced
        // and scheduled). With reuse, a structure's DAG is built once for the whole sweep and re-priced for every GPU
        // and cost model, and a repeated point takes its first draw's row. Small batches make structures and points
        // recur across batches; a zero cache budget makes later batches rebuild; two threads split structures.
        var sweep = Sweep.Parse(FoundingLikeGrid(400, 11));
        var fresh = Csv(sweep, new SweepOptions(1, BatchSize: 4096) { Reuse = false });
        var lines = fresh.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(401, lines.Length);
        // Not vacuous: points repeat (within and across batches), structures are shared by several points, folded
        // (data-parallel) DAGs occur.
        var rows = sweep.Rows(new SweepOptions(1) { Reuse = false }).ToArray();
        var points = rows.Select(r => string.Join('|', r.Values)).ToArray();
        Assert.True(points.Distinct().Count() < 380, $"{points.Distinct().Count()} distinct points of 400");
        Assert.True(rows.Select(r => string.Join('|', r.Values.Take(4))).Distinct().Count() < 200);
        Assert.True(rows.Count(r => r.Valid) > 300, $"{rows.Count(r => r.Valid)} valid points of 400");
        Assert.Contains(rows, r => r.Valid && sweep.ScenarioAt(r.Index).Strategy.DP > 1);   // folded DAGs occur
        Assert.Equal(fresh, Csv(sweep, new SweepOptions(1, BatchSize: 4096)));
        Assert.Equal(fresh, Csv(sweep, new SweepOptions(1, BatchSize: 37)));
        Assert.Equal(fresh, Csv(sweep, new SweepOptions(2, BatchSize: 50) { StructureCacheOperations = 0 }));
        Assert.Equal(fresh, Csv(sweep, new SweepOptions(2, BatchSize: 64)));
    }

    [Fact]
    public void Fold_checks_kept_per_communication_model_give_the_csv_of_fresh_evaluation()
    {
        // Oracle: every point evaluated from scratch (Reuse = false), against the sweep that keeps the fold verdict and
        // the link footprints per DAG, hardware and communication inputs (CostModelSpec.Communication). The cost models
        // differ in the compute side only (roofline-ideal, tile-wave: one shared entry) or in the communication side
        // (NVLink port contention, NCCL protocol tables, DeepEP's normal all-to-all: their own), on node sizes where the
        // replicas and pipeline stages straddle nodes and where they do not.
        var sweep = Sweep.Parse(Grid("""
            { "strategy": [{ "ep": 4, "pp": 2, "dp": 2, "microbatches": 4 }, { "ep": 8, "pp": 2, "microbatches": 4 }, { "tp": 8, "pp": 2, "microbatches": 4 },
                           { "ep": 4, "dp": 4, "rankOrder": "pp-dp-ep-tp" }],
              "hardware.gpusPerNode": [4, 8, 16],
              "costModel": ["roofline-ideal", "tile-wave", { "kind": "roofline-ideal", "nvlinkContention": true },
                            { "kind": "roofline-ideal", "ncclProtocols": true }, { "kind": "tile-wave", "alltoall": "deep-ep-normal" }] }
            """));
        var fresh = Csv(sweep, new SweepOptions(1) { Reuse = false });
        Assert.Equal(fresh, Csv(sweep, new SweepOptions(1)));
        Assert.Equal(fresh, Csv(sweep, new SweepOptions(2, BatchSize: 9)));
        // Not vacuous: on one structure and hardware, NVLink port contention changes the schedule (the links it is
        // priced on are not roofline-ideal's), so an entry shared across communication inputs would change a row.
        var rows = sweep.Rows(new SweepOptions(1) { Reuse = false }).Where(r => r.Valid).ToArray();
        Assert.Contains(rows.GroupBy(r => string.Join('|', r.Values.Take(2))), g =>
            g.Single(r => r.Values[2] == "roofline-ideal").TotalSeconds != g.Single(r => r.Values[2].Contains("nvlinkContention", StringComparison.Ordinal)).TotalSeconds);
    }

    [Fact]
    public void Points_read_by_section_give_the_rows_and_reasons_of_whole_documents()
    {
        // Oracle: Reuse = false reads every point's whole scenario document (Scenario.Parse); with reuse each model,
        // hardware, strategy and cost-model section is read once and the scenario assembled and validated. Values that
        // fail inside a section (a negative or non-integer length, an unknown preset or cost model, ep 0), several
        // sections failing at once (the whole document names the first it meets), and combinations that fail only
        // together (ep x dp != GPUs) must give the same rows and reasons, byte for byte.
        var sweep = Sweep.Parse(Grid("""
            { "model.sequenceLength": [4096, -5, "long"], "model.batch": [1024, 0],
              "hardware.preset": ["H100-SXM", "no-such-gpu"], "hardware.gpus": [16, 8],
              "strategy.ep": [16, 8, 0], "strategy.dp": [1, 2],
              "costModel": ["roofline-ideal", "no-such-model"] }
            """));
        var whole = Csv(sweep, new SweepOptions(1) { Reuse = false });
        var rows = sweep.Rows(new SweepOptions(1) { Reuse = false }).ToArray();
        // Not vacuous: valid points, and invalid ones failing in each section and across sections.
        Assert.Contains(rows, r => r.Valid);
        foreach (var field in new[] { "model.sequenceLength", "model.batch", "hardware", "strategy.ep", "costModel", "strategy.ep x tp x pp x dp" })
            Assert.Contains(rows, r => !r.Valid && r.Reason!.StartsWith(field, StringComparison.Ordinal));
        Assert.Equal(whole, Csv(sweep, new SweepOptions(1)));
        Assert.Equal(whole, Csv(sweep, new SweepOptions(2, BatchSize: 7)));
    }

    [Fact]
    public void Reused_structure_rows_equal_a_fresh_evaluation_of_random_points()
    {
        // Oracle: Scenario.Evaluate(DagFolding.Symmetric) of each point's scenario, a DAG built fresh for that point
        // alone (folded, or whole when the cost model prices the replicas differently), priced and scheduled.
        var sweep = Sweep.Parse(FoundingLikeGrid(300, 5));
        var rows = sweep.Rows(new SweepOptions(2, BatchSize: 100)).ToArray();
        var rng = new Random(17);
        foreach (var row in rows.Where(r => r.Valid).OrderBy(_ => rng.Next()).Take(120))
        {
            var e = sweep.ScenarioAt(row.Index).Evaluate(DagFolding.Symmetric);
            Assert.Equal(e.TotalSeconds, row.TotalSeconds);
            foreach (var (key, value) in new[] { ("matmul", row.MatmulSeconds), ("attention", row.AttentionSeconds), ("elementwise", row.ElementwiseSeconds),
                         ("communication", row.CommunicationSeconds), ("idle", row.IdleSeconds) })
                Assert.Equal(e.Result.BreakdownSeconds[key], value);
            Assert.Equal(e.Dag.RepresentedCount, row.Operations);
            Assert.Equal(e.Memory.PeakBytesPerGpu, row.PeakBytesPerGpu);
        }
    }

    [Fact]
    public void Invalid_points_are_counted_with_their_reason()
    {
        // ep x dp must be 16 on 16 GPUs: of 3 x 3 points, (4,4), (8,2), (16,1) are valid; 6 are not.
        var sweep = Sweep.Parse(Grid("""{ "strategy.ep": [4, 8, 16], "strategy.dp": [1, 2, 4] }"""));
        var rows = new List<SweepRow>();
        var summary = sweep.Run(rows.Add);
        Assert.Equal(3, summary.Valid);
        Assert.Equal(6, summary.Invalid);
        var reason = Assert.Single(summary.InvalidByReason);
        Assert.Equal(6, reason.Value);
        Assert.Contains("strategy.ep x tp x pp x dp", reason.Key);
        Assert.All(rows.Where(r => !r.Valid), r => Assert.True(double.IsNaN(r.TotalSeconds)));
        Assert.Equal(rows.Where(r => r.Valid).MinBy(r => r.TotalSeconds), summary.Fastest);
    }

    [Fact]
    public void Progress_reaches_the_total()
    {
        var sweep = Sweep.Parse(Grid(SmallGrid));
        var reports = new List<SweepProgress>();
        sweep.Run(_ => { }, new SweepOptions(BatchSize: 10), new SyncProgress(reports.Add));
        Assert.Equal([10L, 20, 30, 36], reports.Select(p => p.Done));
        Assert.All(reports, p => Assert.Equal(36, p.Total));
    }

    [Theory]
    [InlineData("""{ "strategy.epp": [1] }""", "grid.strategy.epp")]
    [InlineData("""{ "modle.layers": [1] }""", "grid.modle.layers")]
    [InlineData("""{ "strategy.ep": [] }""", "grid.strategy.ep")]
    [InlineData("""{ "strategy.ep": 4 }""", "grid.strategy.ep")]
    public void Unknown_or_malformed_grid_keys_are_rejected(string grid, string field)
    {
        var e = Assert.Throws<ConfigException>(() => Sweep.Parse(Grid(grid)));
        Assert.Equal(field, e.Field);
    }

    [Fact]
    public void Unknown_top_level_keys_are_rejected_with_a_suggestion()
    {
        var e = Assert.Throws<ConfigException>(() => Sweep.Parse(Grid(SmallGrid).Replace("\"grid\"", "\"gird\"")));
        Assert.Equal("gird", e.Field);
        Assert.Contains("did you mean \"grid\"", e.Message);
        Assert.Throws<ConfigException>(() => Sweep.Parse(Grid(SmallGrid, """{ "count": 0 }""")));
        Assert.Throws<ConfigException>(() => Sweep.Parse(Grid(SmallGrid, """{ "count": 5, "sede": 1 }""")));
        Assert.Throws<ConfigException>(() => Sweep.Parse("""{ "grid": {} }"""));
    }

    [Fact]
    public void Inline_base_and_hardware_preset_replacing_an_inline_description()
    {
        var inline = File.ReadAllText(Repo.ScenarioPath("tp8-pp2"));
        var sweep = Sweep.Parse($$"""{ "base": {{inline}}, "grid": { "hardware.preset": ["H200", "A100-80GB"] } }""");
        var rows = sweep.Rows().ToArray();
        Assert.All(rows, r => Assert.True(r.Valid, r.Reason));
        Assert.Equal("A100-80GB", sweep.ScenarioAt(1).Hardware.Name);
        Assert.Equal(16, sweep.ScenarioAt(1).Hardware.GpuCount);
    }

    /// <summary>Reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(Action<SweepProgress> report) : IProgress<SweepProgress>
    {
        public void Report(SweepProgress value) => report(value);
    }
}

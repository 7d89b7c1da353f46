using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Calibration;

/// <summary>All-reduce validation for messages of at least 1 MiB: fitted lines in-sample and leave-one-size-out, and datasheet links.</summary>
public static class CollectiveSuites
{
    public const double MinBytes = LinkCalibration.MinBytes;

    public static string CaseId(CollectiveMeasurement m) => string.Create(CultureInfo.InvariantCulture,
        $"{m.System} {m.Collective} {m.Gpus} GPUs/{m.Nodes} node(s) {m.Bytes:G6} B");

    private static IEnumerable<IGrouping<(string System, int Gpus, int Nodes), CollectiveMeasurement>> AllReduceGroups(IReadOnlyList<CollectiveMeasurement> rows) =>
        rows.Where(r => r.Pattern == CollectivePattern.AllReduce)
            .GroupBy(r => (r.System, r.Gpus, r.Nodes))
            .OrderBy(g => g.Key.System, StringComparer.Ordinal).ThenBy(g => g.Key.Gpus).ThenBy(g => g.Key.Nodes);

    /// <summary>The calibrated model as used: each system's fitted lines price the sizes they were fitted on (in-sample).</summary>
    public static ValidationSuite Calibrated(IReadOnlyList<CollectiveMeasurement> rows, string name = "collectives")
    {
        var cases = new List<ValidationCase>();
        var warnings = new List<string>();
        foreach (var group in AllReduceGroups(rows))
        {
            var fits = CollectiveFit.FitAll(group);
            warnings.AddRange(fits.Where(f => f.MaxBytes >= MinBytes).Select(f => $"{group.Key.System}: {f}"));
            foreach (var m in group.Where(r => r.Bytes >= MinBytes).OrderBy(r => r.Bytes))
            {
                var fit = fits.First(f => f.Covers(m.Bytes));
                cases.Add(new ValidationCase(CaseId(m), m.Seconds * 1e6, fit.Seconds(m.Bytes) * 1e6));
            }
        }
        return new ValidationSuite(name,
            "All-reduce time for messages >= 1 MiB, calibrated latency + bytes / bandwidth per system, GPU count and node count (weighted least squares over the sizes >= 1 MiB), evaluated on the sizes it was fitted on",
            "us", 10, cases, warnings);
    }

    /// <summary>Cross-validated: each size is predicted by a line fitted to the other sizes of its group (leave one size out).</summary>
    public static ValidationSuite LeaveOneSizeOut(IReadOnlyList<CollectiveMeasurement> rows, string name = "collectives-leave-one-out")
    {
        var cases = new List<ValidationCase>();
        foreach (var group in AllReduceGroups(rows))
        {
            var big = group.Where(r => r.Bytes >= MinBytes).OrderBy(r => r.Bytes).ToArray();
            if (big.Length < 3) continue;
            foreach (var m in big)
            {
                var others = big.Where(r => r.Bytes != m.Bytes).Select(r => (r.Bytes, r.Seconds)).ToArray();
                var fit = CollectiveFit.Fit(CollectivePattern.AllReduce, m.Gpus, m.Nodes, others);
                cases.Add(new ValidationCase(CaseId(m), m.Seconds * 1e6, fit.Seconds(m.Bytes) * 1e6));
            }
        }
        return new ValidationSuite(name,
            "All-reduce time for messages >= 1 MiB, each size predicted by a latency-bandwidth line fitted to the other sizes (>= 1 MiB) of its system, GPU count and node count",
            "us", 10, cases, []);
    }

    /// <summary>Datasheet links (LinkCommunication) of the matching cluster preset: what the model predicts before calibration.</summary>
    public static ValidationSuite Datasheet(IReadOnlyList<CollectiveMeasurement> rows, string name = "collectives-datasheet")
    {
        var cases = new List<ValidationCase>();
        var warnings = new List<string>();
        foreach (var group in AllReduceGroups(rows))
        {
            if (!PublicData.SystemPresets.TryGetValue(group.Key.System, out var preset))
            {
                warnings.Add($"{group.Key.System}: no cluster preset; not compared");
                continue;
            }
            var hw = HardwareCatalog.Get(preset);
            // Place the group as the measurement did: nodes x (gpus / nodes) GPUs.
            var perNode = group.Key.Gpus / group.Key.Nodes;
            hw = hw.WithGpus(Math.Max(hw.GpuCount, group.Key.Nodes * hw.GpusPerNode));
            var ranks = Enumerable.Range(0, group.Key.Nodes).SelectMany(n => Enumerable.Range(n * hw.GpusPerNode, perNode)).ToArray();
            var link = new LinkCommunication(hw);
            foreach (var m in group.Where(r => r.Bytes >= MinBytes).OrderBy(r => r.Bytes))
                cases.Add(new ValidationCase(CaseId(m), m.Seconds * 1e6, link.Seconds(CollectivePattern.AllReduce, m.Bytes, ranks) * 1e6));
        }
        return new ValidationSuite(name,
            "All-reduce time for messages >= 1 MiB, datasheet links of the DGX A100 / DGX H100 presets (ring factor 2(p-1)/p, NVLink in a node, one NIC per GPU across nodes); no fitting",
            "us", null, cases, warnings);
    }

    /// <summary>Intra-node (every GPU of the group in one node) or inter-node (the group spans nodes).</summary>
    public enum Level { IntraNode, InterNode }

    public static string LevelName(Level level) => level == Level.IntraNode ? "intra-node" : "inter-node";

    private static bool IsAt(CollectiveMeasurement m, Level level) => (m.Nodes > 1) == (level == Level.InterNode);

    /// <summary>The group as the measurement placed it on a preset: nodes x (gpus / nodes) GPUs, the first of each node.</summary>
    private static (HardwareSpec Hardware, int[] Ranks) Placed(HardwareSpec preset, int gpus, int nodes)
    {
        var perNode = gpus / nodes;
        var hw = preset.WithGpus(Math.Max(preset.GpuCount, nodes * preset.GpusPerNode));
        return (hw, Enumerable.Range(0, nodes).SelectMany(n => Enumerable.Range(n * hw.GpusPerNode, perNode)).ToArray());
    }

    private static CollectivePrice Predict(HardwareSpec preset, CollectiveMeasurement m, NcclTuning? protocols = null)
    {
        var (hw, ranks) = Placed(preset, m.Gpus, m.Nodes);
        return new LinkCommunication(hw, protocols: protocols).Price(m.Pattern, m.Bytes, ranks);
    }

    /// <summary>
    /// All-reduce at one level (intra-node or inter-node), messages >= 1 MiB, predicted by the topology model
    /// (<see cref="LinkCommunication"/>) on the system's preset: from the datasheet (<paramref name="calibrated"/>
    /// false) or with links calibrated per level (<see cref="LinkCalibration.CalibrateLevels"/>; the all-reduce group the intra-node
    /// link was read from is in-sample, every other case is predicted; across nodes the rail count is chosen on the
    /// system's other inter-node groups, leaving the predicted group out).
    /// </summary>
    /// <remarks>
    /// With <paramref name="protocols"/> (datasheet only), the model prices NCCL's algorithms per protocol with NCCL's
    /// tuner latencies (<see cref="NcclTuning"/>) instead of the description's one latency per step: suite
    /// <c>collectives-datasheet-protocols-*</c>.
    /// </remarks>
    public static ValidationSuite ByLevel(IReadOnlyList<CollectiveMeasurement> rows, Level level, bool calibrated, NcclTuning? protocols = null)
    {
        if (calibrated && protocols is not null) throw new ArgumentException("protocols are compared on datasheet links only (the calibrated latency already holds the protocol measured)", nameof(protocols));
        var cases = new List<ValidationCase>();
        var notes = new List<string>();
        foreach (var system in rows.GroupBy(r => r.System).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            if (!PublicData.SystemPresets.TryGetValue(system.Key, out var presetName))
            {
                if (system.Any(r => r.Pattern == CollectivePattern.AllReduce && IsAt(r, level))) notes.Add($"{system.Key}: no cluster preset; not compared");
                continue;
            }
            var preset = HardwareCatalog.Get(presetName);
            if (calibrated)
            {
                var systemNotes = new List<string>();
                var c = LinkCalibration.CalibrateLevels(preset, system.ToArray(), systemNotes);
                if (c is null) { notes.Add($"{system.Key}: nothing to calibrate from; not compared"); continue; }
                preset = c;
                notes.AddRange(systemNotes.Select(n => $"{system.Key}: {n}"));
            }
            var groups = system.Where(r => r.Pattern == CollectivePattern.AllReduce && IsAt(r, level) && r.Bytes >= MinBytes).GroupBy(r => (r.Gpus, r.Nodes)).OrderBy(g => g.Key).ToArray();
            if (level == Level.InterNode && !calibrated && protocols is null)
            {
                // What the inter-node rows say about the network, straight from the data: each group's bus bandwidth at
                // its largest size against the send/recv between one GPU of each node (one GPU pair, so one NIC path).
                var pair = system.Where(r => r.Pattern == CollectivePattern.SendRecv && r.Nodes == 2 && r.Gpus == 2).MaxBy(r => r.Bytes);
                foreach (var group in groups)
                {
                    var top = group.MaxBy(r => r.Bytes)!;
                    var bus = top.Bytes / top.Seconds * LinkCommunication.AlgorithmFactor(CollectivePattern.AllReduce, top.Gpus);
                    var vsPair = pair is null ? "" : string.Create(CultureInfo.InvariantCulture, $" = {bus / (pair.Bytes / pair.Seconds):F2} x the one-pair send/recv ({pair.Bytes / pair.Seconds / 1e9:F2} GB/s at {pair.Bytes:G3} B)");
                    notes.Add(string.Create(CultureInfo.InvariantCulture,
                        $"{system.Key}: measured {group.Key.Gpus} GPUs / {group.Key.Nodes} nodes ({group.Key.Gpus / group.Key.Nodes} per node): busbw {bus / 1e9:F1} GB/s at {top.Bytes:G3} B{vsPair}"));
                }
            }
            foreach (var group in groups)
            {
                var hw = preset;
                if (calibrated && level == Level.InterNode && groups.Length > 1)
                {
                    // The NICs per node the measurement used are not stated for every cluster: choose the rail count
                    // (a divisor of the GPUs per node) that best prices the system's *other* inter-node groups.
                    var others = groups.Where(g => g.Key != group.Key).SelectMany(g => g).ToArray();
                    var rails = Enumerable.Range(1, preset.GpusPerNode).Where(r => preset.GpusPerNode % r == 0)
                        .MinBy(r => others.Average(m => Math.Abs(Predict(preset with { NicCount = r }, m).Seconds / m.Seconds - 1)));
                    hw = preset with { NicCount = rails };
                    notes.Add($"{system.Key}: {group.Key.Gpus} GPUs / {group.Key.Nodes} nodes predicted with {rails} NIC(s) per node, the count that best prices the other inter-node groups");
                }
                foreach (var m in group.OrderBy(r => r.Bytes))
                {
                    var price = Predict(hw, m, protocols);
                    cases.Add(new ValidationCase($"{CaseId(m)} [{price.Label}]", m.Seconds * 1e6, price.Seconds * 1e6));
                }
            }
        }
        var what = calibrated ? "links calibrated per level (intra-node ring busbw from the largest single-node all-reduce; NIC from the 2-node send/recv, rails per node chosen on the other inter-node groups)"
            : protocols is not null ? $"datasheet links of the DGX presets and NCCL's tuner per protocol ({protocols.Name}: LL / LL128 / Simple latencies and bandwidth factors; ring, tree, NVLS)"
            : "datasheet links of the DGX presets";
        return new ValidationSuite($"collectives-{(calibrated ? "by-level" : protocols is not null ? "datasheet-protocols" : "datasheet")}-{LevelName(level)}",
            $"All-reduce time for messages >= 1 MiB, {LevelName(level)} groups only, topology model (ring / tree / hierarchical / NVLS chosen per size) with {what}",
            "us", null, cases, notes);
    }
}

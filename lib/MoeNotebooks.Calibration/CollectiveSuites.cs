using System.Globalization;
using MoeNotebooks.Config;
using MoeNotebooks.Costs;
using MoeNotebooks.Dag;

namespace MoeNotebooks.Calibration;

/// <summary>All-reduce validation for messages of at least 1 MiB: fitted lines in-sample and leave-one-size-out, and datasheet links.</summary>
public static class CollectiveSuites
{
    public const double MinBytes = 1 << 20;

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
}

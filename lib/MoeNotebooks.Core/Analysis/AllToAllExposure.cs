using MoeNotebooks.Dag;

namespace MoeNotebooks.Analysis;

/// <summary>
/// How much of the MoE all-to-all (dispatch and combine) a schedule hides under compute, per GPU on average:
/// <see cref="Seconds"/> of all-to-all on a GPU's communication stream, <see cref="HiddenSeconds"/> of it while the
/// GPU's compute stream was busy. Shows what Megatron-Core's EP overlap (<c>moeAllToAllOverlap</c>) buys.
/// </summary>
/// <param name="BuiltMicrobatches">When the run was extrapolated from fewer built microbatches
/// (<see cref="CriticalPathResult.Extrapolation"/>), the measure is of that built schedule: its microbatch count; else null.</param>
public sealed record AllToAllExposure(double Seconds, double HiddenSeconds, int? BuiltMicrobatches = null)
{
    public double ExposedSeconds => Seconds - HiddenSeconds;

    /// <summary>
    /// Measured on the schedule of <paramref name="r"/>; null when the DAG has no all-to-all, or when the run was
    /// extrapolated over microbatches (its DAG holds only the built microbatches: evaluate with
    /// <c>DagFolding.Symmetric</c> to measure it).
    /// </summary>
    public static AllToAllExposure? Of(CriticalPathResult r)
    {
        if (r.Extrapolation is not null) return null;
        var dag = r.Dag;
        var n = dag.Count;
        var compute = new List<(double S, double F)>[dag.GpuCount];
        var a2a = new List<(double S, double F)>[dag.GpuCount];
        var any = false;
        for (var op = 0; op < n; op++)
        {
            double s = r.StartSeconds(op), f = r.FinishSeconds(op);
            if (f <= s) continue;
            if (dag.Category(op) != OpCategory.Communication) (compute[dag.Gpu(op)] ??= []).Add((s, f));
            else if (dag.Kind(op).Pattern() == CollectivePattern.AllToAll)
            {
                any = true;
                foreach (var g in dag.Streams(op)) (a2a[g] ??= []).Add((s, f));
            }
        }
        if (!any) return null;
        double total = 0, hidden = 0;
        var gpus = 0;
        for (var g = 0; g < dag.GpuCount; g++)
        {
            if (dag.Representative(g) != g) continue;
            gpus++;
            if (a2a[g] is not { } spans) continue;
            var busy = compute[g] ?? [];
            // Both lists ascend by start (each stream runs in issue order and its operations do not overlap).
            var j = 0;
            foreach (var (s, f) in spans)
            {
                total += f - s;
                while (j < busy.Count && busy[j].F <= s) j++;
                for (var k = j; k < busy.Count && busy[k].S < f; k++)
                    hidden += Math.Max(0, Math.Min(f, busy[k].F) - Math.Max(s, busy[k].S));
            }
        }
        return new AllToAllExposure(total / gpus, hidden / gpus, r.Extrapolation?.BuiltMicrobatches);
    }
}

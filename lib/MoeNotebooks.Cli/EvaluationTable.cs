using System.Globalization;
using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary>The human-readable form of an evaluation.</summary>
public static class EvaluationTable
{
    /// <summary>One line describing the model: size, attention, FFN, precision.</summary>
    public static string ModelLine(ModelSpec m)
    {
        var p = Derivations.ParameterCounts.Of(m);
        var attention = m.Mla is not null ? "MLA" : m.KeyValueHeads < m.AttentionHeads ? $"GQA {m.AttentionHeads}/{m.KeyValueHeads} heads of {m.HeadDim}" : $"MHA {m.AttentionHeads} heads of {m.HeadDim}";
        if (m.Causal) attention += ", causal";
        if (m.AttentionPattern?.Contains(AttentionLayerKind.Sliding) == true) attention += $", sliding window {m.SlidingWindow}";
        var ffn = m.IsDense ? $"dense FFN {m.FfnHiddenSize}" : $"{m.Experts} experts of {m.ExpertFfnHiddenSize} top-{m.TopK}" + (m.SharedExperts > 0 ? $" + {m.SharedExperts} shared" : "") + (m.DenseLayers > 0 ? $", first {m.DenseLayers} layers dense" : "");
        var mtp = m.MtpLayers == 0 ? "" : string.Create(CultureInfo.InvariantCulture, $", {m.MtpLayers} MTP depth{(m.MtpLayers == 1 ? "" : "s")} (+{p.Mtp / 1e9:F2}B parameters, trained on the last stage)");
        var precision = m.Precision is { } r ? r.ToString() : $"everything {m.Dtype}";
        return string.Create(CultureInfo.InvariantCulture,
            $"{m.Name}: {m.Layers} layers, H {m.HiddenSize}, {attention}, {ffn}{(m.GatedFfn ? " (gated)" : "")}{mtp}; {p.Total / 1e9:F2}B parameters ({p.Active("both") / 1e9:F2}B active); {precision}; {m.Batch} x {m.SequenceLength} tokens");
    }

    public static void Write(Evaluation e, TextWriter o, double? sensitivitySpeedup = null)
    {
        var r = e.Result;
        var c = CultureInfo.InvariantCulture;
        o.WriteLine($"Scenario   {e.Scenario.Name}: {e.Scenario.Description}");
        o.WriteLine($"Derivation {e.Dag.Description}");
        o.WriteLine($"Model      {ModelLine(e.Scenario.Model)}");
        o.WriteLine($"Hardware   {e.Scenario.Hardware}");
        o.WriteLine($"Cost model {e.Cost.Name}");
        if (r.Extrapolation is { } extrapolated)
            o.WriteLine($"DAG        {extrapolated.Operations.ToString("N0", c)} operations, {e.Dag.Count.ToString("N0", c)} built: {extrapolated}{(e.Dag.IsFolded ? $", {e.Dag.FoldFactor} identical GPUs per representative" : "")}");
        else o.WriteLine(e.Dag.IsFolded
            ? $"DAG        {e.Dag.RepresentedCount.ToString("N0", c)} operations, folded to {e.Dag.Count.ToString("N0", c)} built ({e.Dag.FoldFactor} identical GPUs per representative), {e.Dag.EdgeCount.ToString("N0", c)} edges"
            : $"DAG        {e.Dag.Count.ToString("N0", c)} operations, {e.Dag.EdgeCount.ToString("N0", c)} edges");
        // What the symmetry fold built once (exact: RankSymmetry, DagFolding.Symmetric).
        if (e.Dag.IsFolded && e.Dag.FoldDescription.Length > 0) o.WriteLine($"Folded     {e.Dag.FoldDescription}");
        o.WriteLine();
        o.WriteLine(string.Create(c, $"Total      {r.TotalSeconds,12:F4} s"));
        o.WriteLine($"Memory     {e.Memory}");
        if (e.Routing is { } routing) o.WriteLine($"Routing    {e.Scenario.Model.Routing}: {routing}");
        if (Analysis.AllToAllExposure.Of(r) is { } a2a)
            o.WriteLine(string.Create(c, $"All-to-all {(a2a.BuiltMicrobatches is { } built ? $"(schedule of the {built} built microbatches) " : "")}{a2a.Seconds:F4} s per GPU, {a2a.HiddenSeconds:F4} s of it under compute, {a2a.ExposedSeconds:F4} s exposed (moeAllToAllOverlap {JsonObjectReader.Kebab(e.Scenario.Strategy.MoeAllToAllOverlap.ToString())}{(e.Cost.AllToAllSmShare > 0 ? $"; DeepEP takes {e.Cost.AllToAllSmShare:P1} of the SMs while it runs" : "")})"));
        var warnings = EvaluationWarnings.Of(e);
        if (warnings.Count > 0)
        {
            o.WriteLine("Warnings");
            foreach (var warning in warnings) o.WriteLine($"  {warning}");
        }
        o.WriteLine();
        o.WriteLine("Breakdown (mean per GPU)         seconds     share");
        foreach (var (k, v) in r.BreakdownSeconds)
            o.WriteLine(string.Create(c, $"  {k,-28} {v,12:F4} {100 * v / r.TotalSeconds,8:F1} %"));
        o.WriteLine();
        o.WriteLine("Formula terms on the critical path                count   seconds each");
        foreach (var t in e.Formula.MatmulTerms)
        {
            var shape = new Dag.MatmulShape(t.M, t.K, t.N, t.Batch);
            var dtype = t.Dtype ?? e.Dag.Dtype;
            var label = t.Dtype is null ? shape.ToString() : $"{shape} @{t.Dtype}";
            o.WriteLine(string.Create(c, $"  {label,-46} {t.Count,6} {e.Cost.Compute.MatmulSeconds(shape, dtype, t.Dtype is null ? e.Dag.ElementBytes : ModelSpec.DtypeBytes[dtype]),14:G5}"));
        }
        foreach (var t in e.Formula.OtherTerms)
            o.WriteLine(string.Create(c, $"  {t.Name,-46} {t.Count,6} {t.Seconds,14:G5}"));
        var collectives = e.Collectives;
        if (collectives.Count > 0)
        {
            o.WriteLine();
            o.WriteLine("Communication (distinct)          GPUs dom   bytes/GPU  count   seconds each  algorithm      busbw GB/s");
            foreach (var x in collectives.Take(12))
                o.WriteLine(string.Create(c, $"  {x.Kind,-30} {x.Gpus,5} {x.Domains,3} {x.BytesPerGpu,11:G4} {x.Count,6} {x.Seconds,14:G5}  {x.Algorithm,-14} {x.BusBytesPerSecond / 1e9,9:F1}"));
            if (collectives.Count > 12) o.WriteLine(string.Create(c, $"  ... {collectives.Count - 12} more (--format json lists all)"));
        }
        o.WriteLine();
        o.WriteLine(string.Create(c, $"Critical path: {r.CriticalPath.Count} operations (first 12, last 4){(r.Extrapolation is { } ex ? $", of the {ex.BuiltMicrobatches} built microbatches" : "")}"));
        o.WriteLine("  start s      finish s     gpu  operation");
        var rows = r.CriticalPath.Count <= 16 ? r.CriticalPath : r.CriticalPath.Take(12).Concat(r.CriticalPath.Skip(r.CriticalPath.Count - 4));
        var i = 0;
        foreach (var op in rows)
        {
            if (r.CriticalPath.Count > 16 && i++ == 12) o.WriteLine("  ...");
            o.WriteLine(string.Create(c, $"  {op.StartSeconds,-12:F5} {op.FinishSeconds,-12:F5} {op.Gpu,4}  {op.Name}"));
        }
        if (sensitivitySpeedup is not { } speedup) return;
        o.WriteLine();
        o.WriteLine(string.Create(c, $"What if each got {speedup:P0} faster      on path s   new total s    saved"));
        foreach (var row in e.Sensitivity(speedup).Where(r => r.SavedSeconds > 0 || r.CriticalPathSeconds > 0))
            o.WriteLine(string.Create(c, $"  {row.Target + " (" + row.Scope + ")",-36} {row.CriticalPathSeconds,11:F4} {row.NewTotalSeconds,12:F4} {row.SavedPercent(r.TotalSeconds),7:F2} %"));
    }
}

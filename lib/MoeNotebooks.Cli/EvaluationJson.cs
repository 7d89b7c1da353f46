using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary>The machine-readable form of an evaluation (<c>moe evaluate --format json</c>).</summary>
public static class EvaluationJson
{
    public static void Write(Evaluation e, TextWriter output, double? sensitivitySpeedup = null)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            var r = e.Result;
            w.WriteStartObject();
            w.WriteString("scenario", e.Scenario.Name);
            w.WriteString("derivation", e.Dag.Description);
            w.WriteString("hardware", e.Scenario.Hardware.ToString());
            w.WriteString("costModel", e.Cost.Name);
            w.WriteNumber("totalSeconds", r.TotalSeconds);
            w.WriteStartArray("warnings");
            foreach (var warning in EvaluationWarnings.Of(e)) w.WriteStringValue(warning);
            w.WriteEndArray();
            w.WriteString("model", EvaluationTable.ModelLine(e.Scenario.Model));
            if (e.Scenario.Model.Precision is { } precision) w.WriteString("precision", precision.Name);
            w.WriteNumber("operations", r.Extrapolation?.Operations ?? e.Dag.RepresentedCount);
            if (e.Dag.IsFolded || r.Extrapolation is not null) w.WriteNumber("builtOperations", e.Dag.Count);
            if (r.Extrapolation is { } x)
            {
                w.WriteStartObject("extrapolation");
                w.WriteNumber("microbatches", x.Microbatches);
                w.WriteNumber("builtMicrobatches", x.BuiltMicrobatches);
                w.WriteNumber("period", x.Period);
                w.WriteNumber("shiftSeconds", x.ShiftSeconds);
                w.WriteNumber("transientPeriods", x.TransientPeriods);
                w.WriteEndObject();
            }
            w.WriteString("formula", e.Formula.ToString());
            w.WriteStartArray("terms");
            foreach (var t in e.Formula.MatmulTerms)
            {
                w.WriteStartObject();
                w.WriteNumber("m", t.M);
                w.WriteNumber("k", t.K);
                w.WriteNumber("n", t.N);
                if (t.Batch != 1) w.WriteNumber("batch", t.Batch);
                if (t.Dtype is not null) w.WriteString("dtype", t.Dtype);
                w.WriteNumber("count", t.Count);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("otherTerms");
            foreach (var t in e.Formula.OtherTerms)
            {
                w.WriteStartObject();
                w.WriteString("name", t.Name);
                w.WriteNumber("count", t.Count);
                w.WriteNumber("seconds", t.Seconds);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("criticalPath");
            foreach (var op in r.CriticalPath)
            {
                w.WriteStartObject();
                w.WriteString("op", op.Name);
                w.WriteString("kind", op.Kind.ToString());
                w.WriteNumber("gpu", op.Gpu);
                w.WriteNumber("startSeconds", op.StartSeconds);
                w.WriteNumber("finishSeconds", op.FinishSeconds);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("breakdownSeconds");
            foreach (var (k, v) in r.BreakdownSeconds) w.WriteNumber(k, v);
            w.WriteEndObject();
            w.WriteStartObject("criticalPathSeconds");
            foreach (var (k, v) in r.CriticalPathSecondsByCategory) w.WriteNumber(k, v);
            w.WriteEndObject();
            w.WriteStartArray("perGpu");
            foreach (var g in r.PerGpu)
            {
                w.WriteStartObject();
                w.WriteNumber("gpu", g.Gpu);
                w.WriteNumber("matmulSeconds", g.MatmulSeconds);
                w.WriteNumber("attentionSeconds", g.AttentionSeconds);
                w.WriteNumber("elementwiseSeconds", g.ElementwiseSeconds);
                w.WriteNumber("communicationSeconds", g.CommunicationSeconds);
                w.WriteNumber("idleSeconds", g.IdleSeconds);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            WriteMemory(w, e.Memory);
            w.WriteStartArray("collectives");
            foreach (var c in e.Collectives)
            {
                w.WriteStartObject();
                w.WriteString("kind", c.Kind.ToString());
                w.WriteString("pattern", MoeNotebooks.Costs.MeasurementCsv.NameOf(c.Pattern));
                w.WriteNumber("gpus", c.Gpus);
                w.WriteNumber("nvlinkDomains", c.Domains);
                w.WriteNumber("bytesPerGpu", c.BytesPerGpu);
                w.WriteNumber("count", c.Count);
                w.WriteNumber("seconds", c.Seconds);
                w.WriteString("algorithm", c.Algorithm);
                w.WriteNumber("busBytesPerSecond", c.BusBytesPerSecond);
                w.WriteNumber("intraDomainSeconds", c.IntraDomainSeconds);
                w.WriteNumber("interDomainSeconds", c.InterDomainSeconds);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (e.Routing is { } routing)
            {
                w.WriteStartObject("routing");
                w.WriteString("distribution", e.Scenario.Model.Routing.ToString());
                w.WriteNumber("routedTokens", routing.RoutedTokens);
                w.WriteNumber("droppedTokens", routing.DroppedTokens);
                w.WriteNumber("rankImbalance", routing.RankImbalance);
                w.WriteStartArray("tokensPerExpert");
                foreach (var t in routing.TokensPerExpert) w.WriteNumberValue(t);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            if (Analysis.AllToAllExposure.Of(e.Result) is { } a2a)
            {
                w.WriteStartObject("allToAll");
                w.WriteString("overlap", Config.JsonObjectReader.Kebab(e.Scenario.Strategy.MoeAllToAllOverlap.ToString()));
                w.WriteNumber("secondsPerGpu", a2a.Seconds);
                w.WriteNumber("hiddenSecondsPerGpu", a2a.HiddenSeconds);
                w.WriteNumber("exposedSecondsPerGpu", a2a.ExposedSeconds);
                w.WriteNumber("smShareTaken", e.Cost.AllToAllSmShare);
                if (a2a.BuiltMicrobatches is { } built) w.WriteNumber("builtMicrobatches", built);
                w.WriteEndObject();
            }
            if (sensitivitySpeedup is { } speedup)
            {
                w.WriteStartObject("sensitivity");
                w.WriteNumber("speedup", speedup);
                w.WriteStartArray("rows");
                foreach (var row in e.Sensitivity(speedup))
                {
                    w.WriteStartObject();
                    w.WriteString("target", row.Target);
                    w.WriteString("scope", row.Scope);
                    w.WriteNumber("operations", row.Operations);
                    w.WriteNumber("criticalPathSeconds", row.CriticalPathSeconds);
                    w.WriteNumber("newTotalSeconds", row.NewTotalSeconds);
                    w.WriteNumber("savedSeconds", row.SavedSeconds);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        output.WriteLine(System.Text.Encoding.UTF8.GetString(stream.ToArray()));
    }

    private static void WriteMemory(Utf8JsonWriter w, MoeNotebooks.Analysis.MemoryReport m)
    {
        w.WriteStartObject("memory");
        w.WriteBoolean("feasible", m.Feasible);
        w.WriteNumber("peakBytesPerGpu", m.PeakBytesPerGpu);
        w.WriteNumber("capacityBytes", m.CapacityBytes);
        if (m.Overflow is { } o)
        {
            w.WriteStartObject("overflow");
            w.WriteNumber("bytes", o.Bytes);
            w.WriteString("largestComponent", o.LargestComponent);
            w.WriteNumber("largestComponentBytes", o.LargestComponentBytes);
            w.WriteEndObject();
        }
        else w.WriteNull("overflow");
        w.WriteNumber("microbatches", m.Microbatches);
        if (m.SmallestFittingMicrobatches is { } fit) w.WriteNumber("smallestFittingMicrobatches", fit);
        else w.WriteNull("smallestFittingMicrobatches");
        w.WriteString("verdict", m.ToString());
        w.WriteStartArray("stages");
        foreach (var s in m.Stages)
        {
            w.WriteStartObject();
            w.WriteNumber("stage", s.Stage);
            foreach (var (component, bytes) in s.Components) w.WriteNumber(component.Replace(" ", "").Replace("-", "") + "Bytes", bytes);
            w.WriteNumber("totalBytes", s.TotalBytes);
            w.WriteNumber("microbatchesInFlight", s.MicrobatchesInFlight);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }
}

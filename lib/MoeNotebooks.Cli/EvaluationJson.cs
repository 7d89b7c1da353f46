using System.Text.Json;
using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary>The machine-readable form of an evaluation (<c>moe evaluate --format json</c>).</summary>
public static class EvaluationJson
{
    public static void Write(Evaluation e, TextWriter output)
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
            w.WriteNumber("operations", e.Dag.Count);
            w.WriteString("formula", e.Formula.ToString());
            w.WriteStartArray("terms");
            foreach (var t in e.Formula.MatmulTerms)
            {
                w.WriteStartObject();
                w.WriteNumber("m", t.M);
                w.WriteNumber("k", t.K);
                w.WriteNumber("n", t.N);
                if (t.Batch != 1) w.WriteNumber("batch", t.Batch);
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
            w.WriteEndObject();
        }
        output.WriteLine(System.Text.Encoding.UTF8.GetString(stream.ToArray()));
    }
}

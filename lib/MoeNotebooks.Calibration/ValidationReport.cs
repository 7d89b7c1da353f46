using System.Globalization;
using System.Text.Json;

namespace MoeNotebooks.Calibration;

/// <summary>One measured quantity and the model's prediction of it.</summary>
/// <param name="Predicted">Null while the model cannot price this case yet.</param>
public sealed record ValidationCase(string Id, double Measured, double? Predicted)
{
    /// <summary>Signed error, 100 (predicted - measured) / measured; null without a prediction.</summary>
    public double? ErrorPct => Predicted is { } p ? 100 * (p - Measured) / Measured : null;
}

/// <summary>A family of cases priced by one model, with its mean absolute percentage error.</summary>
/// <param name="Unit">Unit of Measured and Predicted ("us", "TFLOP/s per GPU").</param>
/// <param name="TargetPct">The MAPE the project aims for, when there is one.</param>
/// <param name="Status">"ok", or why the suite could not predict ("waiting: ...").</param>
public sealed record ValidationSuite(
    string Name,
    string Description,
    string Unit,
    double? TargetPct,
    IReadOnlyList<ValidationCase> Cases,
    IReadOnlyList<string> Notes,
    string Status = "ok")
{
    /// <summary>Mean |errorPct| over the cases that have a prediction; null when none has.</summary>
    public double? MapePct
    {
        get
        {
            var errors = Cases.Where(c => c.ErrorPct is not null).Select(c => Math.Abs(c.ErrorPct!.Value)).ToArray();
            return errors.Length == 0 ? null : errors.Average();
        }
    }

    public double? MaxAbsErrorPct
    {
        get
        {
            var errors = Cases.Where(c => c.ErrorPct is not null).Select(c => Math.Abs(c.ErrorPct!.Value)).ToArray();
            return errors.Length == 0 ? null : errors.Max();
        }
    }

    public bool? MeetsTarget => TargetPct is { } t && MapePct is { } mape ? mape <= t : null;
}

/// <summary>Every suite, and where the measurements came from.</summary>
public sealed record ValidationReport(string DataDirectory, IReadOnlyList<ValidationSuite> Suites)
{
    public ValidationSuite this[string name] => Suites.FirstOrDefault(s => s.Name == name) ?? throw new KeyNotFoundException($"no suite \"{name}\"; suites: {string.Join(", ", Suites.Select(s => s.Name))}");

    /// <summary><c>{"suites": [{"name", "cases": [{"id", "measured", "predicted", "errorPct"}], "mapePct", ...}]}</c>.</summary>
    public void WriteJson(Stream stream)
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("dataDirectory", DataDirectory);
        w.WriteStartArray("suites");
        foreach (var s in Suites)
        {
            w.WriteStartObject();
            w.WriteString("name", s.Name);
            w.WriteString("description", s.Description);
            w.WriteString("unit", s.Unit);
            w.WriteString("status", s.Status);
            WriteNumber(w, "mapePct", s.MapePct);
            WriteNumber(w, "maxAbsErrorPct", s.MaxAbsErrorPct);
            WriteNumber(w, "targetPct", s.TargetPct);
            w.WriteNumber("caseCount", s.Cases.Count);
            w.WriteStartArray("notes");
            foreach (var note in s.Notes) w.WriteStringValue(note);
            w.WriteEndArray();
            w.WriteStartArray("cases");
            foreach (var c in s.Cases)
            {
                w.WriteStartObject();
                w.WriteString("id", c.Id);
                WriteNumber(w, "measured", c.Measured);
                WriteNumber(w, "predicted", c.Predicted);
                WriteNumber(w, "errorPct", c.ErrorPct);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    public string ToJson()
    {
        using var ms = new MemoryStream();
        WriteJson(ms);
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    /// <summary>One line per suite: cases, MAPE, max error, target.</summary>
    public void WriteSummary(TextWriter w)
    {
        var width = Suites.Select(s => s.Name.Length).Append(28).Max();
        w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{"suite".PadRight(width)} {"cases",6} {"MAPE %",8} {"max %",8} {"target %",9}  status"));
        foreach (var s in Suites)
        {
            string F(double? v) => v is { } x ? x.ToString("F1", CultureInfo.InvariantCulture) : "-";
            var verdict = s.MeetsTarget switch { true => "meets target", false => "MISSES target", _ => "" };
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{s.Name.PadRight(width)} {s.Cases.Count,6} {F(s.MapePct),8} {F(s.MaxAbsErrorPct),8} {F(s.TargetPct),9}  {s.Status} {verdict}"));
        }
        foreach (var s in Suites)
        {
            w.WriteLine();
            w.WriteLine($"{s.Name}: {s.Description}");
            foreach (var warning in s.Notes.Take(5)) w.WriteLine($"  note: {warning}");
            if (s.Notes.Count > 5) w.WriteLine($"  ... {s.Notes.Count - 5} more notes");
        }
    }

    private static void WriteNumber(Utf8JsonWriter w, string name, double? v)
    {
        if (v is { } x && double.IsFinite(x)) w.WriteNumber(name, Math.Round(x, 6));
        else w.WriteNull(name);
    }
}

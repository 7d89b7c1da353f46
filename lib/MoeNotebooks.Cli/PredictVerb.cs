using System.Globalization;
using System.Text.Json;
using MoeNotebooks.Calibration;
using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary>
/// <c>moe predict</c>: a training run's step time, model TFLOP/s per GPU (Megatron FLOPs), tokens/s per GPU, MFU, the
/// breakdown and the warnings, from the carried per-generation fits (<see cref="TrainingPredictor"/>,
/// <see cref="TrainingFits"/>). Either one run from flags (<c>--model --system --gpus --precision --global-batch</c>
/// required) or every row of a CSV in the training_modern format (measured columns optional; where present the error
/// in the row's own metric is shown).
/// </summary>
public static class PredictVerb
{
    private static readonly string[] RunFlags = ["--model", "--system", "--gpus", "--precision", "--global-batch", "--micro-batch", "--tp", "--pp", "--vp", "--cp", "--ep", "--seq-length", "--release", "--recompute", "--recompute-modules"];

    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var csv = options.OptionalPositional(0);
        var format = options.Option("--format", "table");
        var flags = RunFlags.ToDictionary(f => f, f => options.Option(f, ""));
        options.Finish();
        if (format is not ("json" or "table")) throw new UsageException($"--format = {Cli.Shown(format)}: must be table or json");
        IReadOnlyList<RunPrediction> predicted;
        IReadOnlyList<RunPredictionRefusal> refused;
        if (csv is not null)
        {
            if (flags.FirstOrDefault(f => f.Value.Length > 0) is { Key: { } given })
                throw new UsageException($"{given} with a runs file {Cli.Shown(csv)}: the flags describe one run, the file its own rows; give one");
            (predicted, refused) = TrainingPredictor.PredictAll(ModernRun.Read(csv, requireMeasured: false));
        }
        else
        {
            string Required(string flag) => flags[flag].Length > 0 ? flags[flag]
                : throw new ConfigException(flag, null, "is required to describe a run (or give a CSV of runs in the training_modern format)");
            int Int(string flag, string fallback)
            {
                var v = flags[flag].Length > 0 ? flags[flag] : fallback;
                return int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var x) ? x : throw new ConfigException(flag, v, "must be a positive integer");
            }
            long Long(string flag, string v) => long.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var x) ? x : throw new ConfigException(flag, v, "must be a positive integer");
            var recompute = flags["--recompute"] switch
            {
                "" or "false" => false,
                "true" => true,
                var v => throw new ConfigException("--recompute", v, "must be true or false (full activation recompute)"),
            };
            // Megatron's selective recompute modules, comma- or '+'-separated (--recompute-modules layernorm,moe_act).
            var modules = flags["--recompute-modules"].Length == 0 ? RecomputeModules.None : RecomputeModulesText.ParseSet("--recompute-modules", flags["--recompute-modules"]);
            var request = new TrainingRunRequest(Required("--model"), Required("--system"), Int("--gpus", Required("--gpus")), Required("--precision"),
                Long("--global-batch", Required("--global-batch")), Int("--micro-batch", "1"), Int("--tp", "1"), Int("--pp", "1"),
                flags["--vp"].Length > 0 ? Int("--vp", "") : null, Int("--cp", "1"), Int("--ep", "1"),
                flags["--seq-length"].Length > 0 ? Long("--seq-length", flags["--seq-length"]) : null, flags["--release"], recompute, modules);
            predicted = [TrainingPredictor.Predict(request)];
            refused = [];
        }
        if (format == "json") WriteJson(stdout, predicted, refused);
        else WriteTable(stdout, predicted, refused);
        return 0;
    }

    private static string F(double v, string f = "F1") => v.ToString(f, CultureInfo.InvariantCulture);

    private static void WriteTable(TextWriter o, IReadOnlyList<RunPrediction> predicted, IReadOnlyList<RunPredictionRefusal> refused)
    {
        foreach (var p in predicted)
        {
            var r = p.Run;
            o.WriteLine($"{Cli.Shown(r.Id)}: {Cli.Shown(r.Family)} on {p.System} ({p.Generation}), {r.Gpus} GPUs, {r.PrecisionName}, TP {r.TP} PP {r.PP} VP {(r.VP is { } v ? v.ToString(CultureInfo.InvariantCulture) : "-")} CP {r.CP} EP {r.EP} DP {r.DP}, global batch {r.GlobalBatch} x {r.SequenceLength} tokens, micro-batch {r.MicroBatch}{(r.Recompute ? ", full recompute" : "")}{(p.RecomputeModules != RecomputeModules.None ? $", selective recompute {p.RecomputeModules.ToText()}" : "")}");
            o.WriteLine($"  step {F(p.StepSeconds, "F3")} s, {F(p.TokensPerSecondPerGpu, "F0")} tokens/s per GPU, {F(p.ModelTflopsPerGpu)} model TFLOP/s per GPU (Megatron FLOPs), MFU {F(p.MfuPct)} % of the bf16 peak");
            if (p.Measured is { } m && p.Predicted is { } q && p.ErrorPct is { } e)
                o.WriteLine($"  published {F(m)} {(r.Framework == ModernFramework.MosaicMpt ? "MFU %" : "TFLOP/s per GPU")}, predicted {F(q)}: {(e >= 0 ? "+" : "")}{F(e)} %");
            o.WriteLine($"  fit: {p.Fit.Fit}");
            o.WriteLine("  breakdown: " + string.Join(", ", p.Breakdown.Where(b => b.Seconds != 0).Select(b => $"{b.Part} {F(b.Seconds, "F3")} s")));
            foreach (var w in p.Warnings) o.WriteLine($"  warning: {w}");
        }
        foreach (var x in refused) o.WriteLine($"{Cli.Shown(x.Run.Id)} (line {x.Run.Line}): not predicted: {x.Reason}");
        var errors = predicted.Where(p => p.ErrorPct is not null).Select(p => Math.Abs(p.ErrorPct!.Value)).ToArray();
        if (predicted.Count + refused.Count > 1)
            o.WriteLine($"{predicted.Count} predicted, {refused.Count} not predicted" + (errors.Length > 0 ? $"; MAPE against the published figures {F(errors.Average())} % over {errors.Length} rows" : ""));
    }

    private static void WriteJson(TextWriter o, IReadOnlyList<RunPrediction> predicted, IReadOnlyList<RunPredictionRefusal> refused)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("predictions");
            foreach (var p in predicted)
            {
                var r = p.Run;
                w.WriteStartObject();
                w.WriteString("id", r.Id);
                w.WriteString("model", r.Family);
                w.WriteString("gpuLabel", r.GpuLabel);
                w.WriteString("system", p.System);
                w.WriteString("generation", p.Generation);
                w.WriteNumber("gpus", r.Gpus);
                w.WriteString("precision", r.PrecisionName);
                w.WriteNumber("sequenceLength", r.SequenceLength);
                w.WriteNumber("globalBatch", r.GlobalBatch);
                w.WriteNumber("microBatch", r.MicroBatch);
                w.WriteStartObject("layout");
                w.WriteNumber("tp", r.TP); w.WriteNumber("pp", r.PP);
                if (r.VP is { } v) w.WriteNumber("vp", v); else w.WriteNull("vp");
                w.WriteNumber("cp", r.CP); w.WriteNumber("ep", r.EP); w.WriteNumber("dp", r.DP);
                w.WriteBoolean("recompute", r.Recompute);
                w.WriteStartArray("recomputeModules");
                foreach (var name in p.RecomputeModules.MegatronNames()) w.WriteStringValue(name);
                w.WriteEndArray();
                w.WriteEndObject();
                w.WriteNumber("stepSeconds", p.StepSeconds);
                w.WriteNumber("modelTflopsPerGpu", p.ModelTflopsPerGpu);
                w.WriteNumber("tokensPerSecondPerGpu", p.TokensPerSecondPerGpu);
                w.WriteNumber("mfuPct", p.MfuPct);
                if (p.Measured is { } m) w.WriteNumber("measured", m); else w.WriteNull("measured");
                if (p.Predicted is { } q) w.WriteNumber("predictedInMeasuredMetric", q); else w.WriteNull("predictedInMeasuredMetric");
                if (p.ErrorPct is { } e) w.WriteNumber("errorPct", e); else w.WriteNull("errorPct");
                w.WriteString("measuredMetric", r.Framework == ModernFramework.MosaicMpt ? "MFU %" : "model TFLOP/s per GPU");
                w.WriteStartObject("fitSource");
                w.WriteString("kernelGeneration", p.Fit.KernelGeneration);
                w.WriteString("frameworkGeneration", p.Fit.FrameworkGeneration);
                w.WriteBoolean("transferred", p.Fit.Warning is not null);
                w.WriteEndObject();
                TrainingFits.WriteFit(w, "fit", p.Fit.Fit);
                w.WriteStartObject("breakdownSeconds");
                foreach (var (part, s) in p.Breakdown) w.WriteNumber(part, s);
                w.WriteEndObject();
                w.WriteStartArray("warnings");
                foreach (var x in p.Warnings) w.WriteStringValue(x);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("notPredicted");
            foreach (var x in refused)
            {
                w.WriteStartObject();
                w.WriteString("id", x.Run.Id);
                w.WriteNumber("line", x.Run.Line);
                w.WriteString("reason", x.Reason);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        o.Write(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        o.WriteLine();
    }
}

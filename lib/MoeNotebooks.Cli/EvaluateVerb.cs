using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary><c>moe evaluate SCENARIO.json [--format table|json] [--sensitivity 0.1] [--fold periodic|symmetric|none]</c>.</summary>
public static class EvaluateVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var path = options.Positional(0, "SCENARIO.json");
        var format = options.Option("--format", "table");
        var sensitivity = options.Option("--sensitivity", "");
        var fold = options.Option("--fold", "periodic");
        options.Finish();
        // periodic (default): symmetric + microbatch extrapolation; symmetric: identical data-parallel replicas and TP/EP ranks built once (exact); replicas: replicas only; none: every GPU built (the oracle).
        var folding = fold switch
        {
            "periodic" => Derivations.DagFolding.Periodic,
            "symmetric" => Derivations.DagFolding.Symmetric,
            "replicas" => Derivations.DagFolding.Replicas,
            "none" => Derivations.DagFolding.None,
            _ => throw new UsageException($"--fold = {Cli.Shown(fold)}: must be periodic (identical replicas built once and many identical microbatches extrapolated from a few, exact), symmetric (identical replicas and TP/EP ranks built once, every microbatch), replicas (identical replicas built once) or none (build every GPU)"),
        };
        if (format is not ("json" or "table")) throw new UsageException($"--format = {Cli.Shown(format)}: must be table or json");
        double? speedup = null;
        if (sensitivity.Length > 0)
        {
            if (!double.TryParse(sensitivity, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var s)
                || !double.IsFinite(s) || s <= 0 || s >= 1)
                throw new UsageException($"--sensitivity = {Cli.Shown(sensitivity)}: must be a fraction in (0, 1) such as 0.1 (each operation kind 10% faster)");
            speedup = s;
        }
        // The what-if table re-prices and re-schedules every operation: build every microbatch for it.
        if (speedup is not null && folding == Derivations.DagFolding.Periodic) folding = Derivations.DagFolding.Symmetric;
        // One evaluation: a run that may not repeat is built whole beside the extrapolation's attempts (Scenario.Evaluate).
        var evaluation = Scenario.Load(path).Evaluate(folding, concurrently: Environment.ProcessorCount > 1);
        if (format == "json") EvaluationJson.Write(evaluation, stdout, speedup);
        else EvaluationTable.Write(evaluation, stdout, speedup);
        return 0;
    }
}

/// <summary><c>moe formula SCENARIO.json</c>.</summary>
public static class FormulaVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var path = options.Positional(0, "SCENARIO.json");
        options.Finish();
        var evaluation = Scenario.Load(path).Evaluate();
        stdout.WriteLine($"{evaluation.Scenario.Name} ({evaluation.Dag.Description}):");
        stdout.WriteLine($"Total_Runtime = {evaluation.Formula}");
        return 0;
    }
}

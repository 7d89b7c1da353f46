using MoeNotebooks.Config;

namespace MoeNotebooks.Cli;

/// <summary><c>moe evaluate SCENARIO.json [--format table|json] [--sensitivity 0.1] [--fold symmetric|none]</c>.</summary>
public static class EvaluateVerb
{
    public static int Run(Options options, TextWriter stdout, TextWriter stderr)
    {
        var path = options.Positional(0, "SCENARIO.json");
        var format = options.Option("--format", "table");
        var sensitivity = options.Option("--sensitivity", "");
        var fold = options.Option("--fold", "symmetric");
        options.Finish();
        // symmetric: identical data-parallel replicas built once (exact); none: every GPU built (the oracle).
        var folding = fold switch
        {
            "symmetric" => Derivations.DagFolding.Symmetric,
            "none" => Derivations.DagFolding.None,
            _ => throw new UsageException($"--fold = {Cli.Shown(fold)}: must be symmetric (build identical replicas once, exact) or none (build every GPU)"),
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
        var evaluation = Scenario.Load(path).Evaluate(folding);
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

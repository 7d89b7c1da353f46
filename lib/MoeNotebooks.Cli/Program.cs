using MoeNotebooks.Cli;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

return Cli.Run(args, Console.Out, Console.Error);

namespace MoeNotebooks.Cli
{
    /// <summary>The <c>moe</c> command line. Bad input exits 2 with one line naming the field and value.</summary>
    public static class Cli
    {
        public const string Usage = """
            usage: moe <verb> [options]

              evaluate SCENARIO.json [--format table|json]   total runtime, critical path, breakdown, formula terms
              formula  SCENARIO.json                         the runtime as the founding document writes it
              help                                           this text
            """;

        public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
        {
            try
            {
                if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
                {
                    stdout.WriteLine(Usage);
                    return args.Length == 0 ? 2 : 0;
                }
                var verb = args[0];
                var rest = new Options(args[1..]);
                switch (verb)
                {
                    case "evaluate":
                    {
                        var evaluation = Scenario.Load(rest.Positional(0, "SCENARIO.json")).Evaluate();
                        var format = rest.Option("--format", "table");
                        rest.Finish();
                        if (format == "json") EvaluationJson.Write(evaluation, stdout);
                        else if (format == "table") EvaluationTable.Write(evaluation, stdout);
                        else throw new UsageException($"--format = {format}: must be table or json");
                        return 0;
                    }
                    case "formula":
                    {
                        var evaluation = Scenario.Load(rest.Positional(0, "SCENARIO.json")).Evaluate();
                        rest.Finish();
                        stdout.WriteLine($"{evaluation.Scenario.Name} ({evaluation.Dag.Description}):");
                        stdout.WriteLine($"Total_Runtime = {evaluation.Formula}");
                        return 0;
                    }
                    default:
                        throw new UsageException($"unknown verb '{verb}'; verbs: evaluate, formula, help");
                }
            }
            catch (ConfigException e) { stderr.WriteLine($"error: {e.Message}"); return 2; }
            catch (DagException e) { stderr.WriteLine($"error: {e.Message}"); return 2; }
            catch (UsageException e) { stderr.WriteLine($"error: {e.Message}"); stderr.WriteLine(Usage); return 2; }
            catch (IOException e) { stderr.WriteLine($"error: {e.Message}"); return 2; }
            catch (UnauthorizedAccessException e) { stderr.WriteLine($"error: {e.Message}"); return 2; }
        }
    }

    public sealed class UsageException(string message) : Exception(message);

    /// <summary>Positional arguments and <c>--name value</c> options; unknown options are errors.</summary>
    public sealed class Options
    {
        private readonly List<string> _positional = new();
        private readonly Dictionary<string, string> _options = new(StringComparer.Ordinal);
        private readonly HashSet<string> _used = new(StringComparer.Ordinal);

        public Options(IReadOnlyList<string> args)
        {
            for (var i = 0; i < args.Count; i++)
            {
                if (args[i].StartsWith("--", StringComparison.Ordinal))
                {
                    var eq = args[i].IndexOf('=', StringComparison.Ordinal);
                    if (eq > 0) _options[args[i][..eq]] = args[i][(eq + 1)..];
                    else if (i + 1 < args.Count) _options[args[i]] = args[++i];
                    else throw new UsageException($"{args[i]} needs a value");
                }
                else _positional.Add(args[i]);
            }
        }

        public string Positional(int index, string what) =>
            index < _positional.Count ? _positional[index] : throw new UsageException($"missing {what}");

        public string? OptionalPositional(int index) => index < _positional.Count ? _positional[index] : null;

        public string Option(string name, string fallback)
        {
            _used.Add(name);
            return _options.GetValueOrDefault(name, fallback);
        }

        public void Finish()
        {
            foreach (var key in _options.Keys)
                if (!_used.Contains(key)) throw new UsageException($"unknown option {key}");
        }
    }
}

using MoeNotebooks.Cli;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

return Cli.Run(args, Console.Out, Console.Error);

namespace MoeNotebooks.Cli
{
    /// <summary>The <c>moe</c> command line. Bad input exits 2 with one line naming the field and value.</summary>
    public static class Cli
    {
        /// <summary>Every verb: name, one-line usage, handler. A verb lives in its own file.</summary>
        public static readonly IReadOnlyList<(string Name, string Usage, Func<Options, TextWriter, TextWriter, int> Run)> Verbs =
        [
            ("evaluate", "evaluate SCENARIO.json [--format table|json] [--sensitivity 0.1] [--fold symmetric|none]   runtime, critical path, breakdown, formula terms, memory, what-if", EvaluateVerb.Run),
            ("formula", "formula  SCENARIO.json                         the runtime as the founding document writes it", FormulaVerb.Run),
            ("sweep", "sweep    GRID.json [--out results.csv] [--threads N] [--breakdown true|false]   grid or random sweep to CSV, progress on stderr", SweepVerb.Run),
            ("search", "search   SCENARIO.json --gpus N [--top 5] [--microbatches 1,2,4] [--virtual-stages 1,2] [--distributed-optimizer both|true|false]   fastest EP/TP/PP/DP/VP/microbatch/optimizer strategies for N GPUs", SearchVerb.Run),
            ("import-megatron", "import-megatron \"COMMAND\"|FILE [--gpus N] [--hardware H100-SXM] [--name NAME] [--out SCENARIO.json]   a Megatron-LM launch command as a scenario; unread flags listed", ImportMegatronVerb.Run),
            ("validate", "validate [--format table|json] [--data DIR] [--ablation sc21]    cost models vs published GEMM, collective and training measurements", ValidateVerb.Run),
            ("report", "report   [NOTEBOOK.ipynb ...] [--out DIR] [--shared-assets]   run every notebook (or those named), write self-contained HTML reports and the index (default reports/)", ReportVerb.Run),
        ];

        public static string Usage =>
            "usage: moe <verb> [options]\n\n" + string.Join("\n", Verbs.Select(v => "  " + v.Usage)) + "\n  help                                           this text";

        public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
        {
            try
            {
                if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
                {
                    stdout.WriteLine(Usage);
                    return args.Length == 0 ? 2 : 0;
                }
                var verb = Verbs.FirstOrDefault(v => v.Name == args[0]);
                if (verb.Run is null)
                    throw new UsageException($"unknown verb '{args[0]}'; verbs: {string.Join(", ", Verbs.Select(v => v.Name))}, help");
                if (args.Skip(1).Any(a => a is "--help" or "-h"))
                {
                    stdout.WriteLine("usage: moe " + verb.Usage);
                    return 0;
                }
                return verb.Run(new Options(args[1..]), stdout, stderr);
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

        /// <summary>Options that take no value (present means "true"; <c>--name=false</c> still works).</summary>
        public static readonly IReadOnlySet<string> Flags = new HashSet<string>(StringComparer.Ordinal) { "--shared-assets" };

        public Options(IReadOnlyList<string> args)
        {
            for (var i = 0; i < args.Count; i++)
            {
                if (args[i].StartsWith("--", StringComparison.Ordinal))
                {
                    var eq = args[i].IndexOf('=', StringComparison.Ordinal);
                    if (eq > 0) _options[args[i][..eq]] = args[i][(eq + 1)..];
                    else if (Flags.Contains(args[i])) _options[args[i]] = "true";
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

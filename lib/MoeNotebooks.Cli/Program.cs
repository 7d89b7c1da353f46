using MoeNotebooks.Cli;
using MoeNotebooks.Config;
using MoeNotebooks.Dag;

return Cli.Run(args, Console.Out, Console.Error);

namespace MoeNotebooks.Cli
{
    /// <summary>
    /// The <c>moe</c> command line. Bad input exits 2 with one line naming the field or option and the value; an
    /// interrupted run exits 130. Everything written to the terminal goes through <see cref="VisibleWriter"/>, so a
    /// control character from a file or an argument is shown (<c>\x1b</c>) instead of acting on the terminal.
    /// </summary>
    public static class Cli
    {
        /// <summary>Every verb: name, one-line usage, handler. A verb lives in its own file.</summary>
        public static readonly IReadOnlyList<(string Name, string Usage, Func<Options, TextWriter, TextWriter, int> Run)> Verbs =
        [
            ("evaluate", "evaluate SCENARIO.json [--format table|json] [--sensitivity 0.1] [--fold periodic|symmetric|none]   runtime, critical path, breakdown, formula terms, memory, what-if", EvaluateVerb.Run),
            ("formula", "formula  SCENARIO.json                         the runtime as the founding document writes it", FormulaVerb.Run),
            ("sweep", "sweep    GRID.json [--out results.csv] [--threads N] [--breakdown true|false]   grid or random sweep to CSV, progress on stderr", SweepVerb.Run),
            ("search", "search   SCENARIO.json --gpus N [--top 5] [--microbatches 1,2,4] [--virtual-stages 1,2] [--distributed-optimizer both|true|false] [--etp tp,1,2] [--sequence-parallel both|true|false] [--schedules 1f1b,zero-bubble-h1,dualpipe] [--context-parallel 1,2] [--recompute both|true|false] [--recompute-modules none,layernorm+moe_act,moe] [--micro-batch-size 1,2,4] [--prune true|false] [--max-seconds 300]   fastest EP/TP/ETP/PP/DP/VP/SP/CP/microbatch/recompute/optimizer/schedule strategies for N GPUs", SearchVerb.Run),
            ("import-megatron", "import-megatron \"COMMAND\"|FILE [--gpus N] [--hardware H100-SXM] [--name NAME] [--out SCENARIO.json]   a Megatron-LM launch command as a scenario; unread flags listed", ImportMegatronVerb.Run),
            ("validate", "validate [--format table|json] [--data DIR] [--ablation sc21|modern] [--write-fits FILE]    cost models vs published GEMM, collective and training measurements; --write-fits: the training-modern fits as data", ValidateVerb.Run),
            ("predict", "predict  [RUNS.csv] --model deepseek-v3 --system DGX-H100 --gpus 256 --precision bf16 --global-batch 2048 [--micro-batch 1] [--tp 1] [--pp 1] [--vp N] [--cp 1] [--ep 1] [--seq-length N] [--release 25.11] [--recompute false] [--recompute-modules layernorm,moe_act] [--format table|json]   one training run's step (or every row of a training_modern CSV) from the carried per-generation fits; --model: a fitted family or any preset in data/models", PredictVerb.Run),
            ("report", "report   [NOTEBOOK.ipynb ...] [--out DIR] [--shared-assets]   run every notebook (or those named), write self-contained HTML reports and the index (default reports/)", ReportVerb.Run),
        ];

        /// <summary>Verbs that stream their output (it can be large, or long in coming); the others answer all at once, after every check passed.</summary>
        private static readonly HashSet<string> Streaming = ["sweep", "report"];

        public static string Usage =>
            "usage: moe <verb> [options]\n\n" + string.Join("\n", Verbs.Select(v => "  " + v.Usage)) + "\n  help                                           this text";

        public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
        {
            var err = new VisibleWriter(stderr, allowCarriageReturn: true);
            var output = new VisibleWriter(stdout, allowCarriageReturn: false);
            try
            {
                if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
                {
                    if (args.Length > 1) throw new UsageException($"help takes no arguments, got {Shown(args[1])}");
                    try { output.WriteLine(Usage); }
                    catch (IOException e) { throw StdoutFailed(e); }
                    return Flushed(args.Length == 0 ? 2 : 0, output);
                }
                var verb = Verbs.FirstOrDefault(v => v.Name == args[0]);
                if (verb.Run is null)
                    throw new UsageException($"unknown verb '{ConfigException.Visible(args[0], 40)}'; verbs: {string.Join(", ", Verbs.Select(v => v.Name))}, help");
                if (args.Skip(1).Any(a => a is "--help" or "-h"))
                {
                    try { output.WriteLine("usage: moe " + verb.Usage); }
                    catch (IOException e) { throw StdoutFailed(e); }
                    return Flushed(0, output);
                }
                if (Streaming.Contains(verb.Name)) return Flushed(verb.Run(new Options(args[1..]), output, err), output);
                // Answer only once the whole answer exists: an error found half-way (an option, a value) prints nothing but its line.
                var buffer = new StringWriter();
                var code = verb.Run(new Options(args[1..]), buffer, err);
                try { output.Write(buffer.ToString()); }
                catch (IOException e) { throw StdoutFailed(e); }
                return Flushed(code, output);
            }
            catch (ConfigException e) { return Error(err, e.Message); }
            catch (DagException e) { return Error(err, ConfigException.Visible(e.Message, 400)); }
            catch (UsageException e) { return Error(err, $"{e.Message} (moe help lists verbs and options)"); }
            catch (OutputException e) { return Error(err, e.Message); }
            catch (IOException e) { return Error(err, $"input/output error: {ConfigException.Visible(e.Message, 200)}"); }
            catch (UnauthorizedAccessException e) { return Error(err, ConfigException.Visible(e.Message, 300)); }
            catch (InterruptedException e) { Error(err, e.Message); return 130; }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // A bug, not bad input: still one line and no stack trace on the user's terminal, but a distinct exit code.
                if (Environment.GetEnvironmentVariable("MOE_DEBUG_STACK") is not null) err.WriteLine(e.ToString());
                Error(err, $"internal error ({e.GetType().Name}: {ConfigException.Visible(e.Message, 200)}); please report it with the input");
                return 70;
            }
        }

        private static int Flushed(int code, VisibleWriter output)
        {
            try { output.Flush(); }
            catch (IOException e) { throw StdoutFailed(e); }
            return code;
        }

        internal static OutputException StdoutFailed(IOException e) =>
            new($"stdout: cannot write ({ConfigException.Visible(e.Message, 200)}); is the disk full or the pipe closed?");

        /// <summary>A command-line value as error lines quote it: visible, at most 80 characters.</summary>
        public static string Shown(string value) => ConfigException.Visible(value, 80);

        private static int Error(TextWriter stderr, string message)
        {
            try
            {
                stderr.WriteLine($"error: {ConfigException.Visible(message, 2000)}");
                stderr.Flush();
            }
            catch (IOException) { /* stderr itself is gone: the exit code still says it */ }
            return 2;
        }
    }

    public sealed class UsageException(string message) : Exception(message);

    /// <summary>Output (stdout or --out) could not be written; the message names which and why.</summary>
    public sealed class OutputException(string message) : Exception(message);

    /// <summary>A run stopped by SIGINT or SIGTERM; exit code 130.</summary>
    public sealed class InterruptedException(string message) : Exception(message);

    /// <summary>
    /// Passes text through, showing control characters (C0 except newline and tab, DEL, C1), line and paragraph
    /// separators and bidirectional overrides as escapes: C0 as <c>\x1b</c>, the rest as <c>\u202e</c> (which is also
    /// a valid JSON escape, so JSON output stays valid JSON). Carriage returns pass only when allowed (the progress bar).
    /// </summary>
    public sealed class VisibleWriter(TextWriter inner, bool allowCarriageReturn) : TextWriter
    {
        public override System.Text.Encoding Encoding => inner.Encoding;

        public static bool NeedsEscape(char c, bool allowCarriageReturn) =>
            (c < 0x20 && c != '\n' && c != '\t' && !(allowCarriageReturn && c == '\r')) || c == 0x7f || (c >= 0x80 && c <= 0x9f)
            || c is '\u2028' or '\u2029' or '\u200e' or '\u200f' or '\u061c' || (c >= '\u202a' && c <= '\u202e') || (c >= '\u2066' && c <= '\u2069');

        private static string Escape(char c) => c < 0x20 ? $"\\x{(int)c:x2}" : $"\\u{(int)c:x4}";

        public override void Write(char value)
        {
            if (NeedsEscape(value, allowCarriageReturn)) inner.Write(Escape(value));
            else inner.Write(value);
        }

        public override void Write(string? value)
        {
            if (value is null) return;
            var start = 0;
            for (var i = 0; i < value.Length; i++)
            {
                if (!NeedsEscape(value[i], allowCarriageReturn)) continue;
                inner.Write(value.AsSpan(start, i - start));
                inner.Write(Escape(value[i]));
                start = i + 1;
            }
            inner.Write(value.AsSpan(start));
        }

        public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));

        public override void WriteLine(string? value)
        {
            Write(value);
            inner.WriteLine();
        }

        public override void WriteLine() => inner.WriteLine();

        public override void Flush() => inner.Flush();
    }

    /// <summary>
    /// Positional arguments and <c>--name value</c> options. Unknown options, an option given twice and positional
    /// arguments beyond those a verb reads are errors (nothing is silently ignored).
    /// </summary>
    public sealed class Options
    {
        private readonly List<string> _positional = new();
        private readonly Dictionary<string, string> _options = new(StringComparer.Ordinal);
        private readonly HashSet<string> _used = new(StringComparer.Ordinal);
        private int _positionalRead;

        /// <summary>Options that take no value (present means "true"; <c>--name=false</c> still works).</summary>
        public static readonly IReadOnlySet<string> Flags = new HashSet<string>(StringComparer.Ordinal) { "--shared-assets" };

        public Options(IReadOnlyList<string> args)
        {
            for (var i = 0; i < args.Count; i++)
            {
                if (args[i].StartsWith("--", StringComparison.Ordinal) && args[i].Length > 2)
                {
                    var eq = args[i].IndexOf('=', StringComparison.Ordinal);
                    string name, value;
                    if (eq > 0) (name, value) = (args[i][..eq], args[i][(eq + 1)..]);
                    else if (Flags.Contains(args[i])) (name, value) = (args[i], "true");
                    else if (i + 1 < args.Count) (name, value) = (args[i], args[++i]);
                    else throw new UsageException($"{ConfigException.Visible(args[i], 40)} needs a value");
                    if (!_options.TryAdd(name, value))
                        throw new UsageException($"{ConfigException.Visible(name, 40)} is given twice ({Cli.Shown(_options[name])} and {Cli.Shown(value)}); give it once");
                }
                else _positional.Add(args[i]);
            }
        }

        public string Positional(int index, string what)
        {
            _positionalRead = Math.Max(_positionalRead, index + 1);
            return index < _positional.Count ? _positional[index] : throw new UsageException($"missing {what}");
        }

        public string? OptionalPositional(int index)
        {
            _positionalRead = Math.Max(_positionalRead, index + 1);
            return index < _positional.Count ? _positional[index] : null;
        }

        public string Option(string name, string fallback)
        {
            _used.Add(name);
            return _options.GetValueOrDefault(name, fallback);
        }

        public void Finish()
        {
            foreach (var key in _options.Keys)
                if (!_used.Contains(key)) throw new UsageException($"unknown option {ConfigException.Visible(key, 40)}");
            if (_positional.Count > _positionalRead)
                throw new UsageException($"unexpected argument {Cli.Shown(_positional[_positionalRead])}: this verb takes {(_positionalRead == 0 ? "no file" : _positionalRead == 1 ? "one file" : $"{_positionalRead} files")}");
        }
    }
}

using MoeNotebooks.Cli;

namespace MoeNotebooks.Tests;

/// <summary>
/// Every verb answers <c>--help</c> / <c>-h</c> with its usage (exit 0) instead of treating it as an option that needs a
/// value. Oracle: the verb table itself (each verb's usage line) and the documented exit codes.
/// </summary>
public class CliHelpTests
{
    public static TheoryData<string, string> VerbsAndHelpFlags()
    {
        var data = new TheoryData<string, string>();
        foreach (var (name, _, _) in Cli.Cli.Verbs)
        {
            data.Add(name, "--help");
            data.Add(name, "-h");
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(VerbsAndHelpFlags))]
    public void Every_verb_answers_help_with_its_usage(string verb, string flag)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        // --help also wins when it follows other arguments (moe report notebooks/03.ipynb --help runs nothing).
        var code = Cli.Cli.Run([verb, "some-argument", flag], stdout, stderr);
        Assert.Equal(0, code);
        Assert.Equal("", stderr.ToString());
        var usage = Cli.Cli.Verbs.Single(v => v.Name == verb).Usage;
        Assert.Equal("usage: moe " + usage, stdout.ToString().TrimEnd());
    }

    [Fact]
    public void Report_lists_notebooks_and_the_shared_assets_flag_in_its_usage()
    {
        var usage = Cli.Cli.Verbs.Single(v => v.Name == "report").Usage;
        Assert.Contains("NOTEBOOK.ipynb", usage, StringComparison.Ordinal);
        Assert.Contains("--shared-assets", usage, StringComparison.Ordinal);
    }

    [Fact]
    public void A_flag_takes_no_value_so_the_next_argument_stays_positional()
    {
        var options = new Options(["--shared-assets", "notebooks/03-ep-vs-tp-pp.ipynb"]);
        Assert.Equal("true", options.Option("--shared-assets", "false"));
        Assert.Equal("notebooks/03-ep-vs-tp-pp.ipynb", options.Positional(0, "NOTEBOOK"));
        Assert.Equal("false", new Options(["--shared-assets=false"]).Option("--shared-assets", "true"));
        // An ordinary option still needs its value.
        Assert.Throws<UsageException>(() => new Options(["--out"]));
    }
}

using MoeNotebooks.Cli;

namespace MoeNotebooks.Perf.Tests;

public class CliTests
{
    [Fact]
    public void Sweep_writes_csv_and_a_progress_bar()
    {
        var grid = Path.Combine(Repo.Root, "data", "sweeps", "founding-grid.json");
        var csv = Path.Combine(Path.GetTempPath(), $"moe-sweep-{Guid.NewGuid():N}.csv");
        try
        {
            var stdout = new StringWriter();
            var stderr = new StringWriter();
            Assert.Equal(0, Cli.Cli.Run(["sweep", grid, "--out", csv], stdout, stderr));
            var lines = File.ReadAllLines(csv);
            Assert.Equal(481, lines.Length);
            Assert.StartsWith("index,model.sequenceLength,strategy.ep", lines[0]);
            Assert.Contains("[##############################] 480/480", stderr.ToString());
            Assert.Contains("fastest: #", stderr.ToString());
        }
        finally { File.Delete(csv); }
    }

    [Fact]
    public void Search_prints_the_best_strategies_and_rejections()
    {
        var stdout = new StringWriter();
        Assert.Equal(0, Cli.Cli.Run(["search", Repo.ScenarioPath("ep16"), "--gpus", "16", "--top", "3"], stdout, new StringWriter()));
        var text = stdout.ToString();
        Assert.Contains("   1  EP", text);
        Assert.Contains("   3  EP", text);
        Assert.DoesNotContain("   4  EP", text);
        Assert.Contains("strategy.pp: must be <= model.layers", text);
    }

    [Theory]
    [InlineData("search", "--gpus", "0")]
    [InlineData("search", "--gpus", "x")]
    [InlineData("search", "--bogus", "1")]
    [InlineData("sweep", "--threads", "-1")]
    public void Bad_options_exit_2_with_one_error_line(string verb, string option, string value)
    {
        var stderr = new StringWriter();
        var file = verb == "search" ? Repo.ScenarioPath("ep16") : Path.Combine(Repo.Root, "data", "sweeps", "founding-grid.json");
        Assert.Equal(2, Cli.Cli.Run([verb, file, option, value], new StringWriter(), stderr));
        Assert.StartsWith("error: ", stderr.ToString());
    }
}
